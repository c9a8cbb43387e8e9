"""Loading a ControlNet (tile) beside a model set, offline: a diffusers folder, or one weight file.

A ControlNet is a trained copy of the UNet's encoder half plus three small heads:
    controlnet_cond_embedding.*   the hint encoder: RGB control image (8x the latent size) -> latent size
    controlnet_down_blocks.N      one 1x1 "zero conv" per encoder skip connection (12 SD1.5, 9 SDXL)
    controlnet_mid_block          one 1x1 conv on the mid block's output
Their outputs are added to the UNet's skip connections and mid block, which is how the control image
steers the denoiser.

One weight file comes in either naming:
- diffusers (what `save_pretrained` writes, e.g. xinsir/controlnet-tile-sdxl-1.0's safetensors): used
  as is;
- LDM, the original ControlNet release (control_v11f1e_sd15_tile.pth), optionally under
  `control_model.`: the encoder in UNet LDM names (`input_blocks`, `middle_block`, `time_embed`, SDXL
  `label_emb`), the heads as `input_hint_block.{0,2,..}` (every other entry is an activation, so the
  convolutions sit at even indices), `zero_convs.N.0` and `middle_block_out.0`. We map every parameter
  of the model by name (ldm_names holds the UNet half), so an SDXL file's `label_emb` is mapped too.
A single file carries no config: the bundled one of its family (`naiup/data/<family>/controlnet`, the
published SD1.5 / SDXL ControlNet architecture: the base UNet's encoder with the 16/32/96/256 hint
encoder) is used, or `<config_dir>/controlnet` when the caller gives a skeleton (tests, tiny models).

The family is read from the weights: an SDXL ControlNet has the size/pooled-text embedding
(`add_embedding` / `label_emb`), an SD1.5 one does not. A ControlNet must match the UNet it steers:
a family mismatch is refused naming both, and so is any other mismatch of the shapes its residuals
must have (context width, channel counts).
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from diffusers import ControlNetModel

from naiup.engine.models.checkpoints import is_single_file, read_state_dict
from naiup.engine.models.family import SD15, SDXL
from naiup.engine.models.ldm_names import unet_ldm_name
from naiup.errors import ModelLoadError

__all__ = [
    "CONTROLNET_SKELETONS",
    "FAMILY_NAMES",
    "controlnet_family",
    "controlnet_ldm_name",
    "load_controlnet",
]

_DATA = Path(str(resources.files("naiup") / "data"))
CONTROLNET_SKELETONS = {SD15: _DATA / "sd15" / "controlnet", SDXL: _DATA / "sdxl" / "controlnet"}
FAMILY_NAMES = {SD15: "SD1.5", SDXL: "SDXL"}
# What to fetch for each family (shown when the wrong one is configured).
TILE_MODELS = {SD15: "lllyasviel/control_v11f1e_sd15_tile", SDXL: "xinsir/controlnet-tile-sdxl-1.0"}
_LDM_PREFIX = "control_model."
_HINT = "controlnet_cond_embedding."
# LDM key stems a ControlNet file holds; one of them left unmapped means the file has parts our config
# lacks (another architecture), which a partial load would silently drop.
_LDM_STEMS = (
    "input_blocks.",
    "middle_block",
    "time_embed.",
    "label_emb.",
    "input_hint_block.",
    "zero_convs.",
)


def controlnet_family(keys: Iterable[str]) -> str:
    """SDXL when the weights have SDXL's size/pooled-text embedding (diffusers or LDM names), else SD1.5."""
    for key in keys:
        if key.startswith(("add_embedding.", "label_emb.", _LDM_PREFIX + "label_emb.")):
            return SDXL
    return SD15


def controlnet_ldm_name(name: str, layers_per_block: int, hint_convs: int) -> str | None:
    """LDM key of a diffusers ControlNet parameter; None for a name LDM has no slot for.
    `hint_convs`: how many `controlnet_cond_embedding.blocks` the model has (6 for 16/32/96/256)."""
    rest = name.split(".")
    if name.startswith(_HINT + "conv_in."):
        return f"input_hint_block.0.{rest[-1]}"
    if name.startswith(_HINT + "blocks."):
        return f"input_hint_block.{2 * (int(rest[2]) + 1)}.{rest[-1]}"
    if name.startswith(_HINT + "conv_out."):
        return f"input_hint_block.{2 * (hint_convs + 1)}.{rest[-1]}"
    if name.startswith("controlnet_down_blocks."):
        return f"zero_convs.{rest[1]}.0.{rest[-1]}"
    if name.startswith("controlnet_mid_block."):
        return f"middle_block_out.0.{rest[-1]}"
    # The encoder half is named as in a UNet; it has no up blocks, so no upsampler index is asked for.
    return unet_ldm_name(name, layers_per_block, ())


def load_controlnet(
    spec: str, model_family: str, unet_config: Any, config_dir: Path | None = None
) -> ControlNetModel:
    """The ControlNet at `spec` (a diffusers folder or one weight file), on the CPU in the file's dtype,
    checked against the UNet it will steer (`model_family`, `unet_config`)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        model = _from_folder(path, model_family)
    elif path.is_file() and is_single_file(spec):
        model = _from_file(path, model_family, config_dir)
    elif path.exists():
        raise ModelLoadError(path, "expected a ControlNet folder or a .safetensors/.pth/.ckpt file")
    else:
        raise ModelLoadError(
            path,
            "ControlNet not found (naiup does not download ControlNets: fetch one with "
            f"`hf download {TILE_MODELS[model_family]} --local-dir DIR` and point the controlnet key at DIR)",
        )
    _check_fits(path, model.config, unet_config)
    return model.eval().requires_grad_(False)


def _check_family(path: Path, family: str, model_family: str) -> None:
    if family != model_family:
        raise ModelLoadError(
            path,
            f"is an {FAMILY_NAMES[family]} ControlNet, but the model set's checkpoint is "
            f"{FAMILY_NAMES[model_family]}: a ControlNet only steers the family it was trained with. "
            f"Use an {FAMILY_NAMES[model_family]} tile ControlNet (e.g. {TILE_MODELS[model_family]}) "
            f"or an {FAMILY_NAMES[family]} checkpoint",
        )


def _from_folder(path: Path, model_family: str) -> ControlNetModel:
    try:
        config = ControlNetModel.load_config(path, local_files_only=True)
    except Exception as exc:  # no or unreadable config.json: not a diffusers ControlNet folder
        raise ModelLoadError(path, f"is not a diffusers ControlNet folder (config.json: {exc})") from exc
    if config.get("_class_name") not in (None, "ControlNetModel"):
        raise ModelLoadError(path, f"holds a {config['_class_name']}, not a ControlNetModel")
    _check_family(path, SDXL if config.get("addition_embed_type") == "text_time" else SD15, model_family)
    try:
        return ControlNetModel.from_pretrained(path, local_files_only=True)
    except Exception as exc:  # missing/corrupt weights, or weights that do not fit its own config
        raise ModelLoadError(path, f"cannot load this ControlNet folder: {exc}") from exc


def _from_file(path: Path, model_family: str, config_dir: Path | None) -> ControlNetModel:
    sd = read_state_dict(path)
    family = controlnet_family(sd)
    _check_family(path, family, model_family)
    # A caller's skeleton (tests' tiny models) holds the config when it has one; else the bundled one.
    given = Path(config_dir) / "controlnet" if config_dir else None
    config_path = given if given and (given / "config.json").is_file() else CONTROLNET_SKELETONS[family]
    config = ControlNetModel.load_config(config_path, local_files_only=True)
    with torch.device("meta"):  # no random init of ~1 B parameters that the file replaces anyway
        model = ControlNetModel.from_config(config)
    weights = sd if f"{_HINT}conv_in.weight" in sd else _from_ldm(path, sd, model)
    try:
        model.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as exc:  # size mismatch or missing/extra keys: another architecture
        reason = str(exc).split("\n\t", 2)[:2]
        raise ModelLoadError(
            path,
            f"does not fit the {FAMILY_NAMES[family]} ControlNet layout ({' '.join(reason)}); a ControlNet "
            "of another shape loads from its diffusers folder (with its config.json)",
        ) from exc
    return model


def _from_ldm(path: Path, sd: dict[str, torch.Tensor], model: ControlNetModel) -> dict[str, torch.Tensor]:
    ldm = {k.removeprefix(_LDM_PREFIX): v for k, v in sd.items()}
    if "input_hint_block.0.weight" not in ldm:
        raise ModelLoadError(
            path,
            "is not a ControlNet (neither diffusers' controlnet_cond_embedding.* nor the original "
            "input_hint_block.* keys); is it a checkpoint or a LoRA?",
        )
    layers, hint_convs = model.config.layers_per_block, len(model.controlnet_cond_embedding.blocks)
    out, used = {}, set()
    for name in model.state_dict():
        key = controlnet_ldm_name(name, layers, hint_convs)
        if key is None or key not in ldm:
            raise ModelLoadError(
                path, f"ControlNet weights incomplete: no {key or name!r} for {name!r} (another layout?)"
            )
        out[name] = ldm[key]
        used.add(key)
    extra = sorted(k for k in ldm if k not in used and k.startswith(_LDM_STEMS))
    if extra:
        raise ModelLoadError(
            path,
            f"has ControlNet weights the {FAMILY_NAMES[controlnet_family(ldm)]} layout lacks (e.g. "
            f"{extra[0]!r}); a ControlNet of another shape loads from its diffusers folder",
        )
    return out


def _check_fits(path: Path, cn: Any, unet: Any) -> None:
    """The residuals are added to the UNet's own activations: every shape they depend on must agree."""
    pairs = [
        ("context width (cross_attention_dim)", cn.cross_attention_dim, unet.cross_attention_dim),
        ("latent channels", cn.in_channels, unet.in_channels),
        ("block channels", list(cn.block_out_channels), list(unet.block_out_channels)),
        ("layers per block", cn.layers_per_block, unet.layers_per_block),
    ]
    if cn.addition_embed_type == "text_time":
        pairs.append(
            (
                "size/pooled-text embedding width",
                cn.projection_class_embeddings_input_dim,
                unet.projection_class_embeddings_input_dim,
            )
        )
    for what, ours, theirs in pairs:
        if ours != theirs:
            raise ModelLoadError(
                path,
                f"does not fit the model set's UNet: its {what} is {ours}, the UNet's is {theirs} "
                "(a ControlNet for another base model, e.g. SD2.x?)",
            )
