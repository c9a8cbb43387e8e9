"""Seam measurement: how visible tile borders are in a tiled refine, per overlap, on a small model.

A seam is a discontinuity that the untiled refine does not have. So the metric looks at the
difference D = tiled - untiled (latent result of the same refine, same seed):
    seam ratio  mean |step of D| across the lines where a tile border can show (inner tile edges,
                where MultiDiffusion's box weights jump, and midpoints between tile centres, where
                Mixture of Diffusers' Gaussian weights hand over), divided by the mean |step of D|
                everywhere. 1.0: the borders are not special; > 1: a seam.
    rel error   RMS(D) / RMS(untiled - start latent): how far tiling moves the result, against how
                far the refine itself moves it.
    cover       UNet work per step against one untiled canvas pass (tiles x tile area / canvas area).

    python bench/seam_bench.py                           # 2-core CPU: about a minute per overlap
    python bench/seam_bench.py --latent 208x304 --overlaps 8,16,32 --method multidiffusion

It runs naiup's own loop (refine.denoise, tiling.tiled_predictor, samplers.Sampler, LCM 8 steps x
denoise 0.25 = 2 UNet steps as the presets do) on the bench's small SD1.5-shaped random UNet
(bench_models.SMALL: same block structure, about 1/10 of the channels). Random weights say nothing
about image quality; they do show whether tile borders leave steps in the result. Not a test.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_models import SMALL, sd_folder  # noqa: E402

from naiup.engine.diffusion.refine import denoise, make_guided_denoiser  # noqa: E402
from naiup.engine.diffusion.samplers import Sampler  # noqa: E402
from naiup.engine.diffusion.tiling import TilePlan, plan_tiles, tiled_predictor  # noqa: E402


def seam_lines(starts: tuple[int, ...], tile: int, length: int) -> list[int]:
    """Indices i where a step D[i] - D[i-1] can be a seam: every inner tile edge (MultiDiffusion's box
    weights jump there) and every midpoint between neighbouring tile centres (Mixture of Diffusers'
    Gaussian weights hand over there)."""
    edges = {a for a in starts if a > 0} | {a + tile for a in starts if a + tile < length}
    mids = {round((a + b + tile) / 2) for a, b in itertools.pairwise(starts)}
    return sorted(edges | mids)


def seam_ratio(diff: torch.Tensor, plan: TilePlan) -> float:
    """Mean |step| of `diff` (1, C, H, W) across the seam lines over the mean |step| everywhere."""
    dy = (diff[..., 1:, :] - diff[..., :-1, :]).abs()  # dy[i-1] is the step into row i
    dx = (diff[..., :, 1:] - diff[..., :, :-1]).abs()
    rows = [i - 1 for i in seam_lines(plan.starts_y, plan.tile_h, plan.latent_h)]
    cols = [i - 1 for i in seam_lines(plan.starts_x, plan.tile_w, plan.latent_w)]
    at = torch.cat([dy[..., rows, :].flatten(), dx[..., :, cols].flatten()])
    everywhere = torch.cat([dy.flatten(), dx.flatten()])
    return (at.mean() / everywhere.mean()).item()


def _actual_overlap(plan: TilePlan) -> float:
    """Mean overlap of neighbouring tiles over both axes (the grid spreads tiles evenly, so it is at
    least the requested one)."""
    gaps = [plan.tile_h - (b - a) for a, b in itertools.pairwise(plan.starts_y)]
    gaps += [plan.tile_w - (b - a) for a, b in itertools.pairwise(plan.starts_x)]
    return round(sum(gaps) / len(gaps), 1) if gaps else 0.0


def smooth_latent(h: int, w: int, seed: int) -> torch.Tensor:
    """A latent with an illustration's structure: smooth fields plus a little detail."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, 4, max(2, h // 12), max(2, w // 12), generator=g)
    smooth = torch.nn.functional.interpolate(coarse, (h, w), mode="bicubic", align_corners=False)
    return smooth + 0.1 * torch.randn(1, 4, h, w, generator=g)


@torch.no_grad()
def measure(args: argparse.Namespace) -> dict:
    from diffusers import UNet2DConditionModel

    folder = sd_folder(SMALL, args.cache)
    unet = UNet2DConditionModel.from_pretrained(folder / "unet").eval()
    scheduler_config = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    h, w = (int(v) for v in args.latent.lower().split("x"))
    z0 = smooth_latent(h, w, args.seed)
    cond = torch.randn(1, 77, unet.config.cross_attention_dim, generator=torch.Generator().manual_seed(1))
    guided = make_guided_denoiser(unet, cond, None, 1.0)

    def run(predict) -> torch.Tensor:
        sampler = Sampler("lcm", scheduler_config)
        sampler.set_steps(args.steps, args.denoise, torch.device("cpu"))
        return denoise(z0, predict, sampler, torch.Generator().manual_seed(args.seed))

    t0 = time.perf_counter()
    untiled = run(guided)
    rows = [{"overlap": "untiled", "actual": "-", "tiles": 1, "cover": 1.0, "secs": time.perf_counter() - t0}]
    moved = (untiled - z0).pow(2).mean().sqrt()
    for overlap in (int(o) for o in args.overlaps.split(",")):
        plan = plan_tiles(h, w, args.tile, overlap)
        t0 = time.perf_counter()
        tiled = run(tiled_predictor(guided, plan, args.method, args.batch))
        secs = time.perf_counter() - t0
        diff = tiled - untiled
        rows.append({
            "overlap": overlap,
            "actual": _actual_overlap(plan),
            "tiles": plan.count,
            "cover": round(plan.count * plan.tile_h * plan.tile_w / (h * w), 2),
            "seam_ratio": round(seam_ratio(diff, plan), 3),
            "rel_error": round((diff.pow(2).mean().sqrt() / moved).item(), 4),
            "secs": round(secs, 1),
        })  # fmt: skip
    return {"latent": args.latent, "tile": args.tile, "method": args.method, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--latent", default="112x176", help="latent HxW (W2 of NAI's 832x1216 is 208x304)")
    ap.add_argument("--tile", type=int, default=64)
    ap.add_argument("--overlaps", default="8,16,32")
    ap.add_argument("--method", default="mixture", choices=("mixture", "multidiffusion"))
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--denoise", type=float, default=0.25)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cache", type=Path, default=REPO / "bench" / "out" / "models")
    ap.add_argument("--out", type=Path, default=None, help="also write the result as JSON here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = measure(args)
    print(f"latent {result['latent']}, tile {result['tile']}, {result['method']}")
    head = ("overlap", 8), ("actual", 7), ("tiles", 6), ("cover", 6), ("seam ratio", 11), ("rel error", 10)
    print(" ".join(f"{name:>{width}}" for name, width in head), f"{'secs':>6}")
    for r in result["rows"]:
        print(
            f"{r['overlap']!s:>8} {r['actual']!s:>7} {r['tiles']:>6} {r['cover']:>6} "
            f"{r.get('seam_ratio', '-')!s:>11} {r.get('rel_error', '-')!s:>10} {r['secs']:>6.1f}"
        )
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
