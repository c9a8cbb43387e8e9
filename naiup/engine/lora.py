"""Kohya/A1111 LoRA files: read, pre-check, fuse into the weights, restore the pristine weights.

We fuse ourselves (W += w · alpha/rank · up @ down) instead of going through peft: we then know exactly
which tensors a LoRA touched, so restoring pristine weights when the LoRA set changes copies back only
those (fp16 fuse/unfuse round trips drift, diffusers.md §3.3), and fused inference has zero overhead.
Supported: LoRA and LoCon (conv) in Kohya naming (`lora_unet_*`, `lora_te_*`), and peft/diffusers
naming (`unet.*.lora_A/B`). LoHa, LoKr, tucker `lora_mid` and DoRA are refused with the file named.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from naiup.engine.checkpoints import read_state_dict
from naiup.errors import ModelLoadError

log = logging.getLogger(__name__)

_UNSUPPORTED = {
    "hada_": "LoHa (LyCORIS Hadamard)",
    "lokr_": "LoKr (LyCORIS Kronecker)",
    "lora_mid": "LoCon with tucker decomposition (lora_mid)",
    "dora_scale": "DoRA",
    "input_blocks": "LDM/SGM block naming (input_blocks)",
    "output_blocks": "LDM/SGM block naming (output_blocks)",
}


@dataclass(frozen=True, slots=True)
class LoraLayer:
    target: str  # "unet.<module path>" or "text_encoder.<module path>"
    down: torch.Tensor
    up: torch.Tensor
    scale: float  # alpha / rank


@dataclass(frozen=True, slots=True)
class LoraFile:
    path: Path
    layers: tuple[LoraLayer, ...]


def _kohya_names(root: torch.nn.Module, prefix: str, te: bool) -> dict[str, str]:
    """Kohya key stem -> module path; TE keys keep the historic `text_model_` prefix even for the
    flattened CLIPTextModel of transformers >= 5.6, so we add it when the module tree lacks it."""
    names = {}
    for name, mod in root.named_modules():
        if not isinstance(mod, torch.nn.Linear | torch.nn.Conv2d):
            continue
        kohya = name if not te or name.startswith("text_model.") else f"text_model.{name}"
        names[f"{prefix}{kohya.replace('.', '_')}"] = name
    return names


def read_lora(path: Path, unet: torch.nn.Module, text_encoder: torch.nn.Module) -> LoraFile:
    """Read and pre-check a LoRA against the loaded modules; every key must be understood."""
    sd = read_state_dict(path)
    for key in sd:
        for marker, kind in _UNSUPPORTED.items():
            if marker in key:
                raise ModelLoadError(
                    path, f"unsupported LoRA kind: {kind} (key {key!r}); use a plain LoRA/LoCon"
                )
    unet_names = _kohya_names(unet, "lora_unet_", te=False)
    te_names = _kohya_names(text_encoder, "lora_te_", te=True)
    layers: list[LoraLayer] = []
    used: set[str] = set()
    for key in sd:
        stem, down, up, alpha = _split_key(key, sd)
        if stem is None or key in used:
            continue
        used.update(k for k in (f"{stem}{down}", f"{stem}{up}", f"{stem}{alpha}") if k in sd)
        target = _target_for(stem, unet_names, te_names)
        if target is None:
            raise ModelLoadError(path, f"LoRA key {key!r} matches no layer of this SD1.5 model")
        d, u = sd[f"{stem}{down}"].float(), sd[f"{stem}{up}"].float()
        a = sd.get(f"{stem}{alpha}")
        # A damaged file (1-D or empty factors, a vector alpha) must be refused, not crash below.
        if d.ndim < 2 or u.ndim < 2 or d.shape[0] == 0 or (a is not None and a.numel() != 1):
            raise ModelLoadError(
                path, f"LoRA layer {stem!r} is malformed (down {list(d.shape)}, up {list(u.shape)})"
            )
        root, module_path = target.split(".", 1)
        weight = (unet if root == "unet" else text_encoder).get_submodule(module_path).weight
        if u.shape[0] * d[0].numel() != weight.numel() or u.flatten(1).shape[1] != d.shape[0]:
            raise ModelLoadError(path, f"LoRA layer {stem!r} has shapes for another model (SD2/SDXL?)")
        rank = d.shape[0]
        scale = (float(a) if a is not None else rank) / rank
        layers.append(LoraLayer(target, d, u, scale))
    leftover = set(sd) - used
    if leftover:
        raise ModelLoadError(path, f"LoRA has keys we do not understand, e.g. {sorted(leftover)[0]!r}")
    if not layers:
        raise ModelLoadError(path, "file holds no LoRA layers")
    return LoraFile(path, tuple(layers))


def _split_key(key: str, sd: dict) -> tuple[str | None, str, str, str]:
    for down, up, alpha in (
        (".lora_down.weight", ".lora_up.weight", ".alpha"),
        (".lora_A.weight", ".lora_B.weight", ".alpha"),
    ):
        for suffix in (down, up, alpha):
            if key.endswith(suffix):
                stem = key[: -len(suffix)]
                if f"{stem}{down}" in sd and f"{stem}{up}" in sd:
                    return stem, down, up, alpha
    return None, "", "", ""


def _target_for(stem: str, unet_names: dict[str, str], te_names: dict[str, str]) -> str | None:
    if stem in unet_names:
        return f"unet.{unet_names[stem]}"
    if stem in te_names:
        return f"text_encoder.{te_names[stem]}"
    for prefix, names in (("unet.", unet_names), ("text_encoder.", te_names)):
        if stem.startswith(prefix):  # peft/diffusers naming: module path with dots
            path = stem[len(prefix) :]
            paths = set(names.values())
            if path.startswith("text_model.") and path not in paths:
                path = path[len("text_model.") :]
            if path in paths:
                return f"{prefix}{path}"
    return None


def _delta(layer: LoraLayer, weight: torch.Tensor, strength: float) -> torch.Tensor:
    up, down = layer.up.to(weight.device).flatten(1), layer.down.to(weight.device).flatten(1)
    # LoCon: down holds the conv kernel and up is 1x1, so the flat product reshapes to the kernel.
    return ((up @ down) * (layer.scale * strength)).reshape(weight.shape)


@dataclass
class LoraFuser:
    """Fuses a set of (LoraFile, weight) into unet/text_encoder; `restore()` undoes it exactly."""

    unet: torch.nn.Module
    text_encoder: torch.nn.Module
    _pristine: dict[str, torch.Tensor] = field(default_factory=dict)

    def _weight(self, target: str) -> torch.Tensor:
        root, path = target.split(".", 1)
        module = (self.unet if root == "unet" else self.text_encoder).get_submodule(path)
        return module.weight

    @torch.no_grad()
    def fuse(self, loras: list[tuple[LoraFile, float]], keep_pristine: bool = True) -> bool:
        """Fuse; returns True when a text-encoder layer changed (prompt caches are then stale)."""
        touched_te = False
        for lora, strength in loras:
            for layer in lora.layers:
                w = self._weight(layer.target)
                if keep_pristine and layer.target not in self._pristine:
                    self._pristine[layer.target] = w.detach().to("cpu", copy=True)
                delta = _delta(layer, w, strength)
                w.copy_((w.float() + delta).to(w.dtype))
                touched_te |= layer.target.startswith("text_encoder.")
            log.debug("lora fused file=%s weight=%s layers=%d", lora.path.name, strength, len(lora.layers))
        return touched_te

    @torch.no_grad()
    def restore(self) -> bool:
        """Copy back the weights as they were before the first fuse; True if the TE was touched."""
        touched_te = any(t.startswith("text_encoder.") for t in self._pristine)
        for target, saved in self._pristine.items():
            w = self._weight(target)
            w.copy_(saved.to(w.device))
        self._pristine.clear()
        return touched_te
