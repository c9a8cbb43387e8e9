"""Random-weight models for the engine benchmark, written as the files the real pipeline loads.

The SD1.5- and SDXL-shaped sets are saved as diffusers folders that naiup's Refiner loads like any
checkpoint (full size: the real configs from naiup/data/sd15 and naiup/data/sdxl);
the upscalers are saved as .safetensors files that naiup.engine.upscale.upscaler loads (real weights from
../shared/weights when present and not --small). Built once per cache folder, then reused.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from naiup.config import Preset
from naiup.testing import (
    SMALL_SD15,
    SMALL_SDXL,
    SD15Shape,
    SDXLShape,
    compact_upscaler,
    random_controlnet,
    save_sd15,
    save_sdxl,
    save_weights,
    sd15_components,
    sdxl_components,
)


@dataclass(frozen=True)
class Shape:
    name: str
    width: int  # input (NovelAI) image
    height: int
    tile: int  # UNet tile / overlap, latent px
    overlap: int
    vae_core: int | None  # VAE core tile, latent px (None: vae_tiling's default)
    model: SD15Shape | SDXLShape | None  # the random model's widths (None: the family's real configs)
    family: str = "sd15"


# NAI V3 portrait; SD1.5's real configs from naiup/data/sd15; the presets' tile size and overlap.
_PRESET = Preset(name="defaults")
FULL = Shape("full", 832, 1216, _PRESET.tile_size, _PRESET.overlap, None, None)
# Same block structure with ~1/10 the channels; tiles scaled down so the canvas still splits.
SMALL = Shape("small", 64, 96, 16, 8, 16, SMALL_SD15)
# W2-XL: SDXL's native 1024 px tiles (128 latent), overlap 16: 2x of 832x1216 is a 208x304 latent,
# 2 x 3 = 6 tiles per step. Small: SDXL's block structure (text_time embedding, two encoders of
# different widths) at toy widths, with the same toy tiles as SMALL.
FULL_XL = Shape("full-xl", 832, 1216, 128, 16, None, None, "sdxl")
SMALL_XL = Shape("small-xl", 64, 96, 16, 8, 16, SMALL_SDXL, "sdxl")

_REAL_UPSCALERS = {
    2: "realcugan-se-2x/realcugan-se-up2x-conservative.safetensors",
    4: "realesrgan-x4plus-anime-6b/RealESRGAN_x4plus_anime_6B.safetensors",
}


def sd_folder(shape: Shape, cache: Path) -> Path:
    """A diffusers SD1.5-shaped folder with random weights (UNet/TE saved fp16 at full size: half
    the bytes to write and read; the loader casts per device anyway)."""
    folder = cache / f"sd15-random-{shape.name}"
    if (folder / "model_index.json").is_file():
        return folder
    unet, vae, text, tokenizer = sd15_components(shape.model)
    if shape.model is None:
        unet, text = unet.half(), text.half()
    tmp = folder.with_name(folder.name + ".part")
    save_sd15(tmp, unet, vae, text, tokenizer)
    tmp.rename(folder)  # a killed build never leaves a half folder that looks complete
    return folder


def sdxl_folder(shape: Shape, cache: Path) -> Path:
    """A diffusers SDXL-shaped folder with random weights (full size: UNet and text encoders fp16,
    7 GB to write instead of 14; built on the GPU when there is one)."""
    folder = cache / f"sdxl-random-{shape.name}"
    if (folder / "model_index.json").is_file():
        return folder
    parts = sdxl_components(shape.model)  # type: ignore[arg-type]
    tmp = folder.with_name(folder.name + ".part")
    save_sdxl(tmp, *parts)
    tmp.rename(folder)
    del parts
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the Refiner loads its own copy from the folder
    return folder


def upscaler_file(scale: int, small: bool, weights: Path | None, cache: Path) -> tuple[Path, str]:
    """(model file, description): the real model from `weights` if present (not --small), else a
    random one of the same family (Compact for 2x, RRDB/ESRGAN for 4x) saved as .safetensors."""
    if not small and weights and (weights / _REAL_UPSCALERS[scale]).is_file():
        return weights / _REAL_UPSCALERS[scale], _REAL_UPSCALERS[scale].split("/")[0]
    from spandrel.architectures.ESRGAN import ESRGAN

    if scale == 2:
        feat, convs = (16, 4) if small else (64, 16)
        net, desc = compact_upscaler(2, feat, convs), f"random Compact 2x ({feat}f/{convs}c)"
    else:
        torch.manual_seed(0)
        filters, blocks = (16, 1) if small else (64, 6)
        net, desc = (
            ESRGAN(num_filters=filters, num_blocks=blocks, scale=4),
            f"random RRDB 4x ({filters}f/{blocks}b)",
        )
    path = cache / f"upscaler-{scale}x-{'small' if small else 'full'}.safetensors"
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        save_weights(net, path)
    return path, desc


def input_image(shape: Shape):
    """A deterministic smooth-plus-detail RGB image: PNG sizes and times like an illustration's,
    not like white noise (which no encoder compresses)."""
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(1, 3, max(2, shape.height // 16), max(2, shape.width // 16), generator=g)
    smooth = torch.nn.functional.interpolate(coarse, (shape.height, shape.width), mode="bicubic")
    fine = torch.rand(1, 3, shape.height, shape.width, generator=g) * 0.08
    arr = ((smooth + fine).clamp(0, 1)[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    return Image.fromarray(arr, "RGB")


def controlnet_folder(model: Path, cache: Path) -> Path:
    """A random-weight ControlNet shaped for the model folder's UNet (SD1.5 or SDXL: its encoder with the
    16/32/96/256 hint encoder, as a tile ControlNet of that family is), saved as a diffusers folder.
    Its zero convolutions get small random weights (naiup.testing.random_controlnet) so the residuals
    are not all zero (the cost is the same either way). fp16 when the model's UNet is. Built on the GPU
    when there is one: SDXL's is 1.25 G parameters, whose random init takes a while on a CPU."""
    folder = cache / f"controlnet-random-{model.name}"
    if (folder / "config.json").is_file():
        return folder
    from diffusers import UNet2DConditionModel
    from safetensors import safe_open

    config = UNet2DConditionModel.load_config(model / "unet")
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        net = random_controlnet(config, seed=1, residual_std=0.01)
    with safe_open(str(model / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        if f.get_slice(next(iter(f.keys()))).get_dtype() == "F16":
            net = net.half()
    tmp = folder.with_name(folder.name + ".part")
    net.save_pretrained(tmp)
    tmp.rename(folder)
    del net
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the Refiner loads its own copy from the folder
    return folder
