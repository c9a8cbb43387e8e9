"""Our img2img loop against diffusers' StableDiffusionImg2ImgPipeline on the same tiny model and inputs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import tiny_sd
import torch
from diffusers import EulerDiscreteScheduler, LCMScheduler, StableDiffusionImg2ImgPipeline
from PIL import Image

from naiup.config import ModelConfig, Preset
from naiup.engine.diffusion.refine import Refiner

PROMPT, NEGATIVE = "(masterpiece:1.2), 1girl", "(worst quality:1.4)"


@pytest.fixture(scope="module")
def refiner(tmp_path_factory) -> Refiner:
    tiny = tiny_sd.session_tiny_sd(tmp_path_factory)
    r = Refiner(ModelConfig(checkpoint=str(tiny.folder), lcm_lora=str(tiny.lcm_lora), device="cpu"))
    r.load()
    return r


def _image(w: int = 64, h: int = 64, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def _count_unet_calls(refiner: Refiner) -> tuple[list[int], object]:
    batches: list[int] = []
    handle = refiner.models.unet.register_forward_hook(lambda _m, args, _o: batches.append(args[0].shape[0]))
    return batches, handle


@pytest.mark.parametrize("sampler", ["lcm", "euler"])
@pytest.mark.parametrize("cfg", [1.0, 1.5])
def test_loop_matches_the_diffusers_pipeline_bit_for_bit(refiner, sampler, cfg):
    preset = Preset(name="t", steps=8, denoise=0.5, cfg=cfg, sampler=sampler)
    image = _image()
    batches, handle = _count_unet_calls(refiner)
    try:
        ours = refiner.refine(image, preset, prompt=PROMPT, negative_prompt=NEGATIVE, seed=1234)
    finally:
        handle.remove()
    # int(N·s) UNet calls; the uncond batch only when CFG > 1.
    assert batches == [2 if cfg > 1 else 1] * 4

    m, enc = refiner.models, refiner._encoder
    scheduler = {"lcm": LCMScheduler, "euler": EulerDiscreteScheduler}[sampler].from_config(
        m.scheduler_config
    )
    pipe = StableDiffusionImg2ImgPipeline(
        vae=m.vae, text_encoder=m.text_encoder, tokenizer=m.tokenizer, unet=m.unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    extra = {"negative_prompt_embeds": enc.encode(NEGATIVE)} if cfg > 1 else {}
    oracle = pipe(
        prompt_embeds=enc.encode(PROMPT),
        image=image,
        strength=0.5,
        num_inference_steps=8,
        guidance_scale=cfg,
        generator=torch.Generator("cpu").manual_seed(1234),
        output_type="pil",
        **extra,
    ).images[0]
    assert ours.size == oracle.size and ours.mode == "RGB"
    assert np.array_equal(np.asarray(ours), np.asarray(oracle))


def test_same_input_and_seed_give_identical_bytes_other_seed_differs(refiner):
    preset = Preset(name="t", steps=4, denoise=0.5)
    a, b, c = (refiner.refine(_image(), preset, prompt="x", negative_prompt="", seed=s) for s in (7, 7, 8))
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()


def test_negative_prompt_is_ignored_when_cfg_is_one(refiner):
    preset = Preset(name="t", steps=4, denoise=0.5, cfg=1.0)
    a = refiner.refine(_image(), preset, prompt="x", negative_prompt="", seed=3)
    b = refiner.refine(_image(), preset, prompt="x", negative_prompt="ugly, bad hands", seed=3)
    assert a.tobytes() == b.tobytes()
    guided = replace(preset, cfg=1.5)
    c = refiner.refine(_image(), guided, prompt="x", negative_prompt="", seed=3)
    d = refiner.refine(_image(), guided, prompt="x", negative_prompt="ugly, bad hands", seed=3)
    assert c.tobytes() != d.tobytes()


def test_size_not_a_multiple_of_8_is_padded_then_cropped(refiner):
    preset = Preset(name="t", steps=4, denoise=0.5)
    image = _image(70, 61)
    out = refiner.refine(image, preset, prompt="x", negative_prompt="", seed=1)
    assert out.size == (70, 61) and out.mode == "RGB"
    # the crop keeps the top-left: the same pixels as refining the image padded by hand
    padded = Image.fromarray(np.pad(np.asarray(image), ((0, 3), (0, 2), (0, 0)), mode="reflect"))
    full = refiner.refine(padded, preset, prompt="x", negative_prompt="", seed=1)
    assert np.array_equal(np.asarray(full)[:61, :70], np.asarray(out))


def test_nai_alpha_is_dropped_not_treated_as_transparency(refiner):
    preset = Preset(name="t", steps=4, denoise=0.5)
    rgb = _image()
    rgba = rgb.copy()
    rgba.putalpha(Image.fromarray(np.full((64, 64), 254, dtype=np.uint8)))  # stealth data lives here
    a = refiner.refine(rgb, preset, prompt="x", negative_prompt="", seed=1)
    b = refiner.refine(rgba, preset, prompt="x", negative_prompt="", seed=1)
    assert a.tobytes() == b.tobytes()
