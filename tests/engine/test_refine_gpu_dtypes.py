"""The CUDA dtype path (fp16 UNet and text encoder, bf16 VAE) run on the CPU, so the casts between
the half-precision models and our fp32 blending, scheduler and GroupNorm pooling are exercised where
CI can run them. No GPU here: only the dtypes are CUDA's, which is where such seams break."""

from __future__ import annotations

import numpy as np
import pytest
import tiny_sd
import torch
from PIL import Image

from naiup.config import ModelConfig, Preset
from naiup.engine.diffusion.refine import Refiner
from naiup.engine.models import load as models

# 96x96 px -> 12x12 latent; 8-latent tiles overlapping by 4 -> a 2x2 grid; exact tiled VAE.
TILED = Preset(name="t", steps=8, denoise=0.5, tile_size=8, overlap=4, tile_batch_size=3, vae_tiling="exact")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_cfg(tmp_path_factory) -> ModelConfig:
    return tiny_sd.cpu_config(tmp_path_factory)


def _image() -> Image.Image:
    y, x = np.mgrid[0:96, 0:96]
    rgb = np.stack([x * 2, y * 2, (x + y)], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb, "RGB")


def _refine(cfg: ModelConfig) -> tuple[Refiner, np.ndarray]:
    refiner = Refiner(cfg)
    out = refiner.refine(_image(), TILED, prompt="1girl, (detailed:1.2)", negative_prompt="", seed=7)
    return refiner, np.asarray(out, dtype=np.float64)


def test_fp16_unet_and_bf16_vae_match_the_fp32_result(model_cfg, monkeypatch):
    _, reference = _refine(model_cfg)
    monkeypatch.setattr(models, "unet_dtype", lambda device: torch.float16)
    monkeypatch.setattr(models, "vae_dtype", lambda device: torch.bfloat16)
    refiner, half = _refine(model_cfg)
    m = refiner.models
    assert (m.unet.dtype, m.text_encoder.dtype, m.vae.dtype) == (torch.float16, torch.float16, torch.bfloat16)
    mse = float(np.mean((half - reference) ** 2))
    psnr = 10 * np.log10(255**2 / max(mse, 1e-12))
    # Measured 52 dB (bf16 keeps 8 mantissa bits; the random tiny VAE amplifies its rounding). A dtype
    # bug (fp16 overflow, a half-precision scheduler step, a wrong cast) gives noise or NaN: < 20 dB.
    assert psnr > 40, f"half-precision result drifts: PSNR {psnr:.1f} dB"


def test_a_fp16_vae_is_refused(model_cfg, monkeypatch):
    monkeypatch.setattr(models, "vae_dtype", lambda device: torch.float16)
    with pytest.raises(Exception, match="fp32 or bf16"):
        _refine(model_cfg)
