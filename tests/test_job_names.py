"""Output names that fit the file system: a long source name is shortened, never the naiup suffix."""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest

from naiup.config import Preset
from naiup.job import fit_name, output_candidates

PRESET = Preset(name="upscale-2x", refine=False)
TEMPLATE = "{stem}.naiup-{preset}.png"


def _names(src: Path, n: int = 3) -> list[str]:
    return [p.name for p in itertools.islice(output_candidates(src, PRESET, TEMPLATE), n)]


@pytest.mark.parametrize(
    "stem",
    [
        "a" * 251,  # a 255-byte source name
        "日本語" * 28,  # 252 bytes of CJK: cut between characters, never inside one
        os.fsdecode(b"x\xfe" * 125),  # bytes that are not UTF-8 (one byte each)
    ],
)
def test_a_long_stem_is_shortened_to_fit_keeping_the_suffix_and_the_counter(tmp_path: Path, stem: str):
    names = _names(tmp_path / f"{stem}.png")
    assert all(len(os.fsencode(n)) <= 255 for n in names)
    assert names[0].endswith(".naiup-upscale-2x.png") and names[1].endswith(".naiup-upscale-2x (2).png")
    assert len(set(names)) == 3
    for name in names:
        kept = name.split(".naiup-")[0]
        assert stem.startswith(kept) and len(os.fsencode(kept)) >= 200  # only what had to go


def test_a_name_that_fits_is_left_alone(tmp_path: Path):
    assert _names(tmp_path / "cat.png", 2) == ["cat.naiup-upscale-2x.png", "cat.naiup-upscale-2x (2).png"]


def test_a_template_too_long_for_any_stem_is_an_output_error():
    from naiup.errors import OutputError

    with pytest.raises(OutputError, match="too long"):
        fit_name("cat", lambda stem: stem + "x" * 300, 255)
