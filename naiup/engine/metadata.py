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
from typing import Any


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
