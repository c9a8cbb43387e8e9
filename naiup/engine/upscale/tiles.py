"""Tiled upscaler inference: even tiles with overlap, feathered blending, and the OOM ladder.

Tiles per axis are counted first and then sized evenly (no thin leftover tile at the border).
Each output tile is weighted by a linear ramp over `overlap*scale` px on every side that has a
neighbour, accumulated in fp32 and divided by the summed weights, so a pixel covered by one tile
is exactly that tile's output and a seam is a smooth cross-fade.
On OOM the tile is halved down to MIN_TILE; after that the model moves to CPU in fp32.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from naiup.engine.device import first_line, free_memory_bytes, is_oom, release_cached
from naiup.errors import EngineError, OutOfMemoryError

log = logging.getLogger(__name__)

MIN_TILE = 128
CPU_TILE = 512  # host RAM is rarely the limit; 512 keeps feature maps ~1 GB for 2x models in fp32
MAX_TILE = 2048


def default_overlap(arch: str) -> int:
    # RRDB-class receptive fields need 32 input px to hide seams; Compact is fine with 16 (measured at
    # tile 256 on 1024²: Compact 64 dB at 16 px, RRDB 6B only 53.5 dB at 16 and 58 dB at 32).
    return 16 if arch == "Compact" else 32


def initial_tile(
    device: torch.device, size: tuple[int, int], bytes_per_px: float, dtype: torch.dtype, scale: int = 1
) -> int:
    """Largest tile the free accelerator memory allows (0.6 of it, after the fp32 output canvas and
    its weights that the tiles are blended into on the device); CPU_TILE on CPU."""
    free = free_memory_bytes(device)
    if free is None:
        return CPU_TILE
    canvas = 4 * 4 * size[0] * size[1] * scale * scale  # (3 colour + 1 weight) x fp32 per output px
    return tile_for_memory(max(0, free - canvas), size, bytes_per_px, dtype)


def tile_for_memory(free: int, size: tuple[int, int], bytes_per_px: float, dtype: torch.dtype) -> int:
    """Tile side (input px) whose activations fit in 0.6 of `free` bytes; the whole image if it fits."""
    per_px = bytes_per_px * (2.0 if dtype == torch.float32 else 1.0)
    side = int(math.sqrt(0.6 * free / per_px))
    if side >= max(size):
        return max(size)  # whole image in one go
    return max(MIN_TILE, min(MAX_TILE, side // 64 * 64))


def plan_axis(size: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """(start, end) spans covering [0, size): equal lengths <= tile, neighbours overlapping >= overlap."""
    if size <= tile:
        return [(0, size)]
    overlap = min(overlap, tile // 4)  # a tile must mostly hold new pixels, or the count explodes
    count = math.ceil((size - overlap) / (tile - overlap))
    length = math.ceil((size + (count - 1) * overlap) / count)
    starts = [round(i * (size - length) / (count - 1)) for i in range(count)]
    return [(s, s + length) for s in starts]


def axis_weights(length: int, feather: int, ramp_start: bool, ramp_end: bool) -> np.ndarray:
    """1 in the middle, a linear ramp (t+1)/feather on sides with a neighbour; never 0."""
    w = np.ones(length, dtype=np.float32)
    feather = min(feather, length // 2)
    if feather > 0:
        ramp = (np.arange(feather, dtype=np.float32) + 1.0) / feather
        if ramp_start:
            w[:feather] = np.minimum(w[:feather], ramp)
        if ramp_end:
            w[length - feather :] = np.minimum(w[length - feather :], ramp[::-1])
    return w


class TileRunner:
    """Runs one image through `net` tile by tile. `device`/`dtype` reflect any CPU fallback."""

    def __init__(
        self,
        net: Any,
        scale: int,
        device: torch.device,
        dtype: torch.dtype,
        overlap: int,
        channels_last: bool = False,
    ) -> None:
        self.net, self.scale, self.device, self.dtype, self.overlap = net, scale, device, dtype, overlap
        self.channels_last = channels_last

    def run(
        self, image: torch.Tensor, tile: int, progress: Callable[[float, str], None] | None = None
    ) -> torch.Tensor:
        """image: (1,3,H,W) uint8 on any device -> (H*s, W*s, 3) uint8 on `self.device`: the pixels
        are blended and quantised where the model ran and never cross to the host here."""
        while True:
            try:
                return self._run_at(image, tile, progress)
            except Exception as exc:
                if not is_oom(exc):
                    raise
                reason = first_line(exc)
            # Free outside the except block: the traceback's frames hold the failed tile's tensors.
            release_cached(self.device)
            if tile > MIN_TILE:
                tile = max(MIN_TILE, tile // 2)
                log.warning("upscale out of memory; retrying tile=%d", tile)
                continue
            if self.device.type != "cpu":
                log.warning("upscale out of memory at tile=%d; falling back to CPU fp32", tile)
                self.net.to(torch.device("cpu")).to(torch.float32)
                self.device, self.dtype = torch.device("cpu"), torch.float32
                tile = CPU_TILE
                continue
            raise OutOfMemoryError(f"upscaler ran out of memory even at tile {tile} on CPU ({reason})")

    def _run_at(
        self, image: torch.Tensor, tile: int, progress: Callable[[float, str], None] | None
    ) -> torch.Tensor:
        _, _, h, w = image.shape
        s = self.scale
        rows, cols = plan_axis(h, tile, self.overlap), plan_axis(w, tile, self.overlap)
        if len(rows) == 1 and len(cols) == 1:
            out = _finite(self._infer(image))
            if progress:
                progress(1.0, "upscale")
            return _to_uint8(out)
        acc = torch.zeros((3, h * s, w * s), dtype=torch.float32, device=self.device)
        norm = torch.zeros((1, h * s, w * s), dtype=torch.float32, device=self.device)
        total, done = len(rows) * len(cols), 0
        for ri, (y0, y1) in enumerate(rows):
            wy = axis_weights((y1 - y0) * s, _feather(rows, ri) * s, ri > 0, ri < len(rows) - 1)
            for ci, (x0, x1) in enumerate(cols):
                wx = axis_weights((x1 - x0) * s, _feather(cols, ci) * s, ci > 0, ci < len(cols) - 1)
                out = self._infer(image[:, :, y0:y1, x0:x1])[0]
                weight = torch.from_numpy(np.outer(wy, wx))[None].to(self.device, non_blocking=True)
                acc[:, y0 * s : y1 * s, x0 * s : x1 * s] += out * weight
                norm[:, y0 * s : y1 * s, x0 * s : x1 * s] += weight
                done += 1
                if progress:
                    progress(done / total, "upscale")
        # One finiteness check for the whole image (a NaN tile carries into the blend), not a host
        # sync per tile.
        return _to_uint8(_finite((acc / norm)[None]))

    def _infer(self, tile: torch.Tensor) -> torch.Tensor:
        x = tile.to(self.device).to(self.dtype) / 255.0
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            y = self.net(x)
        expected = (tile.shape[2] * self.scale, tile.shape[3] * self.scale)
        if tuple(y.shape[2:]) != expected:
            raise EngineError(f"upscaler returned {tuple(y.shape[2:])} for a tile needing {expected}")
        return y.float().to(self.device)


def _finite(out: torch.Tensor) -> torch.Tensor:
    if not torch.isfinite(out).all():
        raise EngineError("upscaler produced NaN/Inf (try fp32: a model that overflows in fp16)")
    return out


def _feather(spans: list[tuple[int, int]], i: int) -> int:
    """Feather width for span i: the actual overlap with its neighbours (at least 1 px)."""
    overlaps = []
    if i > 0:
        overlaps.append(spans[i - 1][1] - spans[i][0])
    if i < len(spans) - 1:
        overlaps.append(spans[i][1] - spans[i + 1][0])
    return max(1, min(overlaps)) if overlaps else 0


def _to_uint8(out: torch.Tensor) -> torch.Tensor:
    """(1,3,H,W) float in [0,1] -> (H,W,3) uint8, on the same device."""
    arr = out[0].clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
    return arr.permute(1, 2, 0).contiguous()
