"""Room for the VAE on a small GPU: park the UNet and text encoder in host RAM while it runs.

needs_room(vae, op, height, width, free) -> bool
parked(modules, device)                      # context manager: modules on the CPU inside, back after

SD1.5's UNet and text encoder hold ~2 GB on the accelerator (fp16) and sit idle while the VAE encodes
or decodes. At 4x of 832x1216 even the VAE's least-memory pass (the whole-latent stage plus one
low-memory tile, vae_memory's estimate) wants ~2.7 GB in bf16, which is more than a 6 GB card (or a
4 GiB model.max_vram_gb) has left beside them. Then, and only then, the two models wait in host
RAM for that pass: ~2 GB over PCIe each way, a fraction of a second, instead of an out-of-memory
failure. A GPU with room never moves anything.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence

import torch
from torch import nn

from naiup.engine.device import empty_cache, first_line
from naiup.engine.vae import stages as st
from naiup.engine.vae.memory import HEADROOM, estimate_vae_memory
from naiup.engine.vae.tiled import LOW_MEMORY_CORE

__all__ = ["needs_room", "parked"]

log = logging.getLogger(__name__)
_CPU = torch.device("cpu")


def needs_room(vae: nn.Module, op: str, height: int, width: int, free: int | None) -> bool:
    """True when `free` accelerator bytes cannot hold the VAE's least-memory pass for an image of
    height x width px (None: no accelerator, nothing to make room on)."""
    if free is None:
        return False
    halo = st.decoder_halo(vae) if op == "decode" else st.encoder_halo(vae)
    mem = estimate_vae_memory(
        tuple(vae.config.block_out_channels), op, height, width, vae.dtype.itemsize, LOW_MEMORY_CORE, halo
    )
    return mem.head + mem.tile > free * HEADROOM


@contextlib.contextmanager
def parked(modules: Sequence[nn.Module], device: torch.device) -> Iterator[None]:
    """Move `modules` to host RAM for the block, then back to `device`.

    When the block fails, its error is the one raised: bringing the models back may itself run out
    of memory then (the failed pass's tensors live until the error is handled), and that must not
    replace the error the caller's retry ladder acts on. The models may be left partly in host RAM;
    the Refiner puts every model back in place at the start of each job (Refiner._ensure_placed)."""
    for m in modules:
        m.to(_CPU)
    empty_cache(device)  # give the freed blocks back, for the upscaler's next job too
    log.info("parked %d model(s) in host RAM to make room for the VAE", len(modules))
    try:
        yield
    except BaseException:
        bring_back(modules, device, quiet=True)
        raise
    bring_back(modules, device)


def bring_back(modules: Sequence[nn.Module], device: torch.device, *, quiet: bool = False) -> None:
    """`modules` back to `device`. `quiet`: a failure is logged, not raised (another error is on its
    way up), and the rest are left where they are for the next job's placement check."""
    for m in modules:
        try:
            m.to(device)
        except Exception as exc:
            if not quiet:
                raise
            log.warning(
                "could not bring the parked models back to %s (%s); the next job places them",
                device,
                first_line(exc),
            )
            return
