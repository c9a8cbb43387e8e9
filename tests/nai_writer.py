"""Our own writer of NovelAI-format files, so tests run anywhere (no shared fixtures needed).

Writes the text chunks NovelAI writes (Title, Description, Software, Source, Generation time, Comment
JSON). The metadata issue extends it (stealth alpha payload, V4 captions, EXIF WebP).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, PngImagePlugin


def nai_comment(
    prompt: str = "1girl, solo", *, seed: int = 1234, width: int = 64, height: int = 64, **extra: Any
) -> dict[str, Any]:
    comment = {
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
    return comment


def write_nai_png(
    path: Path,
    size: tuple[int, int] = (64, 64),
    *,
    prompt: str = "1girl, solo",
    seed: int = 1234,
    rgba: bool = True,
    pixel_seed: int = 0,
    **extra: Any,
) -> Path:
    """A NovelAI-style PNG: noise pixels (alpha 255 when rgba) plus NAI text chunks."""
    w, h = size
    rng = np.random.default_rng(pixel_seed)
    pixels = rng.integers(0, 256, (h, w, 4 if rgba else 3), dtype=np.uint8)
    if rgba:
        pixels[..., 3] = 255
    info = PngImagePlugin.PngInfo()
    info.add_text("Title", "NovelAI generated image")
    info.add_text("Description", prompt)
    info.add_text("Software", "NovelAI")
    info.add_text("Source", "NovelAI Diffusion V4.5 4BDE2A90")
    info.add_text("Generation time", "3.5")
    info.add_text("Comment", json.dumps(nai_comment(prompt, seed=seed, width=w, height=h, **extra)))
    Image.fromarray(pixels, "RGBA" if rgba else "RGB").save(path, pnginfo=info)
    return path
