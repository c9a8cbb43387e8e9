"""GroupNorm statistics pooled exactly across tiles, and the lock-step driver that needs them.

A tile's forward pass is written as a generator (see stages.py) that *yields* at every GroupNorm
with its partial statistics over its core region (no halo, so nothing is counted twice) and is
*sent back* the pooled statistics to normalise with. The driver decides where they come from:
    run_pooled  - every tile waits at each barrier; statistics pooled over all of them (exact)
    run_frozen  - each tile runs end to end with statistics recorded earlier (bounded memory)
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import torch
from torch import nn

__all__ = [
    "GroupStats",
    "TileRun",
    "apply_group_norm",
    "norm_scale_shift",
    "partial_stats",
    "pool",
    "run_frozen",
    "run_pooled",
]


@dataclass(frozen=True, slots=True)
class GroupStats:
    """Per (batch, group): element count, mean and sum of squared deviations (M2)."""

    count: torch.Tensor  # (B, G)
    mean: torch.Tensor  # (B, G)
    m2: torch.Tensor  # (B, G)

    @property
    def var(self) -> torch.Tensor:
        return self.m2 / self.count  # biased, as nn.GroupNorm uses


TileRun = Generator[tuple[int, GroupStats], GroupStats, torch.Tensor]


def _stats_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no fp64


def partial_stats(x: torch.Tensor, groups: int) -> GroupStats:
    """Statistics of one tile's core region x (B, C, h, w), per group, accumulated in fp32, then widened.

    fp32 activations go through var_mean as they are. bf16 ones are never copied to fp32 whole: sums
    are taken with `sum(dtype=float32)` (the cast happens inside the reduction), around a shift of the
    group mean rounded to bf16, so the second moment has no cancellation (E[d²] − E[d]² with E[d] ≈ 0)."""
    b = x.shape[0]
    flat = x.reshape(b, groups, -1)
    n = flat.shape[-1]
    wide = _stats_dtype(x.device)
    if flat.dtype == torch.float32:
        var, mean = torch.var_mean(flat, dim=-1, correction=0)
        m2 = var.to(wide) * n
    else:
        shift = (flat.sum(dim=-1, dtype=torch.float32) / n).to(flat.dtype)
        d = flat - shift[..., None]
        s1 = d.sum(dim=-1, dtype=torch.float32).to(wide)
        s2 = (d * d).sum(dim=-1, dtype=torch.float32).to(wide)
        del d
        mean = shift.to(wide) + s1 / n
        m2 = (s2 - s1 * s1 / n).clamp_min(0)
    count = torch.full_like(mean, n, dtype=wide)
    return GroupStats(count, mean.to(wide), m2)


def pool(parts: list[GroupStats]) -> GroupStats:
    """Chan's parallel merge: exact pooled mean and variance, between-tile spread included
    (averaging per-tile variances drops Σn_i(μ_i − μ)², the grey-veil bug of naive pooling)."""
    count = torch.stack([p.count for p in parts])
    mean_i = torch.stack([p.mean for p in parts])
    total = count.sum(0)
    mean = (count * mean_i).sum(0) / total
    m2 = torch.stack([p.m2 for p in parts]).sum(0) + (count * (mean_i - mean) ** 2).sum(0)
    return GroupStats(total, mean, m2)


def norm_scale_shift(
    norm: nn.GroupNorm, stats: GroupStats, channels: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per (batch, channel) fp32 scale and shift with y = x·scale + shift == nn.GroupNorm(x) given
    these statistics (the weight, rsqrt(var + eps) and the mean folded together, as torch's own
    GroupNorm kernels do)."""
    b, g = stats.mean.shape
    mean = stats.mean.to(torch.float32)
    inv = torch.rsqrt(stats.var.to(torch.float32) + norm.eps)
    scale = inv.repeat_interleave(channels // g, dim=1)  # (B, C)
    shift = -mean.repeat_interleave(channels // g, dim=1) * scale
    if norm.affine:
        weight, bias = norm.weight.detach().float()[None], norm.bias.detach().float()[None]
        scale, shift = scale * weight, shift * weight + bias
    return scale.view(b, channels, 1, 1), shift.view(b, channels, 1, 1)


@torch.no_grad()  # inference only: out= refuses autograd
def apply_group_norm(x: torch.Tensor, norm: nn.GroupNorm, stats: GroupStats) -> torch.Tensor:
    """nn.GroupNorm's affine normalisation with given statistics: ONE elementwise pass over x, in x's
    dtype out. The multiply-add runs in fp32 registers (scale/shift are fp32, the output tensor is
    x's dtype: TensorIterator casts on load and store), so a bf16 activation is never copied to fp32."""
    scale, shift = norm_scale_shift(norm, stats, x.shape[1])
    out = torch.empty_like(x)
    return torch.addcmul(shift, x, scale, out=out)


def run_pooled(runs: list[TileRun], record: list[GroupStats] | None = None) -> list[torch.Tensor]:
    """Advance all tiles in lock-step; at each barrier pool their statistics and send them back.
    `record`, if given, receives the pooled statistics of every barrier in order."""
    outs: list[torch.Tensor | None] = [None] * len(runs)
    pending = {i: next(r) for i, r in enumerate(runs)}
    while pending:
        barriers = {b for b, _ in pending.values()}
        if len(barriers) != 1:
            raise RuntimeError(f"tiles reached different GroupNorm barriers: {sorted(barriers)}")
        pooled = pool([s for _, s in pending.values()])
        if record is not None:
            record.append(pooled)
        nxt: dict[int, tuple[int, GroupStats]] = {}
        for i, _ in pending.items():
            try:
                nxt[i] = runs[i].send(pooled)
            except StopIteration as done:
                outs[i] = done.value
        if nxt and len(nxt) != len(pending):
            raise RuntimeError("tiles finished after different numbers of GroupNorm barriers")
        pending = nxt
    return [o for o in outs if o is not None]


def run_frozen(run: TileRun, stats: list[GroupStats]) -> torch.Tensor:
    """Run one tile end to end, normalising barrier k with stats[k]."""
    try:
        barrier, _ = next(run)
        while True:
            barrier, _ = run.send(stats[barrier])
    except StopIteration as done:
        return done.value
