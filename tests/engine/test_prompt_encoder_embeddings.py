"""PromptEncoder on a tiny CLIP with the real CLIP vocab: embeddings equal A1111's maths by hand."""

from __future__ import annotations

import pytest
import tiny_sd
import torch
from transformers import CLIPTextModel, CLIPTokenizer

from naiup.engine.diffusion.prompt_encoder import PromptEncoder, pad_to_same_length
from naiup.engine.diffusion.refine import needs_text_encoders

BOS, EOS, COMMA = 49406, 49407, 267  # well-known CLIP ids


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    tiny = tiny_sd.session_tiny_sd(tmp_path_factory)
    tok = CLIPTokenizer.from_pretrained(tiny.folder / "tokenizer")
    te = CLIPTextModel.from_pretrained(tiny.folder / "text_encoder").eval()
    return tok, te


def _raw(te, ids: list[int]) -> torch.Tensor:
    """The unweighted last hidden state of one 77-token chunk."""
    with torch.no_grad():
        return te(torch.tensor([ids])).last_hidden_state


def _chunk(tok, text: str) -> list[int]:
    ids = tok(text, add_special_tokens=False).input_ids
    return [BOS, *ids, *[EOS] * (75 - len(ids)), EOS]


def _weighted(z: torch.Tensor, weights: list[float]) -> torch.Tensor:
    w = torch.tensor(weights)[None, :, None]
    return z * w * (z.mean() / (z * w).mean())


def test_plain_prompt_is_the_unweighted_chunk(clip):
    tok, te = clip
    enc = PromptEncoder(tok, te)
    assert tok("a photo of a cat", add_special_tokens=False).input_ids == [320, 1125, 539, 320, 2368]
    torch.testing.assert_close(enc.encode("a photo of a cat"), _raw(te, _chunk(tok, "a photo of a cat")))


def test_weights_scale_tokens_and_restore_the_chunk_mean(clip):
    tok, te = clip
    got = PromptEncoder(tok, te).encode("a (cat:1.5), [dog]")
    # fragments tokenized separately: "a " | "cat" | ", " | "dog"
    ids = [BOS, 320, 2368, COMMA, 1929, *[EOS] * 71, EOS]
    weights = [1.0, 1.0, 1.5, 1.0, 1 / 1.1] + [1.0] * 72
    assert tok("dog", add_special_tokens=False).input_ids == [1929]
    expected = _weighted(_raw(te, ids), weights)
    torch.testing.assert_close(got, expected)
    assert not torch.allclose(got, _raw(te, ids))


def test_nesting_and_escapes(clip):
    tok, te = clip
    enc = PromptEncoder(tok, te)
    expected = _weighted(_raw(te, _chunk(tok, "cat")), [1.0, 1.21] + [1.0] * 75)
    torch.testing.assert_close(enc.encode("((cat))"), expected)
    torch.testing.assert_close(enc.encode(r"\(cat\)"), _raw(te, _chunk(tok, "(cat)")))


def test_break_and_long_prompts_make_one_77_token_chunk_each(clip):
    tok, te = clip
    enc = PromptEncoder(tok, te)
    z = enc.encode("cat BREAK dog")
    assert z.shape == (1, 154, 32)
    torch.testing.assert_close(z[:, :77], _raw(te, _chunk(tok, "cat")))
    torch.testing.assert_close(z[:, 77:], _raw(te, _chunk(tok, "dog")))
    long = " ".join(["cat"] * 80)  # 80 tokens, no commas: 75 + 5
    z = enc.encode(long)
    assert z.shape == (1, 154, 32)
    torch.testing.assert_close(z[:, 77:], _raw(te, _chunk(tok, " ".join(["cat"] * 5))))


def test_clip_skip_uses_the_normed_earlier_layer(clip):
    tok, te = clip
    ids = _chunk(tok, "a photo of a cat")
    with torch.no_grad():
        out = te(torch.tensor([ids]), output_hidden_states=True)
        expected = te.final_layer_norm(out.hidden_states[-2])
    torch.testing.assert_close(PromptEncoder(tok, te, clip_skip=2).encode("a photo of a cat"), expected)


class _OldStyleCLIP(torch.nn.Module):
    """transformers < 5.6 shape: the layers live under `.text_model`."""

    def __init__(self, flat: CLIPTextModel) -> None:
        super().__init__()
        self.text_model = flat

    def forward(self, ids, output_hidden_states=False):
        return self.text_model(ids, output_hidden_states=output_hidden_states)


def test_clip_skip_works_with_the_older_text_model_layout(clip):
    tok, te = clip
    flat = PromptEncoder(tok, te, clip_skip=2).encode("a cat")
    old = PromptEncoder(tok, _OldStyleCLIP(te), clip_skip=2).encode("a cat")
    torch.testing.assert_close(old, flat)


def test_cond_and_uncond_are_padded_to_equal_length_with_empty_chunks(clip):
    tok, te = clip
    enc = PromptEncoder(tok, te)
    cond, uncond = pad_to_same_length(enc.encode("cat BREAK dog"), enc.encode("bad"), enc.encode(""))
    assert cond.shape == uncond.shape == (1, 154, 32)
    torch.testing.assert_close(uncond[:, 77:], enc.encode(""))


def test_the_embedding_cache_keeps_the_most_recently_used_few(clip, monkeypatch):
    # Each entry lives on the GPU; with use_image_prompt every image is a new prompt, for weeks.
    from naiup.engine.diffusion import prompt_encoder

    monkeypatch.setattr(prompt_encoder, "PROMPT_CACHE_SIZE", 3)
    enc = PromptEncoder(*clip)
    first = enc.encode("cat")
    for p in ("dog", "bird", "cat", "fish"):  # "cat" used again: "dog" is the oldest now
        enc.encode(p)
    assert list(enc._cache) == ["bird", "cat", "fish"]
    assert enc.encode("cat") is first  # a hit returns the cached tensor
    assert torch.equal(enc.encode("dog"), _weighted_free(enc, "dog"))  # evicted: encoded again, same


def _weighted_free(enc: PromptEncoder, prompt: str) -> torch.Tensor:
    return PromptEncoder(enc.tokenizer, enc.text_encoder).encode(prompt)


def test_embeddings_are_cached_on_the_unets_device_not_where_the_text_encoder_ran(clip):
    # A text encoder waiting in host RAM runs on the CPU; what it makes is joined later with
    # embeddings made on the GPU (padding, CFG's batch), so it must be cached on the UNet's device.
    # "meta" stands for that other device: a real torch device the CPU encoder did not run on.
    enc = PromptEncoder(*clip, device=torch.device("meta"))
    cond, uncond = enc.pair("cat", "bad BREAK worse")
    assert cond.shape == uncond.shape == (1, 154, 32)
    assert {t.device.type for t in (cond, uncond, *enc._cache.values())} == {"meta"}
    assert list(enc._cache) == ["cat", "bad BREAK worse", ""]


def test_a_regions_job_at_cfg_1_needs_the_text_encoders_for_the_empty_prompt(clip):
    # Regions pad their contexts with the empty prompt at any CFG; a single prompt needs it only
    # to pad a negative (CFG > 1). Encoded outside the text encoders' visit it would run on the CPU.
    enc = PromptEncoder(*clip)
    background, region = [("park", None)] * 2, [("1girl", None)] * 2
    enc.pair("park", None)
    enc.pair("1girl", None)
    assert not needs_text_encoders(enc, [background], regions=False)
    assert needs_text_encoders(enc, [background, region], regions=True)
    enc.encode("")
    assert not needs_text_encoders(enc, [background, region], regions=True)
    assert needs_text_encoders(enc, [[("park", "lowres")]], regions=False)  # CFG > 1: a new negative
