"""Tiny random-weight ControlNets for the tiny SD1.5 and SDXL test models, built at test time, offline.

API:
    build_tiny_controlnet(pipeline_folder, out, seed=3) -> Path   diffusers ControlNet folder shaped like
        the pipeline's UNet encoder (ControlNetModel.from_unet), random weights everywhere: a real
        ControlNet starts its output convolutions at zero, which here would make every residual 0 and
        every test of them unable to fail
    write_controlnet_ldm(folder, out, prefix) -> Path   the same weights in the original ControlNet (LDM)
        layout: UNet-encoder LDM names, input_hint_block.{0,2,..,14}, zero_convs.N.0, middle_block_out.0
    write_controlnet_file(folder, out) -> Path          the same weights as one diffusers-named file
    write_controlnet_skeleton(folder, out) -> Path       a config dir holding controlnet/config.json
    session_tiny_controlnets(tmp_path_factory) -> TinyControlNets   SD1.5 and SDXL sets, once per session
The LDM names are written here independently of naiup's loader: SD1.5 through tiny_sd's own UNet map,
the heads from the original ControlNet's module order (a conv at every even index of the hint block,
an activation between).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import tiny_sd
import tiny_sdxl
import torch
from safetensors.torch import load_file, save_file

from naiup.engine.models.ldm_names import unet_ldm_name

_WEIGHTS = "diffusion_pytorch_model.safetensors"
_ZERO_INIT = ("controlnet_down_blocks.", "controlnet_mid_block.", "controlnet_cond_embedding.conv_out.")


def build_tiny_controlnet(pipeline_folder: Path, out: Path, seed: int = 3) -> Path:
    from diffusers import ControlNetModel, UNet2DConditionModel

    unet = UNet2DConditionModel.from_pretrained(Path(pipeline_folder) / "unet")
    torch.manual_seed(seed)
    net = ControlNetModel.from_unet(unet, load_weights_from_unet=False)
    with torch.no_grad():
        for name, param in net.named_parameters():
            if name.startswith(_ZERO_INIT):
                param.normal_(0.0, 0.05)
    net.save_pretrained(out)
    return Path(out)


def _head_ldm(name: str, hint_convs: int) -> str | None:
    p = name.split(".")
    if name.startswith("controlnet_cond_embedding.conv_in."):
        return f"input_hint_block.0.{p[-1]}"
    if name.startswith("controlnet_cond_embedding.blocks."):
        return f"input_hint_block.{2 + 2 * int(p[2])}.{p[-1]}"
    if name.startswith("controlnet_cond_embedding.conv_out."):
        return f"input_hint_block.{2 + 2 * hint_convs}.{p[-1]}"
    if name.startswith("controlnet_down_blocks."):
        return f"zero_convs.{p[1]}.0.{p[-1]}"
    if name.startswith("controlnet_mid_block."):
        return f"middle_block_out.0.{p[-1]}"
    return None


def write_controlnet_ldm(folder: Path, out: Path, prefix: str = "control_model.") -> Path:
    """The folder's weights under original ControlNet names; SDXL ones carry `label_emb`."""
    from diffusers import ControlNetModel

    config = ControlNetModel.load_config(folder)
    sd = load_file(Path(folder) / _WEIGHTS)
    hint_convs = len(
        [k for k in sd if k.startswith("controlnet_cond_embedding.blocks.") and k.endswith(".weight")]
    )
    xl = config.get("addition_embed_type") == "text_time"
    ldm = {}
    for key, value in sd.items():
        name = _head_ldm(key, hint_convs)
        if name is None:
            name = unet_ldm_name(key, config["layers_per_block"], ()) if xl else tiny_sd._unet_to_ldm(key)
        ldm[prefix + name] = value
    save_file(ldm, out)
    return Path(out)


def write_controlnet_file(folder: Path, out: Path) -> Path:
    shutil.copyfile(Path(folder) / _WEIGHTS, out)
    return Path(out)


def write_controlnet_skeleton(folder: Path, out: Path) -> Path:
    (Path(out) / "controlnet").mkdir(parents=True)
    shutil.copyfile(Path(folder) / "config.json", Path(out) / "controlnet" / "config.json")
    return Path(out)


@dataclass(frozen=True)
class TinyControlNet:
    model: Path  # the tiny pipeline folder it belongs to
    folder: Path  # diffusers ControlNet folder
    skeleton: Path  # config dir with controlnet/config.json
    ldm_file: Path  # LDM names under control_model.
    bare_ldm_file: Path  # LDM names, no prefix
    diffusers_file: Path  # diffusers names, one file


@dataclass(frozen=True)
class TinyControlNets:
    sd15: TinyControlNet
    sdxl: TinyControlNet


_built: dict[Path, TinyControlNets] = {}


def session_tiny_controlnets(tmp_path_factory) -> TinyControlNets:
    base = tmp_path_factory.getbasetemp()
    if base not in _built:
        root = tmp_path_factory.mktemp("tiny_controlnet")
        sets = {}
        models = {
            "sd15": tiny_sd.session_tiny_sd(tmp_path_factory).folder,
            "sdxl": tiny_sdxl.session_tiny_sdxl(tmp_path_factory).folder,
        }
        for family, model in models.items():
            folder = build_tiny_controlnet(model, root / f"cn-{family}")
            sets[family] = TinyControlNet(
                model=model,
                folder=folder,
                skeleton=write_controlnet_skeleton(folder, root / f"skeleton-{family}"),
                ldm_file=write_controlnet_ldm(folder, root / f"cn-{family}-ldm.safetensors"),
                bare_ldm_file=write_controlnet_ldm(folder, root / f"cn-{family}-bare.safetensors", prefix=""),
                diffusers_file=write_controlnet_file(folder, root / f"cn-{family}.safetensors"),
            )
        _built[base] = TinyControlNets(**sets)
    return _built[base]
