"""Properties of the parsers that take arbitrary user text (a prompt may come from any image's
metadata): NovelAI -> A1111 conversion, A1111's attention parser, prompt editing per step. None may
raise, and each keeps what it does not understand as text."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from naiup.engine.diffusion.prompt_encoder import BREAK, parse_prompt_attention
from naiup.engine.diffusion.prompt_schedule import prompts_per_step
from naiup.metadata.nai_syntax import WEIGHT_LIMIT, nai_to_a1111

pytestmark = pytest.mark.timeout(60)  # a hang guard: the bugs these found were exponential time

PROPERTY = settings(max_examples=150, deadline=None)
SYNTAX = "{}[]()\\:|, -.0123456789"
WORDS = ["cat", "a", "0.5", "1.2::", "::", "inf", "nan", "1e999", "-2", " BREAK "]
# Syntax characters and words (numbers among them), sometimes any Unicode at all.
prompt_text = st.lists(
    st.one_of(st.sampled_from(SYNTAX), st.sampled_from(WORDS), st.characters()), max_size=40
).map("".join)
# Prompt editing and alternation, nested, with `when` values a user (or a hostile file) might write.
schedule_text = st.recursive(
    prompt_text,
    lambda inner: st.one_of(
        st.tuples(inner, inner, st.sampled_from(["0.5", "2", "0", "-1", "inf", "1e999", "nan", "x"])).map(
            lambda t: f"[{t[0]}:{t[1]}:{t[2]}]"
        ),
        st.tuples(inner, st.sampled_from(["0.3", "3", "inf"])).map(lambda t: f"[{t[0]}:{t[1]}]"),
        st.lists(inner, min_size=2, max_size=3).map(lambda xs: "[" + "|".join(xs) + "]"),
        st.lists(inner, max_size=3).map("".join),
    ),
    max_leaves=8,
)
plain_text = st.text(alphabet=st.characters(blacklist_characters="{}[]()\\:|"), max_size=40)
# NovelAI's syntax tokens (the spec): `{ } [ ]`, a bare `::`, and `w::` at the start of a token.
NAI_TOKEN = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?::|::|[{}\[\]]")
SEPARATORS = " \t\r\n,"


def _per_char(fragments: list) -> list[tuple[str, float]]:
    """(character, weight) of an attention parse, BREAK markers left out."""
    return [(c, w) for f in fragments if f is not BREAK for w in [f[1]] for c in f[0]]


def _a1111_escape(text: str) -> str:
    return re.sub(r"([\\()\[\]])", r"\\\1", text)


# NovelAI -> A1111


@PROPERTY
@given(prompt_text)
def test_nai_conversion_never_raises_and_keeps_the_text(text: str):
    assume("BREAK" not in text)  # a word A1111's parser treats as a chunk break, not as text
    converted = nai_to_a1111(text)
    assert "".join(c for c, _ in _per_char(parse_prompt_attention(converted))) == NAI_TOKEN.sub("", text)


@PROPERTY
@given(plain_text)
def test_text_without_nai_syntax_passes_through_unchanged(text: str):
    assert nai_to_a1111(text) == text


@PROPERTY
@given(st.text(alphabet="{}[]ab ,", max_size=60))
def test_nai_brace_weights_reach_a1111_positive_and_rounded(text: str):
    # Reference: the running weight, 1.05 to the power of (openers - closers) so far.
    depth, expected = 0, []
    for ch in text:
        if ch in "{]":
            depth += 1
        elif ch in "}[":
            depth -= 1
        else:
            expected.append((ch, round(1.05**depth, 4)))
    got = _per_char(parse_prompt_attention(nai_to_a1111(text)))
    assert [c for c, _ in got] == [c for c, _ in expected]
    for (ch, weight), (_, want) in zip(got, expected, strict=True):
        if ch not in SEPARATORS:  # separators at a weighted run's ends are moved outside it
            assert weight > 0 and math.isclose(weight, want, abs_tol=1e-9), (text, ch)


@pytest.mark.parametrize(
    ("nai", "a1111"),
    [
        ("{" * 20_000 + "x", f"(x:{WEIGHT_LIMIT:.0f})"),  # was "(x:inf)", which A1111 reads as text
        ("[" * 300 + "x", "(x:0.0001)"),  # was "(x:0)": the text dropped
        ("9" * 400 + "::x", f"(x:{WEIGHT_LIMIT:.0f})"),
        ("0::x", "(x:0)"),  # an explicit 0 stays 0
    ],
)
def test_nai_weights_stay_finite_and_nonzero(nai: str, a1111: str):
    assert nai_to_a1111(nai) == a1111


# A1111 attention parser


@PROPERTY
@given(prompt_text)
def test_attention_parser_never_raises_and_weights_stay_finite(text: str):
    fragments = parse_prompt_attention(text)
    assert fragments
    for f in fragments:
        assert f is BREAK or (isinstance(f[0], str) and math.isfinite(f[1]))
    if ":" not in text:  # only ( ) [ ]: products of 1.1 and 1/1.1
        assert all(f is BREAK or f[1] > 0 for f in fragments)


@PROPERTY
@given(st.text(max_size=60))
def test_escaped_text_is_literal(text: str):
    assume("BREAK" not in text)
    assert _per_char(parse_prompt_attention(_a1111_escape(text))) == [(c, 1.0) for c in text]


@PROPERTY
@given(
    st.text(min_size=1, max_size=30).filter(lambda t: "BREAK" not in t),
    st.floats(min_value=-100, max_value=100, allow_nan=False).map(lambda w: round(w, 3)),
)
def test_explicit_and_bracket_weights(text: str, weight: float):
    core = _a1111_escape(text)
    assert _per_char(parse_prompt_attention(f"({core}:{weight})")) == [(c, weight) for c in text]
    assert _per_char(parse_prompt_attention(f"({core})")) == [(c, 1.1) for c in text]
    assert _per_char(parse_prompt_attention(f"[{core}]")) == [(c, 1 / 1.1) for c in text]


def test_attention_weights_stay_finite_and_nonzero():
    assert parse_prompt_attention("(" * 10_000 + "x") == [("x", WEIGHT_LIMIT)]  # was inf: NaN images
    assert parse_prompt_attention("[" * 10_000 + "x") == [("x", 1 / WEIGHT_LIMIT)]  # was 0
    assert parse_prompt_attention("(x:" + "9" * 400 + ")") == [("x", WEIGHT_LIMIT)]


# Prompt editing and alternation


@PROPERTY
@given(st.one_of(prompt_text, schedule_text), st.integers(min_value=0, max_value=60))
def test_one_prompt_per_step_and_never_raises(text: str, steps: int):
    per_step = prompts_per_step(text, steps)
    assert len(per_step) == max(1, steps) and all(isinstance(p, str) for p in per_step)
    if "[" not in text or not ({":", "|"} & set(text)):  # no schedule possible: the text itself
        assert per_step == [text] * max(1, steps)


@PROPERTY
@given(plain_text, plain_text, st.integers(min_value=1, max_value=20), st.integers(min_value=0, max_value=25))
def test_an_edit_switches_at_its_step(before: str, after: str, steps: int, when: int):
    per_step = prompts_per_step(f"[{before}:{after}:{when}]", steps)
    assert per_step == [before if step <= when else after for step in range(1, steps + 1)]


@PROPERTY
@given(st.lists(plain_text, min_size=2, max_size=4), st.integers(min_value=1, max_value=12))
def test_alternation_cycles(options: list[str], steps: int):
    per_step = prompts_per_step("[" + "|".join(options) + "]", steps)
    assert per_step == [options[i % len(options)] for i in range(steps)]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("[a:b:inf]", "[a:b:inf]"),  # raised OverflowError: a `when` that is not finite is text
        ("[a:b:1e999]", "[a:b:1e999]"),
        ("[" * 40, "[" * 40),  # took exponential time (a second per 18 brackets, doubling each one)
        ("[" * 3_000 + "x" + "]" * 3_000, "[" * 3_000 + "x" + "]" * 3_000),  # raised RecursionError
        ("[a|" * 2_000 + "b" + "]" * 2_000, "a"),
    ],
)
def test_hostile_schedules(prompt: str, expected: str):
    assert prompts_per_step(prompt, 2)[0] == expected
