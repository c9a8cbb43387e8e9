"""Reading weight files safely: safetensors, or .ckpt/.pt through torch's weights-only unpickler.

A .ckpt is a pickle; a full unpickle runs arbitrary code, so we never do one. Files that hold more than
tensors and plain values are refused with advice to convert them once to safetensors.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file

from naiup.engine.load_errors import explain_load_errors
from naiup.errors import ModelLoadError

PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors or .ckpt/.pt file (a `state_dict` wrapper is unwrapped), on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(path, "file not found")
    if path.suffix.lower() == ".safetensors":
        with explain_load_errors(path, "not a readable .safetensors file ({exc})"):
            return load_file(path, device="cpu")
    if path.suffix.lower() not in PICKLE_SUFFIXES:
        raise ModelLoadError(path, "expected a .safetensors, .ckpt or .pt file")
    # UnpicklingError for non-tensor objects, or a corrupt zip.
    with explain_load_errors(
        path,
        "holds pickled objects other than tensors, which we refuse to unpickle (they can run code); "
        "convert it once to .safetensors with a tool you trust",
    ):
        obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ModelLoadError(path, "does not hold a state dict")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def is_single_file(checkpoint: str) -> bool:
    return checkpoint.lower().endswith((".safetensors", *PICKLE_SUFFIXES))
