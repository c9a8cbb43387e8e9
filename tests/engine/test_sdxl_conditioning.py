"""SDXL prompt encoder: diffusers' encode_prompt for plain prompts, A1111 semantics beyond it."""

from __future__ import annotations

import pytest
import tiny_sdxl
import torch
from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

from naiup.engine.diffusion.sdxl_conditioning import SDXLPromptEncoder, time_ids
from naiup.engine.models.load import load_models
from naiup.testing import SDXL_TE1_WIDTH as W1
from naiup.testing import SDXL_TE2_WIDTH as W2

WORDS = "cat dog " * 40  # 80 one-token words, no commas: a clean 75 | 5 split
FIRST_75 = "cat dog " * 37 + "cat"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return load_models(str(tiny_sdxl.session_tiny_sdxl(tmp_path_factory).folder), "", torch.device("cpu"))


@pytest.fixture(scope="module")
def pipe(models) -> StableDiffusionXLPipeline:
    m = models
    scheduler = EulerDiscreteScheduler.from_config(m.scheduler_config)
    return StableDiffusionXLPipeline(
        vae=m.vae, text_encoder=m.text_encoder, text_encoder_2=m.text_encoder_2, tokenizer=m.tokenizer,
        tokenizer_2=m.tokenizer_2, unet=m.unet, scheduler=scheduler,
        force_zeros_for_empty_prompt=True, add_watermarker=False,
    )  # fmt: skip


def _encoder(m, clip_skip: int = 1) -> SDXLPromptEncoder:
    return SDXLPromptEncoder(m.tokenizer, m.text_encoder, m.tokenizer_2, m.text_encoder_2, clip_skip)


@pytest.mark.parametrize("prompt", ["a cat", "1girl, solo, long hair, smile", ""])
def test_plain_prompts_equal_diffusers_encode_prompt(models, pipe, prompt):
    ours = _encoder(models).encode(prompt)
    embeds, _, pooled, _ = pipe.encode_prompt(prompt, device="cpu", do_classifier_free_guidance=False)
    assert ours.context.shape == (1, 77, W1 + W2) and ours.pooled.shape == (1, W2)
    torch.testing.assert_close(ours.context, embeds, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours.pooled, pooled, rtol=0, atol=1e-6)


def test_clip_skip_follows_forge_two_is_the_default_three_is_one_layer_more(models, pipe):
    one, two, three = (_encoder(models, n).encode("a cat").context for n in (1, 2, 3))
    assert torch.equal(one, two)
    embeds, *_ = pipe.encode_prompt("a cat", device="cpu", do_classifier_free_guidance=False, clip_skip=1)
    torch.testing.assert_close(three, embeds, rtol=0, atol=1e-6)  # diffusers' clip_skip=1 is layer -3


def test_big_g_pads_with_zero_after_the_first_end_token(models):
    enc = _encoder(models)
    (chunk,) = enc.chunks("a cat")
    assert chunk.tokens[:5] == (49406, 320, 2368, 49407, 49407)
    assert enc._ids_2(chunk.tokens)[:5] == [49406, 320, 2368, 49407, 0]
    assert set(enc._ids_2(chunk.tokens)[4:]) == {0}


def test_weights_scale_each_encoder_then_restore_its_own_mean(models):
    """(cat:1.5): worked by hand from the two encoders' raw penultimate states."""
    m = models
    ours = _encoder(m).encode("a (cat:1.5)").context
    ids = torch.tensor([[49406, 320, 2368] + [49407] * 74])
    ids2 = torch.tensor([[49406, 320, 2368, 49407] + [0] * 73])
    h1 = m.text_encoder(ids, output_hidden_states=True).hidden_states[-2]
    h2 = m.text_encoder_2(ids2, output_hidden_states=True).hidden_states[-2]
    w = torch.ones(1, 77, 1)
    w[0, 2] = 1.5  # BOS, "a", "cat"
    expected = [(h * w) * (h.mean() / (h * w).mean()) for h in (h1, h2)]
    torch.testing.assert_close(ours[..., :W1], expected[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(ours[..., W1:], expected[1], rtol=0, atol=1e-6)
    # each part keeps its own mean, which a joint restore over 2048 channels would not
    torch.testing.assert_close(ours[..., :W1].mean(), h1.mean())
    torch.testing.assert_close(ours[..., W1:].mean(), h2.mean())


def test_long_prompts_chunk_by_75_and_pool_from_the_first_chunk(models):
    enc = _encoder(models)
    long = enc.encode(WORDS)
    assert long.context.shape == (1, 154, W1 + W2)
    first = enc.encode(FIRST_75)
    assert first.context.shape[1] == 77
    torch.testing.assert_close(long.pooled, first.pooled, rtol=0, atol=0)
    assert not torch.equal(long.pooled, enc.encode("dog cat dog cat dog").pooled)  # not the last chunk's
    torch.testing.assert_close(long.context[:, :77], first.context, rtol=0, atol=1e-6)
    torch.testing.assert_close(
        long.context[:, 77:], enc.encode("dog cat dog cat dog").context, rtol=0, atol=1e-6
    )


def test_break_starts_a_new_chunk_per_encoder(models):
    enc = _encoder(models)
    both = enc.encode("cat BREAK dog")
    assert both.context.shape[1] == 154
    torch.testing.assert_close(both.context[:, 77:], enc.encode("dog").context, rtol=0, atol=1e-6)
    torch.testing.assert_close(both.pooled, enc.encode("cat").pooled, rtol=0, atol=0)


def test_empty_negative_is_zeros_like_a1111_and_pads_to_the_prompt(models, pipe):
    enc = _encoder(models)
    cond, uncond = enc.pair(WORDS, "")
    assert uncond.context.shape == cond.context.shape and uncond.pooled.shape == cond.pooled.shape
    assert not uncond.context.any() and not uncond.pooled.any()
    # diffusers gives the same zeros for negative_prompt=None (force_zeros_for_empty_prompt)
    _, neg, _, neg_pooled = pipe.encode_prompt("a cat", device="cpu", do_classifier_free_guidance=True)
    assert not neg.any() and not neg_pooled.any()
    # a real negative is encoded and padded with empty-prompt chunks to the prompt's length
    cond, uncond = enc.pair(WORDS, "bad hands")
    assert uncond.context.shape == cond.context.shape and uncond.pooled.abs().sum() > 0
    torch.testing.assert_close(uncond.context[:, 77:], enc.encode("").context, rtol=0, atol=0)


def test_time_ids_describe_the_whole_canvas_in_pixels_height_first():
    assert time_ids((152, 104), 8).tolist() == [[1216.0, 832.0, 0.0, 0.0, 1216.0, 832.0]]


def test_embeddings_are_cached_on_the_unets_device_not_where_the_text_encoders_ran(models):
    # As PromptEncoder's: "meta" stands for the GPU the UNet is on while the encoders ran on the CPU.
    m = models
    enc = SDXLPromptEncoder(
        m.tokenizer, m.text_encoder, m.tokenizer_2, m.text_encoder_2, 1, torch.device("meta")
    )
    cond, uncond = enc.pair("a cat", WORDS)  # a long negative: the prompt is padded with ""
    assert cond.context.shape == uncond.context.shape == (1, 154, W1 + W2)
    tensors = [cond.context, cond.pooled, uncond.context, uncond.pooled]
    tensors += [t for c in enc._cache.values() for t in (c.context, c.pooled)]
    assert {t.device.type for t in tensors} == {"meta"} and list(enc._cache) == ["a cat", WORDS, ""]
