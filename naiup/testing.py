"""Random-weight Stable Diffusion models for tests and benchmarks: built from a seed, fully offline.

The one place tests/ and bench/ build models (no downloads, no network). The same seed and shape
always give the same weights, so oracle tests can compare outputs across runs. Nothing in naiup
imports this module, and torch/diffusers/transformers are imported inside the builders, so
importing it costs nothing.

    sd15_components(shape, seed) -> (unet, vae, text_encoder, tokenizer)   SD1.5 layout, `shape`'s
                                        widths (None: SD1.5's real configs from naiup/data/sd15)
    save_sd15(folder, unet, vae, text_encoder, tokenizer) -> Path   diffusers folder, SD1.5 scheduler
    build_tiny_sd(folder, seed) -> Path       the tests' SD1.5-shaped folder (about 8 MB)
    build_tiny_sdxl(folder, v_pred, seed) -> Path   the tests' SDXL-shaped folder
    sdxl_components(shape, seed) / save_sdxl(folder, ...)   SDXL layout at `shape`'s widths (None:
                                        SDXL's real configs from naiup/data/sdxl), as a diffusers folder
    sd_vae(channels, groups, ...) / tiny_vae(seed, family)  SD's VAE layout at any width; the narrowest
                                        one, with SD1.5's or SDXL's config keys
    compact_upscaler(scale, num_feat, num_conv, seed) / save_weights(module, path)
    random_controlnet(unet_config, seed, residual_std) -> ControlNetModel   shaped for that UNet
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

SD15_DIR = Path(__file__).parent / "data" / "sd15"
SDXL_DIR = Path(__file__).parent / "data" / "sdxl"
TOKENIZER_DIR = SD15_DIR / "tokenizer"  # the real CLIP BPE vocabulary: prompts tokenise as in SD1.5


@dataclass(frozen=True)
class SD15Shape:
    """Widths of an SD1.5-layout model: SD1.5's blocks (4 UNet levels, 3 with cross-attention; a
    4-level VAE, 8x down) with fewer channels. `*_sample_size` is only recorded in the configs."""

    unet_channels: tuple[int, ...]
    unet_groups: int
    unet_sample_size: int
    vae_channels: tuple[int, ...]
    vae_groups: int
    vae_sample_size: int


# The tests' model: 32 channels everywhere. 32 GroupNorm groups of 1 channel fail at the 1x1 bottom
# of an 8x8 latent, hence 8 groups in the UNet.
TINY_SD15 = SD15Shape((32, 32, 32, 32), 8, 8, (32, 32, 32, 32), 32, 64)
# The benchmark's --small model: about 1/10 of SD1.5's channels, so tiling and batching still matter.
SMALL_SD15 = SD15Shape((32, 64, 128, 128), 32, 64, (16, 32, 64, 64), 8, 512)
TEXT_WIDTH = 32  # hidden size of the small CLIP text encoders (SD1.5's is 768)


def sd_vae(
    channels: tuple[int, ...], groups: int, sample_size: int = 64, layers: int = 1, **family: Any
) -> AutoencoderKL:
    """SD's VAE architecture (four levels, 8x down, 4 latent channels) at `channels` widths;
    `family`: the config keys SD1.5 and SDXL differ in (scaling_factor, force_upcast). Weights come
    from the caller's seeded global RNG."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=channels,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels),
        latent_channels=4,
        layers_per_block=layers,
        norm_num_groups=groups,
        sample_size=sample_size,
        **family,
    )


def sdxl_vae_keys() -> dict[str, Any]:
    """The VAE config keys SDXL's differs from SD1.5's in (scaling_factor 0.13025, force_upcast), from
    naiup's bundled SDXL config: the architecture is the same."""
    config = json.loads((SDXL_DIR / "vae" / "config.json").read_text())
    return {k: config[k] for k in ("scaling_factor", "force_upcast")}


def tiny_vae(seed: int = 0, family: str = "sd15") -> AutoencoderKL:
    """The narrowest SD-layout VAE (8 to 32 channels), in eval mode: for tests that run a VAE many
    times (tiled VAE). Four levels like SD, so alignment and halos are exercised at SD's factor.
    family "sdxl": the same weights (per seed) under SDXL's config keys."""
    import torch

    torch.manual_seed(seed)
    return sd_vae((8, 16, 32, 32), groups=4, **(sdxl_vae_keys() if family == "sdxl" else {})).eval()


def clip_text_config(
    tokenizer: CLIPTokenizer, width: int, layers: int, act: str, **extra: Any
) -> CLIPTextConfig:
    """A small CLIP text encoder config over `tokenizer`'s vocabulary (77 positions, 4 heads)."""
    from transformers import CLIPTextConfig

    ids = {"pad_token_id": tokenizer.pad_token_id, **extra}  # SDXL's encoders pad with id 1
    return CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=width,
        intermediate_size=37,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=77,
        hidden_act=act,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **ids,
    )


def randomise_layernorm_biases(*modules: torch.nn.Module) -> None:
    """Trained CLIP has non-zero LayerNorm biases; with zero ones (a fresh model's) every chunk's
    embedding mean is 0, and the prompt encoder's mean restore would divide by it."""
    import torch

    with torch.no_grad():
        for module in modules:
            for mod in module.modules():
                if isinstance(mod, torch.nn.LayerNorm):
                    mod.bias.normal_(0.0, 0.1)


def _tokenizer(**kwargs: Any) -> CLIPTokenizer:
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(TOKENIZER_DIR, model_max_length=77, **kwargs)


def sd15_components(
    shape: SD15Shape | None = TINY_SD15, seed: int = 0
) -> tuple[UNet2DConditionModel, AutoencoderKL, CLIPTextModel, CLIPTokenizer]:
    """Seeded random UNet, VAE and CLIP text encoder in SD1.5's layout, and SD1.5's tokenizer.
    `shape` None: SD1.5's real configs from naiup/data/sd15 (full size, for timing)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = _tokenizer()
    torch.manual_seed(seed)
    if shape is None:
        unet = UNet2DConditionModel.from_config(json.loads((SD15_DIR / "unet" / "config.json").read_text()))
        vae = AutoencoderKL.from_config(json.loads((SD15_DIR / "vae" / "config.json").read_text()))
        text = CLIPTextModel(CLIPTextConfig.from_pretrained(SD15_DIR / "text_encoder"))
        return unet, vae, text, tokenizer
    unet = UNet2DConditionModel(
        block_out_channels=shape.unet_channels,
        layers_per_block=2,
        sample_size=shape.unet_sample_size,
        in_channels=4,
        out_channels=4,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=TEXT_WIDTH,
        attention_head_dim=8,
        norm_num_groups=shape.unet_groups,
    )
    vae = sd_vae(shape.vae_channels, shape.vae_groups, shape.vae_sample_size, scaling_factor=0.18215)
    text = CLIPTextModel(clip_text_config(tokenizer, TEXT_WIDTH, layers=4, act="quick_gelu"))
    return unet, vae, text, tokenizer


def save_sd15(
    folder: Path,
    unet: UNet2DConditionModel,
    vae: AutoencoderKL,
    text: CLIPTextModel,
    tokenizer: CLIPTokenizer,
) -> Path:
    """Save the components as a diffusers StableDiffusionPipeline folder with SD1.5's scheduler."""
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    config = json.loads((SD15_DIR / "scheduler" / "scheduler_config.json").read_text())
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=PNDMScheduler.from_config(config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(folder)
    return Path(folder)


def build_tiny_sd(folder: Path, seed: int = 0) -> Path:
    """The tests' SD1.5-shaped StableDiffusionPipeline folder (TINY_SD15, about 8 MB)."""
    unet, vae, text, tokenizer = sd15_components(TINY_SD15, seed)
    randomise_layernorm_biases(text)
    return save_sd15(folder, unet, vae, text, tokenizer)


# SDXL: the two text encoders have different widths on purpose: with equal widths a loader that picks
# a component by shape cannot be told apart from one that picks it by name.
SDXL_TE1_WIDTH, SDXL_TE2_WIDTH, SDXL_TIME_DIM = 32, 48, 8


def _sdxl_scheduler(v_pred: bool) -> Any:
    from diffusers import EulerDiscreteScheduler

    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        num_train_timesteps=1000,
        steps_offset=1,
        timestep_spacing="leading",
        prediction_type="v_prediction" if v_pred else "epsilon",
        rescale_betas_zero_snr=v_pred,
    )


@dataclass(frozen=True)
class SDXLShape:
    """Widths of an SDXL-layout model: SDXL's 3-level UNet (no attention at the top level, size
    conditioning through text_time), SD's VAE layout; text encoders SDXL_TE1/TE2_WIDTH wide."""

    unet_channels: tuple[int, int, int]
    unet_heads: tuple[int, int, int]
    unet_sample_size: int
    vae_channels: tuple[int, ...]
    vae_groups: int


TINY_SDXL = SDXLShape((32, 64, 64), (2, 4, 4), 16, (32, 32, 32, 32), 32)
# The benchmark's --small --family sdxl model: wider, so tiling and batching still matter.
SMALL_SDXL = SDXLShape((32, 64, 128), (2, 4, 8), 64, (16, 32, 64, 64), 8)


def sdxl_components(shape: SDXLShape | None = TINY_SDXL, seed: int = 0) -> tuple[Any, ...]:
    """Seeded random (unet, vae, text_encoder, text_encoder_2, tokenizer, tokenizer_2) in SDXL's
    layout; tokenizer_2 pads with "!" as bigG's does. `shape` None: SDXL's real configs from
    naiup/data/sdxl (UNet 2.57 G parameters), built on the GPU when there is one (a CPU takes
    minutes to initialise 3.5 G random parameters) and in fp16 there but for the VAE."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    if shape is None:

        def config(part: str) -> dict:
            return json.loads((SDXL_DIR / part / "config.json").read_text())

        tok1, tok2 = _tokenizer(), _tokenizer(pad_token="!")
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            unet = UNet2DConditionModel.from_config(config("unet")).half()
            vae = AutoencoderKL.from_config(config("vae"))
            te1 = CLIPTextModel(CLIPTextConfig.from_pretrained(SDXL_DIR / "text_encoder")).half()
            te2 = CLIPTextModelWithProjection(
                CLIPTextConfig.from_pretrained(SDXL_DIR / "text_encoder_2")
            ).half()
        return unet, vae, te1, te2, tok1, tok2
    unet = UNet2DConditionModel(
        block_out_channels=shape.unet_channels,
        layers_per_block=2,
        sample_size=shape.unet_sample_size,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=shape.unet_heads,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=SDXL_TIME_DIM,
        transformer_layers_per_block=(1, 1, 2),
        projection_class_embeddings_input_dim=6 * SDXL_TIME_DIM + SDXL_TE2_WIDTH,
        cross_attention_dim=SDXL_TE1_WIDTH + SDXL_TE2_WIDTH,
        norm_num_groups=16,
    )
    vae = sd_vae(shape.vae_channels, groups=shape.vae_groups, **sdxl_vae_keys())
    tok1, tok2 = _tokenizer(), _tokenizer(pad_token="!")

    def te_config(width: int, act: str) -> CLIPTextConfig:
        return clip_text_config(tok1, width, layers=3, act=act, projection_dim=width, pad_token_id=1)

    te1 = CLIPTextModel(te_config(SDXL_TE1_WIDTH, "quick_gelu"))
    te2 = CLIPTextModelWithProjection(te_config(SDXL_TE2_WIDTH, "gelu"))
    return unet, vae, te1, te2, tok1, tok2


def save_sdxl(
    folder: Path, unet: Any, vae: Any, te1: Any, te2: Any, tok1: Any, tok2: Any, v_pred: bool = False
) -> Path:
    """Save the components as a diffusers StableDiffusionXLPipeline folder (Euler scheduler; `v_pred`:
    v-prediction with zero-terminal-SNR betas)."""
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=te1,
        text_encoder_2=te2,
        tokenizer=tok1,
        tokenizer_2=tok2,
        unet=unet,
        scheduler=_sdxl_scheduler(v_pred),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    pipe.save_pretrained(folder)
    return Path(folder)


def build_tiny_sdxl(folder: Path, v_pred: bool = False, seed: int = 0) -> Path:
    """The tests' SDXL-shaped StableDiffusionXLPipeline folder: 3-level UNet (32/64/64, text_time
    size embedding), SD's VAE layout at SDXL's scale 0.13025, a CLIP-L-like 32-wide and a bigG-like
    48-wide encoder; `v_pred`: v-prediction with zero-terminal-SNR betas."""
    unet, vae, te1, te2, tok1, tok2 = sdxl_components(TINY_SDXL, seed)
    randomise_layernorm_biases(te1, te2)
    return save_sdxl(folder, unet, vae, te1, te2, tok1, tok2, v_pred)


def compact_upscaler(scale: int, num_feat: int, num_conv: int, seed: int = 0) -> torch.nn.Module:
    """A seeded random Compact (SRVGG) upscaler, the family of Real-ESRGAN's animevideov3."""
    import torch
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(seed)
    return Compact(num_feat=num_feat, num_conv=num_conv, upscale=scale)


# A fresh ControlNet's zero convolutions: its outputs, and the last conv of the hint encoder.
_CONTROLNET_ZERO_INIT = (
    "controlnet_down_blocks.",
    "controlnet_mid_block.",
    "controlnet_cond_embedding.conv_out.",
)


def random_controlnet(unet_config: dict[str, Any], seed: int, residual_std: float) -> ControlNetModel:
    """A ControlNet shaped for a UNet with `unet_config` (SD1.5 or SDXL: diffusers' from_unet mapping,
    the UNet's encoder and mid block with SD's 16/32/96/256 hint encoder, as a tile ControlNet of that
    family is), random weights from `seed`. A real one starts its zero convolutions at zero, which
    would make every residual 0 and every test of them unable to fail: they get N(0, residual_std)."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel

    with torch.device("meta"):  # only the config: no weights built twice
        unet = UNet2DConditionModel.from_config(unet_config)
        config = ControlNetModel.from_unet(unet, load_weights_from_unet=False).config
    torch.manual_seed(seed)
    net = ControlNetModel.from_config(config)
    with torch.no_grad():
        for name, param in net.named_parameters():
            if name.startswith(_CONTROLNET_ZERO_INIT):
                param.normal_(0.0, residual_std)
    return net


def save_weights(weights: torch.nn.Module | dict[str, torch.Tensor], path: Path) -> Path:
    """A module's state dict (or a state dict) as a .safetensors file, the form naiup loads."""
    import safetensors.torch

    sd = weights if isinstance(weights, dict) else weights.state_dict()
    safetensors.torch.save_file({k: v.contiguous() for k, v in sd.items()}, path)
    return Path(path)
