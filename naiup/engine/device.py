"""Which torch device and dtypes to use, how much memory it has free, and the user's cap on it.

cap_memory(device, max_bytes) holds naiup to `max_bytes` of accelerator memory (model.max_vram_gb):
every tile size planned from free_memory_bytes() plans for the cap, and the CUDA/MPS allocator is
told the same limit, so an estimate that was wrong is an out-of-memory error the tile ladders
handle, not memory taken from the game running beside us.
"""

from __future__ import annotations

import gc

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


_caps: dict[str, int] = {}


def cap_memory(device: torch.device, max_bytes: int | None) -> None:
    """Limit this process to `max_bytes` on `device` (None or 0: no limit). A no-op on the CPU."""
    if device.type not in ("cuda", "mps"):
        return
    key = _key(device)
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, max_bytes / total) if max_bytes else 1.0, device)
    else:
        total = torch.mps.recommended_max_memory()
        # MPS's fraction is of the recommended working set, and 0 means "no limit" there.
        fraction = max(1e-3, min(1.0, max_bytes / total)) if max_bytes else 0.0
        torch.mps.set_per_process_memory_fraction(fraction)
    if max_bytes:
        _caps[key] = int(max_bytes)
    else:
        _caps.pop(key, None)


def free_memory_bytes(device: torch.device) -> int | None:
    """Memory we may still take on an accelerator: what the card has free, within the cap if one is
    set. None on CPU (host RAM is not the constraint we size tiles for)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        used = torch.cuda.memory_allocated(device)
        # Blocks torch has cached but no tensor uses are free to us, though the driver counts them.
        free += torch.cuda.memory_reserved(device) - used
    elif device.type == "mps":
        free = torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory()
        used = torch.mps.current_allocated_memory()
    else:
        return None
    cap = _caps.get(_key(device))
    if cap is not None:
        free = min(free, cap - used)
    return max(0, int(free))


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    # MPS and some older CUDA paths raise a plain RuntimeError with this text.
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def first_line(exc: BaseException) -> str:
    """The headline of an error for a log line or message (torch's OOM text runs to many lines)."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def empty_cache(device: torch.device) -> None:
    """Hand the blocks torch caches but no tensor uses back to the driver (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def release_cached(device: torch.device) -> None:
    """After a failure, so a retry starts from what is really free."""
    gc.collect()  # frames of the failed attempt may still hold tensors
    empty_cache(device)


def _key(device: torch.device) -> str:
    if device.type == "cuda" and device.index is None:
        return f"cuda:{torch.cuda.current_device()}"
    return str(device)
