"""Tiny seeded SD-shaped VAE for the tiled-VAE tests (the tiled-diffusion tests run the real Refiner
on tests/tiny_sd.py's model set)."""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL


def tiny_vae() -> AutoencoderKL:
    # Four levels like SD (8x down), so alignment and halos are exercised at SD's factor.
    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=(8, 16, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=4,
        latent_channels=4,
        sample_size=64,
    ).eval()
