"""Hostile image files for the metadata reader's bad-input tests and bench/metadata_bench.py: pixel and
gzip bombs, raw PNG chunks, random byte-level mutants of a good file."""

from __future__ import annotations

import gzip
import random
import struct
import zlib
from pathlib import Path

import nai_writer
import numpy as np
from PIL import Image


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def pixel_bomb_png(path: Path, width: int, height: int) -> Path:
    """A PNG whose IHDR claims a huge size; the pixel data is a few bytes (a pixel bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    chunks = png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)
    return path


def stealth_png(folder: Path, payload: bytes, size: tuple[int, int] = (64, 64), **kw: object) -> Path:
    """folder/stealth.png: noise pixels with `payload` in the alpha plane behind NovelAI's header."""
    path = Path(folder) / "stealth.png"
    w, h = size
    pixels = nai_writer.noise_pixels(size)
    pixels[..., 3] = nai_writer.stealth_alpha(h, w, payload, **kw)  # type: ignore[arg-type]
    Image.fromarray(pixels, "RGBA").save(path)
    return path


def gzip_bomb_stealth_png(folder: Path) -> Path:
    """A stealth payload of ~64 KiB gzip that inflates to 64 MiB, in the smallest square that holds it."""
    bomb = gzip.compress(b"\x00" * (64 << 20), compresslevel=9)
    side = int(np.ceil(np.sqrt(len(bomb) * 8 + 200)))
    return stealth_png(folder, bomb, (side, side))


def mutants(data: bytes, seed: int, count: int) -> list[bytes]:
    """`count` copies of `data`, each with 1-8 random bytes overwritten, one in five also cut short."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        mutant = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            mutant[rng.randrange(len(mutant))] = rng.randrange(256)
        out.append(bytes(mutant[: rng.randrange(len(mutant))] if rng.random() < 0.2 else mutant))
    return out
