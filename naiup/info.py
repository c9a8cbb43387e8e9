"""`naiup info`: one record per image, as a JSON-ready dict or a short human summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from naiup.engine.metadata import ImageMetadata, MetadataFormat, read_metadata
from naiup.engine.prompts import nai_to_a1111
from naiup.errors import NaiupError

_HUMAN_PROMPT_CHARS = 120  # the JSON form has the full text


def _converted(meta: ImageMetadata, text: str) -> str:
    # Only NovelAI syntax needs converting; A1111 infotext already is A1111 syntax.
    return nai_to_a1111(text) if meta.is_novelai else text


def describe(path: Path) -> dict[str, Any]:
    """Everything `naiup info --json` prints for one file; `error` is set when it cannot be read."""
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
        error=None,
    )
    return record


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _HUMAN_PROMPT_CHARS else text[: _HUMAN_PROMPT_CHARS - 1] + "…"


def format_human(record: dict[str, Any]) -> str:
    """A few lines per file: what wrote it, the settings, the prompts (shortened)."""
    lines = [record["path"]]
    if record.get("error"):
        return "\n".join([*lines, f"  error: {record['error']}"])
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
            lines.append(f"  character {i}{where}: {_short(char['prompt'])}")
    if record.get("copies_disagree"):
        lines.append("  note: the file copy and the stealth copy of the metadata differ")
    lines.extend(f"  note: {problem}" for problem in record.get("problems", []))
    return "\n".join(lines)
