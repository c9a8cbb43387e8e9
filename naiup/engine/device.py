"""Which torch device and dtypes to use, how much memory it has free, and the user's cap on it.

cap_memory(device, max_bytes) holds naiup to `max_bytes` of accelerator memory (model.max_vram_gb):
every tile size planned from free_memory_bytes() plans for the cap, and the CUDA/MPS allocator is
told the same limit, so an estimate that was wrong is an out-of-memory error the tile ladders
handle, not memory taken from the game running beside us.

A CUDA device is always `cuda:N` here (pick_device, explicit_device): some torch.cuda calls
(set_per_process_memory_fraction among them) refuse a bare torch.device("cuda"), and a tensor's
`.device` is always indexed, so only an indexed device compares equal to where the weights are.
"""

from __future__ import annotations

import gc

import torch

from naiup.errors import ConfigError


def pick_device(setting: str = "auto") -> torch.device:
    """cuda > mps > cpu for "auto"; an explicit choice that is unavailable is refused, not downgraded.
    setting: "auto" | "cuda" | "mps" | "cpu" (model.device, validated by the config)."""
    if setting == "auto":
        if torch.cuda.is_available():
            return explicit_device(torch.device("cuda"))
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "model.device", "is 'cuda' but torch sees no CUDA GPU (is a CUDA build of torch installed?)"
        )
    if setting == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("model.device", "is 'mps' but this torch/Mac has no MPS support")
    return explicit_device(torch.device(setting))


def with_index(device: torch.device, current: int) -> torch.device:
    """`cuda` -> `cuda:<current>`; an indexed or non-CUDA device is returned as it is."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", current)
    return device


def explicit_device(device: torch.device | str) -> torch.device:
    """The device with its CUDA index made explicit (torch's current CUDA device for a bare "cuda")."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return with_index(device, torch.cuda.current_device())
    return device


def same_device(actual: torch.device, wanted: torch.device) -> bool:
    """Whether a tensor on `actual` is on `wanted` (a tensor's device is indexed: mps:0 is "mps")."""
    return actual.type == wanted.type and (wanted.index is None or actual.index == wanted.index)


def place(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> bool:
    """Put every tensor of `module` on `device`, its floating ones in `dtype`; False when all already
    were (nothing moved). Device and dtype go in ONE `.to()`: tensor by tensor, so an fp32 UNet loaded
    on the host never lands on the GPU whole in fp32 (3.4 GB where 1.7 GB are wanted). Only what is
    wrong is asked for: diffusers logs a warning on every dtype `.to()`, even a no-op one."""
    wrong_device, wrong_dtype = misplaced(module, device, dtype)
    if wrong_dtype:
        module.to(device=device, dtype=dtype)
    elif wrong_device:
        module.to(device)
    return bool(wrong_device or wrong_dtype)


def misplaced(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> tuple[int, int]:
    """(tensors not on `device`, floating tensors not in `dtype`) among the module's parameters and
    buffers: (0, 0) for a model where it should be."""
    tensors = [*module.parameters(), *module.buffers()]
    wrong_device = sum(not same_device(t.device, device) for t in tensors)
    wrong_dtype = sum(t.is_floating_point() and t.dtype != dtype for t in tensors)
    return wrong_device, wrong_dtype


def unet_dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type in ("cuda", "mps") else torch.float32


def vae_dtype(device: torch.device) -> torch.dtype:
    return vae_dtype_for(device.type, device.type == "cuda" and native_bf16(device))


def vae_dtype_for(device_type: str, native_bf16: bool) -> torch.dtype:
    """bf16 where the card computes it natively, else fp32. Never fp16: fp16 VAEs overflow to NaN
    with NAI-derived anime weights. Turing/Pascal only emulate bf16 (no bf16 cuDNN convolutions):
    fp32 is the fast choice there."""
    return torch.bfloat16 if device_type == "cuda" and native_bf16 else torch.float32


def native_bf16(device: torch.device) -> bool:
    """Whether CUDA `device` has bf16 in hardware (Ampere and later, or ROCm), not by emulation."""
    device = explicit_device(device)
    with torch.cuda.device(device):  # torch answers for the current device
        try:
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # a torch without the keyword: ask what it asks, the compute capability
            return bool(torch.version.hip) or torch.cuda.get_device_capability(device) >= (8, 0)


_caps: dict[str, int] = {}


def cap_memory(device: torch.device, max_bytes: int | None) -> None:
    """Limit this process to `max_bytes` on `device` (None or 0: no limit). A no-op on the CPU."""
    if device.type not in ("cuda", "mps"):
        return
    device = explicit_device(device)
    key = str(device)
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(cuda_memory_fraction(max_bytes, total), device)
    else:
        recommended = torch.mps.recommended_max_memory()
        torch.mps.set_per_process_memory_fraction(mps_memory_fraction(max_bytes, recommended))
    if max_bytes:
        _caps[key] = int(max_bytes)
    else:
        _caps.pop(key, None)


def cuda_memory_fraction(max_bytes: int | None, total: int) -> float:
    """torch.cuda's per-process fraction for a cap of `max_bytes` on a card of `total` (1.0: none)."""
    return min(1.0, max_bytes / total) if max_bytes else 1.0


def mps_memory_fraction(max_bytes: int | None, recommended: int) -> float:
    """MPS's fraction is of the recommended working set, and 0 means "no limit" there."""
    return max(1e-3, min(1.0, max_bytes / recommended)) if max_bytes else 0.0


def memory_capacity(device: torch.device) -> int | None:
    """The most accelerator memory this process may ever hold: the card's (MPS: the recommended
    working set), within the cap. None on CPU. What "this card is too small" is measured against;
    free_memory_bytes is what is free now."""
    if device.type == "cuda":
        device = explicit_device(device)
        total = torch.cuda.get_device_properties(device).total_memory
    elif device.type == "mps":
        total = torch.mps.recommended_max_memory()
    else:
        return None
    return capacity_within_cap(total, _caps.get(str(explicit_device(device))))


def capacity_within_cap(total: int, cap: int | None) -> int:
    return min(total, cap) if cap else total


def free_memory_bytes(device: torch.device) -> int | None:
    """Memory we may still take on an accelerator: what the card has free, within the cap if one is
    set. None on CPU (host RAM is not the constraint we size tiles for)."""
    if device.type == "cuda":
        device = explicit_device(device)
        driver_free, _total = torch.cuda.mem_get_info(device)
        used = torch.cuda.memory_allocated(device)
        reserved = torch.cuda.memory_reserved(device)
    elif device.type == "mps":
        driver_free = torch.mps.recommended_max_memory() - torch.mps.driver_allocated_memory()
        used = reserved = torch.mps.current_allocated_memory()
    else:
        return None
    return free_within_cap(driver_free, reserved, used, _caps.get(str(explicit_device(device))))


def free_within_cap(driver_free: int, reserved: int, allocated: int, cap: int | None) -> int:
    """What we may still allocate: what the driver has free plus the blocks torch caches but no tensor
    uses (the driver counts those as taken), within `cap` minus what our tensors hold; never < 0."""
    free = driver_free + reserved - allocated
    if cap is not None:
        free = min(free, cap - allocated)
    return max(0, int(free))


# What a plain RuntimeError says when it is really out of memory: MPS and older CUDA paths ("out of
# memory"), cuDNN and cuBLAS failing to get their workspace (CUDNN_/CUBLAS_STATUS_ALLOC_FAILED).
_OOM_TEXT = ("out of memory", "cudnn_status_alloc_failed", "cublas_status_alloc_failed")


def is_oom(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and any(t in str(exc).lower() for t in _OOM_TEXT)


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
