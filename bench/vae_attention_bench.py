"""Windowed VAE mid-block attention against whole-latent attention: error and time, SD1.5 VAE shape.

    python bench/vae_attention_bench.py [--latent 104x152] [--windows 32,64] [--device cpu|cuda]

Random weights with the real SD1.5 VAE config (naiup/data/sd15/vae). Decodes one smooth random
latent whole-attention (exact tiled mode, equal to untiled) and with each window, and
reports PSNR of the pixels and the mid block's time. Random weights attend almost uniformly, which
is the worst case for a window: a trained VAE attends locally, so real errors should be smaller.
Writes JSON to bench/out/vae-attention-<stamp>.json. Asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_report import machine  # noqa: E402
from diffusers import AutoencoderKL  # noqa: E402

from naiup.engine.device import explicit_device  # noqa: E402
from naiup.engine.vae import attention as vae_attention  # noqa: E402
from naiup.engine.vae import tiled as vt  # noqa: E402


def _psnr(a: torch.Tensor, ref: torch.Tensor) -> float:
    span = (ref.max() - ref.min()).item()
    mse = ((a.float() - ref.float()) ** 2).mean().item()
    return 10 * torch.log10(torch.tensor(span**2 / max(mse, 1e-20))).item()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(device: torch.device, fn):
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t0


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--latent", default="104x152", help="latent HxW (104x152 = 832x1216 px)")
    ap.add_argument("--windows", default="32,64")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    args = ap.parse_args()
    device = explicit_device(args.device)  # cuda:N: what torch.cuda's calls need
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    config = json.loads((REPO / "naiup/data/sd15/vae/config.json").read_text())
    vae = AutoencoderKL.from_config(config).to(device, dtype).eval()
    lh, lw = (int(v) for v in args.latent.lower().split("x"))
    coarse = torch.randn(1, 4, max(1, lh // 8), max(1, lw // 8), generator=torch.Generator().manual_seed(1))
    latent = torch.nn.functional.interpolate(coarse, size=(lh, lw), mode="bilinear").to(device)
    head_in = vae.decoder.conv_in(vae.post_quant_conv(latent.to(dtype) / vae.config.scaling_factor))
    mid = vae.decoder.mid_block
    whole_mid, whole_mid_s = _timed(device, lambda: vae_attention.mid_block(mid, head_in, 0))
    exact, whole_s = _timed(device, lambda: vt.decode(vae, latent, mode="exact"))
    rows = [{"window": 0, "mid_block_s": whole_mid_s, "decode_s": whole_s, "psnr_db": None}]
    print(json.dumps(rows[-1]), flush=True)  # each row as measured: a killed run keeps the rows before
    for window in (int(w) for w in args.windows.split(",")):
        win_mid, mid_s = _timed(device, lambda w=window: vae_attention.mid_block(mid, head_in, w))
        out, dec_s = _timed(device, lambda w=window: vt.decode(vae, latent, mode="exact", attention_window=w))
        rows.append(
            {
                "window": window,
                "windows": len(vae_attention.attention_windows(lh, lw, window)),
                "mid_block_s": mid_s,
                "decode_s": dec_s,
                "mid_block_psnr_db": _psnr(win_mid, whole_mid),
                "psnr_db": _psnr(out, exact),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    report = {
        "latent": [lh, lw],
        "dtype": str(dtype),
        "margin": vae_attention.ATTENTION_MARGIN,
        "machine": machine(device),
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"vae-attention-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
