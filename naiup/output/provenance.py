"""The output PNG: pixels, the source's text chunks, our `naiup` provenance and an A1111 `parameters`.

encode_png(image, text, level) -> bytes
provenance_text(...) -> str            # JSON for the `naiup` chunk
a1111_parameters(parameters, size, source_prompts) -> str
has_provenance(path) -> bool           # reads chunk headers only, never decodes pixels
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from naiup.output.png import encode_rgb_png

PROVENANCE_KEY = "naiup"
PARAMETERS_KEY = "parameters"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Text chunks are tiny; a provenance chunk later than this many bytes of chunks is not ours.
_SCAN_LIMIT = 64 * 1024 * 1024


def encode_png(image: Image.Image, text: dict[str, str], level: int) -> bytes:
    """RGB PNG with `text` as tEXt (iTXt when not Latin-1); no alpha, so no stealth bits survive."""
    if image.mode != "RGB":
        raise ValueError(f"outputs are RGB, got {image.mode}")
    return encode_rgb_png(np.asarray(image), text, level)


def provenance_text(
    *,
    version: str,
    preset: dict[str, Any],
    seed: int | None,
    source_sha256: str,
    source_name: str,
    model_id: str,
    parameters: dict[str, Any],
) -> str:
    # No timings here: the same input and seed must give byte-identical files (timings go to the log/ledger).
    record = {
        "software": "naiup",
        "version": version,
        "preset": preset,
        "seed": seed,
        "source_sha256": source_sha256,
        "source_name": source_name,
        "model_id": model_id,
        "parameters": parameters,
    }
    return json.dumps(record, ensure_ascii=False, sort_keys=True, default=str)


def a1111_parameters(
    parameters: dict[str, Any], size: tuple[int, int], source_prompts: tuple[str, str]
) -> str:
    """A1111 infotext, so web UIs and metadata viewers show how the output was made. A refine shows
    the prompts it used; an upscale used none, so it shows `source_prompts`, the source image's own
    (prompt, negative) in A1111 syntax: viewers (and "send to img2img") still see what the picture
    is, where an empty first line would say it has no prompt."""
    prompt, negative = (
        (parameters.get("prompt", ""), parameters.get("negative_prompt"))
        if parameters.get("refine")
        else source_prompts
    )
    lines = [str(prompt)]
    if negative:
        lines.append(f"Negative prompt: {negative}")
    fields: list[tuple[str, Any]] = []
    if parameters.get("refine"):
        fields += [
            ("Steps", parameters.get("steps")),
            ("Sampler", "LCM" if parameters.get("sampler") == "lcm" else parameters.get("sampler")),
            ("CFG scale", parameters.get("cfg")),
            ("Seed", parameters.get("seed")),
        ]
    fields.append(("Size", f"{size[0]}x{size[1]}"))
    if parameters.get("refine"):
        fields += [("Denoising strength", parameters.get("denoise")), ("Model", parameters.get("refiner_id"))]
    fields += [("Hires upscaler", parameters.get("upscaler")), ("Hires upscale", parameters.get("scale"))]
    if parameters.get("refine") and parameters.get("controlnet"):
        # The A1111 ControlNet extension's own infotext entry, so web UIs show the unit that was used.
        p = parameters
        unit = (
            f"Module: tile_resample, Model: {p['controlnet']}, Weight: {p.get('control_strength')}, "
            f"Guidance Start: {p.get('control_start')}, Guidance End: {p.get('control_end')}"
        )
        fields.append(("ControlNet 0", unit))
    lines.append(", ".join(f"{k}: {_a1111_value(v)}" for k, v in fields if v is not None))
    return "\n".join(lines)


def _a1111_value(value: Any) -> str:
    text = str(value)
    # A1111 quotes values that contain its separators.
    return json.dumps(text) if ("," in text or ":" in text or "\n" in text) else text


def has_provenance(path: Path) -> bool:
    """True if `path` is a PNG with a `naiup` tEXt/iTXt/zTXt chunk. Reads headers, skips pixel data."""
    try:
        with open(path, "rb") as f:
            if f.read(8) != _PNG_SIGNATURE:
                return False
            scanned = 0
            while scanned < _SCAN_LIMIT:
                header = f.read(8)
                if len(header) < 8:
                    return False
                length, ctype = struct.unpack(">I4s", header)
                if ctype in (b"tEXt", b"iTXt", b"zTXt"):
                    keyword = f.read(min(length, 80)).split(b"\0", 1)[0]
                    if keyword == PROVENANCE_KEY.encode():
                        return True
                    f.seek(length - min(length, 80) + 4, 1)
                elif ctype == b"IEND":
                    return False
                else:
                    f.seek(length + 4, 1)  # data + CRC, without reading the pixels
                scanned += length + 12
    except OSError:
        return False
    return False
