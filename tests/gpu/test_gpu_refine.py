"""The Refiner and the tiled VAE on CUDA: same result as on the CPU, the memory ladder under a real
allocator cap, and models that always end up wholly on the device."""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import pytest
import tiny_sd
import torch
from PIL import Image

from naiup.config import ModelConfig, Preset
from naiup.engine.device import cap_memory, misplaced
from naiup.engine.diffusion.refine import Refiner
from naiup.engine.vae import tiled as vt
from naiup.testing import tiny_vae

MIB = 2**20
# 96x96 px -> 12x12 latent; 8-latent tiles overlapping by 4 -> a 2x2 grid, 3 tiles per UNet call.
TILED = Preset(name="t", steps=8, denoise=0.5, tile_size=8, overlap=4, tile_batch_size=3, vae_tiling="exact")


def _image() -> Image.Image:
    y, x = np.mgrid[0:96, 0:96]
    return Image.fromarray(np.stack([x * 2, y * 2, (x + y)], axis=-1).astype(np.uint8), "RGB")


def _refine(refiner: Refiner, preset: Preset = TILED) -> np.ndarray:
    out = refiner.refine(_image(), preset, prompt="1girl, (detailed:1.2)", negative_prompt="", seed=7)
    return np.asarray(out, dtype=np.float64)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255**2 / max(float(np.mean((a - b) ** 2)), 1e-12)))


def _all_placed(refiner: Refiner) -> bool:
    m = refiner.models
    return all(
        misplaced(model, refiner.device, next(model.parameters()).dtype) == (0, 0)
        and next(model.parameters()).device == refiner.device
        for model in (m.unet, m.text_encoder, m.vae)
    )


@pytest.fixture(scope="module")
def cpu_config(tmp_path_factory) -> ModelConfig:
    return tiny_sd.cpu_config(tmp_path_factory)


@pytest.fixture(scope="module")
def refiner(cpu_config, cuda) -> Refiner:
    r = Refiner(replace(cpu_config, device="cuda"))
    r.load()
    return r


@pytest.fixture(scope="module")
def cpu_result(cpu_config) -> np.ndarray:
    return _refine(Refiner(cpu_config))


def test_the_refiner_on_cuda_equals_the_cpu_result(refiner, cpu_result, cuda):
    m = refiner.models
    assert refiner.device == cuda and _all_placed(refiner)
    assert (m.unet.dtype, m.text_encoder.dtype) == (torch.float16, torch.float16)
    native_bf16 = torch.cuda.get_device_capability(cuda) >= (8, 0)
    assert m.vae.dtype == (torch.bfloat16 if native_bf16 else torch.float32)
    psnr = _psnr(_refine(refiner), cpu_result)
    # tests/engine/test_refine_gpu_dtypes.py runs these dtypes (fp16 UNet, bf16 VAE) on the CPU and
    # measures 52 dB against fp32: bf16 keeps 8 mantissa bits and the random tiny VAE amplifies its
    # rounding. CUDA adds only a different summation order (fp32 accumulators in both), an error far
    # below that rounding, so 40 dB (RMS error 2.5 of 255) leaves room without hiding a real bug: a
    # wrong cast, an fp16 overflow or a tile on the wrong device gives noise or NaN, under 20 dB.
    assert psnr > 40, f"CUDA result drifts from the CPU one: PSNR {psnr:.1f} dB"


def test_tiled_equals_untiled_vae_in_exact_mode_on_cuda(cuda):
    vae = tiny_vae().to(cuda)
    g = torch.Generator().manual_seed(0)
    latent = torch.randn(1, 4, 65, 97, generator=g).to(cuda)  # no tile size divides it
    pixels = (torch.rand(1, 3, 520, 776, generator=g) * 2 - 1).to(cuda)
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False  # real fp32 convolutions, as on the CPU
    try:
        for ref, tiled in (
            (vt.decode(vae, latent, mode="off"), vt.decode(vae, latent, mode="exact", tile=24)),
            (vt.encode(vae, pixels, mode="off"), vt.encode(vae, pixels, mode="exact", tile=24)),
        ):
            assert tiled.shape == ref.shape and tiled.device == ref.device
            rel = ((tiled - ref).abs().max() / ref.abs().max()).item()
            # The CPU test holds 1e-4; cuDNN picks other algorithms (Winograd, FFT) per tile shape,
            # each exact to ~1e-5. A halo one pixel short is off by more than 1e-3 (CPU test
            # test_a_halo_below_the_receptive_field_is_not_exact).
            assert rel < 5e-4, f"tiled VAE differs from untiled on CUDA by {rel:.2e}"
    finally:
        torch.backends.cudnn.allow_tf32 = tf32


def test_the_memory_ladder_under_a_small_cap_retries_cleanly_with_the_models_back(refiner, cuda, caplog):
    reference = _refine(refiner, replace(TILED, tile_batch_size=1, vae_tiling="low-memory"))
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(cuda)
    cap = torch.cuda.memory_reserved(cuda) + 512 * MIB
    failures: list[int] = []

    def hook(_module, args):  # a batch of several tiles wants more than the cap: a real allocator OOM
        if args[0].shape[0] > 1:
            failures.append(args[0].shape[0])
            torch.empty(cap, dtype=torch.uint8, device=cuda)

    caplog.set_level(logging.WARNING, logger="naiup.engine.diffusion.refine")
    handle = refiner.models.unet.register_forward_pre_hook(hook)
    cap_memory(cuda, cap)
    try:
        got = _refine(refiner)
    finally:
        cap_memory(cuda, 0)
        handle.remove()
    assert failures and "refine out of memory" in caplog.text and "tile_batch_size=1" in caplog.text
    # The retry parked the UNet and text encoder for both VAE passes: all back, nothing leaked.
    assert _all_placed(refiner)
    assert torch.cuda.memory_allocated(cuda) <= before + MIB
    assert _psnr(got, reference) > 40  # same work as the rung it succeeded on (fp16 batch order aside)


def test_a_model_left_split_between_devices_is_placed_again_at_the_next_job(refiner, cpu_result):
    # What a way back from host RAM that ran out of memory leaves (offload.parked).
    refiner.models.unet.up_blocks.to("cpu")
    refiner.models.vae.decoder.to("cpu")
    assert not _all_placed(refiner)
    assert _psnr(_refine(refiner), cpu_result) > 40
    assert _all_placed(refiner)
