"""Engine benchmark: the real pipeline (upscale -> Refiner: tiled VAE encode, tiled LCM denoise, tiled
VAE decode -> PNG) on SD1.5- or SDXL-shaped random-weight models, against the naive diffusers baseline.

    W2  2x upscaler (Real-CUGAN se from ../shared/weights if present, else a random Compact 2x)
        + refine: LCM 8 steps x denoise 0.25 = 2 UNet steps, CFG 1, tile 64 / overlap 32, tiled VAE
    W4  4x upscaler (RealESRGAN x4plus anime 6B if present, else a random RRDB 6-block) + refine
    --family sdxl: the same on SDXL shapes (UNet 2.6 G parameters, CLIP-L + bigG), tile 128 / overlap
        16 (SDXL's 1024 px); W2-XL is the default workload there (W4-XL on request)
Input 832x1216 (NAI V3 portrait). The stages are naiup's own code: engine.upscale.upscaler.load_upscaler,
naiup.engine.diffusion.refine.Refiner with its production defaults (tiling.predictor_for, vae_tiling), timed
through the Refiner's seams, and naiup.output.provenance.encode_png. Each workload is followed, in the same
run, by the baseline: diffusers StableDiffusionImg2ImgPipeline (StableDiffusionXLImg2ImgPipeline for
SDXL) on the same models and upscaled pixels,
at full resolution with vae.enable_tiling().

    python bench/engine_bench.py                 # full size, needs a GPU to finish in reasonable time
    python bench/engine_bench.py --small         # tiny shapes on CPU, under a minute (CI smoke test)
    python bench/engine_bench.py --regions 0,3   # each configuration without and with 3 NovelAI
                                                 # character regions: the cost of regional prompts
    python bench/engine_bench.py --control 0.8   # a ControlNet tile beside every UNet call (with
                                                 # --regions: beside every (tile, region) sample too)

Appends bench/out/engine-<timestamp>.jsonl as it goes (a header line, then one line per result the
moment it is measured), writes engine-<timestamp>.json (machine, versions, every number) at the end
and prints a table.
Not a test: it never asserts.
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_models import (  # noqa: E402
    FULL,
    FULL_XL,
    SMALL,
    SMALL_XL,
    Shape,
    controlnet_folder,
    input_image,
    sd_folder,
    sdxl_folder,
    upscaler_file,
)
from bench_report import Log, Result, machine, print_table  # noqa: E402
from diffusers import LCMScheduler, StableDiffusionImg2ImgPipeline, StableDiffusionXLImg2ImgPipeline  # noqa: E402
from diffusers.utils import logging as diffusers_logging  # noqa: E402

from naiup.config import ModelConfig, Preset  # noqa: E402
from naiup.engine.device import cap_memory, explicit_device  # noqa: E402
from naiup.engine.diffusion.refine import Refiner  # noqa: E402
from naiup.engine.diffusion.regions import region_predictor_for  # noqa: E402
from naiup.engine.diffusion.tiling import plan_tiles, predictor_for  # noqa: E402
from naiup.engine.image_prompts import Region  # noqa: E402
from naiup.engine.upscale.upscaler import load_upscaler  # noqa: E402
from naiup.engine.vae import attention as vae_attention  # noqa: E402
from naiup.engine.vae import tiled as vae_tiling  # noqa: E402
from naiup.output.provenance import encode_png  # noqa: E402

PROMPT = "(masterpiece, best quality, highres:1.2), 1girl, solo, detailed background"
PNG_LEVEL = 1  # OutputConfig.png_compress_level default
# Where --regions N puts its characters: NovelAI's 5x5 grid (at most 6 characters), the first three as
# in the three-character fixture (one above, two below), then the upper corners and the bottom middle.
CHARACTER_CENTRES = ((0.5, 0.3), (0.7, 0.7), (0.3, 0.7), (0.1, 0.3), (0.9, 0.3), (0.5, 0.9))


def bench_regions(n: int) -> tuple[Region, ...]:
    """n character regions of the presets' default size, each with its own prompt."""
    if not 0 <= n <= len(CHARACTER_CENTRES):
        raise SystemExit(f"--regions: 0 to {len(CHARACTER_CENTRES)} characters (NovelAI's limit), got {n}")
    size = Preset(name="bench").region_size
    return tuple(
        Region(f"{PROMPT}, character {k}, red hair, school uniform", "", centre, size)
        for k, centre in enumerate(CHARACTER_CENTRES[:n])
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Stages:
    """Timing hooks on the Refiner's seams: every call adds its synced seconds to `current[name]`."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.current = device, {}
        self.unet_calls: list[list[int]] = []
        self.batch, self.graphs = 0, False  # tile batch the Refiner ran with; UNet CUDA-graphed
        self.control_calls = 0  # ControlNet calls (--control)
        self.samples = 0  # UNet tile samples per step of the last regional run (tile x region)

    def watch_unet(self, unet: torch.nn.Module) -> None:
        unet.register_forward_hook(lambda _m, a, _o: self.unet_calls.append(list(a[0].shape)))

    def timed(self, name: str, fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(*args, **kwargs):
            _sync(self.device)
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            _sync(self.device)
            self.current[name] = self.current.get(name, 0.0) + time.perf_counter() - t0
            return out

        return run


def make_refiner(
    folder: Path, device: torch.device, stages: Stages, shape: Shape, args, cache: Path
) -> Refiner:
    def wrap(guided, preset, latent_hw):
        stages.batch = preset.tile_batch_size  # after the Refiner capped it by free memory
        return stages.timed("denoise", predictor_for(guided, preset, latent_hw))

    def wrap_regions(denoiser, masks, preset, latent_hw):
        stages.batch = preset.tile_batch_size
        predict = region_predictor_for(denoiser, masks, preset, latent_hw)
        stages.samples = len(predict.work)
        return stages.timed("denoise", predict)

    vae_tile = {"tile": shape.vae_core} if shape.vae_core else {}
    graphs = "on" if args.compile else args.unet_graphs
    # --control: a random ControlNet of the model's shape beside the UNet (each tile's call on its crop).
    control = str(controlnet_folder(folder, cache)) if args.control else ""
    refiner = Refiner(
        ModelConfig(
            checkpoint=str(folder), lcm_lora="", device=device.type, unet_graphs=graphs, controlnet=control
        ),
        device,
        wrap_predictor=wrap,
        wrap_regions=wrap_regions,
        encode=stages.timed("encode", functools.partial(vae_tiling.encode, **vae_tile)),
        decode=stages.timed("decode", functools.partial(vae_tiling.decode, **vae_tile)),
    )
    refiner.load()
    m = refiner.models
    stages.watch_unet(m.unet)
    if m.controlnet is not None:
        m.controlnet.register_forward_hook(
            lambda *_: setattr(stages, "control_calls", stages.control_calls + 1)
        )
    if args.channels_last:  # in place: the Refiner keeps the same module objects
        m.unet.to(memory_format=torch.channels_last)
        m.vae.to(memory_format=torch.channels_last)
    # The production lever (model.unet_graphs): the Refiner's UnetCall compiles the UNet itself.
    stages.graphs = refiner.unet_graphs
    if args.chunk_attention:  # the old behaviour, to measure the lever: chunked on CUDA too
        vae_attention.UNCHUNKED_ON_CUDA = False
    return refiner


def _peak(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


@torch.no_grad()
def run_ours(
    name: str,
    upscaler,
    refiner: Refiner,
    stages: Stages,
    preset: Preset,
    image,
    vae_core: int | None,
    host_pixels: bool = False,
    characters: int = 0,
) -> tuple[Result, object]:
    device = refiner.device
    res = Result(name, f"naiup (vae {preset.vae_tiling})" + (f", {characters} regions" if characters else ""))
    regions = bench_regions(characters)
    extra = {"regions": regions} if regions else {}
    stages.current, stages.unet_calls, stages.control_calls = res.stages, res.unet_calls, 0
    _reset_peak(device)
    t0 = time.perf_counter()
    # As the Engine does: the upscaled pixels stay on the device into the refine (device_pixels),
    # or, with --host-pixels, go through a PIL image on the host (the old path).
    upscale = upscaler.upscale if host_pixels else upscaler.upscale_pixels
    big = stages.timed("upscale", upscale)(image, preset.scale)
    refine = stages.timed("refine", refiner.refine)
    out = refine(big, preset, prompt=PROMPT, negative_prompt="", seed=1234, **extra)
    stages.timed("png", encode_png)(out, {"parameters": PROMPT}, PNG_LEVEL)
    res.wall = time.perf_counter() - t0
    res.peak_gpu_gib = _peak(device)
    stages.current, stages.unet_calls = {}, []  # the baseline's calls are not ours
    # What the refine spent outside the three seams: prompt encoding, scheduler steps, conversions.
    res.stages["other"] = res.stages.pop("refine") - sum(
        res.stages[k] for k in ("encode", "denoise", "decode")
    )
    res.output = f"{out.width}x{out.height}"
    if not host_pixels:
        big = Image.fromarray(big.cpu().numpy(), "RGB")  # the baseline's input
    lh, lw = big.height // 8, big.width // 8
    res.unet_tiles = plan_tiles(lh, lw, preset.tile_size, preset.overlap).count
    res.vae_plan = vae_tiling.plan_vae(
        refiner.models.vae, "decode", lh * 8, lw * 8, preset.vae_tiling, vae_core or vae_tiling.DEFAULT_CORE
    ).mode
    res.notes = f"{res.unet_tiles} UNet tiles/step; VAE decode plan {res.vae_plan}"
    if regions:  # each tile runs once per region with weight in it
        res.notes += f"; {len(regions)} regions: {stages.samples} UNet tile samples/step"
    res.levers = {
        "text_encoders_resident": refiner.residency.text_encoders_resident,
        "overlap": preset.overlap,
        "tile_batch": stages.batch,
        "unet_graphs": stages.graphs,
        "device_pixels": not host_pixels,
        "attention_unchunked_on_cuda": vae_attention.UNCHUNKED_ON_CUDA,
        "regions": len(regions),
        "unet_samples_per_step": stages.samples if regions else res.unet_tiles,
    }
    if preset.control_strength:
        res.levers["control"] = {"strength": preset.control_strength, "calls": stages.control_calls}
    return res, big


@torch.no_grad()
def run_baseline(name: str, refiner: Refiner, preset: Preset, image) -> Result:
    m, device = refiner.models, refiner.device
    res = Result(
        name, "diffusers img2img + enable_tiling", notes="upscale not included (same pixels as ours)"
    )
    vae = m.vae
    if vae.dtype != m.unet.dtype or m.text_encoder_2 is not None:
        # diffusers' img2img feeds the VAE in the UNet's dtype (fp16 on CUDA) and would fail on our
        # bf16 VAE: the naive baseline runs as diffusers users run it, the whole pipeline in fp16.
        # SDXL's pipeline also casts the VAE itself (fp32 around each pass, force_upcast): a copy, so
        # our own VAE is left as it was.
        vae = copy.deepcopy(vae).to(m.unet.dtype)
    scheduler = LCMScheduler.from_config(m.scheduler_config)
    if m.text_encoder_2 is not None:
        pipe = StableDiffusionXLImg2ImgPipeline(
            vae=vae, text_encoder=m.text_encoder, text_encoder_2=m.text_encoder_2, tokenizer=m.tokenizer,
            tokenizer_2=m.tokenizer_2, unet=m.unet, scheduler=scheduler, requires_aesthetics_score=False,
            force_zeros_for_empty_prompt=True, add_watermarker=False,
        )  # fmt: skip
    else:
        pipe = StableDiffusionImg2ImgPipeline(
            vae=vae, text_encoder=m.text_encoder, tokenizer=m.tokenizer, unet=m.unet, scheduler=scheduler,
            safety_checker=None, feature_extractor=None, requires_safety_checker=False,
        )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    vae.enable_tiling()
    try:
        _reset_peak(device)
        _sync(device)
        t0 = time.perf_counter()
        out = pipe(
            prompt=PROMPT,
            image=image,
            strength=preset.denoise,
            num_inference_steps=preset.steps,
            guidance_scale=1.0,
            generator=torch.Generator("cpu").manual_seed(1234),
        ).images[0]
        _sync(device)
        res.stages["img2img"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        encode_png(out, {"parameters": PROMPT}, PNG_LEVEL)
        res.stages["png"] = time.perf_counter() - t0
    finally:
        vae.disable_tiling()
    res.wall = res.stages["img2img"] + res.stages["png"]
    res.peak_gpu_gib = _peak(device)
    res.output = f"{out.width}x{out.height}"
    res.notes += f"; VAE {str(vae.dtype).removeprefix('torch.')}"
    return res


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="tiny shapes on CPU (CI smoke test)")
    ap.add_argument("--family", default="sd15", choices=("sd15", "sdxl"), help="model shapes (SDXL: W2-XL)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--workloads", default=None, help="comma list of W2,W4 (default: W2,W4; W2 for sdxl)")
    ap.add_argument(
        "--vae-mode", default="exact,low-memory,auto", help="comma list of off|exact|low-memory|auto"
    )
    ap.add_argument("--size", default=None, help="input WxH instead of the shape's (e.g. 416x608)")
    ap.add_argument(
        "--batch",
        type=int,
        default=None,
        help="UNet tile batch size at most (default: the preset's)",
    )
    ap.add_argument(
        "--overlap", type=int, default=None, help="UNet tile overlap, latent px (default: preset's)"
    )
    ap.add_argument("--channels-last", action="store_true", help="NHWC UNet and VAE")
    ap.add_argument(
        "--unet-graphs",
        default="auto",
        choices=("auto", "on", "off"),
        help="model.unet_graphs: CUDA graphs for the UNet tiles (torch.compile reduce-overhead)",
    )
    ap.add_argument("--compile", action="store_true", help="same as --unet-graphs on")
    ap.add_argument(
        "--host-pixels",
        action="store_true",
        help="upscaled pixels via a PIL image on the host (old path)",
    )
    ap.add_argument(
        "--chunk-attention", action="store_true", help="chunk the VAE window attention on CUDA too (old path)"
    )
    ap.add_argument("--warmup", type=int, default=None, help="untimed runs first (default: 1 on CUDA)")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument(
        "--control",
        type=float,
        default=0.0,
        help="ControlNet tile at this strength on every UNet step of our runs (random weights; 0: off)",
    )
    ap.add_argument(
        "--regions",
        default="0",
        help="comma list of NovelAI character counts to run each configuration with (0: no regions)",
    )
    ap.add_argument(
        "--attention-window",
        type=int,
        default=None,
        help="preset vae_attention_window (0: whole-latent VAE attention; default: the preset default)",
    )
    ap.add_argument(
        "--vram-gb", type=float, default=0.0, help="cap our runs' GPU memory like model.max_vram_gb (0: none)"
    )
    shared = Path(os.environ.get("NAIUP_SHARED", REPO.parent / "shared"))
    ap.add_argument("--weights", type=Path, default=shared / "weights")
    ap.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default 1 with --small: OpenMP spin)"
    )
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    ap.add_argument(
        "--jsonl", type=Path, default=None, help="append results here as measured (default: in --out)"
    )
    ap.add_argument("--cache", type=Path, default=None, help="model folder cache (default OUT/models)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    auto = "cuda" if torch.cuda.is_available() and not args.small else "cpu"
    device = explicit_device(auto if args.device == "auto" else args.device)  # cuda:N for torch.cuda
    xl = args.family == "sdxl"
    s = (SMALL_XL if args.small else FULL_XL) if xl else (SMALL if args.small else FULL)
    workloads = (args.workloads or ("W2" if xl else "W2,W4")).split(",")
    if args.size:
        w, h = (int(v) for v in args.size.lower().split("x"))
        s = replace(s, width=w, height=h)
    threads = args.threads or (1 if args.small else None)
    if threads:
        torch.set_num_threads(threads)
    warmup = args.warmup if args.warmup is not None else int(device.type == "cuda")
    diffusers_logging.set_verbosity_error()  # the baseline pipeline warns about our scheduler config
    diffusers_logging.disable_progress_bar()
    cache = args.cache or args.out / "models"
    log = Log(args.out, args, device)
    t0 = time.perf_counter()
    stages = Stages(device)
    folder = sdxl_folder(s, cache) if xl else sd_folder(s, cache)
    refiner = make_refiner(folder, device, stages, s, args, cache)
    setup = time.perf_counter() - t0
    image = input_image(s)
    defaults = Preset(name="bench")
    base = Preset(
        name="bench", steps=8, denoise=0.25, cfg=1.0, sampler="lcm", tile_size=s.tile,
        overlap=s.overlap if args.overlap is None else args.overlap,
        tile_batch_size=defaults.tile_batch_size if args.batch is None else args.batch, tile_method="mixture",
        control_strength=args.control,
    )  # fmt: skip
    if args.attention_window is not None:
        base = replace(base, vae_attention_window=args.attention_window)

    results: list[Result] = []
    for name in workloads:
        scale = {"W2": 2, "W4": 4}[name]
        wl = f"{name}-XL" if xl else name
        path, desc = upscaler_file(scale, args.small, args.weights, cache)
        upscaler = load_upscaler(str(path), device)
        big = None
        cap_memory(device, int(args.vram_gb * 2**30))  # the Engine does this from model.max_vram_gb
        for mode in args.vae_mode.split(","):
            preset = replace(base, scale=float(scale), vae_tiling=mode)
            for characters in (int(n) for n in args.regions.split(",")):
                for _ in range(warmup + 1):  # the last run counts
                    res, big = run_ours(
                        wl, upscaler, refiner, stages, preset, image, s.vae_core, args.host_pixels, characters
                    )
                res.notes = f"upscaler: {desc}; {res.notes}"
                if args.vram_gb:
                    res.variant += f", cap {args.vram_gb:g} GiB"
                if args.attention_window is not None:
                    res.variant += f", attn window {args.attention_window}"
                if args.control:
                    res.variant += f", control {args.control:g}"
                results.append(res)
                log.result(res)
        cap_memory(device, 0)  # the baseline runs as its users run it
        if not args.no_baseline and big is not None:
            for _ in range(warmup + 1):
                res = run_baseline(wl, refiner, base, big)
            results.append(res)
            log.result(res)
        del upscaler

    path = log.report(setup, results)
    print_table(results)
    where = machine(device).get("gpu", platform.processor() or "cpu")
    print(f"device: {where} ({device}); json: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
