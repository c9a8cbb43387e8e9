"""Upscale stage: any spandrel super-resolution model (or Lanczos), tiled with feathered overlap.

    load_upscaler(spec, device) -> Upscaler
        spec: a built-in name (naiup.upscaler_names), "lanczos", or a path to a .safetensors/.pth file.
    Upscaler.upscale(image, target_scale, progress=None) -> RGB image of exactly
        round(w*target_scale) x round(h*target_scale)

The model runs as often as it takes to reach the target (a 2x model twice for 4x) and Lanczos
brings the result down to the exact size when the model overshoots (a 4x model for a 2x preset).
Tiling and the OOM ladder live in tiles.py.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources import abc as resources_abc
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from naiup.engine.device import explicit_device, first_line, is_oom
from naiup.engine.load_errors import explain_load_errors
from naiup.engine.result import Progress
from naiup.engine.upscale.tiles import TileRunner, default_overlap, initial_tile
from naiup.errors import ModelLoadError
from naiup.upscaler_names import (
    BUILTIN_UPSCALERS,
    LANCZOS,
    SHIPPED,
    is_lanczos,
    missing_weights,
    not_shipped,
    upscaler_names,
    user_models_dir,
)

log = logging.getLogger(__name__)


_CPU = torch.device("cpu")
_MODEL_SUFFIXES = (".safetensors", ".pth", ".pt", ".ckpt")
_UNSUPPORTED = "not a supported upscaler model ({kind}: {exc})"


class UpscaleNet(Protocol):
    """What the tiler needs from a model; spandrel's ImageModelDescriptor satisfies it."""

    scale: int

    def __call__(self, image: torch.Tensor) -> torch.Tensor: ...


def pick_upscale_dtype(device: torch.device, supports_half: bool, supports_bf16: bool) -> torch.dtype:
    # CPU has no fast half convolutions (and some have none at all): always fp32 there.
    if device.type == "cpu":
        return torch.float32
    if supports_half:
        return torch.float16
    if supports_bf16:
        return torch.bfloat16
    return torch.float32


@dataclass
class Upscaler:
    """A loaded upscaler. `net` None means Lanczos only. Not thread-safe: one job at a time."""

    name: str
    scale: int
    net: UpscaleNet | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    dtype: torch.dtype = torch.float32
    tile: int | None = None  # input px; None: from free memory
    overlap: int = 32  # input px
    bytes_per_px: float = 8000.0  # memory model for tile sizing, at fp16
    model_id: str = LANCZOS
    channels_last: bool = False  # NHWC activations: 1.1-1.5x faster for convnets on CUDA (H200, fp16)
    # True while the net sits on the CPU in fp32 because its way back from a CPU fallback failed.
    _on_cpu: bool = field(default=False, init=False, repr=False, compare=False)

    def upscale(
        self, image: Image.Image, target_scale: float, progress: Progress | None = None
    ) -> Image.Image:
        return Image.fromarray(self.upscale_pixels(image, target_scale, progress).cpu().numpy(), "RGB")

    def upscale_pixels(
        self, image: Image.Image, target_scale: float, progress: Progress | None = None
    ) -> torch.Tensor:
        """Like `upscale`, as an (H, W, 3) uint8 tensor left where the model ran (the GPU), so a
        refine that follows takes it from there without a round trip through host memory."""
        if image.mode != "RGB":
            raise ValueError(f"upscale wants an RGB image, got {image.mode}")  # engine converts first
        if target_scale <= 0:
            raise ValueError(f"target_scale must be > 0, got {target_scale}")
        w, h = image.size
        target = (max(1, round(w * target_scale)), max(1, round(h * target_scale)))
        passes = self._passes(target_scale)
        current = torch.from_numpy(np.array(image, dtype=np.uint8))
        for i in range(passes):
            report = _sub_progress(progress, i / passes, (i + 1) / passes, f"upscale {self.name}")
            current = self._run_net(current, report)
        if (current.shape[1], current.shape[0]) != target:
            # Lanczos (a model overshooting the target, or no model) runs in PIL, on the host.
            big = Image.fromarray(current.cpu().numpy(), "RGB").resize(target, Image.Resampling.LANCZOS)
            current = torch.from_numpy(np.asarray(big).copy())
        if progress:
            progress(1.0, f"upscale {self.name}")
        return current

    def _passes(self, target_scale: float) -> int:
        """Model passes: enough to reach the target; a restorer (scale 1) runs once."""
        if self.net is None or target_scale <= 1.0 + 1e-9:
            return 0
        if self.scale <= 1:
            return 1
        passes, reached = 1, self.scale
        while reached < target_scale - 1e-9:
            passes, reached = passes + 1, reached * self.scale
        return passes

    def _run_net(self, pixels: torch.Tensor, progress: Progress | None) -> torch.Tensor:
        """(H, W, 3) uint8 on any device -> the model's output, (H*s, W*s, 3) uint8 on its device."""
        assert self.net is not None
        if self._on_cpu:  # the way back after the last CPU fallback failed: try it again now
            self._return_net()
        device, dtype = (_CPU, torch.float32) if self._on_cpu else (self.device, self.dtype)
        size = (pixels.shape[1], pixels.shape[0])
        tile = self.tile or initial_tile(device, size, self.bytes_per_px, dtype, self.scale)
        runner = TileRunner(self.net, self.scale, device, dtype, self.overlap, self.channels_last)
        try:
            out = runner.run(pixels.permute(2, 0, 1)[None], tile, progress)
        finally:
            if runner.device != self.device:
                # Out of memory even at the smallest tile, the runner finished on the CPU: for this
                # image only. The next one starts on the accelerator again (dtype cast on the host
                # first), with tiles sized from the memory free then.
                self._return_net()
        return out

    def _return_net(self) -> None:
        """The net back on `device` in `dtype` after a CPU fallback. That move can itself run out of
        memory (the failed image's tensors may still be alive): then it is not this image's error
        (its pixels are done, or another error is on its way up) and the net must not be left split
        between devices: it goes wholly back to the CPU, and the next image tries again."""
        assert self.net is not None
        try:
            self.net.to(self.dtype).to(self.device)
        except Exception as exc:
            if not is_oom(exc):
                raise
            log.warning("upscaler stays on the CPU for now (%s); retried at the next image", first_line(exc))
            self.net.to(_CPU).to(torch.float32)
            self._on_cpu = True
            return
        log.info("upscaler back to %s after a CPU fallback", self.device)
        self._on_cpu = False


def _sub_progress(progress: Progress | None, start: float, end: float, label: str) -> Progress | None:
    if progress is None:
        return None
    return lambda f, _label: progress(start + (end - start) * f, label)


def load_upscaler(spec: str, device: torch.device | None = None) -> Upscaler:
    """Resolve `spec` and load it on `device` (CPU when None). Raises ModelLoadError naming the file."""
    device = explicit_device(device) if device is not None else torch.device("cpu")
    where = find_upscaler(spec)
    if where is None:
        return Upscaler(name=LANCZOS, scale=1)
    if spec in SHIPPED:
        return _from_bytes(spec, where.read_bytes(), device)
    return _from_file(spec if spec in BUILTIN_UPSCALERS else where.name, Path(str(where)), device)


def find_upscaler(spec: str) -> Path | resources_abc.Traversable | None:
    """Where `spec`'s weights are (None: Lanczos needs none), without loading them; ModelLoadError says
    what is missing and where to put it. `naiup doctor` calls this too, so a preset whose upscaler is
    absent is reported before the first image fails on it."""
    if is_lanczos(spec):
        return None
    if spec in SHIPPED:
        return resources.files("naiup") / "data" / "upscalers" / BUILTIN_UPSCALERS[spec]
    if spec in BUILTIN_UPSCALERS:
        missing = missing_weights(spec)
        if missing is not None:
            raise ModelLoadError(spec, not_shipped(spec, missing))
        return user_models_dir() / BUILTIN_UPSCALERS[spec]
    path = Path(spec).expanduser()
    if not path.is_file():
        known = ", ".join(upscaler_names())
        raise ModelLoadError(spec, f"no such upscaler file (built-in names: {known})")
    if path.suffix.lower() not in _MODEL_SUFFIXES:
        raise ModelLoadError(path, f"not a model file (expected one of {', '.join(_MODEL_SUFFIXES)})")
    return path


def _from_file(name: str, path: Path, device: torch.device) -> Upscaler:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(path, f"cannot read: {exc.strerror or exc}") from exc
    if path.suffix.lower() == ".safetensors":
        return _from_bytes(name, data, device, where=path)
    import spandrel

    with explain_load_errors(path, _UNSUPPORTED):  # spandrel and torch raise many types for bad files
        descriptor = spandrel.ModelLoader().load_from_file(path)
    return _wrap(name, descriptor, hashlib.sha256(data).hexdigest(), device, path)


def _from_bytes(name: str, data: bytes, device: torch.device, where: Path | str | None = None) -> Upscaler:
    import safetensors.torch
    import spandrel

    where = where or name
    with explain_load_errors(where, _UNSUPPORTED):
        state = safetensors.torch.load(data)
        descriptor = spandrel.ModelLoader().load_from_state_dict(state)
    return _wrap(name, descriptor, hashlib.sha256(data).hexdigest(), device, where)


# Peak memory per input pixel at fp16, measured on an H200 (linear in pixels); unknown archs
# get the RRDB figure, the largest we measured, so they start with small tiles rather than OOM.
_BYTES_PER_PX = {"RealCUGAN": 3500.0, "ESRGAN": 7800.0, "Compact": 500.0}
# Pure convnets, where NHWC memory layout is a measured win; attention archs are left alone.
_CONV_ONLY = {"ESRGAN", "Compact", "RealCUGAN", "SPAN", "PLKSR", "RealPLKSR"}


def _wrap(name: str, descriptor: object, sha256: str, device: torch.device, where: Path | str) -> Upscaler:
    import spandrel

    if not isinstance(descriptor, spandrel.ImageModelDescriptor):
        raise ModelLoadError(where, "not an image-to-image model")
    if descriptor.purpose not in ("SR", "Restoration"):
        raise ModelLoadError(where, f"is a {descriptor.purpose} model, not an upscaler")
    if descriptor.input_channels != 3 or descriptor.output_channels != 3:
        raise ModelLoadError(where, f"needs {descriptor.input_channels}-channel input; only RGB models work")
    dtype = pick_upscale_dtype(device, descriptor.supports_half, descriptor.supports_bfloat16)
    descriptor.to(dtype).to(device).eval()  # cast on the host: the fp32 weights never reach the GPU
    arch = descriptor.architecture.id
    channels_last = device.type == "cuda" and arch in _CONV_ONLY
    if channels_last:
        descriptor.model.to(memory_format=torch.channels_last)
    tiling = str(descriptor.tiling.name)
    log.info(
        "upscaler loaded name=%s arch=%s scale=%d dtype=%s device=%s sha256=%s",
        name, arch, descriptor.scale, dtype, device, sha256[:16],
    )  # fmt: skip
    return Upscaler(
        name=name,
        scale=int(descriptor.scale),
        net=descriptor,
        device=device,
        dtype=dtype,
        tile=10**9 if tiling == "INTERNAL" else None,  # INTERNAL: the model tiles itself
        overlap=default_overlap(arch),
        bytes_per_px=_BYTES_PER_PX.get(arch, 7800.0),
        model_id=f"{name}@{sha256[:12]}",
        channels_last=channels_last,
    )
