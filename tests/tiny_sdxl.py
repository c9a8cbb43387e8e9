"""Tiny random-weight SDXL-shaped models for tests, built at test time, fully offline.

API:
    build_tiny_sdxl(folder, v_pred=False) -> Path   diffusers StableDiffusionXLPipeline folder: 3-level UNet
                                                     (32/64/64, text_time size embedding), 4-level VAE
                                                     (scale 0.13025), CLIP-L-like 32-wide and bigG-like
                                                     48-wide encoders, tokenizers from naiup's BPE files
    write_sdxl_single_file(folder, out, flags=()) -> Path   the same weights in LDM/sgm layout: CLIP-L in
                                                     transformers names, bigG in open_clip names (fused
                                                     q/k/v, transposed projection); `flags` adds empty
                                                     `v_pred`/`ztsnr` tensors
    session_tiny_sdxl(tmp_path_factory) -> TinySDXL  eps and v-pred sets, built once per session
The two encoders have different widths on purpose: with equal widths a loader that picks a component
by shape cannot be told apart from one that picks it by name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tiny_sd import TOKENIZER_DIR, _vae_to_ldm, tiny_sd_vae, write_skeleton

from naiup.engine.models.ldm_names import unet_ldm_name

TE1_WIDTH, TE2_WIDTH, TIME_DIM = 32, 48, 8


def _scheduler(v_pred: bool):
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


def build_tiny_sdxl(folder: Path, v_pred: bool = False, seed: int = 0) -> Path:
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64, 64),
        layers_per_block=2,
        sample_size=16,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=TIME_DIM,
        transformer_layers_per_block=(1, 1, 2),
        projection_class_embeddings_input_dim=6 * TIME_DIM + TE2_WIDTH,
        cross_attention_dim=TE1_WIDTH + TE2_WIDTH,
        norm_num_groups=16,
    )
    vae = tiny_sd_vae(scaling_factor=0.13025, force_upcast=True)
    tok1 = CLIPTokenizer.from_pretrained(TOKENIZER_DIR, model_max_length=77)
    tok2 = CLIPTokenizer.from_pretrained(TOKENIZER_DIR, model_max_length=77, pad_token="!")

    def te_config(width: int, act: str) -> CLIPTextConfig:
        return CLIPTextConfig(
            vocab_size=len(tok1),
            hidden_size=width,
            intermediate_size=37,
            num_hidden_layers=3,
            num_attention_heads=4,
            max_position_embeddings=77,
            hidden_act=act,
            projection_dim=width,
            bos_token_id=tok1.bos_token_id,
            eos_token_id=tok1.eos_token_id,
            pad_token_id=1,
        )

    te1 = CLIPTextModel(te_config(TE1_WIDTH, "quick_gelu"))
    te2 = CLIPTextModelWithProjection(te_config(TE2_WIDTH, "gelu"))
    with torch.no_grad():  # trained CLIP has non-zero LayerNorm biases; zero ones make chunk means 0
        for mod in [*te1.modules(), *te2.modules()]:
            if isinstance(mod, torch.nn.LayerNorm):
                mod.bias.normal_(0.0, 0.1)
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=te1,
        text_encoder_2=te2,
        tokenizer=tok1,
        tokenizer_2=tok2,
        unet=unet,
        scheduler=_scheduler(v_pred),
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    pipe.save_pretrained(folder)
    return Path(folder)


def _open_clip_names(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CLIPTextModelWithProjection weights -> open_clip names (the layout SDXL files store bigG in)."""
    parts = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj",
             "self_attn.out_proj": "attn.out_proj"}  # fmt: skip
    sd = {k.removeprefix("text_model."): v for k, v in sd.items()}
    out = {
        "token_embedding.weight": sd["embeddings.token_embedding.weight"],
        "positional_embedding": sd["embeddings.position_embedding.weight"],
        "ln_final.weight": sd["final_layer_norm.weight"],
        "ln_final.bias": sd["final_layer_norm.bias"],
        "text_projection": sd["text_projection.weight"].t().contiguous(),
        "logit_scale": torch.tensor(4.6052),
    }
    layers = sorted({int(k.split(".")[2]) for k in sd if k.startswith("encoder.layers.")})
    for i in layers:
        src, dst = f"encoder.layers.{i}.", f"transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            qkv = [sd[f"{src}self_attn.{p}_proj.{kind}"] for p in "qkv"]
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat(qkv)
            for a, b in parts.items():
                out[f"{dst}{b}.{kind}"] = sd[f"{src}{a}.{kind}"]
    return out


def write_sdxl_single_file(folder: Path, out: Path, flags: tuple[str, ...] = ()) -> Path:
    """The folder's weights as one LDM/sgm-named SDXL checkpoint; `flags`: v_pred / ztsnr markers."""
    from diffusers import UNet2DConditionModel

    folder = Path(folder)
    cfg = UNet2DConditionModel.load_config(folder / "unet")
    up_attention = tuple("CrossAttn" in t for t in cfg["up_block_types"])
    sd: dict[str, torch.Tensor] = {}
    for k, v in load_file(folder / "unet" / "diffusion_pytorch_model.safetensors").items():
        sd[f"model.diffusion_model.{unet_ldm_name(k, cfg['layers_per_block'], up_attention)}"] = v
    for k, v in load_file(folder / "vae" / "diffusion_pytorch_model.safetensors").items():
        name, value = _vae_to_ldm(k, v)
        sd[f"first_stage_model.{name}"] = value
    for k, v in load_file(folder / "text_encoder" / "model.safetensors").items():
        sd[f"conditioner.embedders.0.transformer.text_model.{k.removeprefix('text_model.')}"] = v
    for k, v in _open_clip_names(load_file(folder / "text_encoder_2" / "model.safetensors")).items():
        sd[f"conditioner.embedders.1.model.{k}"] = v
    for flag in flags:
        sd[flag] = torch.tensor([])
    save_file({k: v.contiguous() for k, v in sd.items()}, out)
    return Path(out)


@dataclass(frozen=True)
class TinySDXL:
    folder: Path  # epsilon diffusers folder
    v_folder: Path  # v-prediction + zero-SNR diffusers folder
    skeleton: Path  # epsilon folder's json/txt only
    single_file: Path  # epsilon weights, LDM layout, no flags
    v_single_file: Path  # v-pred weights, LDM layout, v_pred + ztsnr flags


_built: dict[Path, TinySDXL] = {}


def session_tiny_sdxl(tmp_path_factory) -> TinySDXL:
    base = tmp_path_factory.getbasetemp()
    if base not in _built:
        root = tmp_path_factory.mktemp("tiny_sdxl")
        folder = build_tiny_sdxl(root / "tiny-xl")
        v_folder = build_tiny_sdxl(root / "tiny-xl-v", v_pred=True, seed=1)
        _built[base] = TinySDXL(
            folder=folder,
            v_folder=v_folder,
            skeleton=write_skeleton(folder, root / "skeleton"),
            single_file=write_sdxl_single_file(folder, root / "tiny-xl.safetensors"),
            v_single_file=write_sdxl_single_file(
                v_folder, root / "tiny-xl-v.safetensors", flags=("v_pred", "ztsnr")
            ),
        )
    return _built[base]
