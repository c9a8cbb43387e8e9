"""Stealth metadata in the alpha channel's least significant bits (docs/design/nai-metadata.md).

Bits are read column-major (down the first column, then the next), MSB first: a 15-byte signature,
a 32-bit big-endian payload length in *bits*, then the payload (gzip for `*comp`, raw UTF-8 for
`*info`). Only the pixels that hold those bits are touched, so a 1024² image costs a few columns.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

SIGNATURES = (b"stealth_pngcomp", b"stealth_pnginfo")
HEADER_BITS = 15 * 8 + 32
MAX_PAYLOAD_BYTES = 1 << 20  # decompressed cap: real NAI payloads are < 2 KiB; more is a bomb


@dataclass(frozen=True, slots=True)
class StealthPayload:
    """What the alpha plane holds: `text` when decoding worked, else `problem` says why not."""

    signature: str
    text: str | None = None
    problem: str | None = None


def _column_major_bits(alpha: np.ndarray, start: int, count: int) -> np.ndarray:
    """LSBs of pixels start..start+count in column-major order, reading only the columns needed."""
    height = alpha.shape[0]
    first_col, last_col = start // height, (start + count - 1) // height + 1
    bits = (alpha[:, first_col:last_col].T.ravel() & 1).astype(np.uint8)
    offset = start - first_col * height
    return bits[offset : offset + count]


def _read_bytes(alpha: np.ndarray, start_bit: int, nbytes: int) -> bytes:
    return np.packbits(_column_major_bits(alpha, start_bit, nbytes * 8)).tobytes()


def _gunzip_capped(data: bytes) -> bytes:
    decomp = zlib.decompressobj(wbits=31)  # 31: gzip container only
    out = decomp.decompress(data, MAX_PAYLOAD_BYTES + 1)
    if len(out) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"stealth payload inflates past {MAX_PAYLOAD_BYTES} bytes (gzip bomb)")
    if not decomp.eof:
        raise ValueError("stealth gzip payload is truncated")
    return out


def decode_stealth(alpha: np.ndarray) -> StealthPayload | None:
    """Decode the payload from a uint8 alpha plane (H, W); None when there is no signature."""
    height, width = alpha.shape
    capacity = height * width
    if capacity < HEADER_BITS:
        return None
    sig = _read_bytes(alpha, 0, 15)
    if sig not in SIGNATURES:
        return None
    name = sig.decode("ascii")
    nbits = int.from_bytes(_read_bytes(alpha, 120, 4), "big")
    if nbits == 0 or nbits > capacity - HEADER_BITS:
        return StealthPayload(name, problem=f"stealth length field {nbits} bits does not fit the image")
    nbytes = nbits // 8  # a trailing partial byte carries nothing
    if nbytes > MAX_PAYLOAD_BYTES:
        return StealthPayload(name, problem=f"stealth payload of {nbytes} bytes is over the cap")
    payload = _read_bytes(alpha, HEADER_BITS, nbytes)
    try:
        raw = _gunzip_capped(payload) if name.endswith("comp") else payload
    except (ValueError, zlib.error) as exc:
        return StealthPayload(name, problem=f"stealth payload: {exc}")
    try:
        return StealthPayload(name, text=raw.decode("utf-8"))
    except UnicodeDecodeError:
        return StealthPayload(name, problem="stealth payload is not valid UTF-8")
