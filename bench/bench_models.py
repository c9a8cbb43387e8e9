"""Random-weight models for the engine benchmark, written as the files the real pipeline loads.

The SD1.5- and SDXL-shaped sets are saved as diffusers folders that naiup's Refiner loads like any
checkpoint (full size: the real configs from naiup/data/sd15 and naiup/data/sdxl);
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
SDXL = REPO / "naiup" / "data" / "sdxl"


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
# W2-XL: SDXL's native 1024 px tiles (128 latent), overlap 16: 2x of 832x1216 is a 208x304 latent,
# 2 x 3 = 6 tiles per step. Small: SDXL's block structure (text_time embedding, two encoders of
# different widths) at toy widths, with the same toy tiles as SMALL.
FULL_XL = Shape("full-xl", 832, 1216, 128, 16, None)
SMALL_XL = Shape("small-xl", 64, 96, 16, 8, 16)

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


def _sdxl_components(shape: Shape):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from naiup.engine.models.sdxl_single_file import sdxl_tokenizers

    tok1, tok2 = sdxl_tokenizers()
    torch.manual_seed(0)
    if shape.name == "full-xl":

        def config(part: str) -> dict:
            return json.loads((SDXL / part / "config.json").read_text())

        # Random init of 3.5 G parameters takes minutes on a CPU and seconds on a GPU.
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            unet = UNet2DConditionModel.from_config(config("unet")).half()
            vae = AutoencoderKL.from_config(config("vae"))
            te1 = CLIPTextModel(CLIPTextConfig.from_pretrained(SDXL / "text_encoder")).half()
            te2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(SDXL / "text_encoder_2")).half()
        return unet, vae, te1, te2, tok1, tok2
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64, 128),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4, 8),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        transformer_layers_per_block=(1, 1, 2),
        projection_class_embeddings_input_dim=6 * 8 + 48,
        cross_attention_dim=32 + 48,
        norm_num_groups=16,
        sample_size=64,
    )
    vae_config = json.loads((SDXL / "vae" / "config.json").read_text())
    vae = AutoencoderKL.from_config(
        {**vae_config, "block_out_channels": (16, 32, 64, 64), "layers_per_block": 1, "norm_num_groups": 8}
    )

    def text(width: int) -> CLIPTextConfig:
        return CLIPTextConfig(
            vocab_size=len(tok1), hidden_size=width, intermediate_size=37, num_hidden_layers=3,
            num_attention_heads=4, max_position_embeddings=77, hidden_act="gelu", projection_dim=width,
            bos_token_id=tok1.bos_token_id, eos_token_id=tok1.eos_token_id, pad_token_id=1,
        )  # fmt: skip

    return unet, vae, CLIPTextModel(text(32)), CLIPTextModelWithProjection(text(48)), tok1, tok2


def sdxl_folder(shape: Shape, cache: Path) -> Path:
    """A diffusers SDXL-shaped folder with random weights (UNet and text encoders fp16 at full size:
    7 GB to write instead of 14; the loader casts per device anyway)."""
    folder = cache / f"sdxl-random-{shape.name}"
    if (folder / "model_index.json").is_file():
        return folder
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    unet, vae, te1, te2, tok1, tok2 = _sdxl_components(shape)
    scheduler = EulerDiscreteScheduler.from_config(
        json.loads((SDXL / "scheduler" / "scheduler_config.json").read_text())
    )
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=te1, text_encoder_2=te2, tokenizer=tok1, tokenizer_2=tok2, unet=unet,
        scheduler=scheduler, force_zeros_for_empty_prompt=True, add_watermarker=False,
    )  # fmt: skip
    tmp = folder.with_name(folder.name + ".part")
    pipe.save_pretrained(tmp)
    tmp.rename(folder)
    del pipe, unet, vae, te1, te2
    if torch.cuda.is_available():
        torch.cuda.empty_cache()  # the Refiner loads its own copy from the folder
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
