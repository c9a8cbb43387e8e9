"""Exact tiled VAE: equals the untiled VAE (fp32) on sizes that are not tile multiples.

Every test taking `vae` runs for the SD1.5 VAE and for the SDXL one (same architecture; SDXL's config
has scaling factor 0.13025 and force_upcast): the exact tiling carries over unchanged."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers import AutoencoderKL
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st_

from naiup.engine.models.sdxl_single_file import SDXL_SKELETON
from naiup.engine.vae import stages as st
from naiup.engine.vae import tiled as vt
from naiup.engine.vae.groupnorm_pool import run_pooled
from naiup.errors import EngineError
from naiup.testing import sd_vae, tiny_vae

H, W = 520, 776  # 65 x 97 latent: no tile size divides it


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", params=["sd15", "sdxl"])
def vae(request) -> AutoencoderKL:
    return tiny_vae(family=request.param)


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(
        torch.rand(1, 3, 33, 49, generator=g), size=(H, W), mode="bilinear"
    )
    return (smooth + 0.1 * torch.rand(1, 3, H, W, generator=g)) * 1.8 - 0.9


def _rel(a: torch.Tensor, ref: torch.Tensor) -> float:
    return ((a - ref).abs().max() / ref.abs().max()).item()


def test_exact_encode_equals_untiled(vae, image):
    ref = vt.encode(vae, image, mode="off")
    tiled = vt.encode(vae, image, mode="exact", tile=24)
    assert tiled.shape == ref.shape == (1, 4, H // 8, W // 8)
    assert _rel(tiled, ref) < 1e-4


def test_exact_decode_equals_untiled(vae):
    latent = torch.randn(1, 4, H // 8, W // 8, generator=torch.Generator().manual_seed(1))
    ref = vt.decode(vae, latent, mode="off")
    tiled = vt.decode(vae, latent, mode="exact", tile=24)
    assert tiled.shape == ref.shape == (1, 3, H, W)
    assert _rel(tiled, ref) < 1e-4


def test_encoder_sample_uses_the_generator_like_diffusers(vae, image):
    small = image[:, :, :128, :192]
    a = vt.encode(vae, small, mode="exact", tile=8, sample=True, generator=torch.Generator().manual_seed(5))
    b = vt.encode(vae, small, mode="off", sample=True, generator=torch.Generator().manual_seed(5))
    assert _rel(a, b) < 1e-4


def test_flat_colour_keeps_its_colour_through_tiled_round_trip(vae):
    flat = torch.tensor([0.3, -0.5, 0.8]).view(1, 3, 1, 1).expand(1, 3, H, W).contiguous()
    ref = vt.decode(vae, vt.encode(vae, flat, mode="off"), mode="off")
    tiled = vt.decode(vae, vt.encode(vae, flat, mode="exact", tile=16), mode="exact", tile=16)
    shift = (tiled.mean(dim=(2, 3)) - ref.mean(dim=(2, 3))).abs().max().item()
    assert shift <= 2 / 255  # 1/255 of the [0, 1] range; pixels here are in [-1, 1]


def test_a_halo_below_the_receptive_field_is_not_exact(vae):
    # Proves the equality tests can fail: shrink the halo and the tiles disagree with untiled.
    latent = torch.randn(1, 4, 40, 56, generator=torch.Generator().manual_seed(2))
    ref = vt.decode(vae, latent, mode="off")
    head = st.decoder_head(vae, latent)

    def decode_with(halo: int, park: bool) -> torch.Tensor:
        tiles = st.split_tiles(40, 56, 12, halo)
        runs = [
            st.decoder_tile(vae, head[:, :, t.box[0] : t.box[1], t.box[2] : t.box[3]], t, park) for t in tiles
        ]
        out = torch.empty_like(ref)
        for t, o in zip(tiles, run_pooled(runs), strict=True):
            out[:, :, t.core[0] * 8 : t.core[1] * 8, t.core[2] * 8 : t.core[3] * 8] = o
        return out

    halo = st.decoder_halo(vae)
    assert _rel(decode_with(halo, park=True), ref) < 1e-4  # host-parking path, same numbers
    assert _rel(decode_with(1, park=False), ref) > 1e-3


def test_sd15_receptive_fields_give_the_documented_halos():
    with torch.device("meta"):
        sd = sd_vae((128, 256, 512, 512), groups=32, layers=2)  # SD1.5's VAE
    assert st.decoder_halo(sd) == 7  # 6.25 latent px after the first up block's resnets
    assert st.encoder_halo(sd) == 6  # 5.4 latent px = 43 px before the last down level


def test_sdxl_latents_use_sdxl_scaling_both_ways(image):
    # The same weights under both configs: only the scaling factor differs, and our tiled encode and
    # decode apply each config's own (a hard-coded 0.18215 would pass the equality tests above).
    sd15, sdxl = tiny_vae(), tiny_vae(family="sdxl")
    assert (sdxl.config.scaling_factor, sdxl.config.force_upcast) == (0.13025, True)
    a, b = sd15.state_dict(), sdxl.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    small = image[:, :, :128, :192]
    z15 = vt.encode(sd15, small, mode="exact", tile=8)
    zxl = vt.encode(sdxl, small, mode="exact", tile=8)
    assert _rel(zxl / 0.13025, z15 / 0.18215) < 1e-4
    raw = sdxl.encode(small).latent_dist.mode()
    assert _rel(zxl, raw * 0.13025) < 1e-4
    latent = torch.randn(1, 4, 16, 24, generator=torch.Generator().manual_seed(4))
    ref = sdxl.decode(latent / 0.13025).sample
    assert _rel(vt.decode(sdxl, latent, mode="exact", tile=8), ref) < 1e-4


def test_the_real_sdxl_vae_has_the_sd15_halos():
    # The exact tiling's halos come from the receptive field, i.e. the architecture: SDXL's VAE config
    # (naiup's bundled one) must give the same halos as SD1.5's.
    config = json.loads((SDXL_SKELETON / "vae" / "config.json").read_text())
    with torch.device("meta"):
        xl = AutoencoderKL.from_config(config)
    assert (st.decoder_halo(xl), st.encoder_halo(xl)) == (7, 6)


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_fp16_vae_is_refused(family):
    # Never fp16: SD VAEs, SDXL's stock one above all, overflow to NaN there (fp32 or bf16 only).
    half = tiny_vae(family=family).half()
    with pytest.raises(EngineError, match="fp16"):
        vt.decode(half, torch.zeros(1, 4, 8, 8, dtype=torch.float16), mode="exact")


def test_input_not_a_multiple_of_eight_is_refused(vae):
    with pytest.raises(EngineError, match="multiple of 8"):
        vt.encode(vae, torch.zeros(1, 3, 100, 101), mode="exact")


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lh=st_.integers(1, 24), lw=st_.integers(1, 24), core=st_.integers(2, 16))
def test_exact_decode_equals_untiled_for_any_size_and_core(vae, lh, lw, core):
    latent = torch.randn(1, 4, lh, lw, generator=torch.Generator().manual_seed(lh * 100 + lw))
    ref = vt.decode(vae, latent, mode="off")
    assert _rel(vt.decode(vae, latent, mode="exact", tile=core), ref) < 1e-4


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lh=st_.integers(1, 24), lw=st_.integers(1, 24), core=st_.integers(2, 16))
def test_exact_encode_equals_untiled_for_any_size_and_core(vae, lh, lw, core):
    pixels = torch.rand(1, 3, lh * 8, lw * 8, generator=torch.Generator().manual_seed(lh * 100 + lw)) * 2 - 1
    ref = vt.encode(vae, pixels, mode="off")
    assert _rel(vt.encode(vae, pixels, mode="exact", tile=core), ref) < 1e-4


def test_exact_mode_on_one_tile_is_the_native_module_bit_for_bit(vae):
    # A core that holds the whole latent: exact mode calls diffusers' encode/decode itself, no barriers.
    g = torch.Generator().manual_seed(3)
    pixels = torch.rand(1, 3, 96, 128, generator=g) * 2 - 1
    latent = torch.randn(1, 4, 12, 16, generator=g)
    assert torch.equal(vt.decode(vae, latent, mode="exact", tile=64), vt.decode(vae, latent, mode="off"))
    assert torch.equal(vt.encode(vae, pixels, mode="exact", tile=64), vt.encode(vae, pixels, mode="off"))
    # Two tiles still run the tiled stage (equal only to float rounding).
    assert not torch.equal(vt.decode(vae, latent, mode="exact", tile=8), vt.decode(vae, latent, mode="off"))
