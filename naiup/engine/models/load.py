"""Loading SD1.5 and SDXL: hub id, diffusers folder, or a single file (offline via the bundled skeleton).

Single files are loaded component by component from a state dict we read ourselves
(checkpoints.read_state_dict: no arbitrary unpickling), with configs from `naiup/data/sd15` (SDXL:
`naiup/data/sdxl`), so no Hub access is ever needed for them (diffusers' from_single_file otherwise
fetches the configs and the CLIP tokenizer from the Hub). Only a hub id may download, and then only the
files the engine loads (naiup.engine.models.hub), each component from the variant chosen.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from naiup.config.paths import HUB_ID
from naiup.engine.device import place, unet_dtype, vae_dtype
from naiup.engine.load_errors import explain_load_errors
from naiup.engine.models.checkpoints import is_single_file, read_state_dict
from naiup.engine.models.controlnet import load_controlnet
from naiup.engine.models.family import (
    EPSILON_PLAIN,
    SD15,
    SDXL,
    Prediction,
    detect_family,
    file_prediction,
    scheduler_prediction,
    with_prediction,
    without_flags,
)
from naiup.engine.models.hub import DownloadProgress, fetch_file, fetch_folder, fetch_pipeline
from naiup.engine.models.library_noise import quiet_libraries
from naiup.errors import ModelLoadError

log = logging.getLogger(__name__)

SD15_SKELETON = Path(str(resources.files("naiup") / "data" / "sd15"))
LCM_LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
_TE_PREFIXES = ("cond_stage_model.transformer.",)


@dataclass
class SDModels:
    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: Any
    scheduler_config: dict[str, Any]
    # SDXL only: OpenCLIP bigG and its tokenizer (pads with "!").
    text_encoder_2: Any = None
    tokenizer_2: Any = None
    family: str = SD15
    prediction: Prediction = EPSILON_PLAIN
    # ControlNet tile of the same family ([model] controlnet), placed like the UNet; None without one.
    controlnet: Any = None


def looks_like_hub_id(spec: str) -> bool:
    """`owner/name` that is not a local path (C:/x, ./x, ~/x and existing paths are paths)."""
    return bool(HUB_ID.fullmatch(spec)) and not Path(spec).exists() and not is_single_file(spec)


def load_models(
    checkpoint: str,
    vae: str,
    device: torch.device,
    config_dir: Path | None = None,
    prediction: str = "auto",
    controlnet: str = "",
    *,
    on_download: DownloadProgress | None = None,
    place: bool = True,
) -> SDModels:
    """Load UNet/VAE/TE(s)/tokenizer(s) of SD1.5 or SDXL (told apart by the weights), cast (UNet+TE fp16
    on accelerators, VAE fp32/bf16) and move to device in one step. `config_dir`: the skeleton for
    single files (default: the bundled one of the detected family); `prediction`: [model] prediction;
    `controlnet`: [model] controlnet, checked against the loaded UNet (family and shapes);
    `on_download(done, total, repo)`: progress of a hub download; `place=False`: cast them but leave
    them in host RAM (the Refiner decides from their sizes what goes to the device)."""
    from naiup.engine.models.sdxl_single_file import SDXL_SKELETON, load_sdxl_single_file

    quiet_libraries()
    path = Path(checkpoint).expanduser()
    if path.is_dir():
        models = _from_pipeline(str(path), local_only=True)
        models.prediction = scheduler_prediction(models.scheduler_config, prediction)
    elif is_single_file(checkpoint):
        sd = read_state_dict(path)
        family = detect_family(sd, path)
        if family == SDXL:
            models = load_sdxl_single_file(path, sd, config_dir)
        else:
            models = _from_single_file(path, sd, config_dir or SD15_SKELETON)
        models.prediction = file_prediction(sd, prediction)
    elif looks_like_hub_id(checkpoint):
        models = _from_hub(checkpoint, device, on_download)
        models.prediction = scheduler_prediction(models.scheduler_config, prediction)
    else:
        raise ModelLoadError(
            checkpoint, "not found: expected a diffusers folder, a .safetensors/.ckpt file or a hub id"
        )
    models.scheduler_config = with_prediction(models.scheduler_config, models.prediction)
    if vae:
        skeleton = config_dir or (SDXL_SKELETON if models.family == SDXL else SD15_SKELETON)
        models.vae = load_vae(vae, skeleton, on_download)
    if controlnet:
        models.controlnet = load_controlnet(controlnet, models.family, models.unet.config, config_dir)
    where = device if place else torch.device("cpu")
    half = unet_dtype(device)
    for module in (models.unet, models.controlnet, models.text_encoder, models.text_encoder_2):
        if module is not None:
            _place(module, where, half)
    _place(models.vae, where, vae_dtype(device))
    return models


def _place(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    place(module, device, dtype)
    module.eval().requires_grad_(False)


def _from_hub(repo_id: str, device: torch.device, on_download: DownloadProgress | None) -> SDModels:
    """Download what the engine loads of an SD1.5/SDXL hub repo (hub.fetch_pipeline), then load each
    component from the local snapshot in the variant chosen for it, straight into the dtype it runs in
    (an SDXL UNet in fp32 would take 10 GB of host RAM on the way)."""
    from transformers import CLIPTextModelWithProjection

    half = unet_dtype(device)
    snap = fetch_pipeline(repo_id, half=half == torch.float16, on_progress=on_download)
    folder, v = str(snap.folder), snap.variants
    common = {"use_safetensors": True, "local_files_only": True}
    # A repo whose files do not fit its own configs: say which repo.
    with explain_load_errors(repo_id, "cannot load the downloaded model: {exc}"):
        unet = UNet2DConditionModel.from_pretrained(
            folder, subfolder="unet", variant=v["unet"], torch_dtype=half, **common
        )
        vae = AutoencoderKL.from_pretrained(
            folder, subfolder="vae", variant=v["vae"], torch_dtype=vae_dtype(device), **common
        )
        te = CLIPTextModel.from_pretrained(
            folder, subfolder="text_encoder", variant=v["text_encoder"], dtype=half, **common
        )
        tokenizer = CLIPTokenizer.from_pretrained(snap.folder / "tokenizer")
        te2 = tokenizer_2 = None
        if snap.family == SDXL:
            te2 = CLIPTextModelWithProjection.from_pretrained(
                folder, subfolder="text_encoder_2", variant=v["text_encoder_2"], dtype=half, **common
            )
            tokenizer_2 = CLIPTokenizer.from_pretrained(snap.folder / "tokenizer_2")
        scheduler = json.loads((snap.folder / "scheduler" / "scheduler_config.json").read_text())
    return SDModels(unet, vae, te, tokenizer, scheduler, te2, tokenizer_2, family=snap.family)


def _from_pipeline(where: str, local_only: bool) -> SDModels:
    from naiup.engine.models.sdxl_single_file import load_sdxl_pipeline, pipeline_class

    kind = pipeline_class(where, local_only)
    if kind.startswith("StableDiffusionXL"):
        return load_sdxl_pipeline(where, local_only)
    hint = "" if local_only else " (no internet, or HF_HUB_OFFLINE=1 and not in the HF cache?)"
    with explain_load_errors(where, f"cannot load this diffusers model{hint}: {{exc}}"):
        pipe = StableDiffusionPipeline.from_pretrained(
            where, local_files_only=local_only, safety_checker=None, requires_safety_checker=False
        )
    return SDModels(pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, dict(pipe.scheduler.config))


def unet_and_vae(
    path: Path, sd: dict[str, torch.Tensor], config_dir: Path, family: str
) -> tuple[UNet2DConditionModel, AutoencoderKL]:
    """UNet and VAE of a single file through diffusers' LDM converters, configs from `config_dir`."""
    # Shape mismatches from diffusers' converter: the weights are not this family's shape.
    with explain_load_errors(path, f"cannot convert this checkpoint as {family}: {{exc}}"):
        unet = UNet2DConditionModel.from_single_file(
            sd, config=str(config_dir), subfolder="unet", local_files_only=True
        )
        vae = AutoencoderKL.from_single_file(
            sd, config=str(config_dir), subfolder="vae", local_files_only=True
        )
    return unet, vae


def _from_single_file(path: Path, sd: dict[str, torch.Tensor], config_dir: Path) -> SDModels:
    sd = without_flags(sd)
    unet, vae = unet_and_vae(path, sd, config_dir, "SD1.5")
    text_encoder = _text_encoder_from_ldm(path, sd, config_dir)
    tokenizer = CLIPTokenizer.from_pretrained(config_dir / "tokenizer", model_max_length=77)
    scheduler_config = json.loads((config_dir / "scheduler" / "scheduler_config.json").read_text())
    return SDModels(unet, vae, text_encoder, tokenizer, scheduler_config)


def _text_encoder_from_ldm(path: Path, sd: dict[str, torch.Tensor], config_dir: Path) -> CLIPTextModel:
    model = CLIPTextModel(CLIPTextConfig.from_pretrained(config_dir / "text_encoder"))
    # transformers >= 5.6 has no `text_model.` level; older versions do. Map LDM keys to whichever we have.
    wants_prefix = any(k.startswith("text_model.") for k in model.state_dict())
    te = {}
    for key, value in sd.items():
        for prefix in _TE_PREFIXES:
            if key.startswith(prefix):
                name = key[len(prefix) :].removeprefix("text_model.")
                te[f"text_model.{name}" if wants_prefix else name] = value
    if not te:
        raise ModelLoadError(
            path, "no text encoder weights (cond_stage_model.transformer.*) in this checkpoint"
        )
    result = model.load_state_dict(te, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("position_ids")]
    if missing:
        raise ModelLoadError(path, f"text encoder weights incomplete, e.g. missing {missing[0]!r}")
    return model


def load_vae(
    spec: str, config_dir: Path = SD15_SKELETON, on_download: DownloadProgress | None = None
) -> AutoencoderKL:
    """External VAE: a .safetensors/.pt/.ckpt file (A1111 naming or full checkpoint), a folder or a hub
    id (its plain weights: the VAE never runs in fp16)."""
    path = Path(spec).expanduser()
    with explain_load_errors(spec, "cannot load this VAE: {exc}"):
        if path.is_dir():
            return AutoencoderKL.from_pretrained(path, local_files_only=True)
        if is_single_file(spec):
            return AutoencoderKL.from_single_file(
                read_state_dict(path), config=str(config_dir), subfolder="vae", local_files_only=True
            )
        if looks_like_hub_id(spec):
            folder, variant = fetch_folder(spec, half=False, on_progress=on_download)
            return AutoencoderKL.from_pretrained(
                folder, variant=variant, use_safetensors=True, local_files_only=True
            )
    raise ModelLoadError(spec, "VAE not found: expected a file, a folder or a hub id")


def resolve_lora_file(
    spec: str, lora_dirs: tuple[Path, ...] = (), on_download: DownloadProgress | None = None
) -> Path:
    """A LoRA given as a file path, a bare name found in `lora_dirs` (as A1111 names them), or a hub id
    whose `pytorch_lora_weights.safetensors` we download."""
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    for folder in lora_dirs:
        for suffix in (".safetensors", ".ckpt", ".pt"):
            if (Path(folder) / f"{spec}{suffix}").is_file():
                return Path(folder) / f"{spec}{suffix}"
    if looks_like_hub_id(spec):
        return fetch_file(spec, LCM_LORA_WEIGHT_NAME, on_download)
    raise ModelLoadError(spec, "LoRA file not found")


def file_identity(spec: str) -> str:
    """What makes a model file "the same": path + size + mtime for files, the text for hub ids."""
    path = Path(spec).expanduser()
    if path.exists():
        st = path.stat()
        return f"{path.resolve()}:{st.st_size}:{int(st.st_mtime)}"
    return spec


def model_set_id(checkpoint: str, vae: str, loras: list[tuple[str, float]]) -> str:
    """Stable, readable id of a model set: `<checkpoint name>-<hash of everything fused in>`."""
    parts = [file_identity(checkpoint), file_identity(vae) if vae else ""]
    parts += [f"{file_identity(p)}@{w:g}" for p, w in sorted(loras)]
    return _named_id(checkpoint, parts)


def file_id(spec: str) -> str:
    """Readable, stable id of one model file or folder (a ControlNet): `<name>-<hash>`."""
    return _named_id(spec, [file_identity(spec)])


def _named_id(spec: str, parts: list[str]) -> str:
    digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]
    name = Path(spec.rstrip("/")).name
    name = name.rsplit(".", 1)[0] if is_single_file(name) else name
    return f"{name}-{digest}"
