"""Tiled VAE encode/decode.

CONTRACT:
    encode(vae: AutoencoderKL, pixels: (1,3,H,W) in [-1,1], *, mode: "auto"|"exact"|"low-memory"|"off",
           generator: torch.Generator | None = None, sample: bool = False) -> latent (1,4,H/8,W/8),
           already multiplied by vae.config.scaling_factor, fp32 whatever the VAE's dtype
    decode(vae, latent (scaled), *, mode) -> pixels (1,3,H,W) in [-1,1], fp32 (a bf16 VAE's output
           too: the refine loop and the PNG conversion work in fp32)
    These are the Refiner's default encode/decode, called with mode = preset.vae_tiling ("auto").
    Both also take tile: int | None (core size in latent px; None = exact mode's largest core that
    fits on the device, else DEFAULT_CORE; LOW_MEMORY_CORE in low-memory mode), low_memory_sample: int
    (tiles whose statistics low-memory mode pools) and attention_window: int (vae_attention).
    Raises EngineError for an fp16 VAE, NaN/Inf output, or pixels not a multiple of 8. `mode` is
    trusted: the config refuses any other (at load, and at Refiner.refine for presets built in code).

Modes (see stages.py for the split, groupnorm_pool.py for the statistics):
    exact       latent-resolution stage whole; high-resolution stage in tiles with a halo >= its
                receptive field; every GroupNorm pooled exactly over all tiles. Equals the untiled
                VAE to float rounding. Tiles wait at each barrier on the device, or parked in host RAM.
    low-memory  GroupNorm statistics pooled exactly over a spread-out *sample* of tiles, then every
                other tile runs end to end alone with those statistics. Device and host memory stay
                bounded by the sample size, whatever the image size; the error is the sampling error
                of per-group means/variances (measured in tests/engine/test_vae_tiling_lowmem.py).
    off         diffusers' plain encode/decode.
    auto        memory.choose_vae_plan on the device's and host's free memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import psutil
import torch
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

from naiup.engine.device import free_memory_bytes
from naiup.engine.vae import stages as st
from naiup.engine.vae.attention import is_windowed
from naiup.engine.vae.groupnorm_pool import GroupStats, TileRun, run_frozen, run_pooled
from naiup.engine.vae.memory import VaePlan, choose_vae_plan, estimate_vae_memory
from naiup.errors import EngineError

__all__ = [
    "DEFAULT_CORE",
    "LOW_MEMORY_CORE",
    "LOW_MEMORY_SAMPLE",
    "decode",
    "encode",
    "plan_vae",
]

log = logging.getLogger(__name__)

DEFAULT_CORE = 96  # latent px (768 px): halo overhead (96+2·7)²/96² ≈ 1.3 for the decoder
LOW_MEMORY_CORE = 64  # smaller cores: one tile in flight is the whole device working set
# Low-memory mode pools statistics over at most this many tiles, spread over the image. On SD1.5
# with 64-latent cores that parks ≈ 12 · 78² · 64 px · 384 ch · 2 B ≈ 3.6 GB in host RAM, whatever
# the image size, and the device holds the whole-latent stage plus one tile.
LOW_MEMORY_SAMPLE = 12


def _check(vae: torch.nn.Module) -> None:
    if vae.dtype == torch.float16:
        # fp16 VAE activations overflow to NaN (NAI-derived VAEs especially): fp32 or bf16 only.
        raise EngineError("the VAE must run in fp32 or bf16, not fp16")


def plan_vae(vae: torch.nn.Module, op: str, height: int, width: int, mode: str, core: int) -> VaePlan:
    """Which mode `mode` resolves to for this image on this device."""
    halo = st.decoder_halo(vae) if op == "decode" else st.encoder_halo(vae)
    mem = estimate_vae_memory(
        tuple(vae.config.block_out_channels), op, height, width, vae.dtype.itemsize, core, halo
    )
    plan = choose_vae_plan(mem, free_memory_bytes(vae.device), psutil.virtual_memory().available, mode)
    log.debug("vae plan op=%s size=%dx%d mode=%s -> %s est=%s", op, width, height, mode, plan, mem)
    return plan


def _spread(n: int, k: int) -> list[int]:
    return [n // 2] if k == 1 else sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def _sample_indices(tiles: list[st.Tile], sample: int) -> list[int]:
    """A sub-grid of about `sample` tiles, rows and columns evenly spread: every region of the image
    is represented (a stride over the row-major order would alias with the row length)."""
    rows = len({t.core[0] for t in tiles})
    cols = len(tiles) // rows
    if sample >= len(tiles):
        return list(range(len(tiles)))
    ny = min(rows, max(1, round((sample * rows / cols) ** 0.5)))
    nx = min(cols, max(1, sample // ny))
    return [r * cols + c for r in _spread(rows, ny) for c in _spread(cols, nx)]


def _run_tiles(
    make: Callable[[int, bool | st.HostPool], TileRun], tiles: list[st.Tile], plan: VaePlan, sample: int
) -> list[tuple[st.Tile, torch.Tensor]]:
    """make(i, park) -> tile i's run. Only tiles that wait for each other at the barriers are parked
    (one HostPool for the pass); a low-memory tile running alone with frozen statistics never waits,
    so it stays on the device (parking it was two full copies per barrier for nothing)."""
    pool = st.HostPool() if plan.park_on_host else False
    if plan.mode == "exact":
        return list(zip(tiles, run_pooled([make(i, pool) for i in range(len(tiles))]), strict=True))
    chosen = _sample_indices(tiles, sample)
    stats: list[GroupStats] = []
    done = dict(zip(chosen, run_pooled([make(i, pool) for i in chosen], record=stats), strict=True))
    out = [(tiles[i], done[i]) for i in chosen]
    out += [(tiles[i], run_frozen(make(i, False), stats)) for i in range(len(tiles)) if i not in done]
    return out


def _resolve(
    vae: torch.nn.Module, op: str, height: int, width: int, mode: str, tile: int | None, window: int
) -> tuple[VaePlan, int]:
    """The plan `mode` resolves to for a height x width px image, and the tile core it runs with.
    diffusers' own pass cannot window its attention: an "off" plan whose attention must be windowed
    runs as exact tiles instead (the same result as untiled), parked if need be."""
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    latent_hw = (height // scale, width // scale)
    plan = plan_vae(vae, op, height, width, mode, tile or DEFAULT_CORE)
    if plan.mode == "off" and is_windowed(*latent_hw, window):
        plan = plan_vae(vae, op, height, width, "exact", tile or DEFAULT_CORE)
    return plan, tile or _core_for(vae, op, plan, latent_hw)


def _core_for(vae: torch.nn.Module, op: str, plan: VaePlan, latent_hw: tuple[int, int]) -> int:
    """Exact-mode cores as large as the device holds: every halo and every tile at a barrier costs
    (SD1.5-shaped VAE, 320x448 px decode on the CPU: one tile +12 % over untiled, 24-latent cores
    +160 %). DEFAULT_CORE when tiles are parked in host RAM, whose traffic small tiles do not add to."""
    if plan.mode == "low-memory":
        return LOW_MEMORY_CORE
    whole = max(latent_hw)
    if plan.mode != "exact" or plan.park_on_host or whole <= DEFAULT_CORE:
        return DEFAULT_CORE
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    height, width = latent_hw[0] * scale, latent_hw[1] * scale
    halo = st.decoder_halo(vae) if op == "decode" else st.encoder_halo(vae)
    for core in [whole, *(c for c in (256, 192, 128) if c < whole)]:
        if widest_activation(vae, latent_hw, core, halo) > MAX_TILE_ELEMENTS:
            continue
        if not plan_vae(vae, op, height, width, "exact", core).park_on_host:
            return core
    return DEFAULT_CORE


# A tensor above 2^31 elements needs cuDNN's 64-bit-index convolution path, which older cuDNN builds
# lack (torch then falls back to a slow, memory-hungry convolution) and which no GPU run of ours has
# tried yet: 4x of an 832x1216 image decoded as one tile reaches 256 x 3328 x 4864 = 4.1e9 elements.
# Until a GPU run shows that path works, no exact-mode tile is allowed to go past 2^31.
MAX_TILE_ELEMENTS = 2**31 - 1


def widest_activation(vae: torch.nn.Module, latent_hw: tuple[int, int], core: int, halo: int) -> int:
    """Elements of the largest activation one tile of `core` latent px (plus its halo, clipped to the
    canvas) makes at batch 1: at each resolution level the wider of the level's own channels and the
    ones coming up from the level below, times that level's pixels."""
    channels = list(vae.config.block_out_channels)
    levels = len(channels)
    tile_h, tile_w = (min(core + 2 * halo, side) if core < side else side for side in latent_hw)
    widest = 0
    for level in range(levels):
        px = tile_h * tile_w * 4 ** (levels - 1 - level)  # level 0 is full resolution
        width = max(channels[level], channels[min(level + 1, levels - 1)])
        widest = max(widest, width * px)
    return widest


def _native(plan: VaePlan, tiles: int, latent_hw: tuple[int, int], window: int) -> bool:
    """An exact plan whose split is one tile (the core holds the whole latent: a large card) runs
    diffusers' own module: one tile pooled with itself is the plain pass, and the barriers, stats
    and copies around it are pure overhead. Not when attention is windowed (diffusers cannot window)
    or tiles are parked (the plan said the plain pass does not fit)."""
    return (
        plan.mode == "exact" and tiles == 1 and not plan.park_on_host and not is_windowed(*latent_hw, window)
    )


def _finite(t: torch.Tensor, what: str) -> torch.Tensor:
    if not torch.isfinite(t).all():
        raise EngineError(f"VAE {what} produced NaN/Inf (try fp32 for the VAE)")
    return t


@torch.no_grad()
def encode(
    vae: torch.nn.Module,
    pixels: torch.Tensor,
    *,
    mode: str = "auto",
    generator: torch.Generator | None = None,
    sample: bool = False,
    tile: int | None = None,
    low_memory_sample: int = LOW_MEMORY_SAMPLE,
    attention_window: int = 0,
) -> torch.Tensor:
    """Pixels in [-1, 1] -> scaled latent. `tile`: core size in latent px (None: see _core_for).
    `attention_window`: the mid block's attention in windows of this many latent px (vae_attention)."""
    _check(vae)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    _, _, height, width = pixels.shape
    if height % factor or width % factor:
        raise EngineError(f"VAE input must be a multiple of {factor} px, got {width}x{height}")
    pixels = pixels.to(vae.dtype)
    plan, core = _resolve(vae, "encode", height, width, mode, tile, attention_window)
    lh, lw = height // factor, width // factor
    tiles = st.split_tiles(lh, lw, core, st.encoder_halo(vae)) if plan.mode != "off" else []
    if plan.mode == "off" or _native(plan, len(tiles), (lh, lw), attention_window):
        dist = vae.encode(pixels).latent_dist
    else:
        st.check_supported(vae)

        def make(i: int, park: bool | st.HostPool) -> TileRun:
            y0, y1, x0, x1 = tiles[i].box
            box = pixels[:, :, y0 * factor : y1 * factor, x0 * factor : x1 * factor]
            return st.encoder_tile(vae, box, tiles[i], park)

        canvas = None
        for t, out in _run_tiles(make, tiles, plan, low_memory_sample):
            if canvas is None:
                canvas = out.new_empty((out.shape[0], out.shape[1], lh, lw), device=pixels.device)
            y0, y1, x0, x1 = t.core
            canvas[:, :, y0:y1, x0:x1] = out.to(pixels.device)
        dist = DiagonalGaussianDistribution(st.encoder_tail(vae, canvas, attention_window))
    z = dist.sample(generator=generator) if sample else dist.mode()
    if getattr(vae.config, "shift_factor", None):
        z = z - vae.config.shift_factor
    return _finite(z.float() * vae.config.scaling_factor, "encode")


@torch.no_grad()
def decode(
    vae: torch.nn.Module,
    latent: torch.Tensor,
    *,
    mode: str = "auto",
    tile: int | None = None,
    low_memory_sample: int = LOW_MEMORY_SAMPLE,
    attention_window: int = 0,
) -> torch.Tensor:
    """Scaled latent -> pixels in [-1, 1] (not clamped). `tile`: core size in latent px.
    `attention_window`: the mid block's attention in windows of this many latent px (vae_attention)."""
    _check(vae)
    latent = latent.to(vae.dtype)
    scale = 2 ** (len(vae.config.block_out_channels) - 1)
    lh, lw = latent.shape[-2:]
    plan, core = _resolve(vae, "decode", lh * scale, lw * scale, mode, tile, attention_window)
    tiles = st.split_tiles(lh, lw, core, st.decoder_halo(vae)) if plan.mode != "off" else []
    if plan.mode == "off" or _native(plan, len(tiles), (lh, lw), attention_window):
        z = latent / vae.config.scaling_factor
        if getattr(vae.config, "shift_factor", None):
            z = z + vae.config.shift_factor
        return _finite(vae.decode(z).sample.float(), "decode")
    st.check_supported(vae)
    head = st.decoder_head(vae, latent, attention_window)

    def make(i: int, park: bool | st.HostPool) -> TileRun:
        y0, y1, x0, x1 = tiles[i].box
        return st.decoder_tile(vae, head[:, :, y0:y1, x0:x1], tiles[i], park)

    image = None
    s = st.pixel_scale(vae)
    for t, out in _run_tiles(make, tiles, plan, low_memory_sample):
        if image is None:
            image = out.new_empty((out.shape[0], out.shape[1], lh * s, lw * s), device=latent.device)
        y0, y1, x0, x1 = t.core
        image[:, :, y0 * s : y1 * s, x0 * s : x1 * s] = out.to(latent.device)
    log.debug("tiled decode tiles=%d mode=%s", len(tiles), plan.mode)
    return _finite(image.float(), "decode")
