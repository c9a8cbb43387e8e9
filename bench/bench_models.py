"""Random-weight models for the engine benchmark, written as the files the real pipeline loads.

The SD1.5-shaped set is saved as a diffusers folder that naiup's Refiner loads like any checkpoint;
the upscalers are saved as .safetensors files that naiup.engine.upscale.upscaler loads (real weights from
../shared/weights when present and not --small). Built once per cache folder, then reused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from naiup.config import Preset

REPO = Path(__file__).resolve().parents[1]
SD15 = REPO / "naiup" / "data" / "sd15"


@dataclass(frozen=True)
class Shape:
    name: str
    width: int  # input (NovelAI) image
    height: int
    tile: int  # UNet tile / overlap, latent px
    overlap: int
    vae_core: int | None  # VAE core tile, latent px (None: vae_tiling's default)


# NAI V3 portrait; SD1.5's real configs from naiup/data/sd15; the presets' tile size and overlap.
_PRESET = Preset(name="defaults")
FULL = Shape("full", 832, 1216, _PRESET.tile_size, _PRESET.overlap, None)
# Same block structure with ~1/10 the channels; tiles scaled down so the canvas still splits.
SMALL = Shape("small", 64, 96, 16, 8, 16)

_REAL_UPSCALERS = {
    2: "realcugan-se-2x/realcugan-se-up2x-conservative.safetensors",
    4: "realesrgan-x4plus-anime-6b/RealESRGAN_x4plus_anime_6B.safetensors",
}


def _sd_components(shape: Shape):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(SD15 / "tokenizer", model_max_length=77)
    torch.manual_seed(0)
    if shape.name == "full":
        unet = UNet2DConditionModel.from_config(json.loads((SD15 / "unet" / "config.json").read_text()))
        vae = AutoencoderKL.from_config(json.loads((SD15 / "vae" / "config.json").read_text()))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(SD15 / "text_encoder"))
        return unet, vae, text, tokenizer
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64, 128, 128),
        cross_attention_dim=32,
        attention_head_dim=8,
        layers_per_block=2,
        norm_num_groups=32,
        sample_size=64,
    )
    vae = AutoencoderKL(
        block_out_channels=(16, 32, 64, 64),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        norm_num_groups=8,
        latent_channels=4,
        sample_size=512,
        scaling_factor=0.18215,
    )
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=4,
            num_attention_heads=4,
            max_position_embeddings=77,
            hidden_act="quick_gelu",
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    return unet, vae, text, tokenizer


def sd_folder(shape: Shape, cache: Path) -> Path:
    """A diffusers SD1.5-shaped folder with random weights (UNet/TE saved fp16 at full size: half
    the bytes to write and read; the loader casts per device anyway)."""
    folder = cache / f"sd15-random-{shape.name}"
    if (folder / "model_index.json").is_file():
        return folder
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    unet, vae, text, tokenizer = _sd_components(shape)
    if shape.name == "full":
        unet, text = unet.half(), text.half()
    scheduler = PNDMScheduler.from_config(
        json.loads((SD15 / "scheduler" / "scheduler_config.json").read_text())
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    tmp = folder.with_name(folder.name + ".part")
    pipe.save_pretrained(tmp)
    tmp.rename(folder)  # a killed build never leaves a half folder that looks complete
    return folder


def upscaler_file(scale: int, small: bool, weights: Path | None, cache: Path) -> tuple[Path, str]:
    """(model file, description): the real model from `weights` if present (not --small), else a
    random one of the same family (Compact for 2x, RRDB/ESRGAN for 4x) saved as .safetensors."""
    if not small and weights and (weights / _REAL_UPSCALERS[scale]).is_file():
        return weights / _REAL_UPSCALERS[scale], _REAL_UPSCALERS[scale].split("/")[0]
    import safetensors.torch
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.ESRGAN import ESRGAN

    torch.manual_seed(0)
    if scale == 2:
        feat, convs = (16, 4) if small else (64, 16)
        net, desc = Compact(num_feat=feat, num_conv=convs, upscale=2), f"random Compact 2x ({feat}f/{convs}c)"
    else:
        filters, blocks = (16, 1) if small else (64, 6)
        net, desc = (
            ESRGAN(num_filters=filters, num_blocks=blocks, scale=4),
            f"random RRDB 4x ({filters}f/{blocks}b)",
        )
    path = cache / f"upscaler-{scale}x-{'small' if small else 'full'}.safetensors"
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        safetensors.torch.save_file({k: v.contiguous() for k, v in net.state_dict().items()}, path)
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
    The output convolutions, zero in a freshly initialised ControlNet, get small random weights so the
    residuals are not all zero (the cost is the same either way). fp16 when the model's UNet is."""
    folder = cache / f"controlnet-random-{model.name}"
    if (folder / "config.json").is_file():
        return folder
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet_config = UNet2DConditionModel.load_config(model / "unet")
    with torch.device("meta"):
        config = ControlNetModel.from_unet(
            UNet2DConditionModel.from_config(unet_config), load_weights_from_unet=False
        ).config
    torch.manual_seed(1)
    net = ControlNetModel.from_config(config)
    with torch.no_grad():
        for name, param in net.named_parameters():
            if name.startswith(
                ("controlnet_down_blocks.", "controlnet_mid_block.", "controlnet_cond_embedding.conv_out.")
            ):
                param.normal_(0.0, 0.01)
    from safetensors import safe_open

    with safe_open(str(model / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        if f.get_slice(next(iter(f.keys()))).get_dtype() == "F16":
            net = net.half()
    tmp = folder.with_name(folder.name + ".part")
    net.save_pretrained(tmp)
    tmp.rename(folder)
    return folder
