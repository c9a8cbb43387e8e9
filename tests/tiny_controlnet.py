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
    cpu_config(tmp_path_factory, family, controlnet=True) -> ModelConfig   that family's tiny set on the
        CPU (SD1.5 with its LCM-LoRA), with its tiny ControlNet or without one
    loaded_refiners(tmp_path_factory) -> {"sd15": Refiner, "sdxl": Refiner}   loaded, with ControlNets
    ControlNetSpy(net)   a module around a loaded ControlNet recording every call (latents, hint,
        context, added conditioning, the residuals it returned); `.net` is the wrapped one
    spying(refiner, seam, default) -> Spies   context: a ControlNetSpy in the Refiner, every UNet call's
        batch and keywords, and the canvas each predictor of `seam` ("wrap_predictor" | "wrap_regions",
        `default` its wrapper) is given; all put back on exit
    assert_feeds(control_call, unet_call)   that UNet call got this ControlNet call's residuals, on the
        same samples, context and added conditioning
The LDM names are written here independently of naiup's loader: SD1.5 through tiny_sd's own UNet map,
the heads from the original ControlNet's module order (a conv at every even index of the hint block,
an activation between).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import tiny_sd
import tiny_sdxl
import torch
from safetensors.torch import load_file, save_file

from naiup.config import ModelConfig
from naiup.engine.models.ldm_names import unet_ldm_name
from naiup.testing import random_controlnet

_WEIGHTS = "diffusion_pytorch_model.safetensors"


def build_tiny_controlnet(pipeline_folder: Path, out: Path, seed: int = 3) -> Path:
    from diffusers import UNet2DConditionModel

    config = UNet2DConditionModel.load_config(Path(pipeline_folder) / "unet")
    random_controlnet(config, seed, residual_std=0.05).save_pretrained(out)
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


def cpu_config(tmp_path_factory, family: str, controlnet: bool = True) -> ModelConfig:
    cn = getattr(session_tiny_controlnets(tmp_path_factory), family)
    lcm = str(tiny_sd.session_tiny_sd(tmp_path_factory).lcm_lora) if family == "sd15" else ""
    return ModelConfig(
        checkpoint=str(cn.model), lcm_lora=lcm, device="cpu", controlnet=str(cn.folder) if controlnet else ""
    )


def loaded_refiners(tmp_path_factory) -> dict:
    from naiup.engine.diffusion.refine import Refiner

    out = {family: Refiner(cpu_config(tmp_path_factory, family)) for family in ("sd15", "sdxl")}
    for refiner in out.values():
        refiner.load()
    return out


class ControlNetSpy(torch.nn.Module):
    """Wraps the ControlNet module: records every call's latent batch, hint batch and residuals."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net
        self.calls: list[dict] = []

    @property
    def dtype(self) -> torch.dtype:
        return self.net.dtype

    def forward(self, sample, timestep, **kwargs):
        down, mid = self.net(sample, timestep, **kwargs)
        self.calls.append(
            {
                "sample": sample.clone(),
                "hint": kwargs["controlnet_cond"].clone(),
                "context": kwargs["encoder_hidden_states"].clone(),
                "added": {k: v.clone() for k, v in (kwargs.get("added_cond_kwargs") or {}).items()},
                "out": (down, mid),
            }
        )
        return down, mid


@dataclass
class Spies:
    control: ControlNetSpy
    unet_calls: list[dict] = field(default_factory=list)  # {"sample": batch, **UNet keywords}
    canvases: list[torch.Tensor] = field(default_factory=list)  # each predict call's canvas
    predictors: list = field(default_factory=list)  # the wrapped predictors, as `default` made them


@contextmanager
def spying(refiner, seam: str, default: Callable) -> Iterator[Spies]:
    m = refiner.models
    spies = Spies(ControlNetSpy(m.controlnet))

    def record_unet(_module, args, kwargs):
        spies.unet_calls.append({"sample": args[0].clone(), **kwargs})

    def wrap(*args):
        inner = default(*args)
        spies.predictors.append(inner)

        def predict(x, t):
            spies.canvases.append(x.clone())
            return inner(x, t)

        return predict

    handle = m.unet.register_forward_pre_hook(record_unet, with_kwargs=True)
    m.controlnet = spies.control
    setattr(refiner, seam, wrap)
    try:
        yield spies
    finally:
        handle.remove()
        m.controlnet = spies.control.net
        setattr(refiner, seam, default)


def assert_feeds(control_call: dict, unet_call: dict) -> None:
    assert torch.equal(unet_call["sample"], control_call["sample"])
    assert torch.equal(unet_call["encoder_hidden_states"], control_call["context"])
    down, mid = control_call["out"]
    assert unet_call["mid_block_additional_residual"] is mid
    assert all(a is b for a, b in zip(unet_call["down_block_additional_residuals"], down, strict=True))
    for key, value in control_call["added"].items():  # SDXL: each sample's pooled embedding and size ids
        assert torch.equal(unet_call["added_cond_kwargs"][key], value)
