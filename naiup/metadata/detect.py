"""Which generator wrote an image, and its parameters (the procedure: docs/design/nai-metadata.md).

Conservative on purpose: NovelAI needs `Software: NovelAI`, a stealth JSON payload with a Comment, or
a Comment JSON with NovelAI-only keys and no other generator's chunks. A `Comment` alone (GIMP) is
never enough, and a stealth payload that is not JSON is A1111 infotext.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from PIL import Image

from naiup.metadata.signature import verify_signature
from naiup.metadata.stealth import StealthPayload
from naiup.metadata.types import (
    CharacterPrompt,
    ImageMetadata,
    MetadataFormat,
    MetadataSource,
    Signature,
)

NAI_TEXT_KEYS = ("Title", "Description", "Software", "Source", "Generation time", "Comment")
_NAI_ONLY_KEYS = ("uc", "v4_prompt", "noise_schedule", "signed_hash")


def json_object(text: object) -> dict[str, Any] | None:
    """`text` parsed as a JSON object, else None. Also used for EXIF fields (exif.py)."""
    if isinstance(text, dict):
        return text
    if not isinstance(text, str):
        return None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # deep nesting ("[[[[...") raises RecursionError
        return None
    return value if isinstance(value, dict) else None


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    except RecursionError:  # nested past Python's limit: JSON-shaped, never infotext
        return True
    return True


def _looks_like_nai_comment(comment: dict[str, Any]) -> bool:
    if any(k in comment for k in _NAI_ONLY_KEYS):
        return True
    return all(k in comment for k in ("sampler", "steps", "scale"))


def _parse_comment(fields: Mapping[str, Any], where: str, problems: list[str]) -> dict[str, Any] | None:
    if "Comment" not in fields:
        return None
    comment = json_object(fields["Comment"])
    if comment is None:
        problems.append(f"{where} Comment is not a JSON object")
    return comment


def _number(value: object, kind: type) -> Any:
    """A JSON number (or numeric string) as `kind`; None for anything else. Ints stay exact."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    if kind is int and isinstance(value, int):
        return value
    try:
        return kind(float(value)) if kind is int else kind(value)
    except (TypeError, ValueError, OverflowError):
        return None


def _dimension(value: object) -> int | None:
    number = _number(value, int)
    return number if number is not None and 0 < number <= 1 << 20 else None


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _optional_text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _characters(comment: dict[str, Any]) -> tuple[CharacterPrompt, ...]:
    def captions(key: str) -> list[dict[str, Any]]:
        block = comment.get(key)
        caption = block.get("caption") if isinstance(block, dict) else None
        chars = caption.get("char_captions") if isinstance(caption, dict) else None
        return [c for c in chars if isinstance(c, dict)] if isinstance(chars, list) else []

    positives, negatives = captions("v4_prompt"), captions("v4_negative_prompt")
    out = []
    for i, char in enumerate(positives):
        neg = negatives[i].get("char_caption", "") if i < len(negatives) else ""
        centers = char.get("centers")
        center = None
        if isinstance(centers, list) and centers and isinstance(centers[0], dict):
            x, y = _number(centers[0].get("x"), float), _number(centers[0].get("y"), float)
            center = (x, y) if x is not None and y is not None else None
        text = char.get("char_caption", "")
        out.append(CharacterPrompt(_text(text), _text(neg), center))
    return tuple(out)


def _signature(image: Image.Image, comments: list[dict[str, Any]], check: bool) -> Signature:
    if not any("signed_hash" in c for c in comments):
        return Signature.ABSENT
    if not check:  # hashing the pixels costs ~10 ms per megapixel; the job path skips it
        return Signature.UNCHECKED
    results = []
    seen: list[dict[str, Any]] = []
    for comment in comments:
        if comment not in seen:  # identical copies: verify once
            seen.append(comment)
            results.append(verify_signature(image, comment))
    # NovelAI's own checker accepts either copy (nai_sig.py, 2026).
    if True in results:
        return Signature.VALID
    return Signature.INVALID if False in results else Signature.ABSENT


def _novelai(
    image: Image.Image,
    file_fields: Mapping[str, Any],
    file_source: MetadataSource,
    stealth: dict[str, Any] | None,
    problems: list[str],
    check_signature: bool,
) -> dict[str, Any]:
    file_comment = _parse_comment(file_fields, file_source.value, problems)
    stealth_comment = _parse_comment(stealth, "stealth", problems) if stealth else None
    if file_comment is not None or stealth is None:
        comment, fields, source = file_comment, dict(file_fields), file_source
    else:
        comment, fields, source = stealth_comment, dict(stealth), MetadataSource.STEALTH
    for other in (file_fields, stealth or {}):  # fill fields the chosen copy lacks
        for key, value in other.items():
            fields.setdefault(key, value)
    comment = comment if comment is not None else (stealth_comment or {})
    width, height = image.size
    gen_w, gen_h = _dimension(comment.get("width")), _dimension(comment.get("height"))
    if gen_w and gen_h and (gen_w, gen_h) != (width, height):
        problems.append(f"Comment says {gen_w}x{gen_h} but the image is {width}x{height} (resized copy)")
    prompt = comment.get("prompt")
    if not isinstance(prompt, str):  # 2022 files: the prompt lives only in Description
        prompt = fields.get("Description", "")
    negative = comment.get("uc", "")
    gen_time = str(fields.get("Generation time", fields.get("Generation_time", ""))).rstrip("s")
    return {
        "format": MetadataFormat.NOVELAI,
        "source": source,
        "prompt": _text(prompt),
        "negative_prompt": _text(negative),
        "characters": _characters(comment),
        "seed": _number(comment.get("seed"), int),
        "steps": _number(comment.get("steps"), int),
        "scale": _number(comment.get("scale"), float),
        "sampler": _optional_text(comment.get("sampler")),
        "noise_schedule": _optional_text(comment.get("noise_schedule")),
        "width": gen_w or width,
        "height": gen_h or height,
        "model": _optional_text(fields.get("Source")),
        "generation_time": _number(gen_time, float) if gen_time else None,
        "signature": _signature(
            image, [c for c in (file_comment, stealth_comment) if c is not None], check_signature
        ),
        "copies_disagree": None not in (file_comment, stealth_comment) and file_comment != stealth_comment,
        "raw": comment,
    }


_A1111_PARAM = re.compile(r"(Steps|Sampler|CFG scale|Seed|Size):\s*([^,]+)")


def _a1111(infotext: str, source: MetadataSource) -> dict[str, Any]:
    """Just enough of A1111 infotext for `naiup info`: prompt, negative, and the usual settings."""
    lines = infotext.strip().split("\n")
    params = lines.pop() if lines and _A1111_PARAM.search(lines[-1]) else ""
    text = "\n".join(lines)
    prompt, _, negative = text.partition("Negative prompt:")
    found = dict(_A1111_PARAM.findall(params))
    size = found.get("Size", "").split("x")
    return {
        "format": MetadataFormat.A1111,
        "source": source,
        "prompt": prompt.strip(),
        "negative_prompt": negative.strip(),
        "seed": _number(found.get("Seed"), int),
        "steps": _number(found.get("Steps"), int),
        "scale": _number(found.get("CFG scale"), float),
        "sampler": found.get("Sampler"),
        "width": _number(size[0], int) if len(size) == 2 else None,
        "height": _number(size[1], int) if len(size) == 2 else None,
        "raw": {"parameters": infotext},
    }


def detect(
    image: Image.Image,
    file_fields: Mapping[str, str],
    file_source: MetadataSource,
    payload: StealthPayload | None,
    text_chunks: dict[str, str],
    *,
    check_signature: bool = True,
) -> ImageMetadata:
    """Classify and extract. `file_fields` are PNG text chunks or EXIF fields under PNG names."""
    problems: list[str] = []
    stealth: dict[str, Any] | None = None
    stealth_text: str | None = None
    if payload is not None and payload.problem:
        problems.append(payload.problem)
    elif payload is not None and payload.text is not None:
        obj = json_object(payload.text)
        if obj is not None and ("Comment" in obj or obj.get("Software") == "NovelAI"):
            stealth = obj
        elif obj is not None:
            problems.append("stealth payload is a JSON object without NovelAI fields")
        elif _is_json(payload.text):
            problems.append("stealth payload is JSON but not an object")
        else:  # the A1111 extension stores its infotext with the same signature
            stealth_text = payload.text
    file_nai = file_fields.get("Software") == "NovelAI"
    values: dict[str, Any]
    if file_nai or stealth is not None:
        values = _novelai(
            image, file_fields if file_nai else {}, file_source, stealth, problems, check_signature
        )
    elif "parameters" in file_fields:
        params = file_fields["parameters"]
        if json_object(params) is not None or "sui_image_params" in params:  # Fooocus / SwarmUI
            values = {"format": MetadataFormat.OTHER, "source": file_source, "raw": dict(file_fields)}
        else:
            values = _a1111(params, file_source)
    elif "prompt" in file_fields or "workflow" in file_fields:
        values = {"format": MetadataFormat.COMFYUI, "source": file_source, "raw": dict(file_fields)}
    elif any(k in file_fields for k in ("invokeai_metadata", "sd-metadata", "Dream")):
        values = {"format": MetadataFormat.OTHER, "source": file_source, "raw": dict(file_fields)}
    elif stealth_text is not None:
        values = _a1111(stealth_text, MetadataSource.STEALTH)
    elif _looks_like_nai_comment(json_object(file_fields.get("Comment")) or {}):
        # NovelAI-like parameters without `Software: NovelAI`: never NovelAI on a Comment alone.
        problems.append("Comment looks like NovelAI parameters but nothing else says NovelAI")
        values = {"format": MetadataFormat.OTHER, "source": file_source, "raw": dict(file_fields)}
    else:
        values = {}
    has_format = values.get("format") in (MetadataFormat.A1111, MetadataFormat.OTHER, MetadataFormat.COMFYUI)
    if has_format and (values.get("width") is None or values.get("height") is None):
        values["width"], values["height"] = image.size
    carry: dict[str, str] = {}
    if (file_nai or stealth is not None) and "Comment" not in text_chunks:
        origin: Mapping[str, Any] = file_fields if file_nai else (stealth or {})
        carry = {
            k: v if isinstance(v, str) else json.dumps(v) for k, v in origin.items() if k in NAI_TEXT_KEYS
        }
    return ImageMetadata(**values, text_chunks=text_chunks, carry_fields=carry, problems=tuple(problems))
