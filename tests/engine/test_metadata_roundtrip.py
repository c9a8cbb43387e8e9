"""Property: what nai_writer writes, the reader reads back (text chunks, stealth only, WebP EXIF)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import nai_writer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from naiup.metadata.read import CharacterPrompt, MetadataFormat, MetadataSource, read_metadata

_text = st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=40)
_grid = st.sampled_from([0.1, 0.3, 0.5, 0.7, 0.9])
_characters = st.lists(st.tuples(_text, _text, st.tuples(_grid, _grid)), max_size=2)
_settings = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _check(
    path: Path, source: MetadataSource, prompt: str, seed: int, steps: int, scale: float, chars
) -> None:
    meta = read_metadata(path)
    assert (meta.format, meta.source) == (MetadataFormat.NOVELAI, source)
    assert (meta.prompt, meta.seed, meta.steps, meta.scale) == (prompt, seed, steps, scale)
    assert meta.characters == tuple(CharacterPrompt(p, n, c) for p, n, c in chars)
    assert meta.negative_prompt == "lowres, bad anatomy" and meta.problems == ()


@_settings
@given(
    prompt=_text,
    seed=st.integers(0, 2**32 - 1),
    steps=st.integers(1, 50),
    scale=st.floats(0, 30, allow_nan=False),
    chars=_characters,
    stealth_only=st.booleans(),
)
def test_png_round_trip(prompt: str, seed: int, steps: int, scale: float, chars, stealth_only: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = nai_writer.write_nai_png(
            Path(tmp) / "x.png",
            (256, 256),  # room for the worst case: 7 fields of 40 escaped astral characters
            prompt=prompt,
            seed=seed,
            steps=steps,
            scale=scale,
            characters=chars,
            text=not stealth_only,
            stealth=True,
        )
        source = MetadataSource.STEALTH if stealth_only else MetadataSource.TEXT
        _check(path, source, prompt, seed, steps, scale, chars)


@settings(max_examples=10, deadline=None)
@given(
    prompt=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
    seed=st.integers(0, 2**32 - 1),
)
def test_webp_round_trip(prompt: str, seed: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = nai_writer.write_nai_webp(Path(tmp) / "x.webp", (96, 96), prompt=prompt, seed=seed)
        _check(path, MetadataSource.EXIF, prompt, seed, 28, 5.0, [])
