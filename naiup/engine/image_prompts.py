"""The refine's prompts, from the preset and the image's metadata: one prompt for the whole image, or a
background prompt plus one region per positioned NovelAI character. No torch here: `naiup info` uses
it to show what a refine will do.

    build_prompts(preset, meta) -> (prompt, negative)        the single-prompt path
    plan_regions(preset, meta) -> RegionPlan                 the regional path, or why there is none
    region_box(center, size) -> (x0, y0, x1, y1)             where a region has weight, in fractions
    drop_tags(nai_prompt, tags) -> (text, dropped)           a NovelAI prompt without those tags

Regions: NovelAI V4/V4.5 stores a caption per character and, when `use_coords` is true, where the
character stands (a centre on a 5x5 grid of 0.1, 0.3, ..., 0.9). Each such character becomes a region
whose prompt is the preset prompt + the image's base caption + that character's caption, and whose
negative is the preset negative + the image's negative + that character's own negative (NovelAI's
per-character `uc`): a character's negative is about that character ("bad hands" for one, "glasses"
for another), so it belongs where the character is, like its caption. The background prompt is the
preset prompt + the base caption alone, minus `preset.background_drop_tags` (tags that ask for a
number of people: in a tile of sky they make the model draw one).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from naiup.config import Preset
from naiup.metadata.nai_syntax import image_prompts, image_text, join_prompts
from naiup.metadata.types import ImageMetadata

__all__ = ["Region", "RegionPlan", "build_prompts", "drop_tags", "plan_regions", "region_box"]


@dataclass(frozen=True, slots=True)
class Region:
    """One character's region: prompts in A1111 syntax, centre and size in fractions of the image."""

    prompt: str
    negative_prompt: str
    center: tuple[float, float]  # (x, y): fractions of the width and the height, as NovelAI stores them
    size: float  # the region spans this fraction of the width and of the height, centred on `center`


@dataclass(frozen=True, slots=True)
class RegionPlan:
    """`regions` empty: the single-prompt path (build_prompts), for the reason in `reason`."""

    prompt: str  # the background's (with regions) or the whole image's prompt
    negative_prompt: str
    regions: tuple[Region, ...] = ()
    dropped: tuple[str, ...] = ()  # tags taken out of the background prompt, as written in the image
    reason: str = ""  # why there are no regions ("" when there are)


def build_prompts(preset: Preset, meta: ImageMetadata) -> tuple[str, str]:
    """(prompt, negative): the preset's quality tags, plus the image's own prompt when asked.

    The negative prompt only matters with CFG > 1 (at CFG 1 the unconditional pass is skipped), so
    it is empty otherwise and the provenance does not claim a negative that had no effect.
    """
    parts = [preset.prompt]
    negatives = [preset.negative_prompt]
    if preset.use_image_prompt:
        own, own_negative = image_prompts(meta)
        parts.append(own)
        negatives.append(own_negative)
    return join_prompts(parts), (join_prompts(negatives) if preset.cfg > 1.0 else "")


def region_box(center: tuple[float, float], size: float) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) in fractions of the image, clipped to it: where the region's mask is above 0."""
    half = size / 2
    x, y = center
    return (max(0.0, x - half), max(0.0, y - half), min(1.0, x + half), min(1.0, y + half))


def _uses_coords(meta: ImageMetadata) -> bool:
    # NovelAI stores centres for every character (0.5, 0.5 by default) but only places characters
    # there when the user turned positions on; otherwise the model chose where they stand.
    v4 = meta.raw.get("v4_prompt")
    return isinstance(v4, dict) and v4.get("use_coords") is True


def _no_regions_reason(preset: Preset, meta: ImageMetadata) -> str:
    if not meta.characters:
        return "the image has no character prompts"
    if not _uses_coords(meta):
        return "NovelAI did not place the characters (use_coords is not true)"
    for i, char in enumerate(meta.characters, 1):
        if char.center is None:
            return f"character {i} has no position"
        if not all(0.0 <= v <= 1.0 for v in char.center):
            return f"character {i}'s position {char.center} is outside the image"
    if not preset.refine:
        return "the preset only upscales"
    if preset.regions == "off":
        return 'the preset has regions = "off"'
    if not preset.use_image_prompt:
        return "the preset has use_image_prompt = false: it refines with its own prompt only"
    return ""


def plan_regions(preset: Preset, meta: ImageMetadata) -> RegionPlan:
    """The prompts a refine of this image runs with this preset: regions when the image has positioned
    characters and the preset uses the image's prompt with `regions = "auto"`; otherwise exactly
    build_prompts' single prompt."""
    reason = _no_regions_reason(preset, meta)
    if reason:
        return RegionPlan(*build_prompts(preset, meta), reason=reason)
    cfg = preset.cfg > 1.0  # at CFG 1 no negative has an effect (see build_prompts)
    base, dropped = drop_tags(meta.prompt, preset.background_drop_tags)
    negative = [preset.negative_prompt, image_text(meta.negative_prompt)]
    regions = tuple(
        Region(
            prompt=join_prompts([preset.prompt, image_text(meta.prompt), image_text(c.prompt)]),
            negative_prompt=join_prompts([*negative, image_text(c.negative_prompt)]) if cfg else "",
            center=c.center,  # type: ignore[arg-type]  # checked by _no_regions_reason
            size=preset.region_size,
        )
        for c in meta.characters
    )
    return RegionPlan(
        prompt=join_prompts([preset.prompt, image_text(base)]),
        negative_prompt=join_prompts(negative) if cfg else "",
        regions=regions,
        dropped=dropped,
    )


# A comma-separated NovelAI segment: weighting syntax before and after the tag itself.
_SEGMENT = re.compile(
    r"(?P<pre>(?:\s|[{}\[\]]|(?<![\w.])-?\d+(?:\.\d+)?::|::)*)(?P<tag>.*?)(?P<post>(?:\s|[{}\[\]]|::)*)",
    re.S,
)


def _tag_key(tag: str) -> str:
    return " ".join(tag.replace("_", " ").lower().split())


def drop_tags(nai_prompt: str, tags: Iterable[str]) -> tuple[str, tuple[str, ...]]:
    """The prompt without the comma-separated tags named in `tags` (case, `_` and spacing ignored), and
    the tags dropped as written. Weighting around a dropped tag stays (`{{2girls}}, x` -> `{{}}, x`), so
    the weights of everything else are what they were; NovelAI syntax in, NovelAI syntax out."""
    wanted = {_tag_key(t) for t in tags}
    kept: list[str] = []
    dropped: list[str] = []
    for segment in nai_prompt.split(","):
        m = _SEGMENT.fullmatch(segment)
        assert m is not None  # every part of the pattern may be empty
        if not wanted or _tag_key(m["tag"]) not in wanted or not m["tag"].strip():
            kept.append(segment)
            continue
        dropped.append(m["tag"].strip())
        structure = "".join((m["pre"] + m["post"]).split())
        if structure:
            kept.append(structure)
    return ",".join(kept).strip().strip(",").strip(), tuple(dropped)
