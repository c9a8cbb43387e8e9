"""NovelAI (and other generators') metadata reader.

CONTRACT (filled in by the foundation issue; other modules code against these names):
    read_metadata(path: Path) -> ImageMetadata          # raises InputError/MetadataError for unreadable files
    read_image(path: Path) -> tuple[PIL.Image.Image, ImageMetadata]
        fully decoded (load() done, LOAD_TRUNCATED_IMAGES off, pixel-bomb guarded), EXIF-transposed
    ImageMetadata.format: MetadataFormat (novelai | a1111 | comfyui | other | none)
    ImageMetadata.text_chunks: dict[str, str]   # original PNG text chunks, to carry into outputs
    ImageMetadata.is_novelai -> bool
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps


class MetadataFormat(StrEnum):
    NOVELAI = "novelai"
    A1111 = "a1111"
    COMFYUI = "comfyui"
    OTHER = "other"
    NONE = "none"


class MetadataSource(StrEnum):
    TEXT = "text"
    EXIF = "exif"
    STEALTH = "stealth"
    NONE = "none"


class Signature(StrEnum):
    VALID = "valid"
    INVALID = "invalid"
    ABSENT = "absent"


@dataclass(frozen=True, slots=True)
class CharacterPrompt:
    prompt: str
    negative_prompt: str = ""
    center: tuple[float, float] | None = None


@dataclass(frozen=True, slots=True)
class ImageMetadata:
    format: MetadataFormat = MetadataFormat.NONE
    source: MetadataSource = MetadataSource.NONE
    prompt: str = ""
    negative_prompt: str = ""
    characters: tuple[CharacterPrompt, ...] = ()
    seed: int | None = None
    steps: int | None = None
    scale: float | None = None
    sampler: str | None = None
    noise_schedule: str | None = None
    width: int | None = None
    height: int | None = None
    model: str | None = None
    generation_time: float | None = None
    signature: Signature = Signature.ABSENT
    copies_disagree: bool = False
    text_chunks: dict[str, str] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def is_novelai(self) -> bool:
        return self.format is MetadataFormat.NOVELAI


# PLACEHOLDER read_image: a minimal stand-in so the job path runs in this branch; the foundation
# issue's full reader (stealth alpha, EXIF, signatures, bomb guards) replaces it at merge.
def read_image(path: Path) -> tuple[Image.Image, ImageMetadata]:  # PLACEHOLDER read_image
    from naiup.errors import InputError

    try:
        with Image.open(path) as im:
            im.load()
            chunks = {k: v for k, v in getattr(im, "text", {}).items() if isinstance(v, str)}
            image = ImageOps.exif_transpose(im)
    except FileNotFoundError as exc:
        raise InputError(path, "no such file") from exc
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(path, f"cannot decode image ({exc})") from exc
    meta = ImageMetadata(text_chunks=chunks)
    try:
        comment = json.loads(chunks.get("Comment", ""))
    except ValueError:
        comment = None
    if chunks.get("Software") == "NovelAI" and isinstance(comment, dict):
        chars = comment.get("v4_prompt", {}).get("caption", {}).get("char_captions", []) or []
        seed = comment.get("seed")
        meta = ImageMetadata(
            format=MetadataFormat.NOVELAI,
            source=MetadataSource.TEXT,
            prompt=str(comment.get("prompt") or chunks.get("Description", "")),
            negative_prompt=str(comment.get("uc") or ""),
            characters=tuple(CharacterPrompt(str(c.get("char_caption", ""))) for c in chars),
            seed=seed if isinstance(seed, int) else None,
            text_chunks=chunks,
        )
    return image, meta
