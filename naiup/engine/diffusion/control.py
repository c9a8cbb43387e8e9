"""ControlNet tile applied per diffusion tile: each tile's ControlNet call sees exactly its own crop.

Which steps run it, at what scale: naiup.config.model.control_scales (preset keys control_*).
The control image of a tile ControlNet is the upscaled input itself (the pixels the img2img starts
from), RGB in [0, 1] (ControlNets take hints unnormalised, unlike the VAE's [-1, 1]), at the size of
the padded canvas, i.e. `factor` (the VAE's 8) times the latent. For a batch of latent tiles with
boxes (y, x, h, w), the ControlNet runs on the same latent batch, with the same context and SDXL
added conditioning as the UNet, and on the control image cropped at `factor` times each box; its
residuals go into that same UNet call only. With CFG the UNet batch is [uncond tiles, cond tiles],
so the crops are repeated in the same order. A tiled loop that gave every tile the whole control
image (resized) would paste a shrunken copy of the picture into each tile: the crop is the point.

Crops are cut per call, not cached: slicing is negligible next to the ControlNet itself, while a
cache of every batch's crops (for CFG doubled) would hold about three times the control image.

    control_image(rgb_hwc, dtype) -> (1, 3, H, W) in [0, 1]
    TileControl(net, image, scale, factor).unet_kwargs(x, t, context, added, boxes) -> UNet kwargs
    controlled(run, control) -> (x, t, context, extra, boxes, halves) -> fp32 UNet output: the one
        UNet call of both denoisers (one prompt: refine.make_guided_denoiser; a prompt per sample:
        regions.make_region_denoiser), the ControlNet beside it when `control` is given
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from naiup.engine.diffusion.tiling import Box

__all__ = ["Box", "TileControl", "control_image", "controlled"]


def control_image(rgb: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) in [0, 1] on the same device, as the ControlNet takes it."""
    return (rgb.to(torch.float32)[None] / 255.0).permute(0, 3, 1, 2).to(dtype)


@dataclass(frozen=True)
class TileControl:
    """One ControlNet at one conditioning scale over one control image."""

    net: torch.nn.Module
    image: torch.Tensor  # (1, 3, H, W) in [0, 1], the net's device and dtype
    scale: float
    factor: int = 8  # image px per latent px

    def crops(self, boxes: Sequence[Box], per_box: int) -> torch.Tensor:
        """The control image at `factor` times each box, each repeated `per_box` times (the images of a
        tile batch are tile-major: tile 0's images, then tile 1's ...)."""
        f = self.factor
        parts = [self.image[:, :, f * y : f * (y + h), f * x : f * (x + w)] for y, x, h, w in boxes]
        for box, part in zip(boxes, parts, strict=True):
            if part.shape[-2:] != (f * box[2], f * box[3]):
                # A box past the image edge would give a smaller crop: hint and latent misaligned.
                raise ValueError(f"tile box {box} outside the {tuple(self.image.shape[-2:])} control image")
        return torch.cat(parts).repeat_interleave(per_box, dim=0)

    def unet_kwargs(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor,
        added: dict[str, Any],
        boxes: Sequence[Box],
        halves: int = 1,
    ) -> dict[str, Any]:
        """Run the ControlNet on the UNet's own batch `x` (with CFG: `halves` = 2 copies of the tiles,
        uncond first) and return the residual keywords for that UNet call."""
        per_box = x.shape[0] // (halves * len(boxes))
        hint = self.crops(boxes, per_box)
        if halves > 1:
            hint = torch.cat([hint] * halves)
        down, mid = self.net(
            x,
            t,
            encoder_hidden_states=context,
            controlnet_cond=hint,
            conditioning_scale=self.scale,
            return_dict=False,
            **added,
        )
        return {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}


UnetRun = Callable[..., torch.Tensor]  # (x, t, context, **unet kwargs) -> model output


def controlled(
    run: UnetRun, control: TileControl | None
) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor, dict, Sequence[Box] | None, int], torch.Tensor]:
    """`run` as (x, t, context, extra, boxes, halves) -> fp32 output, `extra` its keywords (SDXL's
    added conditioning). With `control`, the ControlNet runs on that same batch and context first, its
    residuals going into this call only; `boxes` None means x is the whole canvas (the untiled loop).
    Whatever prompt each sample carries, its hint is its own tile's crop: the context is per sample,
    the crop per box, so regional prompts and ControlNet tile compose sample by sample."""

    def call(
        x: torch.Tensor,
        t: torch.Tensor,
        context: torch.Tensor,
        extra: dict,
        boxes: Sequence[Box] | None,
        halves: int,
    ) -> torch.Tensor:
        if control is not None:
            whole = [(0, 0, x.shape[-2], x.shape[-1])]
            extra = {**extra, **control.unet_kwargs(x, t, context, extra, boxes or whole, halves)}
        return run(x, t, context, **extra).float()

    return call
