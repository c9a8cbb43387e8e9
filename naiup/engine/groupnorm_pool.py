"""GroupNorm statistics pooled exactly across tiles, and the lock-step driver that needs them.

A tile's forward pass is written as a generator (see vae_stages.py) that *yields* at every GroupNorm
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

__all__ = ["GroupStats", "TileRun", "apply_group_norm", "partial_stats", "pool", "run_frozen", "run_pooled"]


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
    """Statistics of one tile's core region x (B, C, h, w), per group, in fp32 then widened."""
    b = x.shape[0]
    flat = x.reshape(b, groups, -1).float()
    var, mean = torch.var_mean(flat, dim=-1, correction=0)
    n = flat.shape[-1]
    wide = _stats_dtype(x.device)
    count = torch.full_like(mean, n, dtype=wide)
    return GroupStats(count, mean.to(wide), var.to(wide) * n)


def pool(parts: list[GroupStats]) -> GroupStats:
    """Chan's parallel merge: exact pooled mean and variance, between-tile spread included
    (averaging per-tile variances drops Σn_i(μ_i − μ)², the grey-veil bug of naive pooling)."""
    count = torch.stack([p.count for p in parts])
    mean_i = torch.stack([p.mean for p in parts])
    total = count.sum(0)
    mean = (count * mean_i).sum(0) / total
    m2 = torch.stack([p.m2 for p in parts]).sum(0) + (count * (mean_i - mean) ** 2).sum(0)
    return GroupStats(total, mean, m2)


def apply_group_norm(x: torch.Tensor, norm: nn.GroupNorm, stats: GroupStats) -> torch.Tensor:
    """nn.GroupNorm's affine normalisation with given statistics, computed in fp32."""
    b, c, h, w = x.shape
    g = norm.num_groups
    mean = stats.mean.to(torch.float32).view(b, g, 1, 1)
    inv = torch.rsqrt(stats.var.to(torch.float32) + norm.eps).view(b, g, 1, 1)
    y = (x.float().view(b, g, c // g, h * w) - mean.view(b, g, 1, 1)) * inv.view(b, g, 1, 1)
    y = y.view(b, c, h, w)
    if norm.affine:
        y = y * norm.weight.float().view(1, c, 1, 1) + norm.bias.float().view(1, c, 1, 1)
    return y.to(x.dtype)


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
