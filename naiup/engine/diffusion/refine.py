"""Our own img2img loop on a latent canvas, and the `Refiner` that owns the loaded models.

The seam tiled diffusion (tiling.py) and the tiled VAE (vae/tiled.py) plug into (keep it):
    GuidedDenoiser (tiling.GuidedDenoiser) = Callable[[x (B,4,h,w), t scalar tensor], model output
        (B,4,h,w)], CFG applied inside (batch 2B through the UNet only when cfg > 1); built by
        make_guided_denoiser(). Ours also take `boxes=` (each tile's latent box, for the ControlNet's
        crops; default: x is the whole canvas), and say so with `takes_boxes`.
    The loop calls `predict(x_canvas, t)` once per step on the whole canvas, then ONE sampler step on
    the whole canvas. predict = wrap_predictor(guided, preset, latent_hw); the default is
    tiling.predictor_for (tiled per the preset; `guided` itself when the latent fits one tile);
    wrap_predictor=None runs untiled.
    Regional prompts (NovelAI characters with positions) take the other seam: predict =
    wrap_regions(region_denoiser, masks, preset, latent_hw), default regions.region_predictor_for;
    the region denoiser is the guided one with a prompt per sample (regions.make_region_denoiser),
    taking `boxes=` too, so with a ControlNet every (tile, region) sample gets its own tile's hint.
    VAE functions have vae/tiled.py's signature: encode(vae, pixels, *, mode, generator, sample,
    attention_window) and decode(vae, latent, *, mode, attention_window); the defaults are
    vae/tiled.py's encode/decode (mode = preset.vae_tiling, attention_window = preset.vae_attention_window).
Refiner.refine checks its inputs once (inputs.check_inputs); everything below it trusts them.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image

from naiup.config import ModelConfig, Preset
from naiup.config.model import control_scales
from naiup.engine.device import (
    empty_cache,
    explicit_device,
    first_line,
    free_memory_bytes,
    is_oom,
    memory_capacity,
    pick_device,
    release_cached,
)
from naiup.engine.diffusion.control import Box, TileControl, control_image, controlled
from naiup.engine.diffusion.inputs import check_inputs
from naiup.engine.diffusion.prompt_encoder import PromptEncoder, extract_lora_tags, resolve_lora_name
from naiup.engine.diffusion.prompt_schedule import prompts_per_step
from naiup.engine.diffusion.regions import (
    RegionDenoiser,
    make_region_denoiser,
    pad_contexts,
    region_masks,
    region_predictor,
    region_predictor_for,
)
from naiup.engine.diffusion.samplers import Sampler
from naiup.engine.diffusion.sdxl_conditioning import SDXLPromptEncoder, time_ids, vae_scale_factor
from naiup.engine.diffusion.tiling import GuidedDenoiser, batch_for_memory, plan_tiles, predictor_for
from naiup.engine.diffusion.unet_graphs import UnetCall, has_triton, use_unet_graphs
from naiup.engine.image_prompts import Region
from naiup.engine.models.family import SDXL
from naiup.engine.models.hub import DownloadProgress
from naiup.engine.models.load import SDModels, file_id, load_models, model_set_id, resolve_lora_file
from naiup.engine.models.lora import LoraFile, LoraFuser, read_lora
from naiup.engine.models.offload import needs_room, parked
from naiup.engine.models.placement import Placement
from naiup.engine.models.residency import NATIVE_TILE, Residency, plan_residency, unet_working_bytes
from naiup.engine.result import Progress
from naiup.engine.vae.tiled import decode as decode_tiled
from naiup.engine.vae.tiled import encode as encode_tiled
from naiup.errors import EngineError, OutOfMemoryError

log = logging.getLogger(__name__)

PredictorWrapper = Callable[[GuidedDenoiser, Preset, tuple[int, int]], GuidedDenoiser]
RegionWrapper = Callable[[RegionDenoiser, torch.Tensor, Preset, tuple[int, int]], GuidedDenoiser]
Prompts = tuple[str, str | None]  # (prompt, negative) of one step; negative None when CFG is off


def make_guided_denoiser(
    unet: torch.nn.Module,
    cond: torch.Tensor,
    uncond: torch.Tensor | None,
    cfg: float,
    call: UnetCall | None = None,
    added: dict[str, torch.Tensor] | None = None,
    added_uncond: dict[str, torch.Tensor] | None = None,
    control: TileControl | None = None,
) -> GuidedDenoiser:
    """UNet + CFG as one function of (x, t); fp32 in and out, the UNet's own dtype inside. `call`:
    how the UNet is run (the Refiner's UnetCall, CUDA-graphed or eager; default eager). The result
    has `fixed_shapes` set when the call wants few input shapes (tiling.tiled_predictor reads it).

    `added`/`added_uncond`: per-sample `added_cond_kwargs` (SDXL's pooled text embedding and size
    ids, batch 1), repeated for every sample of a call like the context, so each tile gets them.

    `control`: a ControlNet run on the same batch as each UNet call (same context and added
    conditioning, the control image cropped to each sample's tile box), its residuals added to that
    call only."""
    dtype = unet.dtype
    run = call or UnetCall(unet, graphs=False)
    cond = cond.to(unet.device, dtype)
    guided_cfg = cfg > 1.0 and uncond is not None
    both = torch.cat([uncond.to(unet.device, dtype), cond]) if guided_cfg else None
    extra = {k: v.to(unet.device, dtype) for k, v in (added or {}).items()}
    if guided_cfg and extra:
        assert added_uncond is not None
        extra = {k: torch.cat([added_uncond[k].to(unet.device, dtype), v]) for k, v in extra.items()}

    def added_for(repeats: int) -> dict:
        if not extra:
            return {}
        return {"added_cond_kwargs": {k: v.repeat_interleave(repeats, dim=0) for k, v in extra.items()}}

    unet = controlled(run, control)

    def guided(x: torch.Tensor, t: torch.Tensor, boxes: Sequence[Box] | None = None) -> torch.Tensor:
        b = x.shape[0]
        xin = x.to(dtype)
        if not guided_cfg:
            return unet(xin, t, cond.expand(b, -1, -1), added_for(b), boxes, 1)
        emb = both.repeat_interleave(b, dim=0)  # [uncond]*b then [cond]*b, matching cat([x, x])
        eps_u, eps_c = unet(torch.cat([xin, xin]), t, emb, added_for(b), boxes, 2).chunk(2)
        return eps_u + cfg * (eps_c - eps_u)

    guided.fixed_shapes = run.fixed_shapes  # type: ignore[attr-defined]
    guided.takes_boxes = True  # type: ignore[attr-defined]
    return guided


# Parsed LoRA files kept in host RAM (10-150 MB each), most recently used first.
LORA_CACHE_SIZE = 8


def memory_ladder(preset: Preset) -> list[Preset]:
    """The preset, then what is retried after running out of memory: half the UNet tiles at once
    with the low-memory VAE, then one tile at a time (the SD models are parked for every retry)."""
    low = replace(preset, vae_tiling="low-memory")
    steps = [preset, replace(low, tile_batch_size=max(1, preset.tile_batch_size // 2))]
    steps.append(replace(low, tile_batch_size=1))
    return [p for i, p in enumerate(steps) if p not in steps[:i]]


def _check_finite(t: torch.Tensor, what: str) -> None:
    if not torch.isfinite(t).all():
        raise EngineError(
            f"{what} contains NaN/Inf (an fp16 VAE or a broken model/LoRA?); no output was written"
        )


@torch.no_grad()
def denoise(
    z0: torch.Tensor,
    predict: GuidedDenoiser | Sequence[GuidedDenoiser],
    sampler: Sampler,
    generator: torch.Generator,
    progress: Progress | None = None,
) -> torch.Tensor:
    """Noise z0 to the first timestep with full-canvas seeded noise, then one predict + one step per t.
    `predict` may be one per step (prompt editing)."""
    noise = randn_tensor(z0.shape, generator=generator, device=z0.device, dtype=z0.dtype)
    x = sampler.add_noise(z0, noise)
    steps = len(sampler.timesteps)
    per_step = list(predict) if isinstance(predict, Sequence) else [predict] * steps
    if len(per_step) != steps:
        raise ValueError(f"{len(per_step)} predictors for {steps} steps")
    for i, t in enumerate(sampler.timesteps):
        eps = per_step[i](sampler.scale_input(x, t), t)
        x = sampler.step(eps, t, x, generator)
        _check_finite(x, f"latent after step {i + 1}")
        if progress:
            progress((i + 1) / steps, "refine")
    return x


def rgb_pixels(image: Image.Image | torch.Tensor) -> torch.Tensor:
    """(H, W, 3) uint8: a PIL image's RGB pixels (NAI's alpha channel dropped), or such a tensor as
    it is, on whatever device it is (the upscaler's output stays on the GPU)."""
    if isinstance(image, Image.Image):
        return torch.from_numpy(np.array(image.convert("RGB"), dtype=np.uint8))
    return image


def _pad_index(length: int, pad: int, reflect: bool, device: torch.device) -> torch.Tensor:
    # numpy.pad's "reflect" (mirror without repeating the edge) or "edge", as source indices.
    extra = torch.arange(length, length + pad, device=device)
    src = 2 * (length - 1) - extra if reflect else torch.full_like(extra, length - 1)
    return torch.cat([torch.arange(length, device=device), src])


def pad_to_multiple(pixels: torch.Tensor, multiple: int = 8) -> tuple[torch.Tensor, tuple[int, int]]:
    """(H, W, 3) uint8 padded (reflect, or edge when too small) to multiples of 8, on its device;
    the original (h, w)."""
    h, w = pixels.shape[:2]
    ph, pw = -h % multiple, -w % multiple
    if ph or pw:
        reflect = ph < h and pw < w
        rows, cols = (_pad_index(n, p, reflect, pixels.device) for n, p in ((h, ph), (w, pw)))
        pixels = pixels.index_select(0, rows).index_select(1, cols)
    return pixels, (h, w)


def to_pixels(hwc: torch.Tensor) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1,3,H,W) in [-1,1] on the same device, with the same float steps *and
    strides* as diffusers' VaeImageProcessor (NHWC memory viewed as NCHW): CPU convs round
    differently per memory layout, and the oracle test compares bytes."""
    nhwc = hwc.to(torch.float32)[None] / 255.0
    return 2.0 * nhwc.permute(0, 3, 1, 2) - 1.0


def to_rgb(pixels: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """(1,3,H,W) in [-1,1] -> (h, w, 3) uint8, cropped, on the same device (a quarter of the fp32
    bytes to download)."""
    x = pixels[0, :, : size_hw[0], : size_hw[1]]
    return ((x / 2 + 0.5).clamp(0, 1).permute(1, 2, 0) * 255).round().to(torch.uint8)


def to_image(pixels: torch.Tensor, size_hw: tuple[int, int]) -> Image.Image:
    return Image.fromarray(to_rgb(pixels, size_hw).cpu().numpy(), "RGB")


class Refiner:
    """Loads SD1.5 or SDXL (+ LCM-LoRA + LoRAs + ControlNet tile) once; refines many upscaled images.

    Tiled by default (diffusion tiles and VAE mode from the preset); `wrap_predictor=None` with
    plain diffusers encode/decode functions gives the untiled loop (the tests' reference).
    """

    # refine() takes (H, W, 3) uint8 tensors on any device as well as PIL images (Engine: the
    # upscaler's output goes straight to the VAE without a host round trip).
    accepts_pixels = True

    def __init__(
        self,
        model: ModelConfig,
        device: torch.device | None = None,
        *,
        config_dir: Path | None = None,
        wrap_predictor: PredictorWrapper | None = predictor_for,
        encode: Callable[..., torch.Tensor] = encode_tiled,
        decode: Callable[..., torch.Tensor] = decode_tiled,
        wrap_regions: RegionWrapper = region_predictor_for,
        on_download: DownloadProgress | None = None,
    ) -> None:
        """on_download(bytes done, bytes total, repo id): called while a hub model downloads."""
        self.model, self.config_dir = model, config_dir
        self.on_download = on_download
        self._device = explicit_device(device) if device is not None else None
        self.wrap_predictor, self.encode, self.decode = wrap_predictor, encode, decode
        self.wrap_regions = wrap_regions
        self.models: SDModels | None = None
        self._placement: Placement | None = None
        self._unet_call: UnetCall | None = None
        self._loaded_key: tuple | None = None
        self._fuser: LoraFuser | None = None
        self._encoder: PromptEncoder | SDXLPromptEncoder | None = None
        self._lora_cache: OrderedDict[tuple[Path, int, int], LoraFile] = OrderedDict()
        self._fused: tuple[tuple[str, float], ...] = ()
        self._config_loras: list[tuple[str, float]] = []

    @property
    def device(self) -> torch.device:
        if self._device is None:
            self._device = pick_device(self.model.device)
        return self._device

    def load(self) -> None:
        key = (self.model, str(self.device), str(self.config_dir))
        if self._loaded_key == key:
            return
        t0 = time.perf_counter()
        if self.models is not None:  # a different config: free the old set before the new one lands
            self.models = self._fuser = self._encoder = self._unet_call = None
            self._loaded_key, self._placement = None, None  # no reference may keep the old set alive
            empty_cache(self.device)
        m = load_models(
            self.model.checkpoint,
            self.model.vae,
            self.device,
            self.config_dir,
            self.model.prediction,
            controlnet=self.model.controlnet,
            on_download=self.on_download,
            place=False,
        )
        # Where each model lives, decided from their sizes before any moves (a set that cannot run on
        # this card is refused here, in host RAM); every job starts by checking it (_ensure_placed).
        placement = Placement(m, self.device)
        tile = NATIVE_TILE.get(m.family, 64)
        placement.settle(self._residency(placement, tile * tile, cfg=False, tile=tile))
        placement.ensure(quiet=True)
        if self.model.lcm_lora:
            # The LCM-LoRA is part of the base model: fused once, never restored.
            lcm_file = resolve_lora_file(self.model.lcm_lora, on_download=self.on_download)
            lcm = read_lora(lcm_file, m.unet, m.text_encoder, m.text_encoder_2)
            LoraFuser(m.unet, m.text_encoder, m.text_encoder_2).fuse([(lcm, 1.0)], keep_pristine=False)
        # Resolve config LoRAs once: a hub id must not hit the network on every image.
        self._config_loras = [
            (str(resolve_lora_file(s.path, self.model.lora_dirs, self.on_download)), s.weight)
            for s in self.model.loras
        ]
        self.models, self._loaded_key, self._placement = m, key, placement
        self._fuser = LoraFuser(m.unet, m.text_encoder, m.text_encoder_2)
        if m.family == SDXL:
            self._encoder = SDXLPromptEncoder(
                m.tokenizer,
                m.text_encoder,
                m.tokenizer_2,
                m.text_encoder_2,
                self.model.clip_skip,
                self.device,
            )
        else:
            self._encoder = PromptEncoder(m.tokenizer, m.text_encoder, self.model.clip_skip, self.device)
        self._unet_call = UnetCall(m.unet, self._unet_graphs())
        self._lora_cache.clear()
        self._fused = ()
        log.info(
            "model loaded id=%s family=%s prediction=%s controlnet=%s device=%s secs=%.1f",
            self.model_id,
            m.family,
            m.prediction.label,
            self.controlnet_id or "none",
            self.device,
            time.perf_counter() - t0,
        )

    def _ensure_placed(self) -> None:
        """Every model where it belongs (Placement.ensure), at the start of every job."""
        assert self._placement
        self._placement.ensure()

    def _residency(
        self,
        placement: Placement,
        tile_px: int,
        cfg: bool,
        tile: int,
        control: bool = False,
        preset: Preset | None = None,
    ) -> Residency:
        """The residency plan for UNet tiles of `tile_px` latent px (`tile` a side, for the message;
        `control`: the ControlNet runs beside the UNet), for what is free now plus what the set holds
        on the device already (plan_residency: raises when even the least it needs does not fit;
        `preset`: the job's, None for the load-time check)."""
        free = free_memory_bytes(self.device)
        if free is None or self.device.type == "cpu":  # the models are in host RAM already
            return Residency()
        return plan_residency(
            placement.sizes,
            unet_working_bytes(tile_px, cfg, control),
            free + placement.device_bytes(),
            memory_capacity(self.device),
            tile,
            self.model.checkpoint,
            control=control,
            preset=preset,
        )

    @property
    def residency(self) -> Residency:
        """Where the loaded set's text encoders wait now (all resident before a load, and on CPU)."""
        return self._placement.residency if self._placement else Residency()

    @property
    def unet_graphs(self) -> bool:
        """Whether the loaded UNet runs as CUDA graphs (model.unet_graphs resolved for this device)."""
        return bool(self._unet_call and self._unet_call.fixed_shapes)

    def _unet_graphs(self) -> bool:
        dev = self.device
        capability = memory = None
        if dev.type == "cuda":
            capability = torch.cuda.get_device_capability(dev)
            memory = self.model.max_vram_gb or torch.cuda.get_device_properties(dev).total_memory / 2**30
        graphs = use_unet_graphs(self.model.unet_graphs, dev.type, capability, has_triton(), memory)
        log.info("unet graphs=%s (setting %s, device %s)", graphs, self.model.unet_graphs, dev)
        return graphs

    @property
    def controlnet_id(self) -> str:
        """Id of [model] controlnet ("" without one); part of a job's model id when its preset uses it."""
        return file_id(self.model.controlnet) if self.model.controlnet else ""

    @property
    def controlnet_name(self) -> str:
        """The ControlNet's file or folder name, for provenance ("" without one)."""
        return Path(self.model.controlnet).name if self.model.controlnet else ""

    @property
    def model_id(self) -> str:
        extra = [(self.model.lcm_lora, 1.0)] if self.model.lcm_lora else []
        return model_set_id(self.model.checkpoint, self.model.vae, [*extra, *self._fused])

    def model_id_for(self, prompt: str, negative_prompt: str = "") -> str:
        """The id `model_id` will have once a refine with these prompts has fused their <lora> tags."""
        self.load()
        tags = extract_lora_tags(prompt)[1] + extract_lora_tags(negative_prompt)[1]
        extra = [(self.model.lcm_lora, 1.0)] if self.model.lcm_lora else []
        return model_set_id(self.model.checkpoint, self.model.vae, [*extra, *self._lora_set(tags)])

    def _lora_set(self, tags: list[tuple[str, float]]) -> tuple[tuple[str, float], ...]:
        wanted = list(self._config_loras)
        wanted += [(str(resolve_lora_name(name, self.model.lora_dirs)), w) for name, w in tags]
        return tuple(sorted(wanted))

    def _use_loras(self, wanted: tuple[tuple[str, float], ...]) -> None:
        """Fuse exactly `wanted`; when it differs from what is fused, restore pristine weights first."""
        if wanted == self._fused:
            return
        assert self._fuser and self._encoder and self.models
        if self._fuser.restore():
            self._encoder.clear_cache()  # now, in case reading the new set fails below
        self._fused = ()
        files = [(self._read_lora(Path(p)), w) for p, w in wanted]
        if self._fuser.fuse(files):
            self._encoder.clear_cache()
        self._fused = wanted

    def _read_lora(self, path: Path) -> LoraFile:
        """Parsed LoRA files, the most recently used few; a file changed on disk is read again."""
        assert self.models
        try:
            info = path.stat()
        except OSError:  # gone since it was resolved: read_lora's error names the file
            return read_lora(path, self.models.unet, self.models.text_encoder, self.models.text_encoder_2)
        key = (path, info.st_mtime_ns, info.st_size)
        lora = self._lora_cache.get(key)
        if lora is None:
            lora = read_lora(path, self.models.unet, self.models.text_encoder, self.models.text_encoder_2)
            self._lora_cache[key] = lora
            if len(self._lora_cache) > LORA_CACHE_SIZE:
                self._lora_cache.popitem(last=False)
        else:
            self._lora_cache.move_to_end(key)
        return lora

    def _conditioning(self, prompt: str, negative: str | None) -> tuple:
        """(cond, uncond) embeddings (SDXLCond for SDXL); uncond None when CFG is off (negative None)."""
        assert self._encoder
        return self._encoder.pair(prompt, negative)

    def _guided(
        self, cond, uncond, cfg: float, latent_hw: tuple[int, int], control: TileControl | None = None
    ) -> GuidedDenoiser:
        assert self.models
        m = self.models
        if m.family != SDXL:
            return make_guided_denoiser(m.unet, cond, uncond, cfg, self._unet_call, control=control)
        ids = time_ids(latent_hw, vae_scale_factor(m.vae))  # the whole canvas, for every tile
        return make_guided_denoiser(
            m.unet,
            cond.context,
            uncond.context if uncond is not None else None,
            cfg,
            self._unet_call,
            added=cond.added(ids),
            added_uncond=uncond.added(ids) if uncond is not None else None,
            control=control,
        )

    def _region_guided(
        self,
        key: tuple[Prompts, ...],
        conds: list[tuple],
        empty,
        cfg: float,
        hw: tuple[int, int],
        control: TileControl | None = None,
    ) -> RegionDenoiser:
        """One denoiser for all regions of a step (background first), a prompt per sample. Their
        contexts are padded to one length with `empty` (the empty prompt's embedding, SDXLCond for
        SDXL) so that tiles of different regions share UNet calls; SDXL's empty negative is all zeros,
        so it is padded with zeros. `control`: the ControlNet beside every call, each sample on its
        own tile's hint crop."""
        assert self.models
        m = self.models
        sdxl = m.family == SDXL
        guided_cfg = cfg > 1.0 and conds[0][1] is not None
        empty = empty.context if sdxl else empty
        contexts, fills = [], []
        for half in (0, 1) if guided_cfg else (0,):
            for (_, negative), pair in zip(key, conds, strict=True):
                contexts.append(pair[half].context if sdxl else pair[half])
                fills.append(torch.zeros_like(empty) if sdxl and half and negative == "" else empty)
        padded = pad_contexts(contexts, fills)
        n = len(key)
        added = added_u = None
        if sdxl:
            ids = time_ids(hw, vae_scale_factor(m.vae))  # the whole canvas, for every tile and region
            added = [c.added(ids) for c, _ in conds]
            added_u = [u.added(ids) for _, u in conds] if guided_cfg else None
        unconds = padded[n:] if guided_cfg else None
        return make_region_denoiser(
            m.unet, padded[:n], unconds, cfg, self._unet_call, added, added_u, control=control
        )

    @property
    def family(self) -> str:
        """ "sd15" or "sdxl" and the prediction type of the loaded set, for provenance."""
        self.load()
        assert self.models
        return self.models.family

    @property
    def prediction(self) -> str:
        self.load()
        assert self.models
        return self.models.prediction.label

    def _room_for_vae(
        self, op: str, height: int, width: int, always: bool
    ) -> contextlib.AbstractContextManager:
        """The UNet and text encoder wait in host RAM when the VAE pass would not fit beside them
        (`always`: after running out of memory once)."""
        assert self.models and self._placement
        m, dev = self.models, self.device
        if always or needs_room(m.vae, op, height, width, free_memory_bytes(dev)):
            return parked(self._placement.on_device(), dev)
        return contextlib.nullcontext()

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
    ) -> Image.Image:
        """RGB in (already upscaled: a PIL image or rgb_pixels' (H, W, 3) uint8 tensor on any device),
        RGB of the same size out, downloaded once as uint8; deterministic for (image, preset, seed).

        `regions`: characters with their own prompts where they stand (image_prompts.plan_regions);
        `prompt` is then the background's. Without regions, or with the preset's regions = "off",
        it is the single-prompt refine, unchanged.

        Out of accelerator memory, it tries again with less (memory_ladder), and when even the
        least fails it is an OutOfMemoryError saying so, not a crash."""
        check_inputs(self.model, preset, image, seed, regions)
        ladder = memory_ladder(preset)
        for i, attempt in enumerate(ladder):
            try:
                prompts = (prompt, negative_prompt)
                return self._refine(image, attempt, prompts, seed, progress, park=i > 0, regions=regions)
            except Exception as exc:
                if not is_oom(exc):
                    raise
                reason = first_line(exc)
            # Outside the except block: the traceback's frames hold the failed attempt's tensors.
            release_cached(self.device)
            if i + 1 < len(ladder):
                nxt = ladder[i + 1]
                log.warning(
                    "refine out of memory (%s); retrying with tile_batch_size=%d vae_tiling=%s, "
                    "models parked for the VAE",
                    reason,
                    nxt.tile_batch_size,
                    nxt.vae_tiling,
                )
        raise OutOfMemoryError(
            f"out of {self.device.type.upper()} memory even one diffusion tile at a time, with the "
            f"low-memory VAE and the SD models parked in host RAM ({reason}). Close other programs "
            'using the GPU, lower the preset\'s scale, or set model.device = "cpu"'
        )

    def _refine(
        self,
        image: Image.Image | torch.Tensor,
        preset: Preset,
        prompts: tuple[str, str],
        seed: int,
        progress: Progress | None,
        park: bool,
        regions: Sequence[Region] = (),
    ) -> Image.Image:
        prompt, negative_prompt = prompts
        regions = () if preset.regions == "off" else tuple(regions)
        self.load()
        self._ensure_placed()
        assert self.models and self._encoder and self._placement
        m, dev = self.models, self.device
        prompt, tags = extract_lora_tags(prompt)
        negative_prompt, neg_tags = extract_lora_tags(negative_prompt)
        self._use_loras(self._lora_set(tags + neg_tags))
        # NAI's alpha channel carries stealth metadata, not transparency: drop it.
        rgb, size_hw = pad_to_multiple(rgb_pixels(image).to(dev))
        # Region prompts start with the same preset prompt, so their <lora> tags are the ones just
        # fused (fusing them again would double the LoRA): only their text goes to the encoders.
        region_texts = [
            (extract_lora_tags(r.prompt)[0], extract_lora_tags(r.negative_prompt)[0]) for r in regions
        ]

        # 1. Schedule, then one conditioning per distinct prompt the steps see (A1111 prompt editing
        # and alternation; usually one for all). The negative only matters (and is only encoded)
        # when CFG > 1.
        sampler = Sampler(preset.sampler, m.scheduler_config)
        sampler.set_steps(preset.steps, preset.denoise, dev)
        n_steps = len(sampler.timesteps)
        scales = control_scales(n_steps, preset.control_strength, preset.control_start, preset.control_end)
        # Where the text encoders and the ControlNet wait while this job's tiles run (the ControlNet
        # on the device only if this job runs it or it fits anyway); refused here, before any work,
        # when even the least this preset needs does not fit (an error for this job, not the set).
        tile_hw = (min(preset.tile_size, rgb.shape[0] // 8), min(preset.tile_size, rgb.shape[1] // 8))
        tile_px = tile_hw[0] * tile_hw[1]
        control = any(scales)
        plan = self._residency(self._placement, tile_px, preset.cfg > 1.0, preset.tile_size, control, preset)
        self._placement.settle(plan)
        per_step: list = _per_step(prompt, negative_prompt, preset.cfg, n_steps)
        columns = [per_step, *(_per_step(p, n, preset.cfg, n_steps) for p, n in region_texts)]
        # Text encoders waiting in host RAM visit the device only when a text is not cached yet, and
        # every text is encoded inside the visit (regions' padding, the empty prompt, included).
        with self._placement.encoding(needs_text_encoders(self._encoder, columns, bool(regions))):
            empty = None  # the empty prompt's embedding, for the regions' padding
            if not regions:
                conds = {pair: self._conditioning(*pair) for pair in dict.fromkeys(per_step)}
            else:  # per step, the (prompt, negative) of every region: background first
                per_step = list(zip(*columns, strict=True))
                conds = {key: [self._conditioning(*pair) for pair in key] for key in dict.fromkeys(per_step)}
                empty = self._encoder.encode("")
        # 2. Pixels -> latent.
        generator = torch.Generator("cpu").manual_seed(int(seed))
        window = preset.vae_attention_window
        with self._room_for_vae("encode", rgb.shape[0], rgb.shape[1], park):
            z0 = self.encode(
                m.vae,
                to_pixels(rgb),
                mode=preset.vae_tiling,
                generator=generator,
                sample=True,
                attention_window=window,
            )
        _check_finite(z0, "VAE encoding")
        # 3. The loop on the whole canvas, tile batches as large as the preset allows and memory holds.
        # One predictor per (prompts, ControlNet scale) the steps use (with regions, the prompts of
        # every region); a step at scale 0 runs no ControlNet at all (its residuals would be zero).
        hw = tuple(z0.shape[-2:])
        tile_px = min(preset.tile_size, hw[0]) * min(preset.tile_size, hw[1])
        free = free_memory_bytes(dev)
        batch = batch_for_memory(preset.tile_batch_size, free, tile_px, preset.cfg > 1.0, any(scales))
        tiling = replace(preset, tile_batch_size=batch)
        # The tile ControlNet's hint is the upscaled input itself: the pixels the img2img starts from.
        hint = control_image(rgb, m.controlnet.dtype) if control else None
        factor = vae_scale_factor(m.vae)
        predictors = {}
        steps = list(zip(per_step, scales, strict=True))
        masks = region_masks(regions, hw, size_hw, factor) if regions else None
        for key, scale in dict.fromkeys(steps):
            tile_control = TileControl(m.controlnet, hint, scale, factor) if scale else None
            if masks is None:
                guided = self._guided(*conds[key], preset.cfg, hw, tile_control)
                predict = self.wrap_predictor(guided, tiling, hw) if self.wrap_predictor else guided
            elif self.wrap_predictor is None:  # regions, untiled: the whole canvas is one tile
                den = self._region_guided(key, conds[key], empty, preset.cfg, hw, tile_control)
                plan = plan_tiles(hw[0], hw[1], max(hw), 0)
                predict = region_predictor(den, plan, masks, "multidiffusion", batch)
            else:
                den = self._region_guided(key, conds[key], empty, preset.cfg, hw, tile_control)
                predict = self.wrap_regions(den, masks, tiling, hw)
            predictors[key, scale] = predict
        x = denoise(z0, [predictors[step] for step in steps], sampler, generator, progress)
        # The predictors hold the full-image control hint: gone before the decode, the job's peak.
        predictors = predict = tile_control = hint = guided = den = None  # type: ignore[assignment]
        # 4. Decode; never hand back a black or garbage image.
        with self._room_for_vae("decode", rgb.shape[0], rgb.shape[1], park):
            pixels = self.decode(m.vae, x, mode=preset.vae_tiling, attention_window=window)
        _check_finite(pixels, "VAE decoding")
        return to_image(pixels, size_hw)


def needs_text_encoders(
    encoder: PromptEncoder | SDXLPromptEncoder, columns: Sequence[Sequence[Prompts]], regions: bool
) -> bool:
    """Whether conditioning a job runs a text encoder: some (prompt, negative) of `columns` (the
    steps' prompts: the whole image's, or with `regions` the background's then each region's) is
    not cached, or, with regions, the empty prompt is not: regions pad their contexts to one length
    with it at any CFG, where a single prompt needs it only to pad a negative (CFG > 1)."""
    pairs = {pair for column in columns for pair in column}
    if regions:
        pairs.add(("", None))
    return any(not encoder.cached(*pair) for pair in pairs)


def _per_step(prompt: str, negative: str, cfg: float, steps: int) -> list[Prompts]:
    """The (prompt, negative) each step sees (A1111 prompt editing and alternation); the negative
    only matters (and is only encoded) when CFG > 1."""
    negatives = prompts_per_step(negative, steps) if cfg > 1.0 else [None] * steps
    return list(zip(prompts_per_step(prompt, steps), negatives, strict=True))
