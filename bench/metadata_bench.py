"""Time `read_metadata` end to end on a 1024x1024 stealth PNG (target: <= 50 ms on the dev box).

Run from the repo root:  PYTHONPATH=. python bench/metadata_bench.py [--runs 20] [--out bench/out]
Measures a synthetic NovelAI-style file (noise pixels: a worst case for PNG decoding) and, when the
shared fixtures are present, a real 1024² NovelAI V4.5 PNG. Writes JSON with the machine and library
versions; never asserts (numbers depend on the machine and its load).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, PngImagePlugin

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # reuse the test-side NovelAI writer

import nai_writer  # noqa: E402

from naiup.metadata.read import read_metadata  # noqa: E402

REAL_FIXTURE = REPO.parent / "shared" / "fixtures" / "nai" / "nai45_full_3chars_1024.png"


def _synthetic(path: Path) -> Path:
    comment = nai_writer.nai_comment("1girl, {{best quality}}, " * 20, width=1024, height=1024)
    fields = nai_writer.nai_fields(comment)
    pixels = nai_writer.noise_pixels((1024, 1024))
    pixels[..., 3] = nai_writer.stealth_alpha(1024, 1024, nai_writer.stealth_payload(fields))
    info = PngImagePlugin.PngInfo()
    for key, value in fields.items():
        info.add_text(key, value)
    Image.fromarray(pixels, "RGBA").save(path, pnginfo=info)
    return path


def _decode_only_ms(path: Path, runs: int) -> float:
    """The floor: PIL decoding the PNG, which any reader of stealth bits has to pay."""
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        with Image.open(path) as image:
            image.load()
        samples.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(samples), 2)


def _time(path: Path, runs: int, check_signature: bool) -> dict[str, float | str | bool]:
    read_metadata(path)  # warm caches and imports
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        meta = read_metadata(path, check_signature=check_signature)
        samples.append((time.perf_counter() - start) * 1000)
    return {
        "file": path.name,
        "check_signature": check_signature,
        "format": meta.format.value,
        "source": meta.source.value,
        "signature": meta.signature.value,
        "bytes": path.stat().st_size,
        "median_ms": round(statistics.median(samples), 2),
        "min_ms": round(min(samples), 2),
        "max_ms": round(max(samples), 2),
        "pil_decode_only_median_ms": _decode_only_ms(path, runs),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "out")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        synthetic = _synthetic(Path(tmp) / "synthetic_stealth_1024.png")
        files = [synthetic, REAL_FIXTURE] if REAL_FIXTURE.is_file() else [synthetic]
        for path in files:
            for check in (True, False):
                results.append(_time(path, args.runs, check))
    report = {
        "bench": "metadata_read_1024_stealth_png",
        "target_ms": 50,
        "runs": args.runs,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        },
        "versions": {"python": platform.python_version(), "pillow": PIL.__version__, "numpy": np.__version__},
        "results": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "metadata_bench.json"
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for r in results:
        sig = "with signature check" if r["check_signature"] else "no signature check"
        decode = r["pil_decode_only_median_ms"]
        timing = f"median {r['median_ms']} ms, min {r['min_ms']} ms (PIL decode alone {decode} ms)"
        print(f"{r['file']} ({sig}): {timing}, signature {r['signature']}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
