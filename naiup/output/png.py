"""A parallel RGB PNG encoder, because a 16 MP output through Pillow costs 0.65 s on one core.

encode_rgb_png(pixels, text, level) -> bytes
is_png_keyword(key) -> bool

Every row gets the Up filter (a numpy subtraction; on refined anime images it compresses as well as
Pillow's adaptive choice at level 1 and costs nothing), and the filtered rows are deflated in bands
on a thread pool: zlib releases the GIL, so the bands really run side by side. Each band is a raw
deflate stream ended on a byte boundary (sync flush), which is how pigz joins parallel blocks into one
valid zlib stream; the Adler-32 of the whole filtered image closes it.

The band size is fixed in bytes, never derived from the number of cores, so the same pixels give
the same file on every machine. Each band is one IDAT chunk; readers concatenate them.
"""

from __future__ import annotations

import os
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_UP_FILTER = 2
# ~2 MiB of filtered rows per band: large enough that the window reset at each band costs < 0.1 %
# of the size (measured on a 16 MP upscale), small enough to keep 16 cores busy.
_BAND_BYTES = 2 * 1024 * 1024
_MAX_THREADS = 16


def encode_rgb_png(pixels: np.ndarray, text: dict[str, str], level: int) -> bytes:
    """PNG bytes for an (H, W, 3) uint8 array, with `text` as tEXt (iTXt when not Latin-1) before IDAT."""
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 array, got {pixels.dtype} {pixels.shape}")
    if not 0 <= level <= 9:
        raise ValueError(f"zlib level must be in 0..9, got {level}")
    height, width = pixels.shape[:2]
    if height == 0 or width == 0:
        raise ValueError("cannot encode an empty image")
    filtered = _up_filtered(pixels)
    parts = [_SIGNATURE, _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))]
    parts += [_text_chunk(key, value) for key, value in text.items()]
    parts += _idat_chunks(filtered, level)
    parts.append(_chunk(b"IEND", b""))
    return b"".join(parts)


def _up_filtered(pixels: np.ndarray) -> np.ndarray:
    height, width = pixels.shape[:2]
    rows = np.ascontiguousarray(pixels).reshape(height, width * 3)
    out = np.empty((height, 1 + width * 3), np.uint8)
    out[:, 0] = _UP_FILTER
    out[0, 1:] = rows[0]  # the row above the first is zeros
    np.subtract(rows[1:], rows[:-1], out=out[1:, 1:])  # uint8 wraps modulo 256, as PNG wants
    return out


def _idat_chunks(filtered: np.ndarray, level: int) -> list[bytes]:
    rows_per_band = max(1, _BAND_BYTES // filtered.shape[1])
    bands = [filtered[i : i + rows_per_band] for i in range(0, filtered.shape[0], rows_per_band)]
    last = len(bands) - 1
    threads = min(len(bands), os.cpu_count() or 1, _MAX_THREADS)

    def deflate(index: int) -> bytes:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -15)  # raw deflate: the header is ours
        data = compressor.compress(bands[index]) + compressor.flush(
            zlib.Z_FINISH if index == last else zlib.Z_SYNC_FLUSH
        )
        return data

    if threads > 1:
        with ThreadPoolExecutor(threads, thread_name_prefix="png-deflate") as pool:
            deflated = list(pool.map(deflate, range(len(bands))))
    else:
        deflated = [deflate(i) for i in range(len(bands))]
    adler = 1
    for band in bands:
        adler = zlib.adler32(band, adler)
    deflated[0] = _zlib_header(level) + deflated[0]
    deflated[last] += struct.pack(">I", adler)
    return [_chunk(b"IDAT", data) for data in deflated]


def _zlib_header(level: int) -> bytes:
    # CMF 0x78: deflate, 32 KiB window. FLEVEL is informative only; FCHECK makes the pair divisible by 31.
    flevel = 0 if level < 2 else 1 if level < 6 else 2 if level == 6 else 3
    flg = flevel << 6
    flg += 31 - ((0x78 << 8) + flg) % 31
    return bytes([0x78, flg])


def is_png_keyword(key: str) -> bool:
    """PNG text keywords are 1-79 Latin-1 characters without NUL (PNG spec 11.3.4.2)."""
    try:
        return 1 <= len(key.encode("latin-1")) <= 79 and "\0" not in key
    except UnicodeEncodeError:
        return False


def _text_chunk(key: str, value: str) -> bytes:
    if not is_png_keyword(key):
        raise ValueError(f"not a PNG text keyword (1-79 Latin-1 characters, no NUL): {key!r}")
    keyword = key.encode("latin-1")
    try:
        return _chunk(b"tEXt", keyword + b"\0" + value.encode("latin-1"))
    except UnicodeEncodeError:
        # iTXt: keyword, no compression, empty language tag and translated keyword, UTF-8 text.
        return _chunk(b"iTXt", keyword + b"\0\0\0\0\0" + value.encode("utf-8"))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))
