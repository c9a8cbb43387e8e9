"""Tiled diffusion: tile grid, blend weights, tiled predictor.

CONTRACT:
    plan_tiles(latent_h: int, latent_w: int, tile: int, overlap: int) -> TilePlan
        TilePlan(latent_h, latent_w, tile_h, tile_w, starts_y, starts_x); .origins, .count
    blend_weights(plan, method: "mixture" | "multidiffusion") -> fp32 (T, tile_h, tile_w), already
        normalised: paste_sum(plan, weights) == 1 at every latent pixel
    tiled_predictor(guided: GuidedDenoiser, plan: TilePlan, method: str = "mixture",
                    batch_size: int = 8, fixed_batch: bool | None = None) -> GuidedDenoiser
        (GuidedDenoiser: below; a `fixed_shapes` attribute on it asks for fixed_batch, a `takes_boxes`
        one for each batch's tile boxes)
    predictor_for(guided, preset, latent_hw) -> GuidedDenoiser: the Refiner's default
        `wrap_predictor`: the preset's tile_size/overlap/tile_method/tile_batch_size, and `guided`
        itself when the latent fits one tile (so a one-tile image runs exactly the untiled loop)

The predictor blends the *model output* of every tile on the full canvas; the caller then makes ONE
scheduler step on the whole latent, so LCM's fresh noise stays full-canvas and seeded (stepping each
tile would draw its own noise, and averaging independent noise where tiles overlap shrinks its
variance). LCM's step is linear in the model output, so blending outputs equals blending x0
estimates. Tiles go through `guided` in balanced batches of one fixed shape (the last batch is
padded), so a compiled / CUDA-graphed UNet never sees a new shape.
The UNet needs tiles that are a multiple of its downsampling (8 latent px for SD1.5): a canvas
smaller than a tile becomes one canvas-sized tile, so the caller pads such images.
Arguments are trusted: the config refuses tile sizes, overlaps, methods and batch sizes these
functions cannot use (at load, and at Refiner.refine for presets built in code).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from naiup.config import Preset
from naiup.errors import EngineError

__all__ = [
    "Box",
    "GuidedDenoiser",
    "TilePlan",
    "batch_for_memory",
    "batch_shape",
    "blend_weights",
    "paste_sum",
    "plan_tiles",
    "predictor_for",
    "tiled_predictor",
    "weighted_tiles",
]

# The refine loop's model call: (x (B,4,h,w), t) -> model output (B,4,h,w), CFG applied inside.
GuidedDenoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# Mixture of Diffusers' Gaussian: sigma = 0.1 * tile length, so tile edges sit 5 sigma from the centre.
_GAUSS_VAR = 0.01


@dataclass(frozen=True, slots=True)
class TilePlan:
    """Full-size tiles on a latent canvas; tile k's top-left is `origins[k]` (row-major order)."""

    latent_h: int
    latent_w: int
    tile_h: int
    tile_w: int
    starts_y: tuple[int, ...]
    starts_x: tuple[int, ...]

    @property
    def origins(self) -> list[tuple[int, int]]:
        return [(y, x) for y in self.starts_y for x in self.starts_x]

    @property
    def count(self) -> int:
        return len(self.starts_y) * len(self.starts_x)


def _axis_starts(length: int, tile: int, overlap: int) -> tuple[int, ...]:
    # Symmetric grid: n full-size tiles evenly spread, the last one flush with the edge, so the actual
    # overlap is never below the requested one and no strip is left uncovered.
    if tile >= length:
        return (0,)
    n = math.ceil((length - overlap) / (tile - overlap))
    # Integer arithmetic: floor(k * (L - t) / (n - 1)) in floats can land one short of the edge.
    return tuple(k * (length - tile) // (n - 1) for k in range(n))


def plan_tiles(latent_h: int, latent_w: int, tile: int, overlap: int) -> TilePlan:
    """Grid of `tile`² latent tiles overlapping by at least `overlap` (0 <= overlap < tile); a canvas
    smaller than a tile gets one tile clamped to the canvas on that axis."""
    tile_h, tile_w = min(tile, latent_h), min(tile, latent_w)
    return TilePlan(
        latent_h=latent_h,
        latent_w=latent_w,
        tile_h=tile_h,
        tile_w=tile_w,
        starts_y=_axis_starts(latent_h, tile_h, overlap),
        starts_x=_axis_starts(latent_w, tile_w, overlap),
    )


def _profile(length: int, method: str) -> torch.Tensor:
    if method == "multidiffusion":
        return torch.ones(length, dtype=torch.float64)
    # Centre at (L-1)/2 on both axes and normalise by each axis's own length: the reference code's
    # half-pixel y offset and width-normalised y profile skew non-square tiles (Mixture of
    # Diffusers' Gaussian: sigma = 0.1 L, so tile edges sit 5 sigma from the centre).
    pos = torch.arange(length, dtype=torch.float64)
    centre = (length - 1) / 2
    return torch.exp(-((pos - centre) ** 2) / (2 * _GAUSS_VAR * length * length))


def paste_sum(plan: TilePlan, tiles: torch.Tensor) -> torch.Tensor:
    """Sum tile values (T, ..., tile_h, tile_w) into a canvas (..., latent_h, latent_w)."""
    canvas = tiles.new_zeros((*tiles.shape[1:-2], plan.latent_h, plan.latent_w))
    for k, (y, x) in enumerate(plan.origins):
        canvas[..., y : y + plan.tile_h, x : x + plan.tile_w] += tiles[k]
    return canvas


def blend_weights(plan: TilePlan, method: str = "mixture") -> torch.Tensor:
    """Per-tile weights (T, tile_h, tile_w), fp32, already divided by their canvas sum, so pasting
    them with `paste_sum` gives 1 at every latent pixel. method: "mixture" | "multidiffusion"."""
    # Built and normalised in fp64: Gaussian corner weights (~1e-10 of the centre) underflow in fp16
    # and lose digits in fp32 sums, which gives 0/0 at image corners.
    one = torch.outer(_profile(plan.tile_h, method), _profile(plan.tile_w, method))
    raw = one.expand(plan.count, -1, -1)
    total = paste_sum(plan, raw.contiguous())
    parts = torch.stack([total[y : y + plan.tile_h, x : x + plan.tile_w] for y, x in plan.origins])
    return (raw / parts).to(torch.float32)


def batch_shape(count: int, batch_size: int, fixed: bool = False) -> int:
    """Tiles per UNet call for `count` tiles at most `batch_size` at once (the last call is padded).

    Balanced by default: 9 tiles at batch 4 run as 3 x 3, not 4 + 4 + 1 (fewer padded slots). With
    `fixed` (a CUDA-graphed UNet: every new shape is a compile and a graph), the batch size is the
    same whatever the image: `batch_size`, or the power of two that holds every tile of a small one,
    so a long-lived worker sees at most log2(batch_size) + 1 shapes."""
    if fixed:
        return min(batch_size, 1 << (count - 1).bit_length())
    batches = math.ceil(count / batch_size)
    return math.ceil(count / batches)


# Peak UNet activation bytes per latent px of a tile in a batch, fp16 SD1.5 with SDPA attention: an
# estimate (~0.2 GB per 64x64 tile, doubled by CFG), to be re-measured on a GPU. Tile batches are
# capped by it so that a large batch size in the preset does not run a small card out of memory.
UNET_BYTES_PER_LATENT_PX = 50_000


# A ControlNet is a copy of the UNet's encoder and mid block, and its residuals wait for the UNet call:
# about half the UNet's activations again (an estimate, like the figure above).
CONTROLNET_ACTIVATION_SHARE = 0.5


def batch_for_memory(
    batch_size: int, free: int | None, tile_px: int, cfg: bool, control: bool = False
) -> int:
    """The preset's tile batch size, lowered to a power of two whose activations fit in 0.8 of the
    `free` accelerator bytes (None: no accelerator, the preset's value); `control`: a ControlNet runs
    beside each UNet call."""
    if free is None:
        return batch_size
    share = 1 + (CONTROLNET_ACTIVATION_SHARE if control else 0)
    per_tile = int(UNET_BYTES_PER_LATENT_PX * tile_px * (2 if cfg else 1) * share)
    fit = max(1, min(batch_size, int(0.8 * free) // per_tile))
    return 1 << (fit.bit_length() - 1)


Box = tuple[int, int, int, int]  # a tile's latent (y, x, h, w)
# (crops, t, tags, boxes): a padded batch of tile crops, then each slot's tag and latent box in batch
# order; the boxes let spatial conditions (a ControlNet's hint) be cut exactly like the crops.
TileRun = Callable[[torch.Tensor, torch.Tensor, list[int], list[Box]], torch.Tensor]


def weighted_tiles(
    run: TileRun, plan: TilePlan, items: Sequence[tuple[int, int]], weights: torch.Tensor, per_call: int
) -> GuidedDenoiser:
    """The canvas predictor both tiled paths share. Work item j is (tile k, tag): the crop of tile k
    goes through `run(crops, t, tags, boxes)` with per_call items a call, and its output is added to
    an fp32 canvas with weight `weights[j]` (tile_h, tile_w). The caller's weights sum to 1 at every
    pixel."""
    origins = plan.origins
    th, tw = plan.tile_h, plan.tile_w
    cache: dict[torch.device, torch.Tensor] = {}

    def predict(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != (plan.latent_h, plan.latent_w):
            raise EngineError(
                f"tile plan is for a {plan.latent_h}x{plan.latent_w} latent, got {tuple(x.shape[-2:])}"
            )
        w = cache.get(x.device)
        if w is None:
            w = cache.setdefault(x.device, weights.to(x.device))
        images = x.shape[0]
        acc = torch.zeros(x.shape, dtype=torch.float32, device=x.device)
        for first in range(0, len(items), per_call):
            chunk = list(range(first, min(first + per_call, len(items))))
            # Pad the last batch with repeats of its last item: every UNet call has the same shape,
            # which is what lets torch.compile / CUDA graphs reuse one capture.
            padded = chunk + [chunk[-1]] * (per_call - len(chunk))
            tiles = [origins[items[j][0]] for j in padded]
            crops = torch.cat([x[:, :, y : y + th, x0 : x0 + tw] for y, x0 in tiles])
            out = run(crops, t, [items[j][1] for j in padded], [(y, x0, th, tw) for y, x0 in tiles])
            for slot, j in enumerate(chunk):
                y, x0 = tiles[slot]
                part = out[slot * images : (slot + 1) * images].float()
                acc[:, :, y : y + th, x0 : x0 + tw] += part * w[j]
        return acc.to(x.dtype)

    return predict


def tiled_predictor(
    guided: GuidedDenoiser,
    plan: TilePlan,
    method: str = "mixture",
    batch_size: int = 8,
    fixed_batch: bool | None = None,
) -> GuidedDenoiser:
    """Wrap `guided` so it runs fixed-shape tiles in batches and blends their outputs in fp32.
    fixed_batch (default: `guided.fixed_shapes`, set by a CUDA-graphed UNet): see batch_shape.
    A `guided` with a true `takes_boxes` attribute is also given `boxes=`: the latent box (y, x, h, w)
    of every tile of the batch in batch order, padding slots included."""
    fixed = getattr(guided, "fixed_shapes", False) if fixed_batch is None else fixed_batch
    per_call = batch_shape(plan.count, batch_size, fixed)
    takes_boxes = getattr(guided, "takes_boxes", False)

    def run(crops: torch.Tensor, t: torch.Tensor, _: list[int], boxes: list[Box]) -> torch.Tensor:
        # Spatial conditions (a ControlNet's hint) are cropped with the same boxes as the latent.
        return guided(crops, t, boxes=boxes) if takes_boxes else guided(crops, t)  # type: ignore[call-arg]

    items = [(k, 0) for k in range(plan.count)]
    return weighted_tiles(run, plan, items, blend_weights(plan, method), per_call)


def predictor_for(guided: GuidedDenoiser, preset: Preset, latent_hw: tuple[int, int]) -> GuidedDenoiser:
    """The predictor the Refiner uses for one image: tiled per the preset, or `guided` itself when
    the whole latent fits one tile (no crop/blend round trip, so it is the untiled loop bit for bit)."""
    plan = plan_tiles(latent_hw[0], latent_hw[1], preset.tile_size, preset.overlap)
    if plan.count == 1:
        return guided
    return tiled_predictor(guided, plan, method=preset.tile_method, batch_size=preset.tile_batch_size)
