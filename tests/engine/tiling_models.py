"""Tiny seeded SD-shaped models and a minimal LCM img2img loop for the tiling tests.

The loop stands in for the engine-core Refiner until it lands (brief: the lead points these tests at
it after merge): predict(x_canvas, t) once per step, then ONE LCMScheduler step on the whole canvas.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import AutoencoderKL, LCMScheduler, UNet2DConditionModel


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


def tiny_unet() -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=1,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=8,
    ).eval()


def guided_denoiser(unet: UNet2DConditionModel, cond: torch.Tensor) -> Callable:
    """CFG 1: one pass; conditioning computed once, expanded (no copy) to the batch."""

    @torch.no_grad()
    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return unet(x, t, encoder_hidden_states=cond.expand(x.shape[0], -1, -1)).sample

    return guided


@torch.no_grad()
def lcm_refine(predict: Callable, z0: torch.Tensor, seed: int, steps: int = 8, strength: float = 0.25):
    """LCM img2img tail: int(steps*strength) steps, noise and step noise from one CPU generator."""
    sched = LCMScheduler()
    sched.set_timesteps(steps)
    run = int(steps * strength)
    start = steps - run
    sched.set_begin_index(start)
    gen = torch.Generator().manual_seed(seed)
    timesteps = sched.timesteps[start:]
    x = sched.add_noise(z0, torch.randn(z0.shape, generator=gen), timesteps[:1])
    denoised = x
    for t in timesteps:
        x, denoised = sched.step(predict(x, t), t, x, generator=gen, return_dict=False)
    return denoised
