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

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from naiup.errors import InputError, MetadataError


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


# PLACEHOLDER (daemon branch): minimal reader until the metadata issue lands; same signatures.
# Classifies a "Software: NovelAI" text chunk as NOVELAI, nothing else.
def read_metadata(path: Path) -> ImageMetadata:
    return read_image(path)[1]


def read_image(path: Path) -> tuple[Image.Image, ImageMetadata]:
    try:
        with Image.open(path) as im:
            im.load()  # full decode: verify() passes truncated files
            chunks = {k: v for k, v in im.info.items() if isinstance(k, str) and isinstance(v, str)}
            image = im.copy()
    except Image.DecompressionBombError as exc:
        raise MetadataError(path, f"pixel bomb refused: {exc}") from exc
    except ValueError as exc:
        if "too large" in str(exc).lower():  # PIL's guard on zTXt/iTXt inflating past MAX_TEXT_CHUNK
            raise MetadataError(path, "gzip bomb refused: a text chunk decompresses past the limit") from exc
        raise InputError(path, f"unreadable image: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise InputError(path, "not an image PIL can decode") from exc
    except OSError as exc:
        raise InputError(path, f"truncated or unreadable image: {exc}") from exc
    fmt = MetadataFormat.NOVELAI if chunks.get("Software") == "NovelAI" else MetadataFormat.OTHER
    return image, ImageMetadata(format=fmt, text_chunks=chunks)
