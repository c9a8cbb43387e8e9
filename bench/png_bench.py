"""PNG cost of a 16 MP output: naiup's parallel encoder against Pillow at zlib levels 0/1/3/6, and the
fsynced publish. Writes JSON with naiup's time as a fraction of Pillow's per level; asserts nothing.

    python bench/png_bench.py [--image PATH] [--out bench/out/png_bench.json]

The claim it measures: at level 1 (what jobs write) naiup encodes in under 0.8x Pillow's time on any
machine with two cores or more (Pillow filters adaptively and deflates on one core; naiup deflates
bands of rows on every core). The image is a real NovelAI fixture upscaled 4x with Lanczos to
4096x4096 (16.8 MP), which has the smooth gradients and flat fills of a refined output; pure noise
would make every level look alike. Without the fixture, a synthetic gradient-plus-noise image.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, PngImagePlugin

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from naiup.output.atomic import write_new
from naiup.output.png import encode_rgb_png

DEFAULT_IMAGE = Path(__file__).resolve().parents[2] / "shared/fixtures/nai/nai3_1024_text_stealth.png"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--out", type=Path, default=Path("bench/out/png_bench.json"))
    parser.add_argument("--levels", default="0,1,3,6")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    if args.image.is_file():
        with Image.open(args.image) as im:
            big = im.convert("RGB").resize((4096, 4096), Image.Resampling.LANCZOS)
    else:
        big = Image.fromarray(_synthetic(4096, 4096))
    text = {"Comment": "x" * 2000, "naiup": "{}"}
    pixels = np.asarray(big)
    encoders = {
        "naiup": lambda level: encode_rgb_png(pixels, text, level),
        "pillow": lambda level: _pillow(big, text, level),
    }
    results = []
    for level in (int(x) for x in args.levels.split(",")):
        for name, encode in encoders.items():
            times = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                data = encode(level)
                times.append(time.perf_counter() - t0)
            results.append({"encoder": name, "level": level, "seconds_min": min(times), "bytes": len(data)})
        ours, pillow = (r["seconds_min"] for r in results[-2:])
        results[-2]["fraction_of_pillow_time"] = round(ours / pillow, 3)
    with tempfile.TemporaryDirectory(dir=args.out.parent if args.out.parent.exists() else None) as tmp:
        data = encoders["naiup"](1)
        writes = []
        for i in range(args.repeat):
            t0 = time.perf_counter()
            write_new(Path(tmp) / f"out{i}.png", data)  # temp file, fsync, link: what a job does
            writes.append(time.perf_counter() - t0)
    publish = {"level": 1, "write_seconds_min": min(writes), "bytes": len(data)}
    report = {
        "image": args.image.name if args.image.is_file() else "synthetic gradients + noise",
        "size": list(big.size),
        "megapixels": big.width * big.height / 1e6,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
        },
        "pillow": PIL.__version__,
        "results": results,
        "publish": publish,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    sys.stdout.write(json.dumps(report, indent=2) + "\n")


def _synthetic(height: int, width: int) -> np.ndarray:
    """Smooth gradients plus a little noise: compressible like a refined output, but not trivially."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 // width, y * 255 // height, (x + y) % 256], axis=-1)
    return ((base + rng.integers(0, 8, base.shape)) % 256).astype(np.uint8)


def _pillow(image: Image.Image, text: dict[str, str], level: int) -> bytes:
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    buf = io.BytesIO()
    image.save(buf, "PNG", pnginfo=info, compress_level=level, optimize=False)
    return buf.getvalue()


if __name__ == "__main__":
    main()
