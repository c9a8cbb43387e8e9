"""`naiup info`: one record per image, as a JSON-ready dict or a short human summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from naiup.config import Preset
from naiup.engine.image_prompts import plan_regions, region_box
from naiup.errors import NaiupError
from naiup.metadata.nai_syntax import nai_to_a1111
from naiup.metadata.read import ImageMetadata, MetadataFormat, read_metadata
from naiup.output.provenance import PROVENANCE_KEY

_HUMAN_PROMPT_CHARS = 120  # the JSON form has the full text


def _converted(meta: ImageMetadata, text: str) -> str:
    # Only NovelAI syntax needs converting; A1111 infotext already is A1111 syntax.
    return nai_to_a1111(text) if meta.is_novelai else text


def describe(path: Path, preset: Preset | None = None) -> dict[str, Any]:
    """Everything `naiup info --json` prints for one file; `error` is set when it cannot be read.

    With a `preset`, also what a refine with it does with the image's characters: `regions`, and a
    `region` per character (None when they are not used as regions; `regions.reason` says why)."""
    record: dict[str, Any] = {"path": str(path)}
    try:
        meta = read_metadata(path)
    except NaiupError as exc:
        return {**record, "format": None, "source": None, "error": str(exc)}
    record.update(
        format=meta.format.value,
        source=meta.source.value,
        prompt=meta.prompt,
        negative_prompt=meta.negative_prompt,
        prompt_a1111=_converted(meta, meta.prompt),
        negative_prompt_a1111=_converted(meta, meta.negative_prompt),
        characters=[
            {
                "prompt": c.prompt,
                "negative_prompt": c.negative_prompt,
                "center": list(c.center) if c.center else None,
                "prompt_a1111": _converted(meta, c.prompt),
                "negative_prompt_a1111": _converted(meta, c.negative_prompt),
            }
            for c in meta.characters
        ],
        seed=meta.seed,
        steps=meta.steps,
        scale=meta.scale,
        sampler=meta.sampler,
        noise_schedule=meta.noise_schedule,
        width=meta.width,
        height=meta.height,
        model=meta.model,
        generation_time=meta.generation_time,
        signature=meta.signature.value,
        copies_disagree=meta.copies_disagree,
        problems=list(meta.problems),
        naiup_output=_naiup_output(meta),
        error=None,
    )
    if preset is not None:
        _add_regions(record, meta, preset)
    return record


def _add_regions(record: dict[str, Any], meta: ImageMetadata, preset: Preset) -> None:
    plan = plan_regions(preset, meta)
    record["regions"] = {
        "preset": preset.name,
        "active": bool(plan.regions),
        "reason": plan.reason or None,
        "size": preset.region_size if plan.regions else None,
        "background_prompt": plan.prompt if plan.regions else None,
        "dropped": list(plan.dropped),
    }
    regions = plan.regions or (None,) * len(record["characters"])
    for char, region in zip(record["characters"], regions, strict=True):
        char["region"] = None
        if region is not None:
            # Fractions of the image, rounded: 0.30000000000000004 says nothing more than 0.3.
            box = [round(v, 4) for v in region_box(region.center, region.size)]
            char["region"] = {"center": list(region.center), "size": region.size, "box": box}


def _naiup_output(meta: ImageMetadata) -> dict[str, Any] | None:
    """What our provenance chunk says about an output of ours (None for any other image).

    An output carries its source's metadata too, so without this it reads as the NovelAI original.
    """
    raw = meta.text_chunks.get(PROVENANCE_KEY)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if not isinstance(data, dict):
        return {"source_name": None, "preset": None, "scale": None, "refined": None, "version": None}
    preset = data.get("preset") if isinstance(data.get("preset"), dict) else {}
    return {
        "source_name": data.get("source_name"),
        "source_sha256": data.get("source_sha256"),
        "preset": preset.get("name"),
        "scale": preset.get("scale"),
        "refined": preset.get("refine"),
        "seed": data.get("seed"),
        "version": data.get("version"),
    }


def _regions_line(regions: dict[str, Any], count: int) -> str:
    head = f"  regions with preset {regions['preset']}: "
    if not regions["active"]:
        return head + f"none, one prompt for the whole image; {regions['reason']}"
    plural = "s" if count > 1 else ""
    text = f"{count} character region{plural}, each {regions['size']:g} of the image wide and high"
    if regions["dropped"]:
        text += f"; background prompt without {', '.join(regions['dropped'])}"
    return head + text


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _HUMAN_PROMPT_CHARS else text[: _HUMAN_PROMPT_CHARS - 1] + "…"


def format_human(record: dict[str, Any]) -> str:
    """A few lines per file: what wrote it, the settings, the prompts (shortened)."""
    lines = [record["path"]]
    if record.get("error"):
        return "\n".join([*lines, f"  error: {record['error']}"])
    ours = record.get("naiup_output")
    if ours is not None:
        made = f"  naiup output of {ours['source_name'] or 'an unknown source'}"
        if ours["scale"] is not None:
            made += f", {ours['scale']:g}x"
        if ours["preset"]:
            made += f" with preset {ours['preset']}" + (
                "" if ours["refined"] is not False else " (upscale only)"
            )
        if ours["version"]:
            made += f" (naiup {ours['version']})"
        lines.append(made + "; the metadata below is the source's")
    fmt = record["format"]
    if fmt == MetadataFormat.NONE.value:
        lines.append("  no generation metadata")
    else:
        head = f"  {fmt} (from {record['source']})"
        if fmt == MetadataFormat.NOVELAI.value:
            head += f", signature {record['signature']}"
            if record["model"]:
                head += f", {record['model']}"
        lines.append(head)
        settings = [f"{record['width']}x{record['height']}"] if record["width"] else []
        for key in ("seed", "steps", "scale", "sampler", "noise_schedule"):
            if record.get(key) is not None:
                settings.append(f"{key} {record[key]}")
        if settings:
            lines.append("  " + ", ".join(settings))
        if record["prompt"]:
            lines.append(f"  prompt:   {_short(record['prompt'])}")
        if record["negative_prompt"]:
            lines.append(f"  negative: {_short(record['negative_prompt'])}")
        for i, char in enumerate(record["characters"], 1):
            where = f" at {char['center'][0]:g},{char['center'][1]:g}" if char["center"] else ""
            if char.get("region"):
                x0, y0, x1, y1 = char["region"]["box"]
                where += f", region x {x0:.2f}-{x1:.2f} y {y0:.2f}-{y1:.2f}"
            lines.append(f"  character {i}{where}: {_short(char['prompt'])}")
        regions = record.get("regions")
        if regions and record["characters"]:
            lines.append(_regions_line(regions, len(record["characters"])))
    if record.get("copies_disagree"):
        lines.append("  note: the file copy and the stealth copy of the metadata differ")
    lines.extend(f"  note: {problem}" for problem in record.get("problems", []))
    return "\n".join(lines)
