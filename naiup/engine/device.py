"""Which torch device and dtypes to use, and how much memory it has free."""

from __future__ import annotations

import torch

from naiup.errors import ConfigError


def pick_device(setting: str = "auto") -> torch.device:
    """cuda > mps > cpu for "auto"; an explicit choice that is unavailable is refused, not downgraded."""
    if setting == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "model.device", "is 'cuda' but torch sees no CUDA GPU (is a CUDA build of torch installed?)"
        )
    if setting == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("model.device", "is 'mps' but this torch/Mac has no MPS support")
    if setting not in ("cuda", "mps", "cpu"):
        raise ConfigError("model.device", f"must be auto, cuda, mps or cpu, got {setting!r}")
    return torch.device(setting)


def unet_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type in ("cuda", "mps") else torch.float32


def vae_dtype(device: torch.device) -> torch.dtype:
    # fp16 VAEs overflow to NaN with NAI-derived anime weights: never fp16 for the VAE.
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def free_memory_bytes(device: torch.device) -> int | None:
    """Free memory on an accelerator, None on CPU (host RAM is not the constraint we size tiles for)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "mps":
        return int(torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory())
    return None
