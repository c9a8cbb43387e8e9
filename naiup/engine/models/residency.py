"""Which SD models stay on the accelerator, decided from their sizes before anything moves.

model_sizes(models) -> ModelSizes             bytes each model takes in the dtype it is in (runs in)
unet_working_bytes(tile_px, cfg, control) -> int
                                              estimated UNet (+ ControlNet) activations of one tile
plan_residency(sizes, working, available, capacity, tile) -> Residency
                                              raises ModelLoadError (card too small) / OutOfMemoryError

On a card with room everything stays resident. The text encoders are the first to go: they run once
per new prompt (the prompt encoders cache what they made) and hold 1.64 GB in fp16 for SDXL (CLIP-L +
bigG), next to a 5.13 GB UNet. When the UNet, the VAE and one tile's activations fit but not the text
encoders beside them, the encoders wait in host RAM and visit the device to encode a prompt: 1.6 GB
over PCIe, a fraction of a second, once per prompt. If even that visit does not fit beside the UNet,
the UNet steps out to host RAM while they run. If the UNet, the VAE and one tile do not fit at all,
nothing is tried: the job stops with what the model needs and what the card (or model.max_vram_gb)
allows, instead of running out of memory at every retry. An SDXL UNet on a 6 GB card is that case.

A ControlNet of the set ([model] controlnet, loaded with the set whether a preset uses it or not)
belongs with the UNet: it runs beside every UNet call, so its weights count with the UNet's, it
steps out and back with the UNet, and a preset that uses it adds its activations to the tile's.

The decision counts parameter bytes, which are exact, plus one tile's activations, which are an
estimate (tiling.UNET_BYTES_PER_LATENT_PX), plus a fixed reserve for what torch itself takes beside
the tensors (cuBLAS/cuDNN workspaces, allocator rounding, the upscaler). bench/engine_bench.py
--vram-gb measures the real peak to check both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from naiup.engine.diffusion.tiling import CONTROLNET_ACTIVATION_SHARE, UNET_BYTES_PER_LATENT_PX
from naiup.errors import ModelLoadError, OutOfMemoryError

__all__ = [
    "NATIVE_TILE",
    "RESERVE",
    "ModelSizes",
    "Residency",
    "dtype_of",
    "model_sizes",
    "module_bytes",
    "plan_residency",
    "unet_working_bytes",
]

GB = 1e9
# Beside our tensors: cuBLAS/cuDNN workspaces, the caching allocator's rounding and fragmentation, the
# upscaler's weights (17 MB for RealESRGAN 6B), the prompt embeddings. An estimate, kept small: too
# large and a set that would run is refused; the bench's peak numbers under --vram-gb check it.
RESERVE = 256 * 2**20
# Tiles the families are trained around (latent px): a model set is only refused if it cannot run one
# of these (the preset's own tile decides per job).
NATIVE_TILE = {"sd15": 64, "sdxl": 128}
# Share of an activation estimate we trust it for, as the tile-batch planner does (tiling).
_ESTIMATE_SLACK = 0.8


@dataclass(frozen=True, slots=True)
class ModelSizes:
    """Bytes on the accelerator, in the dtypes the engine runs them in there."""

    unet: int
    text_encoders: int  # both of SDXL's together
    vae: int
    family: str = "sd15"
    controlnet: int = 0  # a ControlNet tile of the set (0: none): on the device with the UNet


@dataclass(frozen=True, slots=True)
class Residency:
    """text_encoders_resident: they stay on the device between prompts (else they wait in host RAM);
    unet_steps_out: the UNet waits in host RAM while the text encoders run (only when they are not
    resident and do not fit beside it); need: bytes at the plan's peak, for the log."""

    text_encoders_resident: bool = True
    unet_steps_out: bool = False
    need: int = 0


def module_bytes(module: nn.Module, dtype: torch.dtype) -> int:
    """Bytes of `module`'s parameters and buffers once its floating tensors are in `dtype` (counted
    from element counts: a host copy still in fp32 counts as the fp16 it becomes on the GPU)."""
    total = 0
    for t in (*module.parameters(), *module.buffers()):
        total += t.numel() * dtype.itemsize if t.is_floating_point() else t.numel() * t.element_size()
    return total


def dtype_of(module: nn.Module) -> torch.dtype:
    """The dtype of a module's floating parameters (models are cast whole: one dtype each)."""
    return next(p.dtype for p in module.parameters() if p.is_floating_point())


def model_sizes(models) -> ModelSizes:
    """ModelSizes of a models.load.SDModels, cast to the dtypes it runs in (load_models does that)."""
    encoders = [te for te in (models.text_encoder, models.text_encoder_2) if te is not None]
    cn = models.controlnet
    return ModelSizes(
        unet=module_bytes(models.unet, dtype_of(models.unet)),
        text_encoders=sum(module_bytes(te, dtype_of(te)) for te in encoders),
        vae=module_bytes(models.vae, dtype_of(models.vae)),
        family=models.family,
        controlnet=module_bytes(cn, dtype_of(cn)) if cn is not None else 0,
    )


def unet_working_bytes(tile_px: int, cfg: bool, control: bool = False) -> int:
    """Estimated UNet activations of one tile of `tile_px` latent px (two with CFG), and those of a
    ControlNet run beside it (`control`), with the same slack the tile-batch planner gives the
    estimate (tiling.batch_for_memory counts the same share)."""
    share = 1 + (CONTROLNET_ACTIVATION_SHARE if control else 0)
    return int(UNET_BYTES_PER_LATENT_PX * tile_px * (2 if cfg else 1) * share / _ESTIMATE_SLACK)


def _gb(n: float) -> str:
    return f"{n / GB:.1f} GB"


def plan_residency(
    sizes: ModelSizes,
    working: int,
    available: int | None,
    capacity: int | None,
    tile: int,
    what: str = "model",
) -> Residency:
    """Where the models wait, for `available` accelerator bytes (what is free plus what our models
    hold there now; None: no accelerator, everything stays where it is). `working`: one tile's UNet
    activations; `capacity`: the most this process may ever have (the card, or model.max_vram_gb),
    which tells "too small a card" from "other programs hold memory now". `tile` and `what` (the
    checkpoint) are for the message."""
    if available is None:
        return Residency()
    weights = sizes.unet + sizes.controlnet + sizes.vae
    resident = weights + sizes.text_encoders + working + RESERVE
    if resident <= available:
        return Residency(True, False, resident)
    parked = weights + working + RESERVE
    if parked <= available:
        encode_beside = weights + sizes.text_encoders + RESERVE
        return Residency(False, encode_beside > available, parked)
    family = {"sd15": "SD1.5", "sdxl": "SDXL"}.get(sizes.family, sizes.family)
    control = f" + ControlNet {_gb(sizes.controlnet)}" if sizes.controlnet else ""
    parts = (
        f"UNet {_gb(sizes.unet)}{control} + VAE {_gb(sizes.vae)} + one {tile}x{tile} latent tile"
        f" ≈ {_gb(working)} + {_gb(RESERVE)} reserve, with the text encoders ({_gb(sizes.text_encoders)})"
        " in host RAM"
    )
    if capacity is not None and parked > capacity:
        also = " or a preset with a smaller tile_size" if tile > min(NATIVE_TILE.values()) else ""
        if sizes.controlnet:
            also += " or this model set without its controlnet"
        raise ModelLoadError(
            what,
            f"this {family} model needs about {_gb(parked)} of GPU memory ({parts}), but this GPU"
            f" (or model.max_vram_gb) allows {_gb(capacity)}: use an SD1.5 preset on this card{also}",
        )
    raise OutOfMemoryError(
        f"{what}: this {family} model needs about {_gb(parked)} of GPU memory ({parts}), but only"
        f" {_gb(available)} is free now (other programs hold the rest): close them, or use an SD1.5 preset"
    )
