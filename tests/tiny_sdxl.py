"""Tiny random-weight SDXL-shaped model files for tests, built at test time, fully offline.

API:
    build_tiny_sdxl(folder, v_pred=False) -> Path   naiup.testing's: diffusers StableDiffusionXLPipeline
                                                     folder: 3-level UNet (32/64/64, text_time size
                                                     embedding), 4-level VAE (scale 0.13025), CLIP-L-like
                                                     32-wide and bigG-like 48-wide encoders
    write_sdxl_single_file(folder, out, flags=()) -> Path   the same weights in LDM/sgm layout: CLIP-L in
                                                     transformers names, bigG in open_clip names (fused
                                                     q/k/v, transposed projection); `flags` adds empty
                                                     `v_pred`/`ztsnr` tensors
    session_tiny_sdxl(tmp_path_factory) -> TinySDXL  eps and v-pred sets, built once per session
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from tiny_sd import single_file_weights, write_skeleton

from naiup.engine.models.ldm_names import unet_ldm_name
from naiup.testing import build_tiny_sdxl, save_weights


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
    layers = cfg["layers_per_block"]
    te1 = "conditioner.embedders.0.transformer."
    sd = single_file_weights(folder, lambda k: unet_ldm_name(k, layers, up_attention), te1)
    for k, v in _open_clip_names(load_file(folder / "text_encoder_2" / "model.safetensors")).items():
        sd[f"conditioner.embedders.1.model.{k}"] = v
    for flag in flags:
        sd[flag] = torch.tensor([])
    return save_weights(sd, out)


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
