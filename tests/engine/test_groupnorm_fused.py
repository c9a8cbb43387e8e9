"""GroupNorm with pooled statistics: fp32 sums and one fused per-channel scale/shift, equal to
torch's own group_norm in fp32 and within bf16 rounding in bf16."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from naiup.engine.vae.groupnorm_pool import apply_group_norm, partial_stats, pool


def _norm(groups: int = 8, channels: int = 32) -> torch.nn.GroupNorm:
    torch.manual_seed(0)
    norm = torch.nn.GroupNorm(groups, channels)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    return norm


def _x(dtype: torch.dtype) -> torch.Tensor:
    # A large mean against the spread: the case where a naive E[x²] − E[x]² in low precision cancels.
    g = torch.Generator().manual_seed(1)
    return (torch.randn(2, 32, 24, 20, generator=g) * 3 + 20).to(dtype)


@torch.no_grad()
def test_fp32_equals_torch_group_norm():
    norm, x = _norm(), _x(torch.float32)
    y = apply_group_norm(x, norm, partial_stats(x, 8))
    ref = F.group_norm(x, 8, norm.weight, norm.bias, norm.eps)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_bf16_stays_bf16_and_is_as_close_as_torchs_own_bf16_group_norm():
    norm, x = _norm(), _x(torch.bfloat16)
    y = apply_group_norm(x, norm, partial_stats(x, 8))
    exact = F.group_norm(x.float(), 8, norm.weight, norm.bias, norm.eps)
    native = F.group_norm(x, 8, norm.weight.bfloat16(), norm.bias.bfloat16(), norm.eps)
    assert y.dtype == torch.bfloat16
    ours, theirs = (y.float() - exact).abs().max(), (native.float() - exact).abs().max()
    # bf16 output rounding of values up to ~10 is ~0.03: ours may not be worse than torch's.
    assert ours <= max(theirs, 1e-3) * 1.25, (ours, theirs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@torch.no_grad()
def test_statistics_pooled_over_pieces_equal_the_whole_in_high_precision(dtype):
    x = _x(dtype)
    whole = x.double().reshape(2, 8, -1)
    pooled = pool([partial_stats(x[:, :, :7], 8), partial_stats(x[:, :, 7:], 8)])
    torch.testing.assert_close(
        pooled.mean, whole.mean(-1), rtol=0, atol=1e-5 if dtype == torch.float32 else 1e-3
    )
    var = whole.var(-1, correction=0)  # ≈ 9: the bf16 mean shift keeps the second moment from cancelling
    torch.testing.assert_close(pooled.var, var, rtol=1e-5 if dtype == torch.float32 else 2e-3, atol=0)


@torch.no_grad()
def test_no_affine_group_norm_is_plain_normalisation():
    norm = torch.nn.GroupNorm(4, 16, affine=False)
    x = torch.randn(1, 16, 8, 8)
    y = apply_group_norm(x, norm, partial_stats(x, 4))
    torch.testing.assert_close(y, F.group_norm(x, 4, eps=norm.eps), rtol=1e-5, atol=1e-5)
