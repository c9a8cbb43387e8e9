"""Which SD models stay on the accelerator, decided from their sizes before anything moves.

model_sizes(models) -> ModelSizes             bytes each model takes in the dtype it is in (runs in)
unet_working_bytes(tile_px, cfg, control) -> int
                                              estimated UNet (+ ControlNet) activations of one tile
plan_residency(sizes, working, available, capacity, tile, what, control=, preset=) -> Residency
                                              raises ModelLoadError (card too small for the set),
                                              EngineError (for this preset) / OutOfMemoryError

On a card with room everything stays resident. The text encoders are the first to go: they run once
per new prompt (the prompt encoders cache what they made) and hold 1.64 GB in fp16 for SDXL (CLIP-L +
bigG), next to a 5.13 GB UNet. When the UNet, the VAE and one tile's activations fit but not the text
encoders beside them, the encoders wait in host RAM and visit the device to encode a prompt: 1.6 GB
over PCIe, a fraction of a second, once per prompt. If even that visit does not fit beside the UNet,
the UNet steps out to host RAM while they run. If the UNet, the VAE and one tile do not fit at all,
nothing is tried: the job stops with what the model needs and what the card (or model.max_vram_gb)
allows, instead of running out of memory at every retry. An SDXL UNet on a 6 GB card is that case.

A ControlNet of the set ([model] controlnet, loaded with the set whether a preset uses it or not)
gets the text encoders' treatment, the other way round: a job whose preset runs it (control > 0)
needs it beside every UNet call, so its weights count with the UNet's, it steps out and back with the
UNet, and its activations add to the tile's. A job that does not run it needs it nowhere: it stays
on the device only where it fits beside everything else (text encoders included), else it waits in
host RAM (0.7 GB for SD1.5, 2.5 GB for SDXL in fp16: an 8 GB card could not otherwise hold an SDXL
set that has one). The load-time check plans for a preset without it.

A set that cannot hold even that least is refused at load (ModelLoadError: the model does not fit
this card). A preset whose own tiles (tile_size, CFG, ControlNet) do not fit beside a set that loads
is refused per job (EngineError, naming the preset's keys): the set is fine, that job's settings
are not, and the other presets' files must go on.

The decision counts parameter bytes, which are exact, plus one tile's activations, which are an
estimate (tiling.UNET_BYTES_PER_LATENT_PX), plus a fixed reserve for what torch itself takes beside
the tensors (cuBLAS/cuDNN workspaces, allocator rounding, the upscaler). bench/engine_bench.py
--vram-gb measures the real peak to check both.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from naiup.config import Preset
from naiup.engine.diffusion.tiling import CONTROLNET_ACTIVATION_SHARE, UNET_BYTES_PER_LATENT_PX
from naiup.errors import EngineError, ModelLoadError, OutOfMemoryError

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
    controlnet: int = 0  # a ControlNet tile of the set (0: none)


@dataclass(frozen=True, slots=True)
class Residency:
    """text_encoders_resident: they stay on the device between prompts (else they wait in host RAM);
    unet_steps_out: the UNet waits in host RAM while the text encoders run (only when they are not
    resident and do not fit beside it); need: bytes at the plan's peak, for the log;
    controlnet_resident: the set's ControlNet is on the device (always when the job runs it; True
    for a set without one)."""

    text_encoders_resident: bool = True
    unet_steps_out: bool = False
    need: int = 0
    controlnet_resident: bool = True


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
    *,
    control: bool = False,
    preset: Preset | None = None,
) -> Residency:
    """Where the models wait, for `available` accelerator bytes (what is free plus what our models
    hold there now; None: no accelerator, everything stays where it is). `working`: one tile's UNet
    activations; `capacity`: the most this process may ever have (the card, or model.max_vram_gb),
    which tells "too small a card" from "other programs hold memory now". `control`: the job runs the
    set's ControlNet (it must be on the device). `tile` and `what` (the checkpoint) are for the
    message; `preset`: the job's (None: the load-time check), for the error and what it advises."""
    if available is None:
        return Residency()
    # Only a job that runs the ControlNet needs it on the device; otherwise it is optional, kept
    # there only where it fits beside everything the job needs.
    optional = 0 if control else sizes.controlnet
    weights = sizes.unet + (sizes.controlnet - optional) + sizes.vae
    resident = weights + sizes.text_encoders + working + RESERVE
    if resident + optional <= available:
        return Residency(True, False, resident + optional)
    if resident <= available:
        return Residency(True, False, resident, controlnet_resident=False)
    parked = weights + working + RESERVE
    if parked <= available:
        encode_beside = weights + sizes.text_encoders + RESERVE
        return Residency(False, encode_beside > available, parked, controlnet_resident=not optional)
    family = {"sd15": "SD1.5", "sdxl": "SDXL"}.get(sizes.family, sizes.family)
    cn = f" + ControlNet {_gb(sizes.controlnet)}" if control and sizes.controlnet else ""
    parts = (
        f"UNet {_gb(sizes.unet)}{cn} + VAE {_gb(sizes.vae)} + one {tile}x{tile} latent tile"
        f" ≈ {_gb(working)} + {_gb(RESERVE)} reserve, with the text encoders ({_gb(sizes.text_encoders)})"
        " in host RAM"
    )
    if capacity is not None and parked > capacity:
        if preset is not None:
            raise _preset_too_large(preset, family, parked, parts, capacity, control and sizes.controlnet > 0)
        also = " or a preset with a smaller tile_size" if tile > min(NATIVE_TILE.values()) else ""
        raise ModelLoadError(
            what,
            f"this {family} model needs about {_gb(parked)} of GPU memory ({parts}), but this GPU"
            f" (or model.max_vram_gb) allows {_gb(capacity)}: use an SD1.5 preset on this card{also}",
        )
    raise OutOfMemoryError(
        f"{what}: this {family} model needs about {_gb(parked)} of GPU memory ({parts}), but only"
        f" {_gb(available)} is free now (other programs hold the rest): close them, or use an SD1.5 preset"
    )


def _preset_too_large(
    preset: Preset, family: str, need: int, parts: str, capacity: int, control: bool
) -> EngineError:
    """The set loaded (it fits this card with its native tile); this preset's tiles do not. An
    EngineError fails this job for good: a ModelLoadError would tell the daemon the model cannot
    load, and it would reload the set and retry the same job forever, processing nothing else."""
    key = f"presets.{preset.name}"
    fixes = []
    if preset.tile_size > min(NATIVE_TILE.values()):
        fixes.append(f"a smaller {key}.tile_size (now {preset.tile_size})")
    if preset.cfg > 1.0:
        fixes.append(f"{key}.cfg = 1 (CFG above 1 runs every tile twice)")
    if control:
        fixes.append(f"{key}.control_strength = 0 (the ControlNet then waits in host RAM)")
    fixes.append("an SD1.5 preset on this card")
    return EngineError(
        f"preset {preset.name}: its {family} model needs about {_gb(need)} of GPU memory for this"
        f" preset's tiles ({parts}), but this GPU (or model.max_vram_gb) allows {_gb(capacity)}:"
        f" use {', or '.join(fixes)}"
    )
