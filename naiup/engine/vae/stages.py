"""The SD VAE split into a whole-latent stage and a tiled high-resolution stage.

We run diffusers' own submodules (ResnetBlock2D's convs, Upsample2D, Downsample2D, the mid block)
ourselves; only GroupNorm is replaced, by a barrier that yields statistics to a driver
(groupnorm_pool.py). Nothing in diffusers is patched.

Why split where we do: per-tile attention, not the halo, is what breaks exactness. Measured on an
SD-shaped VAE with exact GroupNorm statistics, 16-latent-px tiles: the whole decoder per tile is still
1e-2 of the output range off with a 32-latent-px halo, while the latent-resolution stage run whole
and only the rest tiled is float-exact (1e-6) with a 12-latent-px halo. Everything at latent
resolution (decoder: post_quant_conv, conv_in, mid block incl. attention, the first up block's
resnets; encoder: the last down block, mid block, conv_out, quant_conv) runs once on the whole
tensor, which is 1/64 of the pixel count. Only the stages above
latent resolution are tiled, with a halo that covers their receptive field.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch
from torch import nn

from naiup.engine.vae import attention as vae_attention
from naiup.engine.vae.groupnorm_pool import GroupStats, TileRun, apply_group_norm, partial_stats
from naiup.errors import EngineError

__all__ = [
    "HostPool",
    "Tile",
    "check_supported",
    "decoder_halo",
    "decoder_head",
    "decoder_tile",
    "encoder_halo",
    "encoder_tail",
    "encoder_tile",
    "pixel_scale",
    "split_tiles",
]


@dataclass(frozen=True, slots=True)
class Tile:
    """A core box (what the tile contributes) and its input box (core + halo, clamped), in latent px."""

    core: tuple[int, int, int, int]  # y0, y1, x0, x1
    box: tuple[int, int, int, int]

    def core_in_tile(self, scale: int) -> tuple[slice, slice]:
        """The core's position inside the tile at `scale` pixels per latent px."""
        (cy0, cy1, cx0, cx1), (by0, _, bx0, _) = self.core, self.box
        return (
            slice((cy0 - by0) * scale, (cy1 - by0) * scale),
            slice((cx0 - bx0) * scale, (cx1 - bx0) * scale),
        )


def _cuts(length: int, core: int) -> list[int]:
    n = max(1, math.ceil(length / core))
    return [round(k * length / n) for k in range(n + 1)]


def _box(start: int, end: int, length: int, size: int) -> tuple[int, int]:
    # Shift the box inward at image borders instead of cropping it: every tile has the same shape
    # (one conv plan / one compile for all of them) and more context than the halo never hurts.
    lo = max(0, min(start, length - size))
    return lo, lo + size


def split_tiles(latent_h: int, latent_w: int, core: int, halo: int) -> list[Tile]:
    """Evenly sized cores of at most `core` latent px, each inside a same-size box of core + 2·halo
    (clamped to the canvas). In pixel space every origin is a multiple of 8, which keeps the
    encoder's stride-2 grids identical to the untiled pass."""
    tiles = []
    ys, xs = _cuts(latent_h, core), _cuts(latent_w, core)
    box_h = min(latent_h, max(b - a for a, b in itertools.pairwise(ys)) + 2 * halo)
    box_w = min(latent_w, max(b - a for a, b in itertools.pairwise(xs)) + 2 * halo)
    for y0, y1 in itertools.pairwise(ys):
        for x0, x1 in itertools.pairwise(xs):
            by = _box(y0 - halo, y1 + halo, latent_h, box_h)
            bx = _box(x0 - halo, x1 + halo, latent_w, box_w)
            tiles.append(Tile((y0, y1, x0, x1), (*by, *bx)))
    return tiles


class HostPool:
    """Host RAM for tile activations parked at GroupNorm barriers, reused from barrier to barrier.

    A buffer is allocated the first time no free one is large enough, and handed out again once its
    tile has taken the tensor back: a pass allocates about one barrier's worth of buffers instead of
    a fresh one per tensor per barrier. Page-locked when CUDA is present, so the copies run at full
    PCIe speed and without blocking the host. Every copy is queued on the current stream in order:
    a buffer handed out again is only written by a device->host copy queued after the host->device
    copy that read it, so no explicit synchronisation is needed, and torch's pinned allocator keeps
    a freed buffer until the copies using it have run."""

    def __init__(self) -> None:
        self.pinned = torch.cuda.is_available()
        self._free: list[torch.Tensor] = []
        self.allocations = 0  # buffers allocated (for tests and logs)
        self.parks = 0  # tensors parked

    def park(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.device]:
        """(host copy of x, its buffer, x's device): give both back to `unpark`."""
        nbytes = x.numel() * x.element_size()
        fits = [i for i, b in enumerate(self._free) if b.numel() >= nbytes]
        if fits:
            buf = self._free.pop(min(fits, key=lambda i: self._free[i].numel()))
        else:
            # Decoder levels only grow: buffers too small for this one will not be asked for again.
            self._free = [b for b in self._free if b.numel() >= nbytes]
            buf = torch.empty(nbytes, dtype=torch.uint8, pin_memory=self.pinned)
            self.allocations += 1
        self.parks += 1
        flat = buf[:nbytes].view(x.dtype)
        if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            b, c, h, w = x.shape
            host = flat.view(b, h, w, c).permute(0, 3, 1, 2)  # keep a channels_last VAE's layout
        else:
            host = flat.view(x.shape)
        host.copy_(x, non_blocking=self.pinned)
        return host, buf, x.device

    def unpark(self, host: torch.Tensor, buf: torch.Tensor, device: torch.device) -> torch.Tensor:
        # Always a new tensor, on the CPU too: the buffer is about to be handed out again.
        out = torch.empty_like(host, device=device)
        out.copy_(host, non_blocking=self.pinned)
        self._free.append(buf)
        return out


class _Barriers:
    """One tile's GroupNorm barriers: yields core statistics, parks activations while it waits.
    `park`: a HostPool (shared by the tiles of one pass), True (a pool of its own) or False."""

    def __init__(self, tile: Tile, park: bool | HostPool) -> None:
        self.tile, self.index = tile, 0
        self.pool = HostPool() if park is True else (park or None)

    def norm(self, norm: nn.GroupNorm, items: list[torch.Tensor], scale: int):
        """Barrier on items[0]; returns [normalised items[0], *items]. Takes the tensors out of
        `items` so that, when parked, no frame keeps a GPU reference across the wait."""
        tensors = items[:]
        items.clear()
        ys, xs = self.tile.core_in_tile(scale)
        part = partial_stats(tensors[0][:, :, ys, xs], norm.num_groups)
        # Host parking: while a tile waits for the others its activations sit in host RAM, so the
        # GPU only ever holds the tile being computed.
        held = [self.pool.park(t) for t in tensors] if self.pool else tensors
        del tensors
        stats: GroupStats = yield (self.index, part)
        self.index += 1
        back = [self.pool.unpark(*p) for p in held] if self.pool else held
        del held
        return [apply_group_norm(back[0], norm, stats), *back]


def check_supported(vae: nn.Module) -> None:
    """Refuse VAEs whose blocks we do not know how to split (e.g. spatial-norm decoders)."""
    dec, enc = vae.decoder, vae.encoder
    if not isinstance(dec.conv_norm_out, nn.GroupNorm) or not isinstance(enc.conv_norm_out, nn.GroupNorm):
        raise EngineError("tiled VAE supports GroupNorm VAEs only (this one uses another norm)")
    for block in [*dec.up_blocks, *enc.down_blocks]:
        for r in block.resnets:
            if (
                getattr(r, "time_emb_proj", None) is not None
                or r.upsample is not None
                or r.downsample is not None
            ):
                raise EngineError(
                    f"tiled VAE cannot split resnet block {type(r).__name__} with temb/resample"
                )
    ups = [bool(up.upsamplers) for up in dec.up_blocks]
    downs = [bool(d.downsamplers) for d in enc.down_blocks]
    if len(ups) < 2 or ups != [True] * (len(ups) - 1) + [False] or downs != ups:
        raise EngineError(
            "tiled VAE needs an SD-style VAE: a resample between every level, none after the last"
        )


def _resnet(bar: _Barriers, block: nn.Module, box: list[torch.Tensor], scale: int):
    """ResnetBlock2D (no temb, no resample) on box[0], result put back in box."""
    h, x = yield from bar.norm(block.norm1, [box.pop()], scale)
    h = block.conv1(block.nonlinearity(h))
    items = [h, x]
    del h, x
    h, pre, x = yield from bar.norm(block.norm2, items, scale)
    del pre  # the un-normalised activation: do not keep it alive through conv2
    h = block.conv2(block.dropout(block.nonlinearity(h)))
    if block.conv_shortcut is not None:
        x = block.conv_shortcut(x)
    box.append((x + h) / block.output_scale_factor)


def _reach(conv: nn.Conv2d, scale: float) -> float:
    return (conv.kernel_size[0] - 1) // 2 * conv.dilation[0] / scale


# --- decoder -------------------------------------------------------------------------------------


def decoder_head(vae: nn.Module, latent: torch.Tensor, attention_window: int = 0) -> torch.Tensor:
    """Whole-latent stage: scaled latent -> input of the first upsampler. attention_window: see
    vae_attention (0: the mid block's attention over the whole latent)."""
    dec = vae.decoder
    z = latent / vae.config.scaling_factor
    if getattr(vae.config, "shift_factor", None):
        z = z + vae.config.shift_factor
    if vae.post_quant_conv is not None:
        z = vae.post_quant_conv(z)
    h = vae_attention.mid_block(dec.mid_block, dec.conv_in(z), attention_window)
    h = h.to(next(iter(dec.up_blocks.parameters())).dtype)
    for r in dec.up_blocks[0].resnets:
        h = r(h, None)
    return h


def decoder_halo(vae: nn.Module) -> int:
    """Receptive field of the tiled decoder stage, in latent px (6.25 -> 7 for SD1.5)."""
    dec, scale, reach = vae.decoder, 1, 0.0
    for i, up in enumerate(dec.up_blocks):
        if i > 0:
            for r in up.resnets:
                reach += _reach(r.conv1, scale) + _reach(r.conv2, scale)
        if up.upsamplers:
            scale *= 2
            reach += _reach(up.upsamplers[0].conv, scale)
    reach += _reach(dec.conv_out, scale)
    return math.ceil(reach)


def decoder_tile(vae: nn.Module, h: torch.Tensor, tile: Tile, park: bool | HostPool) -> TileRun:
    """Tiled stage for one tile: its box of the head output -> its core in pixels."""
    dec, bar, scale = vae.decoder, _Barriers(tile, park), 1
    box = [h]
    del h
    for i, up in enumerate(dec.up_blocks):
        if i > 0:
            for r in up.resnets:
                yield from _resnet(bar, r, box, scale)
        if up.upsamplers:
            box.append(up.upsamplers[0](box.pop()))
            scale *= 2
    h, pre = yield from bar.norm(dec.conv_norm_out, [box.pop()], scale)
    del pre
    h = dec.conv_out(dec.conv_act(h))
    ys, xs = tile.core_in_tile(scale)
    return h[:, :, ys, xs]


def pixel_scale(vae: nn.Module) -> int:
    """Pixels per latent px at the decoder output."""
    return 2 ** sum(1 for up in vae.decoder.up_blocks if up.upsamplers)


# --- encoder -------------------------------------------------------------------------------------


def encoder_tile(vae: nn.Module, pixels: torch.Tensor, tile: Tile, park: bool | HostPool) -> TileRun:
    """Tiled stage for one tile: its box of pixels -> its core at latent resolution."""
    enc, bar = vae.encoder, _Barriers(tile, park)
    scale = 2 ** (len(enc.down_blocks) - 1)
    box = [enc.conv_in(pixels)]
    del pixels
    for down in enc.down_blocks[:-1]:
        for r in down.resnets:
            yield from _resnet(bar, r, box, scale)
        box.append(down.downsamplers[0](box.pop()))
        scale //= 2
    ys, xs = tile.core_in_tile(scale)
    return box.pop()[:, :, ys, xs]


def encoder_halo(vae: nn.Module) -> int:
    """Receptive field of the tiled encoder stage in latent px (5.4 -> 6 latent = 48 px for SD1.5)."""
    enc = vae.encoder
    scale = 2 ** (len(enc.down_blocks) - 1)
    reach = _reach(enc.conv_in, scale)
    for down in enc.down_blocks[:-1]:
        for r in down.resnets:
            reach += _reach(r.conv1, scale) + _reach(r.conv2, scale)
        # Stride-2 3x3 conv after a (0,1,0,1) pad: an output reads up to 2 input px to its right.
        reach += 2 / scale
        scale //= 2
    return math.ceil(reach)


def encoder_tail(vae: nn.Module, h: torch.Tensor, attention_window: int = 0) -> torch.Tensor:
    """Whole-latent stage: last down block, mid block, output convs -> moments (B, 2*C, h, w)."""
    enc = vae.encoder
    h = enc.down_blocks[-1](h)
    h = vae_attention.mid_block(enc.mid_block, h, attention_window)
    h = enc.conv_out(enc.conv_act(enc.conv_norm_out(h)))
    if vae.quant_conv is not None:
        h = vae.quant_conv(h)
    return h
