"""Our own writer of NovelAI-format files, so tests run anywhere (no shared fixtures needed).

Writes what NovelAI writes (docs/design/nai-metadata.md): PNG text chunks (Title, Description, Software,
Source, Generation time, Comment JSON), the `stealth_pngcomp` alpha payload (gzip JSON of the same
fields minus Title), V4.5 character captions, and the lossless-WebP EXIF layout. Deliberately written
independently of naiup's reader (bit loop per pixel here, vectorised reads there).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin

SOURCE = "NovelAI Diffusion V4.5 4BDE2A90"


def nai_comment(
    prompt: str = "1girl, solo",
    *,
    seed: int = 1234,
    width: int = 64,
    height: int = 64,
    characters: Sequence[tuple[str, str, tuple[float, float]]] = (),
    use_coords: bool = True,
    **extra: Any,
) -> dict[str, Any]:
    """A Comment object; `characters` = (prompt, negative, (x, y)) adds V4.5 v4_prompt captions, placed
    at those positions when `use_coords` (NovelAI stores centres either way)."""
    comment: dict[str, Any] = {
        "prompt": prompt,
        "steps": 28,
        "height": height,
        "width": width,
        "scale": 5.0,
        "seed": seed,
        "sampler": "k_euler_ancestral",
        "noise_schedule": "karras",
        "uc": "lowres, bad anatomy",
        "request_type": "PromptGenerateRequest",
    }
    comment.update(extra)
    if characters:
        comment["v4_prompt"] = {
            "caption": {
                "base_caption": comment["prompt"],
                "char_captions": [
                    {"char_caption": p, "centers": [{"x": c[0], "y": c[1]}]} for p, _, c in characters
                ],
            },
            "use_coords": use_coords,
            "use_order": True,
        }
        comment["v4_negative_prompt"] = {
            "caption": {
                "base_caption": comment["uc"],
                "char_captions": [
                    {"char_caption": n, "centers": [{"x": c[0], "y": c[1]}]} for _, n, c in characters
                ],
            },
            "legacy_uc": False,
        }
    return comment


def nai_fields(comment: dict[str, Any], *, title: bool = True) -> dict[str, str]:
    """The text fields NovelAI writes, Comment serialised like Python's json.dumps defaults."""
    fields = {
        "Description": comment.get("prompt", ""),
        "Software": "NovelAI",
        "Source": SOURCE,
        "Generation time": "3.5",
        "Comment": json.dumps(comment),
    }
    return {"Title": "NovelAI generated image", **fields} if title else fields


def stealth_alpha(
    height: int, width: int, payload: bytes, signature: bytes = b"stealth_pngcomp"
) -> np.ndarray:
    """Alpha plane carrying signature + 32-bit bit length + payload, NovelAI style (254|bit, else 255)."""
    stream = signature + (len(payload) * 8).to_bytes(4, "big") + payload
    alpha = np.full((height, width), 255, dtype=np.uint8)
    index = 0
    for byte in stream:
        for shift in range(7, -1, -1):  # MSB first
            x, y = divmod(index, height)  # column-major: down a column, then the next
            if x >= width:
                raise ValueError(f"{len(stream)} bytes do not fit {width}x{height}")
            alpha[y, x] = 0xFE | ((byte >> shift) & 1)
            index += 1
    return alpha


def stealth_payload(fields: dict[str, str]) -> bytes:
    return gzip.compress(json.dumps({k: v for k, v in fields.items() if k != "Title"}).encode("utf-8"))


def noise_pixels(size: tuple[int, int], pixel_seed: int = 0) -> np.ndarray:
    w, h = size
    pixels = np.random.default_rng(pixel_seed).integers(0, 256, (h, w, 4), dtype=np.uint8)
    pixels[..., 3] = 255
    return pixels


def write_nai_png(
    path: Path,
    size: tuple[int, int] = (64, 64),
    *,
    prompt: str = "1girl, solo",
    seed: int = 1234,
    rgba: bool = True,
    pixel_seed: int = 0,
    text: bool = True,
    stealth: bool = False,
    characters: Sequence[tuple[str, str, tuple[float, float]]] = (),
    **extra: Any,
) -> Path:
    """A NovelAI-style PNG: noise pixels plus NAI text chunks (`text`) and/or the alpha payload."""
    w, h = size
    pixels = noise_pixels(size, pixel_seed)
    comment = nai_comment(prompt, seed=seed, width=w, height=h, characters=characters, **extra)
    fields = nai_fields(comment)
    if stealth:
        pixels[..., 3] = stealth_alpha(h, w, stealth_payload(fields))
    info = PngImagePlugin.PngInfo()
    if text:
        for key, value in fields.items():
            info.add_text(key, value)
    if rgba:
        Image.fromarray(pixels, "RGBA").save(path, pnginfo=info)
    else:
        Image.fromarray(np.ascontiguousarray(pixels[..., :3]), "RGB").save(path, pnginfo=info)
    return path


def write_nai_webp(
    path: Path, size: tuple[int, int] = (64, 64), *, prompt: str = "1girl, solo", **kw: Any
) -> Path:
    """NovelAI's lossless WebP download: EXIF DocumentName/ImageDescription/Software + UserComment wrapper."""
    w, h = size
    comment = nai_comment(prompt, width=w, height=h, **kw)
    fields = nai_fields(comment)
    exif = Image.Exif()
    exif[0x010D] = fields["Title"]
    exif[0x010E] = "\x00\x00\x00\x00" + prompt
    exif[0x0131] = SOURCE  # NovelAI puts the Source string into Software
    wrapper = json.dumps(fields, separators=(",", ":"))
    exif.get_ifd(0x8769)[0x9286] = b"ASCII\x00\x00\x00" + wrapper.encode("utf-8")
    pixels = noise_pixels(size)
    pixels[..., 3] = stealth_alpha(h, w, stealth_payload(fields))
    Image.fromarray(pixels, "RGBA").save(path, "WEBP", lossless=True, exif=exif)
    return path
