"""Tiled upscaling: the plan, the blend weights, tiled == untiled, the OOM ladder."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from naiup.engine.upscale.tiles import MIN_TILE, axis_weights, plan_axis
from naiup.engine.upscale.upscaler import Upscaler
from naiup.errors import EngineError, OutOfMemoryError

TINY_RF = 4  # receptive-field radius of the tiny conftest model, input px


def _noise(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def _band_mask(size: int, spans: list[tuple[int, int]], scale: int) -> np.ndarray:
    """True where two tiles overlap (output px)."""
    cover = np.zeros(size * scale, dtype=int)
    for a, b in spans:
        cover[a * scale : b * scale] += 1
    return cover > 1


@settings(max_examples=200, deadline=None)
@given(size=st.integers(1, 3000), tile=st.integers(32, 1024), overlap=st.integers(0, 64))
def test_tile_plan_covers_the_axis_with_even_overlapping_tiles(size, tile, overlap):
    spans = plan_axis(size, tile, overlap)
    assert spans[0][0] == 0 and spans[-1][1] == size
    lengths = {b - a for a, b in spans}
    assert len(lengths) == 1 and lengths.pop() <= max(tile, size if len(spans) == 1 else 0)
    for (a0, b0), (a1, _b1) in itertools.pairwise(spans):
        assert a0 < a1 and b0 - a1 >= min(overlap, tile // 4)


@given(length=st.integers(1, 600), feather=st.integers(0, 300), lo=st.booleans(), hi=st.booleans())
def test_blend_weights_are_positive_and_one_away_from_neighbours(length, feather, lo, hi):
    w = axis_weights(length, feather, lo, hi)
    assert w.shape == (length,) and (w > 0).all() and (w <= 1).all()
    f = min(feather, length // 2)
    assert np.all(w[f : length - f] == 1.0)


def test_tiled_equals_untiled_outside_the_blend_band(tiny_x2: Upscaler):
    image = _noise(200, 150)
    whole = np.asarray(replace(tiny_x2, tile=4096).upscale(image, 2), dtype=int)
    tiled_up = replace(tiny_x2, tile=64, overlap=16)
    tiled = np.asarray(tiled_up.upscale(image, 2), dtype=int)
    band = _band_mask(150, plan_axis(150, 64, 16), 2)[:, None] | _band_mask(200, plan_axis(200, 64, 16), 2)
    assert band.any() and (~band).any()
    # Outside the band one tile alone covers the pixel and its receptive field lies inside that tile.
    assert np.abs(tiled - whole)[~band].max() <= 1  # fp32 summation order only
    # Inside it the cross-fade hides the seam: small error, nothing like the 50+ of a hard cut.
    assert np.abs(tiled - whole)[band].mean() < 2.0


def test_tiling_with_zero_overlap_would_show_seams(tiny_x2: Upscaler):
    # Guards the test above: the tiny model's edge effects are visible when nothing blends them.
    image = _noise(128, 128)
    whole = np.asarray(replace(tiny_x2, tile=4096).upscale(image, 2), dtype=int)
    cut = np.asarray(replace(tiny_x2, tile=64, overlap=0).upscale(image, 2), dtype=int)
    assert np.abs(cut - whole).max() > 4


def test_realcugan_tiled_matches_untiled_on_a_real_nai_image(realcugan: Upscaler, nai_patch):
    image = nai_patch
    whole = np.asarray(replace(realcugan, tile=4096).upscale(image, 2), dtype=np.float64)
    tiled = np.asarray(replace(realcugan, tile=96, overlap=24).upscale(image, 2), dtype=np.float64)
    assert whole.shape == tiled.shape == (256, 256, 3)
    band = _band_mask(128, plan_axis(128, 96, 24), 2)
    band2d = band[:, None] | band[None, :]

    # Real-CUGAN's SE blocks average over the whole tile, so a tile's output differs slightly from the
    # untiled one everywhere, not just at seams (measured 44 dB, mean |diff| 0.72/255 with 96 px tiles on
    # this 128 px patch; real tiles are 512+ px and closer). The exact band property is proven above.
    def psnr(a: np.ndarray, b: np.ndarray) -> float:
        return float(10 * np.log10(255.0**2 / max(np.mean((a - b) ** 2), 1e-12)))

    assert psnr(tiled[~band2d], whole[~band2d]) > 40
    assert psnr(tiled, whole) > 40
    assert np.abs(tiled - whole).mean() < 1.0


class _OomAboveSide:
    """A real model that runs out of 'memory' for tiles larger than `side`, like a GPU would."""

    def __init__(self, inner, side: int) -> None:
        self.inner, self.side, self.scale, self.sizes = inner, side, inner.scale, []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(max(x.shape[2:]))
        if max(x.shape[2:]) > self.side:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner(x)

    def to(self, *args):
        return self


def test_out_of_memory_halves_the_tile_until_it_fits(tiny_x2: Upscaler):
    image = _noise(300, 260)
    net = _OomAboveSide(tiny_x2.net, side=150)
    out = replace(tiny_x2, net=net, tile=512).upscale(image, 2)
    expected = replace(tiny_x2, tile=128).upscale(image, 2)
    assert np.array_equal(np.asarray(out), np.asarray(expected))
    assert max(net.sizes) > 150 and net.sizes[-1] <= 150  # it did fail first, then shrank


def test_out_of_memory_at_the_smallest_tile_on_cpu_is_an_engine_error(tiny_x2: Upscaler):
    net = _OomAboveSide(tiny_x2.net, side=8)
    with pytest.raises(OutOfMemoryError, match=f"out of memory even at tile {MIN_TILE}"):
        replace(tiny_x2, net=net, tile=256).upscale(_noise(300, 300), 2)


class _NanNet:
    scale = 2

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((1, 3, x.shape[2] * 2, x.shape[3] * 2), float("nan"))


def test_a_model_producing_nan_is_an_engine_error(tiny_x2: Upscaler):
    with pytest.raises(EngineError, match="NaN"):
        replace(tiny_x2, net=_NanNet()).upscale(_noise(40, 40), 2)


def test_tile_size_follows_free_memory():
    from naiup.engine.upscale.tiles import MAX_TILE, tile_for_memory

    gib = 1 << 30
    # Real-CUGAN fp16 ~3500 B/px: 4 GiB free -> ~846 px -> 832 (multiple of 64).
    assert tile_for_memory(4 * gib, (4000, 4000), 3500.0, torch.float16) == 832
    assert tile_for_memory(4 * gib, (4000, 4000), 3500.0, torch.float32) < 832  # fp32 needs twice as much
    assert tile_for_memory(80 * gib, (1024, 1024), 3500.0, torch.float16) == 1024  # whole image fits
    assert tile_for_memory(100 * gib, (20000, 20000), 500.0, torch.float16) == MAX_TILE
    assert tile_for_memory(10 * (1 << 20), (4000, 4000), 7800.0, torch.float16) == MIN_TILE


class _OomOffCpu:
    """Runs out of memory on any accelerator; on CPU it is the tiny real model."""

    def __init__(self, inner) -> None:
        self.inner, self.scale, self.moves = inner, inner.scale, []

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            raise torch.OutOfMemoryError("CUDA out of memory")
        return self.inner(x)

    def to(self, arg):
        self.moves.append(arg)
        return self


def test_out_of_memory_at_the_smallest_tile_falls_back_to_cpu_fp32_for_that_image_only(tiny_x2: Upscaler):
    # "meta" stands in for an accelerator: tensors move there, and the model refuses to run there.
    meta, cpu = torch.device("meta"), torch.device("cpu")
    net = _OomOffCpu(tiny_x2.net)
    up = replace(tiny_x2, net=net, device=meta, dtype=torch.float16, tile=512)
    image = _noise(300, 200)
    expected = np.asarray(replace(tiny_x2, tile=512).upscale(image, 2))
    assert np.array_equal(np.asarray(up.upscale(image, 2)), expected)
    # Smaller tiles on the accelerator first, then the CPU for the rest of this image; then back
    # (cast on the host, then moved), so the next image starts on the accelerator again.
    assert net.moves == [cpu, torch.float32, torch.float16, meta]
    assert up.device == meta and up.dtype == torch.float16
    net.moves.clear()
    assert np.array_equal(np.asarray(up.upscale(image, 2)), expected)
    assert net.moves == [cpu, torch.float32, torch.float16, meta]


class _StuckOnCpu(_OomOffCpu):
    """_OomOffCpu whose first `fail` moves back to the accelerator run out of memory."""

    def __init__(self, inner, fail: int) -> None:
        super().__init__(inner)
        self.fail = fail

    def to(self, arg):
        self.moves.append(arg)
        if isinstance(arg, torch.device) and arg.type != "cpu" and self.fail:
            self.fail -= 1
            raise torch.OutOfMemoryError("CUDA out of memory")
        return self


def test_a_failed_way_back_from_the_cpu_fallback_keeps_the_image_and_is_retried_next_time(tiny_x2: Upscaler):
    # The move back after a CPU fallback may itself run out of memory: the image is done and must
    # come back, the net must end up wholly in one place (the CPU, fp32), and the next image tries
    # the accelerator again.
    meta, cpu = torch.device("meta"), torch.device("cpu")
    net = _StuckOnCpu(tiny_x2.net, fail=1)
    up = replace(tiny_x2, net=net, device=meta, dtype=torch.float16, tile=512)
    image = _noise(300, 200)
    expected = np.asarray(replace(tiny_x2, tile=512).upscale(image, 2))
    assert np.array_equal(np.asarray(up.upscale(image, 2)), expected)
    assert net.moves == [cpu, torch.float32, torch.float16, meta, cpu, torch.float32]
    net.moves.clear()
    assert np.array_equal(np.asarray(up.upscale(image, 2)), expected)
    # Back first (that works now), then this image's own fallback and way back.
    assert net.moves == [torch.float16, meta, cpu, torch.float32, torch.float16, meta]
    assert up.device == meta and up.dtype == torch.float16


def test_channels_last_layout_gives_the_same_pixels(tiny_x2: Upscaler):
    # On CUDA conv models run NHWC; the layout must never change the result.
    image = _noise(90, 70)
    nchw = np.asarray(replace(tiny_x2, tile=64).upscale(image, 2), dtype=int)
    tiny_x2.net.model.to(memory_format=torch.channels_last)
    nhwc = np.asarray(replace(tiny_x2, tile=64, channels_last=True).upscale(image, 2), dtype=int)
    assert np.abs(nhwc - nchw).max() <= 1
