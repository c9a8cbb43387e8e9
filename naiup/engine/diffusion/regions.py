"""Regional prompts on the tiled canvas: NovelAI character positions as soft masks, one UNet pass per
region that has weight in a tile, blended like the tiles are.

CONTRACT:
    region_masks(regions, latent_hw, image_hw, px_per_latent=8) -> fp32 (1 + R, h, w)
        row 0 the background, row r the r-th region; every pixel's column sums to 1
    tile_regions(plan, masks) -> list[tuple[int, ...]]: per tile, the mask rows with weight in it
    make_region_denoiser(unet, conds, unconds, cfg, call, added, added_uncond, control) -> RegionDenoiser
        RegionDenoiser(x (B,4,h,w), t, which (B,) long, boxes=None) -> model output (B,4,h,w), CFG
        applied, sample b conditioned on region which[b]; all conds one length (pad_contexts);
        `boxes` (each tile's latent box, from the tiled loop) cut the ControlNet's hint per tile
    region_predictor(denoiser, plan, masks, method, batch_size, fixed_batch) -> GuidedDenoiser
    region_predictor_for(denoiser, masks, preset, latent_hw) -> GuidedDenoiser (the Refiner's default)

The blend is MultiDiffusion's region formulation applied to model outputs: at latent pixel p,
    eps(p) = sum over tiles i and regions r of w_i(p) * m_r(p) * eps_{i,r}(p) / sum of the same weights,
w_i the tile's blend weight, m_r the region's mask, eps_{i,r} the UNet's output for tile i with region
r's prompt. The weights factor (sum_i,r w_i m_r = sum_i w_i * sum_r m_r), so each (tile, region)
weight is the normalised tile weight times the normalised mask, both precomputed. The caller still
makes ONE scheduler step on the whole canvas, so the sampler's noise stays canvas-wide.

Masks: a character's mask is a soft rectangle, `size` of the image's width and height, centred on
its position: 1 over the inner half of each half-extent, then a raised cosine to exactly 0 at the
edge (smooth, and exactly 0 outside, so tiles beyond it never run that prompt). The background is
what the characters leave, max(0, 1 - sum of character masks), not 1 everywhere: a character's
prompt already holds the base caption, and mixing the background in at its centre would halve the
very guidance that keeps one character's hair colour out of another. Where characters overlap past
1 they share the pixel in proportion; no pixel is without weight (columns sum to 1 after normalising,
and before it the sum is max(1, sum of characters) >= 1).

A tile runs one UNet sample per region with weight in it, background included only where it has
weight: work items (tile, region) in tile-major order are batched together, whatever their region,
in fixed-shape calls (the last one padded), so a CUDA-graphed UNet keeps to the same few batch
shapes as without regions (tiling.batch_shape) and few slots are padding. Skipping a region where
its weight is exactly 0 changes nothing in the sum: it is the same blend for less work. Mixing
regions in one call needs one context length: the Refiner pads every region's embedding to the
longest with empty-prompt chunks, as A1111 pads a cond/uncond pair.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from naiup.config import Preset
from naiup.engine.diffusion.control import TileControl, controlled
from naiup.engine.diffusion.tiling import (
    Box,
    TilePlan,
    batch_shape,
    blend_weights,
    plan_tiles,
    weighted_tiles,
)
from naiup.engine.diffusion.unet_graphs import UnetCall
from naiup.engine.image_prompts import Region
from naiup.errors import EngineError

__all__ = [
    "RegionDenoiser",
    "make_region_denoiser",
    "pad_contexts",
    "region_masks",
    "region_predictor",
    "region_predictor_for",
    "tile_regions",
]

GuidedDenoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
RegionDenoiser = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
# Share of a region's half-extent (from the edge inwards) over which its mask falls from 1 to 0.
FALLOFF = 0.5


def _profile(coords: torch.Tensor, centre: float, half: float) -> torch.Tensor:
    """1 within (1 - FALLOFF) * half of the centre, a raised cosine down to 0 at `half`, 0 beyond."""
    u = (coords - centre).abs() / half
    ramp = ((u - (1 - FALLOFF)) / FALLOFF).clamp(0, 1)
    return 0.5 * (1 + torch.cos(math.pi * ramp))


def region_masks(
    regions: Sequence[Region], latent_hw: tuple[int, int], image_hw: tuple[int, int], px_per_latent: int = 8
) -> torch.Tensor:
    """(1 + R, h, w) fp32 weights: the background, then each region; they sum to 1 at every pixel.

    Positions are fractions of `image_hw` (the image before padding to the latent grid), measured at
    the centre of each latent pixel, so padded columns past the image's edge continue the mask."""
    h, w = latent_hw
    img_h, img_w = image_hw
    # fp64: the cosine's tail and the normalisation keep their digits; fp32 only at the end.
    ys = (torch.arange(h, dtype=torch.float64) + 0.5) * px_per_latent / img_h
    xs = (torch.arange(w, dtype=torch.float64) + 0.5) * px_per_latent / img_w
    chars = []
    for r in regions:
        half = r.size / 2
        chars.append(torch.outer(_profile(ys, r.center[1], half), _profile(xs, r.center[0], half)))
    fg = torch.stack(chars) if chars else torch.zeros(0, h, w, dtype=torch.float64)
    background = (1 - fg.sum(0)).clamp(min=0)
    raw = torch.cat([background[None], fg])
    return (raw / raw.sum(0)).to(torch.float32)


def tile_regions(plan: TilePlan, masks: torch.Tensor) -> list[tuple[int, ...]]:
    """Per tile (plan.origins order), the mask rows (0 = background) with any weight in that tile."""
    th, tw = plan.tile_h, plan.tile_w
    out = []
    for y, x in plan.origins:
        peak = masks[:, y : y + th, x : x + tw].amax(dim=(1, 2))
        out.append(tuple(int(r) for r in torch.nonzero(peak > 0).flatten()))
    return out


def pad_contexts(contexts: Sequence[torch.Tensor], fills: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Each (1, 77*k, d) context grown to the longest with copies of its fill chunk (1, 77, d): the
    empty prompt's embedding (A1111's pad_cond), or zeros for SDXL's all-zero empty negative."""
    n = max(c.shape[1] for c in contexts)
    out = []
    for c, fill in zip(contexts, fills, strict=True):
        missing = (n - c.shape[1]) // fill.shape[1]
        out.append(torch.cat([c, *[fill.to(c.device, c.dtype)] * missing], dim=1) if missing else c)
    return out


def make_region_denoiser(
    unet: torch.nn.Module,
    conds: Sequence[torch.Tensor],
    unconds: Sequence[torch.Tensor] | None,
    cfg: float,
    call: UnetCall | None = None,
    added: Sequence[dict[str, torch.Tensor]] | None = None,
    added_uncond: Sequence[dict[str, torch.Tensor]] | None = None,
    control: TileControl | None = None,
) -> RegionDenoiser:
    """UNet + CFG with a prompt per sample: region r's context is conds[r] (uncond unconds[r]), all of
    one length; `added`: region r's SDXL added_cond_kwargs (batch 1 each). fp32 in and out, the UNet's
    dtype inside; like refine.make_guided_denoiser, which is this with one region.

    `control`: a ControlNet run beside each UNet call on the same samples, each with its own region's
    context and its own tile's hint crop (from `boxes`), so a character's tile is held to the
    picture's structure under the character's prompt, as the background's tile is under its own."""
    dtype, device = unet.dtype, unet.device
    run = call or UnetCall(unet, graphs=False)
    guided_cfg = cfg > 1.0 and unconds is not None
    cond = torch.cat(list(conds)).to(device, dtype)  # (R, L, d)
    uncond = torch.cat(list(unconds)).to(device, dtype) if guided_cfg else None  # type: ignore[arg-type]

    def stacked(per_region: Sequence[dict[str, torch.Tensor]] | None) -> dict[str, torch.Tensor]:
        if not per_region:
            return {}
        return {k: torch.cat([a[k] for a in per_region]).to(device, dtype) for k in per_region[0]}

    extra, extra_u = stacked(added), stacked(added_uncond if guided_cfg else None)

    unet = controlled(run, control)

    def guided(
        x: torch.Tensor, t: torch.Tensor, which: torch.Tensor, boxes: Sequence[Box] | None = None
    ) -> torch.Tensor:
        idx = which.to(device)
        xin = x.to(dtype)
        if not guided_cfg:
            kw = {"added_cond_kwargs": {k: v[idx] for k, v in extra.items()}} if extra else {}
            return unet(xin, t, cond[idx], kw, boxes, 1)
        assert uncond is not None
        emb = torch.cat([uncond[idx], cond[idx]])  # matches cat([x, x]): uncond half first
        kw = {}
        if extra:
            kw = {"added_cond_kwargs": {k: torch.cat([extra_u[k][idx], v[idx]]) for k, v in extra.items()}}
        eps_u, eps_c = unet(torch.cat([xin, xin]), t, emb, kw, boxes, 2).chunk(2)
        return eps_u + cfg * (eps_c - eps_u)

    guided.fixed_shapes = run.fixed_shapes  # type: ignore[attr-defined]
    guided.takes_boxes = True  # type: ignore[attr-defined]
    return guided


def region_predictor(
    denoiser: RegionDenoiser,
    plan: TilePlan,
    masks: torch.Tensor,
    method: str = "mixture",
    batch_size: int = 8,
    fixed_batch: bool | None = None,
) -> GuidedDenoiser:
    """A GuidedDenoiser for the whole canvas: every (tile, region with weight in it) through
    `denoiser` in fixed-shape batches, outputs blended with tile weight x region mask in fp32.
    fixed_batch (default: `denoiser.fixed_shapes`): see tiling.batch_shape. A `denoiser` with a true
    `takes_boxes` is also given `boxes=`, as tiling.tiled_predictor gives them."""
    if tuple(masks.shape[1:]) != (plan.latent_h, plan.latent_w):
        raise EngineError(
            f"region masks are {tuple(masks.shape[1:])}, the tile plan {plan.latent_h}x{plan.latent_w}"
        )
    tile_w = blend_weights(plan, method)
    th, tw = plan.tile_h, plan.tile_w
    origins = plan.origins
    items: list[tuple[int, int]] = []  # (tile, region), tile-major
    weights = []
    for k, active in enumerate(tile_regions(plan, masks)):
        y, x0 = origins[k]
        for r in active:
            items.append((k, r))
            weights.append(tile_w[k] * masks[r, y : y + th, x0 : x0 + tw])
    fixed = getattr(denoiser, "fixed_shapes", False) if fixed_batch is None else fixed_batch
    takes_boxes = getattr(denoiser, "takes_boxes", False)

    def run(crops: torch.Tensor, t: torch.Tensor, regions: list[int], boxes: list[Box]) -> torch.Tensor:
        which = torch.tensor(regions).repeat_interleave(crops.shape[0] // len(regions))
        if takes_boxes:  # each sample's ControlNet hint is cut from its own tile's box
            return denoiser(crops, t, which, boxes=boxes)  # type: ignore[call-arg]
        return denoiser(crops, t, which)

    per_call = batch_shape(len(items), batch_size, fixed)
    predict = weighted_tiles(run, plan, items, torch.stack(weights), per_call)
    predict.work = items  # type: ignore[attr-defined]  # (tile, region) per UNet sample, for the bench
    return predict


def region_predictor_for(
    denoiser: RegionDenoiser, masks: torch.Tensor, preset: Preset, latent_hw: tuple[int, int]
) -> GuidedDenoiser:
    """The Refiner's default: the preset's tile grid and method. Unlike tiling.predictor_for, a
    one-tile canvas also goes through the blend, since its regions still need mixing."""
    plan = plan_tiles(latent_hw[0], latent_hw[1], preset.tile_size, preset.overlap)
    return region_predictor(denoiser, plan, masks, preset.tile_method, preset.tile_batch_size)
