"""A1111 attention syntax, chunking and <lora:...> tags, without any model."""

from __future__ import annotations

import pytest

from naiup.engine.diffusion.prompt_encoder import (
    BREAK,
    CHUNK_TOKENS,
    chunk_tokens,
    extract_lora_tags,
    parse_prompt_attention,
    resolve_lora_name,
)
from naiup.errors import ConfigError


def _approx(parsed):
    return [p if p is BREAK else (p[0], pytest.approx(p[1])) for p in parsed]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("normal text", [("normal text", 1.0)]),
        ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
        ("(unbalanced", [("unbalanced", 1.1)]),
        (r"\(literal\]", [("(literal]", 1.0)]),
        ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
        ("[less] more", [("less", 1 / 1.1), (" more", 1.0)]),
        ("((x))", [("x", 1.1 * 1.1)]),
        ("(x: 1.5 )", [("x", 1.5)]),
        ("a:b", [("a:b", 1.0)]),  # a colon outside a weight is text
        # A malformed weight (a typo in a preset prompt) is text, as "(a:1e3)" is, never a crash.
        ("(x:1.2.)", [("x:1.2.", 1.1)]),
        ("(x:.)", [("x:.", 1.1)]),
        (
            "a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
            [
                ("a ", 1.0),
                ("house", 1.3 * 1.1 * 1.1),
                (" ", 1.1),
                ("on", 1.0),
                (" a ", 1.1),
                ("hill", 0.55),
                (", sun, ", 1.1),
                ("sky", 1.1**4),
                (".", 1.1),
            ],
        ),
        ("", [("", 1.0)]),
    ],
)
def test_attention_syntax_gives_a1111_weights(prompt, expected):
    assert parse_prompt_attention(prompt) == _approx(expected)


def test_break_is_a_marker_between_fragments():
    assert parse_prompt_attention("cat BREAK dog") == [("cat", 1.0), BREAK, ("dog", 1.0)]
    assert parse_prompt_attention("BREAKFAST") == [("BREAKFAST", 1.0)]


def test_chunks_pad_with_eos_and_wrap_in_bos_eos():
    (chunk,) = chunk_tokens([([5, 6], 1.5)], bos=1, eos=2, comma=9)
    assert len(chunk.tokens) == CHUNK_TOKENS + 2 == len(chunk.weights)
    assert chunk.tokens[:4] == (1, 5, 6, 2) and set(chunk.tokens[3:]) == {2}
    assert chunk.weights[:4] == (1.0, 1.5, 1.5, 1.0) and set(chunk.weights[3:]) == {1.0}


def test_long_prompt_splits_into_75_token_chunks():
    chunks = chunk_tokens([(list(range(100, 180)), 1.0)], bos=1, eos=2, comma=None)
    assert [c.tokens[1:76] for c in chunks] == [tuple(range(100, 175)), (*range(175, 180),) + (2,) * 70]


def test_full_chunk_moves_words_after_a_recent_comma_to_the_next_chunk():
    ids = [10] * 70 + [9] + [11] * 10  # comma at index 70, chunk fills at 75
    first, second = chunk_tokens([(ids, 1.0)], bos=1, eos=2, comma=9)
    assert first.tokens[1:72] == (*[10] * 70, 9) and set(first.tokens[72:]) == {2}
    assert second.tokens[1:11] == (11,) * 10 and second.tokens[11] == 2


def test_comma_too_far_back_does_not_move_words():
    ids = [10] * 40 + [9] + [11] * 40  # comma 34 tokens before the end of the chunk
    first, second = chunk_tokens([(ids, 1.0)], bos=1, eos=2, comma=9)
    assert first.tokens[1:76] == tuple(ids[:75]) and second.tokens[1:7] == tuple(ids[75:])


def test_break_closes_a_chunk_and_empty_prompt_is_one_chunk():
    chunks = chunk_tokens([([5], 1.0), BREAK, ([6], 1.0)], bos=1, eos=2, comma=9)
    assert [c.tokens[1] for c in chunks] == [5, 6] and chunks[0].tokens[2] == 2
    assert len(chunk_tokens([([], 1.0)], bos=1, eos=2, comma=9)) == 1


def test_lora_tags_are_stripped_and_returned_with_weights():
    text, tags = extract_lora_tags("masterpiece, <lora:neg4all:0.8> girl <lora:style>")
    assert text == "masterpiece,  girl "
    assert tags == [("neg4all", 0.8), ("style", 1.0)]


@pytest.mark.parametrize("tag", ["<lora:style:1.2.3>", "<lora:style:.>"])
def test_a_lora_tag_with_a_malformed_weight_is_a_config_error(tag):
    with pytest.raises(ConfigError, match="weight"):
        extract_lora_tags(f"masterpiece, {tag}")


def test_lora_names_resolve_in_a1111_lora_folders(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "neg4all.safetensors").write_bytes(b"x")
    assert resolve_lora_name("neg4all", [tmp_path]) == tmp_path / "sub" / "neg4all.safetensors"
    with pytest.raises(ConfigError, match=r"<lora:missing> from the prompt not found"):
        resolve_lora_name("missing", [tmp_path])
