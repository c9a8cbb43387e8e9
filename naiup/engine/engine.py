"""Engine: RGB conversion -> upscale -> (optional) SD refine, with models cached between images.

Implements the ImageEngine protocol of naiup/job.py. Pixels and metadata in, pixels out: no files.
The diffusers-based Refiner is imported only when a preset refines, so upscale-only presets and
their tests never import diffusers.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import torch
from PIL import Image

from naiup.config import ModelConfig, Preset
from naiup.config.schema import check_values
from naiup.engine.device import cap_memory, explicit_device, pick_device, release_cached
from naiup.engine.image_prompts import Region, plan_regions
from naiup.engine.models.hub import DownloadProgress
from naiup.engine.result import EngineResult, Progress
from naiup.engine.upscale.upscaler import Upscaler, load_upscaler
from naiup.errors import ModelLoadError
from naiup.metadata.read import ImageMetadata, ensure_rgb

log = logging.getLogger(__name__)

# Share of the progress bar given to the upscale stage when a refine follows it.
_UPSCALE_SHARE = 0.2
_SEED_LIMIT = 2**32


class RefinerLike(Protocol):
    """The Refiner of naiup.engine.diffusion.refine, as the engine uses it (a test's stand-in
    implements all of it). One with `accepts_pixels` true is also handed (H, W, 3) uint8 tensors (on
    the GPU), not only images. `regions` (NovelAI characters with positions; `prompt` is then the
    background's) is passed only when there are some, so a refiner without regional prompts keeps
    working for every other image."""

    accepts_pixels: bool

    @property
    def model_id(self) -> str: ...

    @property
    def family(self) -> str:
        """Which kind of model refines ("sd15", "sdxl"), for provenance."""

    @property
    def prediction(self) -> str:
        """What its UNet predicts (epsilon, v, v with zero terminal SNR), for provenance."""

    @property
    def controlnet_id(self) -> str:
        """Id of its ControlNet ("" without one): part of the model id of presets that run it."""

    @property
    def controlnet_name(self) -> str:
        """Its ControlNet's file or folder name ("" without one), for provenance."""

    def load(self) -> None: ...

    def model_id_for(self, prompt: str, negative_prompt: str = "") -> str:
        """The id `model_id` will have once a refine with these prompts has fused their <lora> tags."""

    def refine(
        self,
        image: Image.Image | torch.Tensor,
        preset: Preset,
        *,
        prompt: str,
        negative_prompt: str,
        seed: int,
        progress: Progress | None = None,
        regions: Sequence[Region] = (),
    ) -> Image.Image: ...


RefinerFactory = Callable[[ModelConfig, torch.device], RefinerLike]


def _default_refiner_factory(
    model: ModelConfig, device: torch.device, on_download: DownloadProgress | None = None
) -> RefinerLike:
    try:
        from naiup.engine.diffusion.refine import Refiner  # diffusers is heavy: only when a preset refines
    except ImportError as exc:
        raise ModelLoadError(
            "refiner", f"cannot import the SD refiner ({exc}); is naiup fully installed (diffusers, peft)?"
        ) from exc

    # Tiled by default: tiling.predictor_for + vae_tiling encode/decode.
    return Refiner(model, device, on_download=on_download)


def choose_seed(policy: str | int, meta: ImageMetadata, image: Image.Image) -> int:
    """'image': the NAI seed, else one derived from the pixels; 'random': fresh; an int: itself.
    The policy is preset.seed, validated by the config (Refiner.refine checks one built in code)."""
    if isinstance(policy, int):
        return policy
    if policy == "random":
        return secrets.randbits(32)
    # NAI seeds are 32-bit; a file claiming more is not a seed torch can use (manual_seed overflows).
    if meta.seed is not None and 0 <= meta.seed < _SEED_LIMIT:
        return int(meta.seed)
    # Same pixels -> same seed, so re-running an image without a seed is reproducible.
    return int.from_bytes(hashlib.sha256(image.tobytes()).digest()[:4], "big")


class Engine:
    """Cheap to build; models load on first use (or load()) and stay loaded until unload()."""

    def __init__(
        self,
        model: ModelConfig,
        device: torch.device | None = None,
        *,
        refiner_factory: RefinerFactory | None = None,
        device_pixels: bool = True,
        on_download: DownloadProgress | None = None,
    ) -> None:
        """device_pixels: hand the upscaler's output to the refiner as a tensor where it was made (the
        GPU) rather than as a PIL image (uint8 on the host); False is the old path, for measuring.

        ConfigError for a `model` value the config file would refuse: the device and memory cap are
        used for the upscale, before the Refiner checks its inputs, and torch's CUDA calls do not
        take a negative cap gracefully."""
        check_values(model, "model")
        self._model = model
        self._device_pixels = device_pixels
        self._device = device
        self._capped = False
        self._on_download = on_download
        self._refiner_factory = refiner_factory or self._default_refiner
        self._upscalers: dict[str, Upscaler] = {}
        self._refiner: RefinerLike | None = None

    @property
    def device(self) -> torch.device:
        if self._device is None:
            self._device = pick_device(self._model.device)
        if not self._capped:
            self._device = explicit_device(self._device)  # cuda:N: what torch.cuda's calls need
            cap_memory(self._device, int(self._model.max_vram_gb * 2**30))
            self._capped = True
        return self._device

    def report_downloads(self, callback: DownloadProgress | None) -> None:
        """From now on, a hub model's download reports callback(bytes done, bytes total, repo id) as it
        goes (the daemon's worker passes it on to `naiup status` and the tray)."""
        self._on_download = callback

    def _download_progress(self, done: int, total: int, what: str) -> None:
        if self._on_download is not None:
            self._on_download(done, total, what)

    def _default_refiner(self, model: ModelConfig, device: torch.device) -> RefinerLike:
        return _default_refiner_factory(model, device, self._download_progress)

    def load(self, preset: Preset) -> None:
        self._upscaler(preset.upscaler)
        if preset.refine:
            self._get_refiner()

    def unload(self) -> None:
        """Drop the models and hand their memory back (another model set loads next)."""
        had_refiner = self._refiner is not None
        self._upscalers.clear()
        self._refiner = None
        if had_refiner:
            # A UNet compiled to CUDA graphs (unet_graphs) keeps its graphs and their memory pools in
            # torch's process-wide compiler state, not in the model: dropping the model leaves them.
            torch.compiler.reset()
        if self._device is not None:
            release_cached(self._device)  # collects cycles first: their tensors are the memory

    def idle(self) -> None:
        """The queue went idle: the models stay loaded, the memory torch caches beside them (the
        last job's peak) goes back to the driver, for the other programs on this GPU."""
        if self._device is not None:
            release_cached(self._device)

    def model_id(self, preset: Preset) -> str:
        """Id of the models this preset uses, <lora> tags of its prompts included (known before a job)."""
        ids = [self._upscaler(preset.upscaler).model_id]
        if preset.refine:
            refiner = self._get_refiner()
            negative = preset.negative_prompt if preset.cfg > 1.0 else ""
            ids.append(refiner.model_id_for(preset.prompt, negative))
            if preset.control_strength > 0 and refiner.controlnet_id:
                ids.append(refiner.controlnet_id)  # only where it runs: other outputs do not depend on it
        return "+".join(ids)

    def process(
        self, image: Image.Image, meta: ImageMetadata, preset: Preset, *, progress: Progress | None = None
    ) -> EngineResult:
        timings: dict[str, float] = {}
        image = ensure_rgb(image)
        upscaler = self._timed(timings, "load_upscaler", lambda: self._upscaler(preset.upscaler))
        share = _UPSCALE_SHARE if preset.refine else 1.0
        up_progress = (lambda f, label: progress(f * share, label)) if progress else None
        refiner = self._timed(timings, "load_refiner", self._get_refiner) if preset.refine else None
        on_device = self._device_pixels and refiner is not None and refiner.accepts_pixels
        t0 = time.perf_counter()
        if on_device:  # stays on the GPU into the VAE; the refine downloads its output once
            pixels = upscaler.upscale_pixels(image, preset.scale, up_progress)
            out, size = pixels, f"{pixels.shape[1]}x{pixels.shape[0]}"
        else:
            out = upscaler.upscale(image, preset.scale, up_progress)
            size = f"{out.width}x{out.height}"
        timings["upscale"] = time.perf_counter() - t0
        params: dict[str, Any] = {
            "scale": preset.scale,
            "upscaler": preset.upscaler,
            "upscaler_id": upscaler.model_id,
            "refine": preset.refine,
            "size": size,
        }
        seed: int | None = None
        if refiner is not None:
            seed = choose_seed(preset.seed, meta, image)
            plan = plan_regions(preset, meta)
            prompt, negative = plan.prompt, plan.negative_prompt
            ref_progress = (lambda f, label: progress(share + f * (1 - share), label)) if progress else None
            # Only with regions: a refiner that does not take them is then never asked to.
            extra = {"regions": plan.regions} if plan.regions else {}
            t0 = time.perf_counter()
            out = refiner.refine(
                out,
                preset,
                prompt=prompt,
                negative_prompt=negative,
                seed=seed,
                progress=ref_progress,
                **extra,
            )
            timings["refine"] = time.perf_counter() - t0
            params.update(
                prompt=prompt,
                negative_prompt=negative,
                steps=preset.steps,
                sampler=preset.sampler,
                cfg=preset.cfg,
                denoise=preset.denoise,
                seed=seed,
                refiner_id=refiner.model_id,
                # Which kind of model refined it: SD1.5 or SDXL, epsilon or v(+zero-SNR) prediction.
                family=refiner.family,
                prediction=refiner.prediction,
            )
            if preset.control_strength > 0 and refiner.controlnet_name:
                params.update(
                    controlnet=refiner.controlnet_name,
                    control_strength=preset.control_strength,
                    control_start=preset.control_start,
                    control_end=preset.control_end,
                )
            if plan.regions:  # what each character region ran with; `prompt` is the background's
                params["regions"] = [
                    {
                        "prompt": r.prompt,
                        "negative_prompt": r.negative_prompt,
                        "center": list(r.center),
                        "size": r.size,
                    }
                    for r in plan.regions
                ]
        if progress:
            progress(1.0, "done")
        return EngineResult(image=out, seed=seed, parameters=params, timings=timings)

    def _upscaler(self, spec: str) -> Upscaler:
        if spec not in self._upscalers:
            # One upscaler at a time: they load in well under a second, while each one kept would
            # hold GPU memory the tiles (and model.max_vram_gb) plan to use.
            self._upscalers.clear()
            self._upscalers[spec] = load_upscaler(spec, self.device)
        return self._upscalers[spec]

    def _get_refiner(self) -> RefinerLike:
        if self._refiner is None:
            refiner = self._refiner_factory(self._model, self.device)
            refiner.load()
            self._refiner = refiner
        return self._refiner

    @staticmethod
    def _timed(timings: dict[str, float], key: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        value = fn()
        elapsed = time.perf_counter() - t0
        if elapsed > 1e-3:  # only a real load is worth recording
            timings[key] = elapsed
        return value
