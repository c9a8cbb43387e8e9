"""Prompt text: NovelAI syntax -> A1111 syntax (foundation issue).

CONTRACT:
    nai_to_a1111(prompt: str) -> str     # §8.3 running-weight rules of nai-metadata.md
"""

from __future__ import annotations


def nai_to_a1111(prompt: str) -> str:
    """PLACEHOLDER until the foundation issue lands: returns the text unchanged."""
    return prompt
