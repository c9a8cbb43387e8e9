"""Loading SDXL: an LDM/sgm single file offline through the bundled skeleton, or a diffusers folder/hub id.

A single file holds four components under their own prefixes:
    model.diffusion_model.*                      UNet, LDM names (diffusers' converter maps them)
    first_stage_model.*                          VAE, LDM names (same converter as SD1.5)
    conditioner.embedders.0.transformer.*        CLIP-L in transformers naming: the prefix is stripped
    conditioner.embedders.1.model.*              OpenCLIP bigG in open_clip naming: converted here
Configs come from `naiup/data/sdxl` (JSON only), so no Hub access is needed. Both tokenizers are the
bundled CLIP BPE files: SDXL's two tokenizers share vocabulary and merges and differ only in the pad
token — `<|endoftext|>` for CLIP-L, `!` (id 0) for bigG, as open_clip pads.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import torch
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from naiup.engine.load_errors import explain_load_errors, is_foreign
from naiup.engine.models.family import SDXL, without_flags
from naiup.errors import ModelLoadError

SDXL_SKELETON = Path(str(resources.files("naiup") / "data" / "sdxl"))
BPE_DIR = Path(str(resources.files("naiup") / "data" / "sd15" / "tokenizer"))
_TE1 = "conditioner.embedders.0.transformer."
_TE2 = "conditioner.embedders.1.model."
# open_clip resblock part -> transformers CLIPEncoderLayer part
_RESBLOCK = {
    "ln_1": "layer_norm1",
    "ln_2": "layer_norm2",
    "mlp.c_fc": "mlp.fc1",
    "mlp.c_proj": "mlp.fc2",
    "attn.out_proj": "self_attn.out_proj",
}


def sdxl_tokenizers() -> tuple[CLIPTokenizer, CLIPTokenizer]:
    tok1 = CLIPTokenizer.from_pretrained(BPE_DIR, model_max_length=77)
    tok2 = CLIPTokenizer.from_pretrained(BPE_DIR, model_max_length=77, pad_token="!")
    return tok1, tok2


def load_sdxl_single_file(path: Path, sd: dict[str, torch.Tensor], config_dir: Path | None):
    """SDModels for an SDXL base single file (family already detected). Returns models.SDModels."""
    from naiup.engine.models.load import SDModels, unet_and_vae  # models imports this module

    config_dir = Path(config_dir or SDXL_SKELETON)
    sd = without_flags(sd)
    unet, vae = unet_and_vae(path, sd, config_dir, "SDXL")
    te1 = _load_te(path, CLIPTextModel, config_dir / "text_encoder", _clip_l(sd))
    te2 = _load_te(path, CLIPTextModelWithProjection, config_dir / "text_encoder_2", _open_clip(path, sd))
    tok1, tok2 = sdxl_tokenizers()
    scheduler_config = json.loads((config_dir / "scheduler" / "scheduler_config.json").read_text())
    return SDModels(unet, vae, te1, tok1, scheduler_config, text_encoder_2=te2, tokenizer_2=tok2, family=SDXL)


def _clip_l(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in sd.items():
        if key.startswith(_TE1):
            out[key[len(_TE1) :].removeprefix("text_model.")] = value
    return out


def _open_clip(path: Path, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """bigG in open_clip names -> CLIPTextModelWithProjection names (without `text_model.`)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in sd.items():
        if not key.startswith(_TE2):
            continue
        name = key[len(_TE2) :]
        if name == "token_embedding.weight":
            out["embeddings.token_embedding.weight"] = value
        elif name == "positional_embedding":
            out["embeddings.position_embedding.weight"] = value
        elif name.startswith("ln_final."):
            out["final_layer_norm." + name.split(".", 1)[1]] = value
        elif name == "text_projection":
            # open_clip applies it as x @ P; a Linear computes x @ W.T. It is square, so a missed
            # transpose would load without complaint and give a wrong pooled vector.
            out["text_projection.weight"] = value.t().contiguous()
        elif name.startswith("transformer.resblocks."):
            index, part = name[len("transformer.resblocks.") :].split(".", 1)
            layer = f"encoder.layers.{index}."
            if part.startswith("attn.in_proj_"):  # fused q, k, v stacked along dim 0
                kind = part.rsplit("_", 1)[1]  # weight | bias
                for proj, third in zip(("q", "k", "v"), value.chunk(3, dim=0), strict=True):
                    out[f"{layer}self_attn.{proj}_proj.{kind}"] = third.contiguous()
                continue
            stem, leaf = part.rsplit(".", 1)
            if stem not in _RESBLOCK:
                raise ModelLoadError(path, f"unexpected OpenCLIP key {key!r}")
            out[f"{layer}{_RESBLOCK[stem]}.{leaf}"] = value
        # logit_scale and attn masks are not part of the text model
    return out


def _load_te(path: Path, cls, config_dir: Path, weights: dict[str, torch.Tensor]) -> torch.nn.Module:
    model = cls(CLIPTextConfig.from_pretrained(config_dir))
    # transformers >= 5.6 flattened CLIPTextModel (no `text_model.` level); the projection model and
    # older versions keep it. Map to whichever this build has.
    names = set(model.state_dict())
    te = {(f"text_model.{k}" if f"text_model.{k}" in names else k): v for k, v in weights.items()}
    if not te:
        raise ModelLoadError(path, f"no {cls.__name__} weights in this SDXL checkpoint")
    try:
        result = model.load_state_dict(te, strict=False)
    except RuntimeError as exc:  # size mismatch: another architecture behind the right prefix
        raise ModelLoadError(path, f"text encoder weights do not fit SDXL's {cls.__name__}: {exc}") from exc
    missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
    if missing or result.unexpected_keys:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {result.unexpected_keys[0]!r}"
        raise ModelLoadError(path, f"text encoder weights incomplete ({cls.__name__}: {what})")
    return model


def load_sdxl_pipeline(where: str, local_only: bool):
    """SDModels from an SDXL diffusers folder or hub id (base pipeline layout)."""
    from diffusers import StableDiffusionXLPipeline

    from naiup.engine.models.load import SDModels

    hint = "" if local_only else " (no internet, or HF_HUB_OFFLINE=1 and not in the HF cache?)"
    with explain_load_errors(where, f"cannot load this SDXL diffusers model{hint}: {{exc}}"):
        pipe = StableDiffusionXLPipeline.from_pretrained(where, local_files_only=local_only)
    if pipe.text_encoder is None:
        raise ModelLoadError(where, "is an SDXL refiner (no CLIP-L text encoder); use an SDXL base model")
    return SDModels(
        pipe.unet,
        pipe.vae,
        pipe.text_encoder,
        pipe.tokenizer,
        dict(pipe.scheduler.config),
        text_encoder_2=pipe.text_encoder_2,
        tokenizer_2=pipe.tokenizer_2,
        family=SDXL,
    )


def pipeline_class(where: str, local_only: bool) -> str:
    """`_class_name` of a diffusers folder's / hub repo's model_index.json ("" if unreadable)."""
    from diffusers import DiffusionPipeline

    try:
        return str(DiffusionPipeline.load_config(where, local_files_only=local_only).get("_class_name", ""))
    except Exception as exc:
        if not is_foreign(exc):
            raise  # a bug of ours, not an unreadable model
        return ""  # missing or unreadable: the loader that runs next reports it properly
