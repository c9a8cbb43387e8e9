"""The typed result of reading an image's generation metadata (re-exported by metadata.py)."""

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
    TEXT = "text"  # PNG tEXt/iTXt/zTXt chunks
    EXIF = "exif"  # EXIF/XMP of JPEG or WebP
    STEALTH = "stealth"  # alpha-channel LSB payload
    NONE = "none"


class Signature(StrEnum):
    VALID = "valid"
    INVALID = "invalid"
    ABSENT = "absent"
    UNCHECKED = "unchecked"  # a signed_hash is there but the caller skipped the check


@dataclass(frozen=True, slots=True)
class CharacterPrompt:
    prompt: str
    negative_prompt: str = ""
    center: tuple[float, float] | None = None  # fractions of width/height, as NovelAI stores them


@dataclass(frozen=True, slots=True)
class ImageMetadata:
    format: MetadataFormat = MetadataFormat.NONE
    source: MetadataSource = MetadataSource.NONE
    prompt: str = ""  # raw generator syntax (NAI braces kept); V4+: the base caption
    negative_prompt: str = ""
    characters: tuple[CharacterPrompt, ...] = ()
    seed: int | None = None
    steps: int | None = None
    scale: float | None = None
    sampler: str | None = None
    noise_schedule: str | None = None
    width: int | None = None  # as generated (Comment); the pixel size when the file does not say
    height: int | None = None
    model: str | None = None  # NovelAI `Source`, e.g. "NovelAI Diffusion V4.5 4BDE2A90"
    generation_time: float | None = None
    signature: Signature = Signature.ABSENT
    copies_disagree: bool = False  # file copy and stealth copy both parse and differ
    text_chunks: dict[str, str] = field(default_factory=dict)
    # NovelAI's fields when they came from the alpha bits or EXIF, not text chunks: outputs are RGB
    # PNGs, so job.py writes these as text chunks or the generation data would be lost.
    carry_fields: dict[str, str] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)  # NAI: the Comment object; others: their texts
    # Things that were wrong but did not stop reading (bad stealth payload, unparsable Comment...).
    problems: tuple[str, ...] = ()

    @property
    def is_novelai(self) -> bool:
        return self.format is MetadataFormat.NOVELAI
