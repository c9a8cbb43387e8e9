"""Which model family a checkpoint is, and how it predicts, read from its weights.

Single files do not say what they are; their key prefixes and a few shapes do:
- SD1.5: CLIP-L under `cond_stage_model.transformer.*`;
- SD2.x: OpenCLIP ViT-H under `cond_stage_model.model.*` (refused: 1024-wide context, v-pred 768 px);
- SDXL base: CLIP-L at `conditioner.embedders.0.transformer.*` and OpenCLIP bigG at
  `conditioner.embedders.1.model.*`, plus the `label_emb` size embedding;
- SDXL refiner: bigG alone at `conditioner.embedders.0.model.*` (refused: it needs an aesthetic-score
  conditioning and only finishes a base model's last steps);
- inpainting UNets take 9 input channels, EDM models (Playground v2.5) carry `edm_mean`/`edm_std`.
v-prediction is flagged by an empty `v_pred` tensor and zero-terminal-SNR training by `ztsnr` (the
convention ComfyUI, A1111 and Forge read); a file without them may still be v-pred, hence the
`[model] prediction` override.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from naiup.errors import ModelLoadError

SD15, SDXL = "sd15", "sdxl"
EPSILON, V = "epsilon", "v"
FLAG_KEYS = ("v_pred", "ztsnr")
_UNET = "model.diffusion_model."


@dataclass(frozen=True, slots=True)
class Prediction:
    kind: str  # "epsilon" | "v"
    zero_snr: bool  # betas rescaled so the last timestep is pure noise

    @property
    def label(self) -> str:
        return f"{self.kind}{'+zsnr' if self.zero_snr else ''}"


EPSILON_PLAIN = Prediction(EPSILON, False)


def _has(sd: dict[str, Any], prefix: str) -> bool:
    return any(k.startswith(prefix) for k in sd)


def detect_family(sd: dict[str, torch.Tensor], source: Path | str) -> str:
    """SD15 or SDXL for a single-file state dict; anything else is a ModelLoadError naming the file."""

    def refuse(what: str) -> ModelLoadError:
        return ModelLoadError(source, f"is {what}; naiup refines with SD1.5 or SDXL base-family checkpoints")

    if "edm_mean" in sd or "edm_std" in sd:
        raise refuse("an EDM model (Playground v2.5 style)")
    if not _has(sd, _UNET):
        raise ModelLoadError(
            source, "is not an SD1.5 checkpoint nor an SDXL one (no model.diffusion_model.* UNet keys)"
        )
    conv_in = sd.get(f"{_UNET}input_blocks.0.0.weight")
    if conv_in is not None and conv_in.ndim == 4 and conv_in.shape[1] != 4:
        raise refuse(f"an inpainting or other special UNet ({conv_in.shape[1]} input channels, not 4)")
    if _has(sd, "conditioner.embedders.1.model."):
        if f"{_UNET}label_emb.0.0.weight" not in sd:
            raise refuse("SDXL-like but has no size embedding (label_emb)")
        return SDXL
    if _has(sd, "conditioner.embedders.0.model."):
        raise refuse("an SDXL refiner (OpenCLIP bigG text encoder only)")
    if _has(sd, "cond_stage_model.model."):
        raise refuse("an SD2.x model (OpenCLIP ViT-H text encoder)")
    if _has(sd, "cond_stage_model.transformer."):
        return SD15
    raise refuse("a UNet without a text encoder we know (no cond_stage_model / conditioner keys)")


def file_prediction(sd: dict[str, Any], setting: str) -> Prediction:
    """From the `v_pred`/`ztsnr` flags, unless `setting` ([model] prediction) says otherwise.

    v-prediction always runs with zero-terminal-SNR betas: the v-pred anime models (NoobAI) were
    trained that way, and v-pred is what makes the pure-noise end of that schedule well-defined.
    setting: "auto" | "epsilon" | "v" (model.prediction, validated by the config)."""
    kind = setting if setting != "auto" else (V if "v_pred" in sd else EPSILON)
    return Prediction(kind, kind == V)


def scheduler_prediction(config: dict[str, Any], setting: str) -> Prediction:
    """For a diffusers folder: its scheduler config decides, unless `setting` says otherwise."""
    from_config = V if config.get("prediction_type") == "v_prediction" else EPSILON
    kind = setting if setting != "auto" else from_config
    return Prediction(kind, kind == V)


def with_prediction(config: dict[str, Any], prediction: Prediction) -> dict[str, Any]:
    """The scheduler config the samplers build from, told the prediction type and beta rescale."""
    return {
        **config,
        "prediction_type": "v_prediction" if prediction.kind == V else "epsilon",
        "rescale_betas_zero_snr": prediction.zero_snr,
    }


def without_flags(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state dict minus the flag tensors, which no converter knows."""
    return {k: v for k, v in sd.items() if k not in FLAG_KEYS}
