"""The UNet call, captured as CUDA graphs per fixed tile-batch shape (torch.compile "reduce-overhead").

    use_unet_graphs(setting, device_type, capability, has_triton) -> bool   # model.unet_graphs
    UnetCall(unet, graphs)(x, t, encoder_hidden_states) -> eps               # .fixed_shapes

Tiled diffusion calls the UNet many times per step on small tiles: eagerly, an SD1.5 call on 64x64
latent tiles is bound by Python and kernel launches (~45 ms at batch 1 on an H200, ~3.1 ms per tile
at batch 16). A CUDA graph replays the whole call with one launch. torch.compile's "reduce-overhead"
mode compiles and records one graph per input shape and keeps them in the compiled module, so the
Refiner, which keeps its UnetCall while the models stay loaded, warms each shape once across jobs.
Shapes are kept few on purpose: the tiled predictor pads every batch to the same power-of-two size
(tiling.batch_shape) when `fixed_shapes` is set.

"auto" turns graphs on only where they exist and can be compiled: CUDA, a Triton install (Linux
wheels ship it) and compute capability 7.0+ (Triton's minimum), and only with MIN_MEMORY_GIB or
more for naiup (the card's memory, or model.max_vram_gb when set): a graph keeps its activations in
a private memory pool for as long as it lives, which the VAE passes after it cannot use, and which
the free-memory planning counts as free. "on" compiles on any device (on the CPU that is inductor's
C++ code, no graphs); "off" is the eager UNet.
"""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

import torch

from naiup.engine.device import first_line, is_oom

__all__ = ["UnetCall", "has_triton", "use_unet_graphs"]

log = logging.getLogger(__name__)

MIN_CAPABILITY = (7, 0)
MIN_MEMORY_GIB = 16.0


def use_unet_graphs(
    setting: str,
    device_type: str,
    capability: tuple[int, int] | None,
    has_triton: bool,
    memory_gib: float | None = None,
) -> bool:
    """Whether to compile the UNet for this device (see the module docstring). memory_gib: what naiup
    may use on it (the cap, else the card's total); None: unknown, taken as enough. setting:
    "auto" | "on" | "off" (model.unet_graphs, validated by the config)."""
    if setting != "auto":
        return setting == "on"
    enough = memory_gib is None or memory_gib >= MIN_MEMORY_GIB
    return (
        device_type == "cuda"
        and has_triton
        and enough
        and capability is not None
        and capability >= MIN_CAPABILITY
    )


def has_triton() -> bool:
    return importlib.util.find_spec("triton") is not None


class UnetCall:
    """unet(x, t, encoder_hidden_states=...).sample, compiled when `graphs`; a compiled call that
    fails for any reason but memory logs it once and runs eagerly from then on (a job never fails
    because a compiler did)."""

    def __init__(self, unet: torch.nn.Module, graphs: bool) -> None:
        self.unet = unet
        # dynamic=False: one static graph per shape; the predictor keeps the shapes to a handful.
        self._compiled = torch.compile(unet, mode="reduce-overhead", dynamic=False) if graphs else None

    @property
    def fixed_shapes(self) -> bool:
        """True while compiled: callers should keep to a few input shapes (each one is compiled)."""
        return self._compiled is not None

    def __call__(
        self, x: torch.Tensor, t: torch.Tensor, encoder_hidden_states: torch.Tensor, **extra: Any
    ) -> torch.Tensor:
        """`extra`: further UNet keywords (SDXL's `added_cond_kwargs`), batched like `x`."""
        if self._compiled is not None:
            try:
                # Each call starts a new graph generation: the previous call's outputs, already used,
                # may be overwritten by this replay.
                torch.compiler.cudagraph_mark_step_begin()
                out = self._compiled(x, t, encoder_hidden_states=encoder_hidden_states, **extra).sample
                return out.clone()  # the replay's output buffer is reused by the next replay
            except Exception as exc:
                if is_oom(exc):
                    raise
                log.warning("compiled UNet failed (%s); running it eagerly from now on", first_line(exc))
                self._compiled = None
        return self.unet(x, t, encoder_hidden_states=encoder_hidden_states, **extra).sample
