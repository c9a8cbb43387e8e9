"""Samplers for the refine loop: LCM and Euler over diffusers' scheduler maths, img2img semantics.

img2img keeps the tail of the N-step schedule, config.model.unet_steps(N, s) = int(N·s) steps, like
StableDiffusionImg2ImgPipeline and A1111 (not LCMScheduler.set_timesteps(N, strength), which would
spread N steps over the shortened range). A sampler is small resettable state, like a diffusers
scheduler: `set_steps(steps, strength)` builds the schedule, `step(eps, t, sample)` advances it. A
fresh sampler is made per image because diffusers schedulers keep a step index and timesteps between
calls.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import EulerDiscreteScheduler, LCMScheduler

from naiup.config.model import unet_steps

# dmd2: LCM stepping on DMD2's own evenly spaced grid (999/749/499/249 at 4 steps), not LCM's.
SAMPLERS = {"lcm": LCMScheduler, "dmd2": LCMScheduler, "euler": EulerDiscreteScheduler}


def dmd2_timesteps(steps: int) -> list[int]:
    return [999 - k * (1000 // steps) for k in range(steps)]


class Sampler:
    """One image's schedule; wraps a fresh diffusers scheduler so our loop matches the pipeline.
    `name` is one of SAMPLERS and set_steps gets at least one UNet step: the config refuses anything
    else (at load, and at Refiner.refine for presets built in code)."""

    def __init__(self, name: str, scheduler_config: dict[str, Any]) -> None:
        self.name = name
        self.scheduler = SAMPLERS[name].from_config(scheduler_config)
        self.timesteps = torch.empty(0)

    def set_steps(self, steps: int, strength: float, device: torch.device) -> torch.Tensor:
        n = unet_steps(steps, strength)
        if self.name == "dmd2":
            self.scheduler.set_timesteps(timesteps=dmd2_timesteps(steps), device=device)
        else:
            self.scheduler.set_timesteps(steps, device=device)
        start = (steps - n) * self.scheduler.order
        self.timesteps = self.scheduler.timesteps[start:]
        self.scheduler.set_begin_index(start)
        return self.timesteps

    def add_noise(self, latents: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return self.scheduler.add_noise(latents, noise, self.timesteps[:1])

    def scale_input(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.scheduler.scale_model_input(x, t)

    def step(
        self, eps: torch.Tensor, t: torch.Tensor, x: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        # One call on the whole canvas, so LCM's re-noise is drawn once per step from the seeded generator.
        return self.scheduler.step(eps, t, x, generator=generator, return_dict=False)[0]
