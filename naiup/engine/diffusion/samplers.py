"""Samplers for the refine loop: LCM and Euler over diffusers' scheduler maths, img2img semantics.

img2img keeps the tail of the N-step schedule, int(N·s) steps, like StableDiffusionImg2ImgPipeline and
A1111 (diffusers.md §4.2). A sampler is small resettable state, like a diffusers scheduler:
`set_steps(steps, strength)` builds the schedule, `step(eps, t, sample)` advances it. A fresh sampler is
made per image because schedulers are stateful (§2.5).
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers import EulerDiscreteScheduler, LCMScheduler

from naiup.config import Preset
from naiup.errors import ConfigError

# dmd2: LCM stepping on DMD2's own evenly spaced grid (999/749/499/249 at 4 steps), not LCM's.
SAMPLERS = {"lcm": LCMScheduler, "dmd2": LCMScheduler, "euler": EulerDiscreteScheduler}


def dmd2_timesteps(steps: int) -> list[int]:
    return [999 - k * (1000 // steps) for k in range(steps)]


def unet_steps(steps: int, strength: float) -> int:
    return min(int(steps * strength), steps)


def check_preset(preset: Preset) -> None:
    """Refuse what would run zero steps or an unknown sampler, naming the keys to change."""
    key = f"presets.{preset.name}"
    if preset.sampler not in SAMPLERS:
        raise ConfigError(f"{key}.sampler", f"must be one of {', '.join(SAMPLERS)}, got {preset.sampler!r}")
    if preset.steps < 1:
        raise ConfigError(f"{key}.steps", f"must be >= 1, got {preset.steps}")
    if not 0.0 < preset.denoise <= 1.0:
        raise ConfigError(f"{key}.denoise", f"must be in (0, 1], got {preset.denoise}")
    if unet_steps(preset.steps, preset.denoise) < 1:
        raise ConfigError(
            f"{key}.denoise",
            f"steps={preset.steps} x denoise={preset.denoise} gives 0 refine steps; "
            f"raise steps to at least {int(1 / preset.denoise + 0.999999)} or denoise",
        )
    if preset.cfg < 0:
        raise ConfigError(f"{key}.cfg", f"must be >= 0, got {preset.cfg}")


class Sampler:
    """One image's schedule; wraps a fresh diffusers scheduler so our loop matches the pipeline."""

    def __init__(self, name: str, scheduler_config: dict[str, Any]) -> None:
        if name not in SAMPLERS:
            raise ConfigError("preset.sampler", f"must be one of {', '.join(SAMPLERS)}, got {name!r}")
        self.name = name
        self.scheduler = SAMPLERS[name].from_config(scheduler_config)
        self.timesteps = torch.empty(0)

    def set_steps(self, steps: int, strength: float, device: torch.device) -> torch.Tensor:
        n = unet_steps(steps, strength)
        if n < 1:
            raise ConfigError("preset.steps", f"steps={steps} x denoise={strength} gives 0 refine steps")
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
