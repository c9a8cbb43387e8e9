"""Tiny seeded SD-shaped VAE for the tiled-VAE tests (the tiled-diffusion tests run the real Refiner
on tests/tiny_sd.py's model set)."""

from __future__ import annotations

import json

import torch
from diffusers import AutoencoderKL

from naiup.engine.models.sdxl_single_file import SDXL_SKELETON


def tiny_vae(family: str = "sd15") -> AutoencoderKL:
    """Four levels like SD (8x down), so alignment and halos are exercised at SD's factor. "sdxl": the
    same tiny widths on naiup's bundled SDXL VAE config, so every other key is SDXL's own (scaling
    factor 0.13025, force_upcast): the architecture is SD1.5's, only those keys differ."""
    torch.manual_seed(0)
    tiny = {
        "block_out_channels": (8, 16, 32, 32),
        "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4,
        "layers_per_block": 1,
        "norm_num_groups": 4,
        "latent_channels": 4,
        "sample_size": 64,
    }
    if family == "sdxl":
        config = json.loads((SDXL_SKELETON / "vae" / "config.json").read_text())
        return AutoencoderKL.from_config({**config, **tiny}).eval()
    return AutoencoderKL(**tiny).eval()
