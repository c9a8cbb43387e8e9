"""Windowed mid-block attention: whole when it fits, a masked attention when not, and its error."""

from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL

from naiup.engine.vae import attention as va
from naiup.engine.vae import tiled as vt
from naiup.engine.vae.attention import ATTENTION_MARGIN, attention_windows, is_windowed
from naiup.testing import tiny_vae

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def vae() -> AutoencoderKL:
    return tiny_vae()


@pytest.mark.parametrize(("h", "w", "window"), [(65, 97, 16), (208, 304, 64), (416, 608, 256), (1, 300, 50)])
def test_query_blocks_cover_every_latent_pixel_once_and_keys_add_the_margin(h, w, window):
    seen = torch.zeros(h, w, dtype=torch.int32)
    for (qy0, qy1, qx0, qx1), (ky0, ky1, kx0, kx1) in attention_windows(h, w, window):
        seen[qy0:qy1, qx0:qx1] += 1
        assert (ky0, kx0) == (max(0, qy0 - ATTENTION_MARGIN), max(0, qx0 - ATTENTION_MARGIN))
        assert (ky1, kx1) == (min(h, qy1 + ATTENTION_MARGIN), min(w, qx1 + ATTENTION_MARGIN))
        assert qy1 - qy0 <= window or (qy0, qy1) == (0, h)
    assert (seen == 1).all()


def test_a_latent_within_one_window_and_its_margins_is_attended_whole():
    assert not is_windowed(208, 304, 256)  # 2x of 832x1216: exact at the default window
    assert is_windowed(416, 608, 256)  # 4x: windowed
    assert not is_windowed(416, 608, 0)  # 0 = always whole
    assert attention_windows(30, 40, 8) == [((0, 30, 0, 40), (0, 30, 0, 40))]


def _mid_attention(vae: AutoencoderKL, h: int, w: int) -> tuple[torch.nn.Module, torch.Tensor]:
    attn = vae.decoder.mid_block.attentions[0]
    c = attn.to_q.in_features
    x = torch.randn(1, c, h, w, generator=torch.Generator().manual_seed(3))
    return attn, x


def test_one_window_is_diffusers_attention_to_float_rounding(vae):
    attn, x = _mid_attention(vae, 20, 28)
    ours = va._windowed_self_attention(attn, x, 0)
    theirs = attn(x)
    assert (ours - theirs).abs().max().item() < 1e-5 * theirs.abs().max().item()


def test_windows_equal_full_attention_under_the_window_mask(vae):
    attn, x = _mid_attention(vae, 20, 90)  # 90 > 8 + 2*32: three windows along the width
    windows = attention_windows(20, 90, 8)
    assert len(windows) > 1
    mask = torch.zeros(20 * 90, 20 * 90, dtype=torch.bool)  # query -> keys it may see
    for (qy0, qy1, qx0, qx1), (ky0, ky1, kx0, kx1) in windows:
        q = torch.zeros(20, 90, dtype=torch.bool)
        q[qy0:qy1, qx0:qx1] = True
        k = torch.zeros(20, 90, dtype=torch.bool)
        k[ky0:ky1, kx0:kx1] = True
        mask[q.flatten()] = k.flatten()
    b, c, hh, ww = x.shape
    tokens = attn.group_norm(x).flatten(2).transpose(1, 2)
    q, k, v = attn.to_q(tokens), attn.to_k(tokens), attn.to_v(tokens)
    ref = torch.nn.functional.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None], attn_mask=mask)
    ref = attn.to_out[0](ref[:, 0]).transpose(1, 2).reshape(b, c, hh, ww) + x
    ours = va._windowed_self_attention(attn, x, 8)
    assert (ours - ref).abs().max().item() < 1e-5 * ref.abs().max().item()
    assert (ours - attn(x)).abs().max().item() > 1e-3  # and it is not the whole attention


def test_query_chunks_bounding_the_score_matrix_change_nothing(vae, monkeypatch):
    attn, x = _mid_attention(vae, 20, 90)
    whole_calls = va._windowed_self_attention(attn, x, 8)
    calls: list[tuple[int, ...]] = []
    real = va.F.scaled_dot_product_attention

    def counting(q, k, v):
        calls.append(q.shape[2] * k.shape[2])  # query x key scores of this call
        return real(q, k, v)

    # Windows of 7-8 query columns, up to 20x70 keys: one query row is at most 11200 scores.
    monkeypatch.setattr(va, "SCORE_BUDGET", 5 * 11200)
    monkeypatch.setattr(va.F, "scaled_dot_product_attention", counting)
    chunked = va._windowed_self_attention(attn, x, 8)
    assert len(calls) > len(attention_windows(20, 90, 8))  # it did chunk
    assert max(calls) <= va.SCORE_BUDGET
    assert (chunked - whole_calls).abs().max().item() < 1e-5 * whole_calls.abs().max().item()


def test_windowed_decode_and_encode_run_through_every_mode_and_stay_close(vae):
    # 96x160 latent -> the width splits into windows of 32 (+32 margin each side), the height not.
    g = torch.Generator().manual_seed(4)
    latent = torch.randn(1, 4, 96, 160, generator=g)
    exact = vt.decode(vae, latent, mode="exact", tile=48)
    outs = {m: vt.decode(vae, latent, mode=m, tile=48, attention_window=32) for m in ("off", "exact")}
    # "off" cannot window diffusers' pass: it runs as exact tiles, the same computation.
    assert (outs["off"] - outs["exact"]).abs().max().item() < 1e-4 * exact.abs().max().item()
    psnr = _psnr(outs["exact"], exact)
    # Random weights attend almost uniformly, the worst case for a window. Measured 77.6 dB here; the
    # SD1.5-shaped VAE at 832x1216 px gives 54.8 dB at window 32 (bench/vae_attention_bench.py). A
    # window bug (a query block missed, keys from the wrong place) costs tens of dB.
    assert 65 < psnr < 120, psnr
    pixels = exact.clamp(-1, 1)
    z_exact = vt.encode(vae, pixels, mode="exact", tile=48)
    z_win = vt.encode(vae, pixels, mode="exact", tile=48, attention_window=32)
    assert z_win.shape == z_exact.shape and torch.isfinite(z_win).all()
    assert _psnr(z_win, z_exact) > 55  # measured 66.7 dB


def _psnr(a: torch.Tensor, ref: torch.Tensor) -> float:
    span = (ref.max() - ref.min()).item()
    mse = ((a - ref) ** 2).mean().item()
    return 10 * torch.log10(torch.tensor(span**2 / max(mse, 1e-20))).item()


def test_score_budget_chunks_where_scores_are_materialised_and_not_on_cuda():
    # MPS and the CPU build the score matrix: bounded, whatever memory is free.
    assert va.score_budget("mps", 64 * 2**30, 2) == va.SCORE_BUDGET
    assert va.score_budget("cpu", None, 4) == va.SCORE_BUDGET
    # CUDA's memory-efficient kernel never does: one call per window at 4x on a large card (a W4 window
    # is ~42k queries x ~72k keys = 3e9 scores), the guard only bites when memory is short.
    w4_window = 42_000 * 72_000
    assert va.score_budget("cuda", 100 * 2**30, 2) >= w4_window
    assert va.score_budget("cuda", 2 * 2**30, 2) == 2**29  # half of 2 GiB in bf16 scores
    assert va.score_budget("cuda", 0, 2) == va.SCORE_BUDGET  # never below the MPS bound
