"""Tile grid and blend weights: coverage, full-size tiles, weights summing to 1 in fp32."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from naiup.engine.diffusion.tiling import blend_weights, paste_sum, plan_tiles


def _check_plan(h: int, w: int, tile: int, overlap: int) -> None:
    plan = plan_tiles(h, w, tile, overlap)
    assert plan.tile_h == min(tile, h) and plan.tile_w == min(tile, w)
    for starts, length, size in ((plan.starts_y, h, plan.tile_h), (plan.starts_x, w, plan.tile_w)):
        assert starts[0] == 0 and starts[-1] == length - size  # last tile flush with the edge
        assert list(starts) == sorted(set(starts))
        assert all(0 <= s <= length - size for s in starts)  # every tile full-size, inside
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        if size < length:
            assert all(size - g >= overlap for g in gaps)  # actual overlap >= requested
            assert max(gaps) - min(gaps) <= 1  # evenly spread
    coverage = paste_sum(plan, torch.ones(plan.count, plan.tile_h, plan.tile_w))
    assert coverage.min() >= 1


@pytest.mark.parametrize(
    ("h", "w", "tile", "overlap"),
    [
        (65, 97, 64, 32),
        (208, 304, 64, 32),
        (208, 304, 96, 48),
        (64, 64, 64, 32),
        (65, 64, 64, 8),
        (1, 1, 64, 32),
        (40, 30, 64, 32),
        (64 + 8 * 5 + 3, 200, 64, 16),
        (416, 608, 64, 32),
        (1, 161, 41, 30),
    ],  # float step 10.909.. once left the last column uncovered
)
def test_grid_covers_every_latent_pixel_with_full_size_tiles(h, w, tile, overlap):
    _check_plan(h, w, tile, overlap)


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 300), w=st.integers(1, 300), tile=st.integers(4, 128), frac=st.floats(0, 0.9))
def test_grid_invariants_hold_for_any_size(h, w, tile, frac):
    _check_plan(h, w, tile, int(tile * frac))


def test_worked_grid_matches_the_spec_table():
    # A1111's symmetric grid: 2048 px (256 latent), tile 64 / overlap 32 -> 7 per axis, starts 0,32,...,192.
    plan = plan_tiles(256, 256, 64, 32)
    assert plan.starts_x == (0, 32, 64, 96, 128, 160, 192) and plan.count == 49
    assert plan_tiles(256, 256, 96, 32).starts_x == (0, 53, 106, 160)


def test_smaller_canvas_is_one_tile_equal_to_the_canvas():
    plan = plan_tiles(40, 30, 64, 32)
    assert (plan.count, plan.tile_h, plan.tile_w) == (1, 40, 30)


@settings(max_examples=40, deadline=None)
@given(
    h=st.integers(1, 200),
    w=st.integers(1, 200),
    tile=st.integers(8, 96),
    frac=st.floats(0, 0.75),
    method=st.sampled_from(["mixture", "multidiffusion"]),
)
def test_blend_weights_sum_to_one_everywhere(h, w, tile, frac, method):
    plan = plan_tiles(h, w, tile, int(tile * frac))
    weights = blend_weights(plan, method)
    assert weights.dtype == torch.float32 and torch.isfinite(weights).all()
    total = paste_sum(plan, weights.double())
    assert torch.allclose(total, torch.ones_like(total), atol=1e-6)


def test_mixture_weights_have_no_zero_at_corners_and_blend_fp16_without_nan():
    plan = plan_tiles(208, 304, 96, 32)
    weights = blend_weights(plan, "mixture")
    # Every pixel is owned by some tile with a non-negligible share (no 0/0 at image corners).
    owned = paste_sum(plan, (weights > 1e-3).float())
    assert owned.min() >= 1
    eps = torch.full((plan.count, 4, 96, 96), 3.0, dtype=torch.float16)
    acc = paste_sum(plan, eps.float() * weights[:, None])
    assert torch.isfinite(acc).all() and torch.allclose(acc, torch.full_like(acc, 3.0), atol=1e-5)


def test_gaussian_weights_are_mirror_symmetric_across_the_grid():
    # 2x2 symmetric grid: tile 3 is tile 0 mirrored on both axes only if each profile is centred at
    # (L-1)/2 (the reference code's y centre L/2 skews it by half a pixel).
    plan = plan_tiles(100, 100, 64, 28)
    assert plan.starts_y == plan.starts_x == (0, 36)
    w = blend_weights(plan, "mixture")
    assert torch.allclose(w[0].flip(0).flip(1), w[3], atol=1e-6)
    assert torch.allclose(w[1].flip(0).flip(1), w[2], atol=1e-6)
