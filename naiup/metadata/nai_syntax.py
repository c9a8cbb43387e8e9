"""Prompt text: NovelAI syntax -> A1111/ComfyUI syntax.

Rules from nai-metadata.md §8.3 ("running weight" model): the weight starts at 1.0; `{` and `]`
multiply it by 1.05, `}` and `[` divide it by 1.05; `w::` replaces it with `w`; a bare `::` resets it
to 1.0. Every run of text with a weight other than 1 becomes an explicit `(text:w)` so the output
means the same in A1111 and ComfyUI (ComfyUI treats `[ ]` as plain text). NovelAI has no meaning
for `( )`, so literal parentheses and backslashes are escaped.
"""

from __future__ import annotations

import re

_STEP = 1.05
# A1111 LoRA tags; in a preset prompt they select LoRAs, in an image's own text they are inert.
LORA_TAG = re.compile(r"<lora:([^:>]+)(?::([+-]?[\d.]+))?>")
# A numeric opener counts only at the start of a token: `b0.5::` or `v1.2::` are text.
_TOKEN = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?::|::|[{}\[\]]")
_SEPARATORS = " \t\r\n,"


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
            weight *= _STEP
        elif token == "}" or token == "[":
            weight /= _STEP
        elif token == "::":
            weight = 1.0
        else:
            weight = float(token[:-2])
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
