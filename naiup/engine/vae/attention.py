"""The VAE's mid block with its self-attention run in windows, the one lever on its cost at 4x.

mid_block(block, h, window) -> h         # UNetMidBlock2D forward; window 0 = whole attention
attention_windows(h, w, window) -> list  # ((query box), (key box)) per window, latent px

The SD VAE's mid block (encoder and decoder alike) attends over every latent pixel with one 512-dim
head. Its cost grows with the square of the pixel count, and 512 dims are beyond flash kernels:
measured on an H200 (bf16), the whole-latent stage takes 1.43 s at 4x of
832x1216 (416x608 latent) against ~0.09 s at 2x. With a window, queries are taken in blocks of about
`window` latent px and each block attends to itself plus ATTENTION_MARGIN px of context on every
side. Everything else in the block (its GroupNorms, resnets, projections) still runs on the whole
latent, so the only approximation is where attention is cut off; a latent that fits in one window
plus its margins is attended whole, exactly as diffusers does.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn

from naiup.engine.device import free_memory_bytes

__all__ = ["ATTENTION_MARGIN", "attention_windows", "is_windowed", "mid_block", "score_budget"]

# Latent px of key context around each query block: the seam-hiding context A1111's tiled VAE gives
# each tile is 11 latent px in total; decoding per tile with growing context, the error kept falling
# steadily up to 32 (47.5 dB at 11, 62.3 dB at 32 against the whole decode).
ATTENTION_MARGIN = 32

# Query x key scores per attention call, at most: 2^27 = 256 MiB in bf16 if a backend materialises
# them. At 4x, a window's ~72k keys take ~1850 queries a call.
SCORE_BUDGET = 2**27
# CUDA's memory-efficient SDPA kernel (any head size, fp32/fp16/bf16) streams over the keys and never
# builds the score matrix, so chunking queries there only splits one launch into ~20 small ones that
# leave SMs idle (118 calls per 4x pass). False: chunk on CUDA too (the lever for a measurement).
UNCHUNKED_ON_CUDA = True

Box = tuple[int, int, int, int]  # y0, y1, x0, x1


def _spans(length: int, window: int) -> list[tuple[int, int, int, int]]:
    """(query start, query end, key start, key end) along one axis."""
    if window <= 0 or length <= window + 2 * ATTENTION_MARGIN:
        return [(0, length, 0, length)]
    count = math.ceil(length / window)
    cuts = [round(i * length / count) for i in range(count + 1)]
    return [
        (a, b, max(0, a - ATTENTION_MARGIN), min(length, b + ATTENTION_MARGIN))
        for a, b in itertools.pairwise(cuts)
    ]


def attention_windows(height: int, width: int, window: int) -> list[tuple[Box, Box]]:
    """Query blocks that tile the latent exactly once, each with its key box (the block + margin)."""
    return [
        ((qy0, qy1, qx0, qx1), (ky0, ky1, kx0, kx1))
        for qy0, qy1, ky0, ky1 in _spans(height, window)
        for qx0, qx1, kx0, kx1 in _spans(width, window)
    ]


def is_windowed(height: int, width: int, window: int) -> bool:
    return len(attention_windows(height, width, window)) > 1


def score_budget(device_type: str, free_bytes: int | None, itemsize: int) -> int:
    """Query x key scores one attention call may cover on this device.

    MPS and the CPU build the whole score matrix for 512-dim heads: SCORE_BUDGET bounds it. On CUDA
    the call is whole; the budget that remains is only a guard, should SDPA fall back to its math
    kernel for some input: half of the free memory's worth of scores."""
    if device_type != "cuda" or not UNCHUNKED_ON_CUDA or free_bytes is None:
        return SCORE_BUDGET
    return max(SCORE_BUDGET, free_bytes // (2 * itemsize))


def mid_block(block: nn.Module, h: torch.Tensor, window: int) -> torch.Tensor:
    """UNetMidBlock2D without time embedding: resnet, (attention, resnet)*."""
    if not is_windowed(h.shape[-2], h.shape[-1], window) or not all(map(_plain, block.attentions)):
        return block(h, None)
    h = block.resnets[0](h, None)
    for attn, resnet in zip(block.attentions, block.resnets[1:], strict=True):
        if attn is not None:
            h = _windowed_self_attention(attn, h, window)
        h = resnet(h, None)
    return h


def _windowed_self_attention(attn: nn.Module, x: torch.Tensor, window: int) -> torch.Tensor:
    """diffusers' Attention as the VAE uses it (GroupNorm in front, residual added, output rescaled),
    with the attention itself restricted to windows. Projections run per window, so beside the
    input only two latent-sized tensors live at once (at 4x: 260 MB each in bf16, where whole-latent
    q, k and v would add three more)."""
    height, width = x.shape[-2:]
    normed = attn.group_norm(x) if attn.group_norm is not None else x
    tokens = normed.permute(0, 2, 3, 1)  # (B, H, W, C): windows are plain slices
    del normed
    heads = attn.heads
    budget = score_budget(x.device.type, free_memory_bytes(x.device), x.element_size())
    out: torch.Tensor | None = None
    for (qy0, qy1, qx0, qx1), (ky0, ky1, kx0, kx1) in attention_windows(height, width, window):
        keys = tokens[:, ky0:ky1, kx0:kx1]
        kw, vw = _heads(attn.to_k(keys), heads), _heads(attn.to_v(keys), heads)
        # Query rows in chunks where the backend materialises the query x key scores (score_budget).
        rows = max(1, budget // (kw.shape[2] * (qx1 - qx0)))
        for r0 in range(qy0, qy1, rows):
            r1 = min(qy1, r0 + rows)
            qw = _heads(attn.to_q(tokens[:, r0:r1, qx0:qx1]), heads)
            ow = F.scaled_dot_product_attention(qw, kw, vw)  # scale 1/sqrt(head dim), as diffusers
            ow = ow.transpose(1, 2).reshape(qw.shape[0], r1 - r0, qx1 - qx0, -1).to(qw.dtype)
            ow = attn.to_out[1](attn.to_out[0](ow))  # projection, dropout (a no-op in eval)
            if out is None:
                out = ow.new_empty((*tokens.shape[:3], ow.shape[-1]))
            out[:, r0:r1, qx0:qx1] = ow
    assert out is not None  # at least one window
    out = out.permute(0, 3, 1, 2)
    if attn.residual_connection:
        out = out + x
    return out / attn.rescale_output_factor


def _plain(attn: nn.Module | None) -> bool:
    """The attention SD-family VAEs use; anything fancier runs whole, as diffusers runs it."""
    return attn is None or all(getattr(attn, n, None) is None for n in ("spatial_norm", "norm_q", "norm_k"))


def _heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, h, w, C) -> (B, heads, h*w, C/heads)."""
    b, hh, ww, c = t.shape
    return t.reshape(b, hh * ww, heads, c // heads).transpose(1, 2)
