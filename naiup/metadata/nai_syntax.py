"""Prompt text: NovelAI syntax -> A1111/ComfyUI syntax.

Rules (worked examples in docs/design/nai-metadata.md), a "running weight" model: the weight starts
at 1.0; `{` and `]` multiply it by 1.05, `}` and `[` divide it by 1.05; `w::` replaces it with `w`; a
bare `::` resets it to 1.0. Every run of text with a weight other than 1 becomes an explicit
`(text:w)` so the output means the same in A1111 and ComfyUI (ComfyUI treats `[ ]` as plain text).
NovelAI has no meaning for `( )`, so literal parentheses and backslashes are escaped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from naiup.metadata.types import ImageMetadata

_STEP = 1.05
# A1111 LoRA tags; in a preset prompt they select LoRAs, in an image's own text they are inert.
LORA_TAG = re.compile(r"<lora:([^:>]+)(?::([+-]?[\d.]+))?>")
# A numeric opener counts only at the start of a token: `b0.5::` or `v1.2::` are text.
_TOKEN = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?::|::|[{}\[\]]")
_SEPARATORS = " \t\r\n,"
# Emphasis weights are kept within 1e-4..1e4 in size (0 stays 0), in both syntaxes. No prompt means
# more, but prompts come from any image's metadata: unclamped, ~200 nested NovelAI brackets print as
# weight 0 (the text is dropped), and thousands of braces or A1111 parentheses overflow to inf, which
# A1111 syntax cannot write and which turns the text embeddings into NaN (the refine then fails).
WEIGHT_LIMIT = 1e4


def clamp_weight(weight: float) -> float:
    """`weight` with its size kept within [1/WEIGHT_LIMIT, WEIGHT_LIMIT]; 0 stays 0."""
    if weight == 0:
        return 0.0
    return math.copysign(min(max(abs(weight), 1 / WEIGHT_LIMIT), WEIGHT_LIMIT), weight)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _format_weight(weight: float) -> str:
    text = f"{round(weight, 4):.4f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _runs(prompt: str) -> list[tuple[str, float]]:
    """Split into (text, weight) runs, merging neighbours whose printed weights are equal."""
    runs: list[tuple[str, float]] = []
    weight = 1.0
    pos = 0

    def emit(text: str) -> None:
        if not text:
            return
        if runs and _format_weight(runs[-1][1]) == _format_weight(weight):
            runs[-1] = (runs[-1][0] + text, runs[-1][1])
        else:
            runs.append((text, weight))

    for match in _TOKEN.finditer(prompt):
        emit(prompt[pos : match.start()])
        pos = match.end()
        token = match.group()
        if token == "{" or token == "]":
            weight = clamp_weight(weight * _STEP)
        elif token == "}" or token == "[":
            weight = clamp_weight(weight / _STEP)
        elif token == "::":
            weight = 1.0
        else:
            weight = clamp_weight(float(token[:-2]))
    emit(prompt[pos:])
    return runs


def nai_to_a1111(prompt: str) -> str:
    """Convert one NovelAI prompt (base caption, uc or character caption) to A1111 syntax."""
    out: list[str] = []
    for text, weight in _runs(prompt):
        printed = _format_weight(weight)
        if printed == "1":
            out.append(_escape(text))
            continue
        core = text.strip(_SEPARATORS)
        if not core:  # a weighted run of only ", " carries no meaning: keep it as plain text
            out.append(text)
            continue
        start = text.index(core)
        lead, trail = text[:start], text[start + len(core) :]
        out.append(f"{lead}({_escape(core)}:{printed}){trail}")
    return "".join(out)


def join_prompts(parts: Iterable[str]) -> str:
    """Prompt pieces joined with ", ", each without the commas and spaces at its ends; empty ones
    (after that trim) left out."""
    return ", ".join(t for p in parts if (t := p.strip().strip(",").strip()))


def image_prompts(meta: ImageMetadata) -> tuple[str, str]:
    """The image's own (prompt with its character prompts, negative) in A1111 syntax: NovelAI's
    converted, A1111 infotext as it is. They are content, not configuration: a `<lora:...>` in an
    image's text is dropped, so a downloaded file can never load a LoRA."""

    def own(text: str) -> str:
        return image_text(text, novelai=meta.is_novelai)

    prompt = join_prompts([own(meta.prompt), *(own(c.prompt) for c in meta.characters)])
    return prompt, own(meta.negative_prompt)


def image_text(text: str, *, novelai: bool = True) -> str:
    """One piece of an image's own text in A1111 syntax (NovelAI's converted, A1111's as it is). It is
    content, not configuration: a `<lora:...>` in it must not load a LoRA, so it is dropped."""
    return LORA_TAG.sub("", nai_to_a1111(text) if novelai else text)
