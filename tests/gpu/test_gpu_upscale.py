"""The shipped upscaler on CUDA: the CPU's result in fp16, and an out-of-memory fallback to the CPU
that lasts one image."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from naiup.engine.device import cap_memory, misplaced
from naiup.engine.upscale.upscaler import load_upscaler

MIB = 2**20


def _image() -> Image.Image:
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:192, 0:160]
    base = np.stack([x, y, (x + y) // 2], axis=-1) + rng.integers(0, 40, (192, 160, 3))
    return Image.fromarray(base.clip(0, 255).astype(np.uint8), "RGB")


def _psnr(a: Image.Image, b: Image.Image) -> float:
    mse = float(np.mean((np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) ** 2))
    return float(10 * np.log10(255**2 / max(mse, 1e-12)))


def test_the_upscaler_on_cuda_gives_the_cpu_result(cuda):
    up = load_upscaler("realcugan-2x", cuda)
    params = list(up.net.model.parameters())
    assert up.device == cuda and up.dtype == torch.float16 and up.channels_last
    assert misplaced(up.net.model, cuda, torch.float16) == (0, 0) and params[0].device == cuda
    out = up.upscale(_image(), 2)
    expected = load_upscaler("realcugan-2x", torch.device("cpu")).upscale(_image(), 2)
    assert out.size == expected.size == (320, 384)
    # fp16 activations against fp32: a rounding of ~1e-3 relative, well under one 8-bit level on
    # most pixels (~50 dB measured for such models); a layout or tiling bug gives visible seams.
    assert _psnr(out, expected) > 40


def test_out_of_memory_even_at_the_smallest_tile_falls_back_to_the_cpu_for_that_image_only(cuda):
    up = load_upscaler("realcugan-2x", cuda)
    expected = load_upscaler("realcugan-2x", torch.device("cpu")).upscale(_image(), 2)
    torch.cuda.empty_cache()
    cap_memory(cuda, torch.cuda.memory_reserved(cuda) + 8 * MIB)  # a 128 px tile wants ~60 MB
    try:
        out = up.upscale(_image(), 2)
    finally:
        cap_memory(cuda, 0)
    assert _psnr(out, expected) > 60  # it ran on the CPU in fp32, as the reference did
    # Back on the GPU for the next image.
    assert up.device == cuda and up.dtype == torch.float16
    assert misplaced(up.net.model, cuda, torch.float16) == (0, 0)
    assert _psnr(up.upscale(_image(), 2), expected) > 40
