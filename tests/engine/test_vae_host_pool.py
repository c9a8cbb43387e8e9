"""Parking tiles in host RAM at GroupNorm barriers: buffers are reused from barrier to barrier, the
result is unchanged, and only tiles that wait for each other are parked."""

from __future__ import annotations

import pytest
import torch

from naiup.engine.vae import stages as st
from naiup.engine.vae import tiled as vt
from naiup.engine.vae.groupnorm_pool import GroupStats, run_pooled
from naiup.engine.vae.memory import VaePlan
from naiup.testing import tiny_vae

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_a_buffer_given_back_is_handed_out_again_for_any_tensor_that_fits():
    pool = st.HostPool()
    big = torch.randn(2, 8, 16, 16)
    host, buf, dev = pool.park(big)
    assert torch.equal(host, big) and host.data_ptr() != big.data_ptr()
    back = pool.unpark(host, buf, dev)
    assert torch.equal(back, big) and back.data_ptr() != buf.data_ptr()  # never aliases the buffer
    small = torch.randn(1, 4, 8, 8, dtype=torch.bfloat16)
    host2, buf2, _ = pool.park(small)
    assert buf2 is buf and torch.equal(host2, small)
    assert (pool.allocations, pool.parks) == (1, 2)


def test_channels_last_activations_keep_their_layout_through_the_host():
    pool = st.HostPool()
    x = torch.randn(1, 8, 6, 5).contiguous(memory_format=torch.channels_last)
    back = pool.unpark(*pool.park(x))
    assert torch.equal(back, x) and back.is_contiguous(memory_format=torch.channels_last)


@torch.no_grad()
def test_parked_exact_decode_is_unchanged_and_allocates_about_one_barriers_worth():
    vae = tiny_vae()
    latent = torch.randn(1, 4, 24, 32, generator=torch.Generator().manual_seed(0))
    head = st.decoder_head(vae, latent)
    tiles = st.split_tiles(24, 32, 12, st.decoder_halo(vae))

    def decode(park: bool | st.HostPool) -> list[torch.Tensor]:
        runs = [
            st.decoder_tile(vae, head[:, :, t.box[0] : t.box[1], t.box[2] : t.box[3]], t, park) for t in tiles
        ]
        return run_pooled(runs)

    pool = st.HostPool()
    parked, plain = decode(pool), decode(False)
    assert all(torch.equal(a, b) for a, b in zip(parked, plain, strict=True))
    # 6 tiles park 19 tensors each across the tiny decoder's barriers, through 2 buffers per tile and
    # level (new ones only where a level's tensors grow): 114 parks, 36 allocations.
    assert pool.parks == 19 * len(tiles)
    assert pool.allocations <= 2 * 3 * len(tiles)


def test_only_tiles_that_wait_for_each_other_are_parked():
    part = GroupStats(torch.ones(1, 1), torch.zeros(1, 1), torch.zeros(1, 1))

    def fake_run(park):
        seen.append(park)
        yield (0, part)
        return torch.ones(1)

    tiles = st.split_tiles(64, 64, 8, 1)  # 8 x 8 tiles

    def run(plan: VaePlan):
        seen.clear()
        return vt._run_tiles(lambda i, park: fake_run(park), tiles, plan, sample=4)

    seen: list = []
    low = run(VaePlan("low-memory", park_on_host=True))
    assert len(low) == len(tiles)
    pools = [p for p in seen if isinstance(p, st.HostPool)]
    assert len(pools) == 4 and len({id(p) for p in pools}) == 1  # the pooled sample shares one pool
    assert seen.count(False) == len(tiles) - 4  # tiles run alone with frozen statistics stay put
    run(VaePlan("exact", park_on_host=True))
    assert len(seen) == len(tiles) and all(isinstance(p, st.HostPool) for p in seen)
    run(VaePlan("exact"))
    assert seen == [False] * len(tiles)
