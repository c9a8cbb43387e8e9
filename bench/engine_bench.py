"""Engine benchmark: upscale -> tiled VAE encode -> tiled LCM denoise -> tiled VAE decode -> PNG.

SD1.5-shaped models with random weights (the cost is the architecture's, not the weights'):
    W2  2x upscaler (Real-CUGAN from ../shared/weights if present, else a random Compact 2x)
        + refine, 2 UNet steps (LCM N=8, strength 0.25), CFG 1, tile 64 / overlap 32, tiled VAE
    W4  4x upscaler (RealESRGAN x4plus anime 6B if present, else a random RRDB 6-block) + refine
Input 832x1216 (NAI V3 portrait). Each workload is followed, in the same run, by the naive baseline:
diffusers StableDiffusionImg2ImgPipeline at full resolution with vae.enable_tiling().

    python bench/engine_bench.py                 # full size, needs a GPU to finish in reasonable time
    python bench/engine_bench.py --small         # tiny shapes on CPU, under a minute (CI smoke test)

Writes bench/out/engine-<timestamp>.json (machine, versions, every number) and prints a table.
Not a test: it never asserts.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from diffusers import AutoencoderKL, LCMScheduler, StableDiffusionImg2ImgPipeline, UNet2DConditionModel  # noqa: E402
from diffusers.utils import logging as diffusers_logging  # noqa: E402
from PIL import Image  # noqa: E402

from naiup.engine import vae_tiling  # noqa: E402
from naiup.engine.tiling import plan_tiles, tiled_predictor  # noqa: E402

LCM_STEPS, STRENGTH = 8, 0.25  # int(8 * 0.25) = 2 UNet steps at t = 259, 139


@dataclass
class Shape:
    width: int
    height: int
    unet_channels: tuple[int, ...]
    text_width: int
    head_dim: int
    vae_channels: tuple[int, ...]
    norm_groups: int
    layers: int
    tile: int
    overlap: int
    vae_core: int | None


FULL = Shape(832, 1216, (320, 640, 1280, 1280), 768, 8, (128, 256, 512, 512), 32, 2, 64, 32, None)
# Same ratios, ~1/10 the channels; tiles scaled down so the small canvas still splits into tiles.
SMALL = Shape(64, 96, (32, 64, 128, 128), 32, 8, (16, 32, 64, 64), 8, 1, 16, 8, 16)


@dataclass
class Result:
    workload: str
    variant: str
    output: str
    stages: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0
    peak_gpu_gib: float | None = None
    notes: str = ""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timer:
    def __init__(self, device: torch.device, stages: dict[str, float]) -> None:
        self.device, self.stages = device, stages

    def __call__(self, name: str, fn: Callable, *args, **kwargs):
        _sync(self.device)
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        _sync(self.device)
        self.stages[name] = self.stages.get(name, 0.0) + time.perf_counter() - t0
        return out


def build_unet(s: Shape) -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=64,
        block_out_channels=s.unet_channels,
        cross_attention_dim=s.text_width,
        attention_head_dim=s.head_dim,
        layers_per_block=2,
        norm_num_groups=min(32, s.unet_channels[0]),
    ).eval()


def build_vae(s: Shape) -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(
        block_out_channels=s.vae_channels,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=s.layers,
        norm_num_groups=s.norm_groups,
        latent_channels=4,
        sample_size=512,
        scaling_factor=0.18215,
    ).eval()


def build_upscaler(scale: int, small: bool, weights: Path | None) -> tuple[torch.nn.Module, str]:
    from spandrel import ModelLoader
    from spandrel.architectures.Compact import Compact
    from spandrel.architectures.ESRGAN import ESRGAN

    files = {
        2: "realcugan-se-2x/realcugan-se-up2x-conservative.safetensors",
        4: "realesrgan-x4plus-anime-6b/RealESRGAN_x4plus_anime_6B.safetensors",
    }
    if not small and weights and (weights / files[scale]).is_file():
        return ModelLoader().load_from_file(weights / files[scale]).model.eval(), files[scale].split("/")[0]
    torch.manual_seed(0)
    if scale == 2:
        feat, convs = (16, 4) if small else (64, 16)
        return Compact(
            num_feat=feat, num_conv=convs, upscale=2
        ).eval(), f"random Compact 2x ({feat}f/{convs}c)"
    filters, blocks = (16, 1) if small else (64, 6)
    return ESRGAN(
        num_filters=filters, num_blocks=blocks, scale=4
    ).eval(), f"random RRDB 4x ({filters}f/{blocks}b)"


def denoise(unet, cond, z0, plan, batch, seed, dtype):
    """Minimal LCM img2img tail on the whole canvas; the real Refiner replaces this function."""

    def guided(x, t):
        return unet(x.to(dtype), t, encoder_hidden_states=cond.expand(x.shape[0], -1, -1)).sample

    predict = tiled_predictor(guided, plan, "mixture", batch)
    sched = LCMScheduler()
    sched.set_timesteps(LCM_STEPS)
    start = LCM_STEPS - int(LCM_STEPS * STRENGTH)
    sched.set_begin_index(start)
    gen = torch.Generator().manual_seed(seed)
    steps = sched.timesteps[start:]
    x = sched.add_noise(z0, torch.randn(z0.shape, generator=gen).to(z0.device), steps[:1])
    out = x
    for t in steps:
        x, out = sched.step(predict(x, t), t, x, generator=gen, return_dict=False)
    return out


def write_png(pixels: torch.Tensor) -> int:
    arr = (
        ((pixels[0].float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    )
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", compress_level=1)  # OutputConfig.png_compress_level
    return buf.tell()


@torch.no_grad()
def run_ours(name, scale, s, models, device, vae_mode, batch, weights, small) -> Result:
    unet, vae, cond, udtype = models
    up, up_name = build_upscaler(scale, small, weights)
    up = up.to(device, torch.float16 if device.type == "cuda" else torch.float32)
    res = Result(name, f"naiup (vae {vae_mode})", "", notes=f"upscaler: {up_name}")
    timer = Timer(device, res.stages)
    image = torch.rand(1, 3, s.height, s.width, generator=torch.Generator().manual_seed(0)).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    big = timer("upscale", up, image.to(next(up.parameters()).dtype))
    del up
    pixels = big.float().clamp(0, 1) * 2 - 1
    res.output = f"{pixels.shape[-1]}x{pixels.shape[-2]}"
    z0 = timer("encode", vae_tiling.encode, vae, pixels, mode=vae_mode, tile=s.vae_core)
    plan = plan_tiles(z0.shape[-2], z0.shape[-1], s.tile, s.overlap)
    res.notes += f"; {plan.count} UNet tiles/step"
    lat = timer("denoise", denoise, unet, cond, z0.float(), plan, batch, 0, udtype)
    out = timer("decode", vae_tiling.decode, vae, lat, mode=vae_mode, tile=s.vae_core)
    timer("png", write_png, out)
    _sync(device)
    res.wall = time.perf_counter() - t0
    if device.type == "cuda":
        res.peak_gpu_gib = torch.cuda.max_memory_allocated(device) / 2**30
    return res


@torch.no_grad()
def run_baseline(name, scale, s, models, device) -> Result:
    unet, vae, cond, udtype = models
    res = Result(name, "diffusers img2img + enable_tiling", "")
    pipe = StableDiffusionImg2ImgPipeline(
        vae=vae,
        text_encoder=None,
        tokenizer=None,
        unet=unet,
        scheduler=LCMScheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    vae.enable_tiling()
    try:
        # Same pixels as ours after upscale (plain resize: the baseline's upscaler time is ours).
        image = torch.rand(
            1, 3, s.height * scale, s.width * scale, generator=torch.Generator().manual_seed(0)
        )
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _sync(device)
        t0 = time.perf_counter()
        out = pipe(
            image=image.to(device),
            prompt_embeds=cond.to(udtype),
            strength=STRENGTH,
            num_inference_steps=LCM_STEPS,
            guidance_scale=1.0,
            output_type="pt",
            generator=torch.Generator().manual_seed(0),
        ).images
        _sync(device)
        res.stages["img2img"] = time.perf_counter() - t0
        res.stages["png"] = _time(lambda: write_png(out * 2 - 1))
        res.wall = res.stages["img2img"] + res.stages["png"]
        res.output = f"{out.shape[-1]}x{out.shape[-2]}"
    finally:
        vae.disable_tiling()
    if device.type == "cuda":
        res.peak_gpu_gib = torch.cuda.max_memory_allocated(device) / 2**30
    return res


def _time(fn: Callable) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def machine(device: torch.device) -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    import diffusers

    info["diffusers"] = diffusers.__version__
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", action="store_true", help="tiny shapes on CPU (CI smoke test)")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument("--workloads", default="W2,W4")
    ap.add_argument("--vae-modes", default="exact,low-memory,auto", help="comma list of VAE tiling modes")
    ap.add_argument("--batch", type=int, default=8, help="UNet tile batch size")
    ap.add_argument("--no-baseline", action="store_true")
    ap.add_argument(
        "--weights",
        type=Path,
        default=Path(os.environ.get("NAIUP_SHARED", REPO.parent / "shared")) / "weights",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default 1 with --small: tiny ops lose to OpenMP spin on shared cores)",
    )
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    args = ap.parse_args(argv)

    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else "cpu"
        if args.device == "auto"
        else args.device
    )
    if args.small:
        device = torch.device("cpu") if args.device == "auto" else device
    s = SMALL if args.small else FULL
    threads = args.threads or (1 if args.small else None)
    if threads:
        torch.set_num_threads(threads)
    diffusers_logging.set_verbosity_error()  # the baseline pipeline warns about our scheduler config
    udtype = torch.float16 if device.type == "cuda" else torch.float32
    vdtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    unet = build_unet(s).to(device, udtype)
    vae = build_vae(s).to(device, vdtype)
    cond = torch.randn(1, 77, s.text_width, generator=torch.Generator().manual_seed(0)).to(device, udtype)
    models = (unet, vae, cond, udtype)

    results: list[Result] = []
    for wl in args.workloads.split(","):
        scale = {"W2": 2, "W4": 4}[wl]
        for mode in args.vae_modes.split(","):
            results.append(run_ours(wl, scale, s, models, device, mode, args.batch, args.weights, args.small))
        if not args.no_baseline:
            results.append(run_baseline(wl, scale, s, models, device))

    args.out.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    report = {
        "when": stamp,
        "small": args.small,
        "machine": machine(device),
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "results": [asdict(r) for r in results],
    }
    path = args.out / f"engine-{stamp}{'-small' if args.small else ''}.json"
    path.write_text(json.dumps(report, indent=2))

    cols = ["upscale", "encode", "denoise", "decode", "img2img", "png"]
    print(
        f"{'workload':8} {'variant':36} {'output':>10} "
        + " ".join(f"{c:>8}" for c in cols)
        + f" {'wall':>8} {'peakGPU':>8}"
    )
    for r in results:
        cells = " ".join(f"{r.stages[c]:8.3f}" if c in r.stages else f"{'-':>8}" for c in cols)
        peak = f"{r.peak_gpu_gib:8.2f}" if r.peak_gpu_gib is not None else f"{'-':>8}"
        print(f"{r.workload:8} {r.variant:36} {r.output:>10} {cells} {r.wall:8.3f} {peak}")
    print(f"device: {report['machine'].get('gpu', platform.processor() or 'cpu')} ({device}); json: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
