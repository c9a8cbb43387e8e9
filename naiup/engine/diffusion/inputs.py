"""The one check at the refine loop's entry (Refiner.refine); nothing below it checks again.

A Preset and ModelConfig from load_config have passed the config's rules already. Ones built in code
(the engine used as a library) are held to the same rules here, by the same function
(config.schema.check_values), so a bad value is a ConfigError naming its key before any model work,
not a failure deep in a sampler, the tiler or the VAE; so is a preset that runs a ControlNet the
model set lacks. The rest is what a config cannot know: the image and the seed. An image smaller
than a tile needs nothing: the tiler makes one tile of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from PIL import Image

from naiup.config import ModelConfig, Preset
from naiup.config.schema import check_values
from naiup.engine.image_prompts import Region
from naiup.engine.models.controlnet import TILE_MODELS
from naiup.engine.models.family import SD15, SDXL
from naiup.errors import ConfigError, EngineError

# What torch.Generator.manual_seed takes; outside it, an overflow error halfway into a job.
SEED_RANGE = range(-(2**63), 2**64)


def check_inputs(
    model: ModelConfig,
    preset: Preset,
    image: Image.Image | torch.Tensor,
    seed: int,
    regions: Sequence[Region] = (),
) -> None:
    """ConfigError naming the key for a model or preset value the config would refuse; EngineError
    for an image that is not RGB pixels or is empty, a seed torch cannot take, or a character region
    that image_prompts.plan_regions would not make (centre outside the image, size outside (0, 1]).
    Costs no device work (a tensor's shape and dtype are known on the host)."""
    check_values(model, "model")
    # `refine` is the Engine's switch for calling the Refiner at all; called, the Refiner refines,
    # so the rules for a refining preset apply (at least one UNet step) whatever the flag says.
    check_values(replace(preset, refine=True), f"presets.{preset.name}")
    if any(replace(preset, refine=True).control_scales) and not model.controlnet:
        raise ConfigError(
            f"presets.{preset.name}.control_strength",
            f"is {preset.control_strength}, but the model set has no ControlNet: set [model] controlnet "
            f"to a tile ControlNet of the checkpoint's family (SD1.5: {TILE_MODELS[SD15]}; SDXL: "
            f"{TILE_MODELS[SDXL]}), or use control_strength = 0",
        )
    if isinstance(image, Image.Image):
        width, height = image.size
    elif isinstance(image, torch.Tensor) and image.dtype == torch.uint8 and image.dim() == 3:
        height, width, channels = image.shape
        if channels != 3:
            raise EngineError(f"refine wants (H, W, 3) uint8 pixels, got {tuple(image.shape)}")
    else:
        what = (
            f"{tuple(image.shape)} {image.dtype}" if isinstance(image, torch.Tensor) else type(image).__name__
        )
        raise EngineError(f"refine wants a PIL image or (H, W, 3) uint8 pixels, got {what}")
    if width < 1 or height < 1:
        raise EngineError(f"refine wants a non-empty image, got {width}x{height}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed not in SEED_RANGE:
        raise EngineError(f"the seed must be an integer from -2**63 to 2**64 - 1, got {seed!r}")
    for i, region in enumerate(regions, 1):
        if not (all(0.0 <= v <= 1.0 for v in region.center) and 0.0 < region.size <= 1.0):
            raise EngineError(
                f"character region {i} has centre {region.center} and size {region.size}: the centre must "
                "be fractions of the image in [0, 1] and the size in (0, 1]"
            )
