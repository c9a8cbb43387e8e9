"""PNG encode cost of a 16 MP output at zlib levels 0/1/3/6 (Pillow). Writes JSON; asserts nothing.

    python bench/png_bench.py [--image PATH] [--out bench/out/png_bench.json]

The image is a real NovelAI fixture upscaled 4x with Lanczos to 4096x4096 (16.8 MP), which has the
smooth gradients and flat fills of a refined output; pure noise would make every level look alike.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import PIL
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from naiup.provenance import encode_png

DEFAULT_IMAGE = Path(__file__).resolve().parents[2] / "shared/fixtures/nai/nai3_1024_text_stealth.png"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--image", type=Path, default=DEFAULT_IMAGE)
    parser.add_argument("--out", type=Path, default=Path("bench/out/png_bench.json"))
    parser.add_argument("--levels", default="0,1,3,6")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    with Image.open(args.image) as im:
        big = im.convert("RGB").resize((4096, 4096), Image.Resampling.LANCZOS)
    text = {"Comment": "x" * 2000, "naiup": "{}"}
    results = []
    for level in (int(x) for x in args.levels.split(",")):
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            data = encode_png(big, text, level)
            times.append(time.perf_counter() - t0)
        results.append({"level": level, "seconds_min": min(times), "bytes": len(data)})
    report = {
        "image": args.image.name,
        "size": list(big.size),
        "megapixels": big.width * big.height / 1e6,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
        },
        "pillow": PIL.__version__,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    sys.stdout.write(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
