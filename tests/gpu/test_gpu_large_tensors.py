"""Activations above 2^31 elements on CUDA: what an exact VAE decode run as ONE tile (the native
diffusers module, vae_tiling._native, chosen on a card with the memory for it) meets at 4x. The
decoder's widest full-resolution tensor is 256 channels (the upsampled output of the 256-channel
up block): 256 x 3328 x 4864 = 4.1e9 elements for a 832x1216 NAI image at 4x. Convolutions need
cuDNN's 64-bit path there (torch falls back to a slow im2col kernel without it), and GroupNorm and
nearest upsampling their own 64-bit indexing. Each op is compared with the same op on two halves."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

GIB = 2**30
H, W, C = 3328, 4864, 256  # > 2^31 elements in bf16: 8.3 GB a tensor
NEEDED = 48 * GIB


@pytest.fixture
def big(cuda) -> torch.Tensor:
    free, _total = torch.cuda.mem_get_info(cuda)
    if free < NEEDED:
        pytest.skip(f"needs {NEEDED / GIB:.0f} GiB free on {cuda}, has {free / GIB:.1f}")
    g = torch.Generator(cuda).manual_seed(0)
    x = torch.randn(1, C, H, W, device=cuda, dtype=torch.bfloat16, generator=g)
    assert x.numel() > 2**31
    yield x
    del x
    torch.cuda.empty_cache()


@torch.no_grad()
def test_a_conv_over_2_31_elements_equals_the_conv_of_its_halves(big, cuda):
    g = torch.Generator(cuda).manual_seed(1)
    weight = torch.randn(128, C, 3, 3, device=cuda, dtype=torch.bfloat16, generator=g) / 48
    whole = F.conv2d(big, weight, padding=1)
    half = H // 2
    top = F.conv2d(big[:, :, : half + 1], weight, padding=1)[:, :, :half]
    torch.testing.assert_close(whole[:, :, :half], top, rtol=2e-2, atol=2e-2)
    bottom = F.conv2d(big[:, :, half - 1 :], weight, padding=1)[:, :, 1:]
    torch.testing.assert_close(whole[:, :, half:], bottom, rtol=2e-2, atol=2e-2)


@torch.no_grad()
def test_group_norm_over_2_31_elements_normalises_every_group(big):
    y = F.group_norm(big, 32, eps=1e-6)
    stats = y[0].reshape(32, -1)
    mean = stats.float().mean(dim=1)
    var = stats.float().var(dim=1)
    torch.testing.assert_close(mean, torch.zeros_like(mean), rtol=0, atol=1e-2)
    torch.testing.assert_close(var, torch.ones_like(var), rtol=0, atol=2e-2)


@torch.no_grad()
def test_nearest_upsampling_into_2_31_elements_copies_every_pixel(cuda):
    free, _total = torch.cuda.mem_get_info(cuda)
    if free < 24 * GIB:
        pytest.skip("needs 24 GiB free")
    g = torch.Generator(cuda).manual_seed(2)
    small = torch.randn(1, C, H // 2, W // 2, device=cuda, dtype=torch.bfloat16, generator=g)
    up = F.interpolate(small, scale_factor=2.0, mode="nearest")
    assert up.numel() > 2**31
    assert torch.equal(up[:, :, -2::2, -2::2], small[:, :, -1:, -1:])
    assert torch.equal(up[:, :, 1::2, 1::2], small)
