"""Time `read_metadata` end to end on a 1024x1024 stealth PNG (target: <= 50 ms on the dev box), and
how fast hostile files are refused (target: each well under 1 s: a bad file in the watched folder
must not stall the daemon).

Run from the repo root:  PYTHONPATH=. python bench/metadata_bench.py [--runs 20] [--out bench/out]
Measures a synthetic NovelAI-style file (noise pixels: a worst case for PNG decoding) and, when the
shared fixtures are present, a real 1024² NovelAI V4.5 PNG; then pixel bombs, a gzip bomb in the
stealth payload and 60 random byte-level mutants of a NovelAI PNG (tests/hostile_files.py, the files
tests/engine/test_metadata_bad_input.py checks the errors of). Writes JSON with the machine and
library versions; never asserts (numbers depend on the machine and its load).
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

import hostile_files  # noqa: E402
import nai_writer  # noqa: E402

from naiup.errors import InputError  # noqa: E402
from naiup.metadata.read import read_image, read_metadata  # noqa: E402

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


def _refusal_ms(path: Path) -> float:
    """Milliseconds to read a hostile file's pixels and metadata, as a job does (errors expected)."""
    start = time.perf_counter()
    try:
        read_image(path)
        read_metadata(path)
    except InputError:
        pass
    return (time.perf_counter() - start) * 1000


def _hostile(folder: Path) -> list[dict[str, object]]:
    bombs = {
        "pixel bomb 120 MP header": hostile_files.pixel_bomb_png(folder / "bomb120.png", 12_000, 10_000),
        "pixel bomb 10 GP header": hostile_files.pixel_bomb_png(folder / "bomb10g.png", 100_000, 100_000),
        "gzip bomb in stealth payload": hostile_files.gzip_bomb_stealth_png(folder),
    }
    rows: list[dict[str, object]] = [
        {"file": k, "max_ms": round(_refusal_ms(p), 2)} for k, p in bombs.items()
    ]
    good = nai_writer.write_nai_png(folder / "nai.png", stealth=True).read_bytes()
    mutant = folder / "mutant.png"
    samples = []
    for data in hostile_files.mutants(good, seed=0, count=60):
        mutant.write_bytes(data)
        samples.append(_refusal_ms(mutant))
    rows.append(
        {
            "file": "60 byte-level mutants of a NovelAI PNG",
            "max_ms": round(max(samples), 2),
            "median_ms": round(statistics.median(samples), 2),
        }
    )
    return rows


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
        hostile = _hostile(Path(tmp))
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
        "hostile_target_ms": 1000,
        "hostile": hostile,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / "metadata_bench.json"
    out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for r in results:
        sig = "with signature check" if r["check_signature"] else "no signature check"
        decode = r["pil_decode_only_median_ms"]
        timing = f"median {r['median_ms']} ms, min {r['min_ms']} ms (PIL decode alone {decode} ms)"
        print(f"{r['file']} ({sig}): {timing}, signature {r['signature']}")
    for h in hostile:
        print(f"{h['file']}: refused in {h['max_ms']} ms at most")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
