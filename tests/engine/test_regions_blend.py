"""Regional prompts on the tiled canvas: masks, the blend against its closed form, and which prompts
each tile runs (the Refiner runs are in test_regions_refiner.py)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from naiup.engine.diffusion.regions import (
    make_region_denoiser,
    pad_contexts,
    region_masks,
    region_predictor,
    tile_regions,
)
from naiup.engine.diffusion.tiling import plan_tiles
from naiup.engine.image_prompts import Region

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WIDTH = 12  # context width of the stand-in "text encoder"


class PixelUNet(torch.nn.Module):
    """A UNet stand-in whose output at a latent pixel depends only on the latent there, the timestep
    and the prompt (its context's mean over tokens, and SDXL's pooled embedding): tiled and regional
    blends of it then have a closed form. Called like diffusers' UNet2DConditionModel."""

    def __init__(self, pooled: int = 0) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.mix = torch.nn.Conv2d(4, 4, 1)
        self.text = torch.nn.Linear(WIDTH, 8)
        self.pool = torch.nn.Linear(pooled, 8) if pooled else None

    @property
    def dtype(self) -> torch.dtype:
        return self.mix.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.mix.weight.device

    def forward(self, sample, timestep, encoder_hidden_states, added_cond_kwargs=None):
        emb = self.text(encoder_hidden_states.mean(1))
        if self.pool is not None:
            # Size ids are pixels (hundreds): scaled down so outputs stay O(1) and 1e-6 means fp32 exact.
            ids = added_cond_kwargs["time_ids"].mean(1, keepdim=True) / 1000
            emb = emb + self.pool(added_cond_kwargs["text_embeds"]) + ids
        # Unit-scale outputs, like a real eps prediction: 1e-6 is then a few fp32 ulps, not fewer.
        emb = 0.25 * emb
        gain, bias = emb[:, :4, None, None], emb[:, 4:, None, None]
        # Prompt-dependent in both a scale and an offset, so a wrong region weight cannot cancel out.
        return SimpleNamespace(sample=self.mix(sample) * (1 + timestep.float() / 1000) * gain + bias)


class Recording(torch.nn.Module):
    """Wraps a UNet and records, per sample of every call, the tile origin and the region: the spy's
    canvas holds each latent pixel's row and column in channels 0 and 1, and region r's context is
    filled with r."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls: list[list[tuple[tuple[int, int], int]]] = []
        self.shapes: list[tuple[int, ...]] = []

    @property
    def dtype(self) -> torch.dtype:
        return self.inner.dtype

    @property
    def device(self) -> torch.device:
        return self.inner.device

    def forward(self, sample, timestep, encoder_hidden_states, **kw):
        self.shapes.append(tuple(sample.shape))
        self.calls.append(
            [
                ((int(s[0, 0, 0]), int(s[1, 0, 0])), int(c[0, 0]))
                for s, c in zip(sample, encoder_hidden_states, strict=True)
            ]
        )
        return self.inner(sample, timestep, encoder_hidden_states, **kw)


def _profile(coords: np.ndarray, centre: float, half: float) -> np.ndarray:
    # Written out from the documented shape: flat over the inner half, raised cosine to 0 at the edge.
    u = np.abs(coords - centre) / half
    out = np.where(u <= 0.5, 1.0, 0.5 * (1 + np.cos(math.pi * (u - 0.5) / 0.5)))
    return np.where(u >= 1, 0.0, out)


def _expected_masks(regions, latent_hw, image_hw) -> np.ndarray:
    """Background = what the characters leave; then everything divided by the column sum."""
    ys = (np.arange(latent_hw[0]) + 0.5) * 8 / image_hw[0]
    xs = (np.arange(latent_hw[1]) + 0.5) * 8 / image_hw[1]
    chars = [
        np.outer(_profile(ys, r.center[1], r.size / 2), _profile(xs, r.center[0], r.size / 2))
        for r in regions
    ]
    fg = np.stack(chars)
    raw = np.concatenate([np.maximum(0, 1 - fg.sum(0))[None], fg])
    return raw / raw.sum(0)


def _region(x: float, y: float, size: float = 0.4) -> Region:
    return Region(prompt=f"char at {x},{y}", negative_prompt="", center=(x, y), size=size)


REGIONS = [_region(0.3, 0.3), _region(0.5, 0.5, 0.5), _region(0.9, 0.8, 0.3)]


def test_masks_have_the_documented_shape_and_cover_every_pixel():
    latent, image = (45, 61), (360, 488)
    masks = region_masks(REGIONS, latent, image)
    assert masks.dtype == torch.float32 and masks.shape == (4, 45, 61)
    assert torch.allclose(masks.sum(0), torch.ones(45, 61), atol=1e-6)
    np.testing.assert_allclose(masks.numpy(), _expected_masks(REGIONS, latent, image), atol=1e-6)
    # A character alone at its centre: its prompt only; far from all of them: the background only.
    solo = region_masks([_region(0.5, 0.5)], (40, 40), (320, 320))
    assert solo[1, 19:21, 19:21].eq(1).all() and solo[0, 19:21, 19:21].eq(0).all()
    assert solo[0, :3, :].eq(1).all() and solo[1, :3, :].eq(0).all()
    # Smooth: the falloff here is 4 latent px (half of the 8 px half-extent), and a raised cosine over
    # n px steps by at most pi / (2n) between neighbours; a hard edge would step by 1.
    steepest = math.pi / (2 * 4) + 1e-6
    assert solo.diff(dim=2).abs().max() <= steepest and solo.diff(dim=1).abs().max() <= steepest


def test_no_regions_is_all_background():
    masks = region_masks([], (8, 9), (64, 72))
    assert masks.shape == (1, 8, 9) and masks.eq(1).all()


def _contexts(n: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return [torch.randn(1, 77, WIDTH, generator=g) for _ in range(n)]


@pytest.mark.parametrize("method", ["mixture", "multidiffusion"])
@pytest.mark.parametrize(
    ("latent", "tile", "overlap", "batch", "cfg", "sdxl"),
    [
        ((45, 61), 16, 4, 5, 1.0, False),  # awkward sizes, ragged last batch padded
        ((40, 56), 16, 8, 3, 1.5, False),  # CFG: uncond and cond per region
        ((33, 47), 16, 4, 8, 1.5, True),  # SDXL: pooled embedding per region, CFG
        ((24, 24), 24, 0, 4, 1.0, False),  # one tile: the regions still blend
    ],
)
def test_blend_equals_the_mask_weighted_mix_of_the_region_predictions(
    method, latent, tile, overlap, batch, cfg, sdxl
):
    unet = PixelUNet(pooled=6 if sdxl else 0).eval()
    image = (latent[0] * 8 - 3, latent[1] * 8 - 5)  # padded to the latent grid, like the Refiner's
    regions = REGIONS
    conds, unconds = _contexts(4), _contexts(8)[4:]
    added = added_u = None
    if sdxl:
        ids = torch.tensor([[8.0 * latent[0], 8.0 * latent[1], 0, 0, 8.0 * latent[0], 8.0 * latent[1]]])
        added = [{"text_embeds": torch.randn(1, 6), "time_ids": ids} for _ in range(4)]
        added_u = [{"text_embeds": torch.randn(1, 6), "time_ids": ids} for _ in range(4)]
    denoiser = make_region_denoiser(unet, conds, unconds, cfg, added=added, added_uncond=added_u)
    masks = region_masks(regions, latent, image)
    predict = region_predictor(denoiser, plan_tiles(*latent, tile, overlap), masks, method, batch)
    x = torch.randn(1, 4, *latent, generator=torch.Generator().manual_seed(1))
    t = torch.tensor(499)
    with torch.no_grad():
        got = predict(x, t)

        # The closed form: region r's guided prediction on the whole canvas, mixed by the masks.
        def full(ctx, extra):
            kw = {"added_cond_kwargs": extra} if extra else {}
            return unet(x, t, ctx, **kw).sample

        expected = torch.zeros_like(x)
        weights = torch.from_numpy(_expected_masks(regions, latent, image)).float()
        for r in range(4):
            eps = full(conds[r], added and added[r])
            if cfg > 1:
                eps_u = full(unconds[r], added_u and added_u[r])
                eps = eps_u + cfg * (eps - eps_u)
            expected += weights[r] * eps
    assert got.dtype == torch.float32
    assert torch.allclose(got, expected, rtol=0, atol=1e-6), (got - expected).abs().max()


def _spy_canvas(h: int, w: int) -> torch.Tensor:
    x = torch.zeros(1, 4, h, w)
    x[0, 0] = torch.arange(h, dtype=torch.float32)[:, None]
    x[0, 1] = torch.arange(w, dtype=torch.float32)[None, :]
    return x


def _box_touches_tile(region: Region, origin, tile, latent, image) -> bool:
    """Whether any latent pixel centre of the tile lies strictly inside the region's box."""
    (y0, x0), (th, tw) = origin, tile
    ys = (np.arange(y0, y0 + th) + 0.5) * 8 / image[0]
    xs = (np.arange(x0, x0 + tw) + 0.5) * 8 / image[1]
    half = region.size / 2
    return bool((np.abs(ys - region.center[1]) < half).any() and (np.abs(xs - region.center[0]) < half).any())


def test_tiles_away_from_a_character_never_run_its_prompt():
    latent, image = (40, 56), (320, 448)
    regions = [_region(0.15, 0.15, 0.3), _region(0.85, 0.75, 0.3)]
    spy = Recording(PixelUNet())
    conds = [torch.full((1, 77, WIDTH), float(r)) for r in range(3)]  # the spy reads r back
    denoiser = make_region_denoiser(spy, conds, None, 1.0)
    plan = plan_tiles(*latent, 16, 4)
    masks = region_masks(regions, latent, image)
    with torch.no_grad():
        region_predictor(denoiser, plan, masks, "mixture", 4)(_spy_canvas(*latent), torch.tensor(99))

    ran: dict[tuple[int, int], set[int]] = {o: set() for o in plan.origins}
    for call in spy.calls:
        for origin, region in call:
            ran[origin].add(region)
    tile = (plan.tile_h, plan.tile_w)
    for origin in plan.origins:
        for r, region in enumerate(regions, 1):
            touches = _box_touches_tile(region, origin, tile, latent, image)
            assert (r in ran[origin]) == touches, (origin, r)
        # The background runs wherever the characters leave it weight.
        y, x = origin
        assert (0 in ran[origin]) == bool((masks[0, y : y + 16, x : x + 16] > 0).any()), origin
    # Each character runs on a few corner tiles only, and both corners were reached.
    assert 0 < sum(1 in s for s in ran.values()) < plan.count // 2
    assert 0 < sum(2 in s for s in ran.values()) < plan.count // 2
    # Fixed-shape calls: every call the same batch, the last one padded.
    assert len(set(spy.shapes)) == 1 and spy.shapes[0][0] == 4
    # tile_regions says the same thing the spy saw.
    assert [set(s) for s in tile_regions(plan, masks)] == [ran[o] for o in plan.origins]


def test_every_call_keeps_one_shape_with_graph_style_fixed_batches():
    latent, image = (40, 56), (320, 448)
    spy = Recording(PixelUNet())
    conds = [torch.full((1, 77, WIDTH), float(r)) for r in range(3)]
    denoiser = make_region_denoiser(spy, conds, None, 1.0)
    plan = plan_tiles(*latent, 16, 4)
    masks = region_masks([_region(0.15, 0.15, 0.3), _region(0.85, 0.75, 0.3)], latent, image)
    predict = region_predictor(denoiser, plan, masks, "mixture", 16, fixed_batch=True)
    with torch.no_grad():
        predict(_spy_canvas(*latent), torch.tensor(99))
    samples = sum(len(c) for c in spy.calls)
    assert set(spy.shapes) == {(16, 4, 16, 16)} and samples == 16 * len(spy.calls)
    assert len(predict.work) <= samples < len(predict.work) + 16


def test_pad_contexts_grows_every_context_to_the_longest_with_its_fill():
    short, long = torch.ones(1, 77, 3), torch.full((1, 154, 3), 2.0)
    empty, zeros = torch.full((1, 77, 3), 7.0), torch.zeros(1, 77, 3)
    a, b, c = pad_contexts([short, long, short], [empty, empty, zeros])
    assert a.shape == b.shape == c.shape == (1, 154, 3)
    assert a[:, 77:].eq(7).all() and b is long and c[:, 77:].eq(0).all()
