"""Tiny random-weight SD1.5-shaped model files for tests, built at test time, fully offline.

The models themselves come from naiup.testing (shared with bench/); this module writes them in the
forms a user's files take. API (other areas' tests import this; `import tiny_sd` works from any test):
    build_tiny_sd(folder) -> Path              naiup.testing's: diffusers folder, 4-block UNet (32 ch),
                                                4-block VAE, 4-layer 32-wide CLIP, SD1.5's tokenizer
    write_skeleton(folder, out) -> Path         the folder's json/txt only: a config dir for single files
    write_single_file(folder, out) -> Path      A1111/LDM-named .safetensors of the same weights
    write_kohya_lora(folder, out, ...) -> Path  Kohya LoRA/LoCon (UNet and optionally text encoder)
    write_lcm_lora(folder, out) -> Path         UNet-only Kohya LoRA over LCM-LoRA's target modules
    write_loha(out) / write_lora_mid(out)       unsupported kinds, for negative tests
    session_tiny_sd(tmp_path_factory) -> TinySD the set, built once per session
    cpu_config(tmp_path_factory) -> ModelConfig that set on the CPU with its LCM-LoRA
The LDM key mapping is written here from the SD1.5 layout (4 blocks, 2 layers per block).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from naiup.testing import build_tiny_sd, save_weights

# The modules LCM-LoRA SD1.5 trains (the LCM distillation script's default targets): rank 64 over
# exactly these gives LCM-LoRA's 67.3 M parameters.
LCM_TARGETS = (
    "to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
    "conv1", "conv2", "conv_shortcut", "downsamplers.0.conv", "upsamplers.0.conv", "time_emb_proj",
)  # fmt: skip
TE_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")


def write_skeleton(folder: Path, out: Path) -> Path:
    """Copy the folder without weights: what naiup/data/sd15 is for real SD1.5."""
    shutil.copytree(folder, out, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    return Path(out)


def _unet_to_ldm(name: str) -> str:
    p = name.split(".")
    resnet = {
        "norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
        "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection",
    }  # fmt: skip
    top = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
           "conv_in": "input_blocks.0.0", "conv_norm_out": "out.0", "conv_out": "out.2"}  # fmt: skip
    for k, v in top.items():
        if name.startswith(k + "."):
            return v + name[len(k) :]
    if p[0] == "down_blocks":
        i = int(p[1])
        if p[2] == "downsamplers":  # down_blocks.i.downsamplers.0.conv.weight
            return f"input_blocks.{3 * (i + 1)}.0.op.{p[-1]}"
        j, rest = int(p[3]), p[4:]
        block = f"input_blocks.{3 * i + j + 1}"
    elif p[0] == "up_blocks":
        i = int(p[1])
        if p[2] == "upsamplers":
            return f"output_blocks.{3 * i + 2}.{1 if i == 0 else 2}.conv.{p[-1]}"
        j, rest = int(p[3]), p[4:]
        block = f"output_blocks.{3 * i + j}"
    elif p[0] == "mid_block":
        j, rest = int(p[2]), p[3:]
        block = "middle_block"
        return f"{block}.{1 if p[1] == 'attentions' else 2 * j}." + (
            ".".join(rest) if p[1] == "attentions" else _rename(rest, resnet)
        )
    else:
        raise KeyError(name)
    if p[2] == "attentions":
        return f"{block}.1." + ".".join(rest)
    return f"{block}.0." + _rename(rest, resnet)


def _rename(rest: list[str], table: dict[str, str]) -> str:
    return f"{table.get(rest[0], rest[0])}." + ".".join(rest[1:])


def _vae_to_ldm(name: str, value: torch.Tensor) -> tuple[str, torch.Tensor]:
    p = name.split(".")
    resnet = {"conv_shortcut": "nin_shortcut"}
    attn = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out": "proj_out"}
    side = p[0]
    if len(p) > 2 and p[1] in ("down_blocks", "up_blocks"):
        i = int(p[2])
        level = i if side == "encoder" else 3 - i
        stage = "down" if side == "encoder" else "up"
        if p[3] == "resnets":
            return f"{side}.{stage}.{level}.block.{p[4]}." + _rename(p[5:], resnet), value
        sample = "downsample" if side == "encoder" else "upsample"
        return f"{side}.{stage}.{level}.{sample}.conv.{p[-1]}", value
    if len(p) > 2 and p[1] == "mid_block":
        if p[2] == "resnets":
            return f"{side}.mid.block_{int(p[3]) + 1}." + _rename(p[4:], resnet), value
        new = attn[p[4]]
        if value.dim() == 2:  # LDM keeps the mid attention as 1x1 convs
            value = value[:, :, None, None]
        return f"{side}.mid.attn_1.{new}.{p[-1]}", value
    if len(p) > 1 and p[1] == "conv_norm_out":
        return f"{side}.norm_out.{p[-1]}", value
    return name, value


def single_file_weights(
    folder: Path, unet_name: Callable[[str], str], te_prefix: str
) -> dict[str, torch.Tensor]:
    """The folder's UNet, VAE and (first) text encoder weights under single-file names: `unet_name`
    maps a diffusers UNet key, `te_prefix` is where the file keeps CLIP-L's transformers keys."""
    folder = Path(folder)
    sd: dict[str, torch.Tensor] = {}
    for k, v in load_file(folder / "unet" / "diffusion_pytorch_model.safetensors").items():
        sd[f"model.diffusion_model.{unet_name(k)}"] = v
    for k, v in load_file(folder / "vae" / "diffusion_pytorch_model.safetensors").items():
        name, value = _vae_to_ldm(k, v)
        sd[f"first_stage_model.{name}"] = value
    for k, v in load_file(folder / "text_encoder" / "model.safetensors").items():
        sd[f"{te_prefix}text_model.{k.removeprefix('text_model.')}"] = v
    return sd


def write_single_file(folder: Path, out: Path) -> Path:
    """Write the diffusers folder as one A1111/LDM-named checkpoint (.safetensors)."""
    return save_weights(single_file_weights(folder, _unet_to_ldm, "cond_stage_model.transformer."), out)


def _modules(folder: Path, sub: str) -> dict[str, tuple[int, ...]]:
    """module path -> weight shape of every Linear/Conv2d weight in the saved component."""
    name = "model.safetensors" if sub == "text_encoder" else "diffusion_pytorch_model.safetensors"
    sd = load_file(Path(folder) / sub / name)
    return {
        k[: -len(".weight")]: tuple(v.shape)
        for k, v in sd.items()
        if k.endswith(".weight") and v.dim() in (2, 4)
    }


def write_kohya_lora(
    folder: Path,
    out: Path,
    *,
    targets: tuple[str, ...] = LCM_TARGETS,
    te_targets: tuple[str, ...] = TE_TARGETS,
    rank: int = 4,
    alpha: float = 2.0,
    scale: float = 0.2,
    seed: int = 1,
) -> Path:
    """Random Kohya LoRA/LoCon: `lora_unet_*` over `targets`, `lora_te_*` over `te_targets` (may be ())."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    groups = [("lora_unet_", _modules(folder, "unet"), targets, "")]
    if te_targets:
        groups.append(("lora_te_", _modules(folder, "text_encoder"), te_targets, "text_model_"))
    for prefix, modules, wanted, te_prefix in groups:
        for mod, shape in sorted(modules.items()):
            if not any(mod == t or mod.endswith("." + t) for t in wanted):
                continue
            key = prefix + te_prefix + mod.removeprefix("text_model.").replace(".", "_")
            down_shape = (rank, *shape[1:]) if len(shape) == 4 else (rank, shape[1])
            up_shape = (shape[0], rank, 1, 1) if len(shape) == 4 else (shape[0], rank)
            sd[f"{key}.lora_down.weight"] = torch.randn(down_shape, generator=g) * scale
            sd[f"{key}.lora_up.weight"] = torch.randn(up_shape, generator=g) * scale
            sd[f"{key}.alpha"] = torch.tensor(alpha)
    save_file(sd, out)
    return Path(out)


def write_lcm_lora(folder: Path, out: Path, seed: int = 2) -> Path:
    """UNet-only over LCM_TARGETS, like LCM-LoRA (which is rank 64; rank 8 keeps it small)."""
    return write_kohya_lora(folder, out, te_targets=(), rank=8, alpha=8.0, scale=0.1, seed=seed)


def write_loha(out: Path) -> Path:
    key = "lora_unet_down_blocks_0_attentions_0_proj_in"
    save_file({f"{key}.hada_w1_a": torch.zeros(32, 4), f"{key}.hada_w1_b": torch.zeros(4, 32)}, out)
    return Path(out)


def write_lora_mid(out: Path) -> Path:
    key = "lora_unet_down_blocks_0_resnets_0_conv1"
    save_file(
        {
            f"{key}.lora_down.weight": torch.zeros(4, 32, 1, 1),
            f"{key}.lora_mid.weight": torch.zeros(4, 4, 3, 3),
            f"{key}.lora_up.weight": torch.zeros(32, 4, 1, 1),
        },
        out,
    )
    return Path(out)


@dataclass(frozen=True)
class TinySD:
    folder: Path  # diffusers folder
    skeleton: Path  # its config dir (no weights), for single files
    single_file: Path  # same weights, LDM/A1111 names
    lcm_lora: Path  # UNet-only Kohya LoRA, LCM-shaped
    kohya_lora: Path  # UNet + text encoder Kohya LoRA/LoCon


_built: dict[Path, TinySD] = {}  # one build per pytest session (keyed by its basetemp)


def session_tiny_sd(tmp_path_factory) -> TinySD:
    """Build the tiny model set once per session; call from a fixture with pytest's tmp_path_factory."""
    base = tmp_path_factory.getbasetemp()
    if base not in _built:
        root = tmp_path_factory.mktemp("tiny_sd")
        folder = build_tiny_sd(root / "tiny")
        _built[base] = TinySD(
            folder=folder,
            skeleton=write_skeleton(folder, root / "skeleton"),
            single_file=write_single_file(folder, root / "tiny-sd15.safetensors"),
            lcm_lora=write_lcm_lora(folder, root / "lcm-lora.safetensors"),
            kohya_lora=write_kohya_lora(folder, root / "style.safetensors"),
        )
    return _built[base]


def cpu_config(tmp_path_factory):  # -> naiup.config.ModelConfig
    """The session's tiny model set with its LCM-LoRA, on the CPU, as a Refiner takes it."""
    from naiup.config import ModelConfig

    tiny = session_tiny_sd(tmp_path_factory)
    return ModelConfig(checkpoint=str(tiny.folder), lcm_lora=str(tiny.lcm_lora), device="cpu")
