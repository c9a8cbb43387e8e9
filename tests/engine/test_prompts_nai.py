"""NAI -> A1111 prompt conversion: the worked examples of docs/design/nai-metadata.md and a few more."""

from __future__ import annotations

import pytest

from naiup.metadata.nai_syntax import nai_to_a1111


@pytest.mark.parametrize(
    ("nai", "a1111"),
    [
        ("{tag}", "(tag:1.05)"),
        ("{{tag}}", "(tag:1.1025)"),
        ("[tag]", "(tag:0.9524)"),
        ("[[tag]]", "(tag:0.907)"),
        ("{{{{{chibi, chibi only}}}}}", "(chibi, chibi only:1.2763)"),
        ("{aris_{{blue_archive}}}", "(aris_:1.05)(blue_archive:1.1576)"),
        ("{[tag]}", "tag"),
        ("masterpiece, {{best quality}}, [lowres]", "masterpiece, (best quality:1.1025), (lowres:0.9524)"),
        ("1.5::rain, night::, sun", "(rain, night:1.5), sun"),
        ("-0.8::feet::", "(feet:-0.8)"),
        ("1.2::{cat}::", "(cat:1.26)"),
        ("2::a:: b 0.5::c", "(a:2) b (c:0.5)"),
        ("furina_(genshin_impact)", "furina_\\(genshin_impact\\)"),
        ("{{{undetailed eyes}}}}, text", "(undetailed eyes:1.1576), (text:0.9524)"),
    ],
)
def test_worked_examples_of_the_spec(nai: str, a1111: str) -> None:
    assert nai_to_a1111(nai) == a1111


@pytest.mark.parametrize(
    ("nai", "a1111"),
    [
        ("", ""),
        ("1girl, solo", "1girl, solo"),
        ("a\\b", "a\\\\b"),
        ("{, }", ", "),  # a weighted run of separators only stays plain
        ("{{a}}, {{b}}", "(a:1.1025), (b:1.1025)"),
        ("v1.2::x", "v1.2x"),  # a weight glued to a word is text; the `::` is a reset
        ("{(smile)}", "(\\(smile\\):1.05)"),
        ("0::gone::", "(gone:0)"),
    ],
)
def test_edge_cases(nai: str, a1111: str) -> None:
    assert nai_to_a1111(nai) == a1111
