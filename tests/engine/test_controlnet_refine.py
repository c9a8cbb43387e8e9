"""ControlNet tile in the refine loop: one tile against diffusers' ControlNet img2img pipelines, every
tile's ControlNet call on its own crop, and control_strength = 0 as no ControlNet at all."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import tiny_controlnet
import torch
from diffusers import (
    EulerDiscreteScheduler,
    LCMScheduler,
    StableDiffusionControlNetImg2ImgPipeline,
    StableDiffusionXLControlNetImg2ImgPipeline,
)
from PIL import Image

from naiup.config import Preset
from naiup.engine.diffusion.refine import Refiner
from naiup.engine.diffusion.tiling import plan_tiles, predictor_for, tiled_predictor
from naiup.engine.vae.tiled import decode as decode_tiled
from naiup.errors import ConfigError

PROMPT, NEGATIVE = "(masterpiece:1.2), 1girl", "(worst quality:1.4)"


@pytest.fixture(scope="module")
def refiners(tmp_path_factory) -> dict[str, Refiner]:
    return tiny_controlnet.loaded_refiners(tmp_path_factory)


def _image(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


class _LatentTap:
    """The Refiner's decode seam, keeping the final latent it is given."""

    def __init__(self) -> None:
        self.latent: torch.Tensor | None = None

    def __call__(self, vae, latent, **kw):
        self.latent = latent.clone()
        return decode_tiled(vae, latent, **kw)


def _one_tile(guided, preset, latent_hw):
    # The tiled path (boxes given) with a single tile covering the canvas.
    return tiled_predictor(guided, plan_tiles(*latent_hw, max(latent_hw), 0), "mixture", 1)


def _pipeline(refiner: Refiner, sampler: str):
    m = refiner.models
    scheduler = {"lcm": LCMScheduler, "euler": EulerDiscreteScheduler}[sampler].from_config(
        m.scheduler_config
    )
    if m.family == "sdxl":
        pipe = StableDiffusionXLControlNetImg2ImgPipeline(
            vae=m.vae, text_encoder=m.text_encoder, text_encoder_2=m.text_encoder_2, tokenizer=m.tokenizer,
            tokenizer_2=m.tokenizer_2, unet=m.unet, controlnet=m.controlnet, scheduler=scheduler,
            requires_aesthetics_score=False, force_zeros_for_empty_prompt=True, add_watermarker=False,
        )  # fmt: skip
    else:
        pipe = StableDiffusionControlNetImg2ImgPipeline(
            vae=m.vae, text_encoder=m.text_encoder, tokenizer=m.tokenizer, unet=m.unet,
            controlnet=m.controlnet, scheduler=scheduler, safety_checker=None, feature_extractor=None,
            requires_safety_checker=False,
        )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _embeds(refiner: Refiner, cfg: float) -> dict:
    enc = refiner._encoder
    if refiner.models.family == "sdxl":
        cond, uncond = enc.pair(PROMPT, NEGATIVE if cfg > 1 else None)
        out = {"prompt_embeds": cond.context, "pooled_prompt_embeds": cond.pooled}
        if uncond is not None:
            out |= {"negative_prompt_embeds": uncond.context, "negative_pooled_prompt_embeds": uncond.pooled}
        return out
    out = {"prompt_embeds": enc.encode(PROMPT)}
    return out | ({"negative_prompt_embeds": enc.encode(NEGATIVE)} if cfg > 1 else {})


@pytest.mark.parametrize(
    ("family", "sampler", "cfg", "strength", "window", "path"),
    [
        ("sd15", "lcm", 1.0, 0.8, (0.0, 1.0), "untiled"),
        ("sd15", "euler", 1.5, 1.0, (0.0, 1.0), "one-tile"),
        ("sd15", "lcm", 1.0, 0.6, (0.25, 0.75), "untiled"),
        ("sdxl", "lcm", 1.0, 0.8, (0.0, 1.0), "one-tile"),
        ("sdxl", "euler", 1.5, 0.5, (0.0, 0.5), "untiled"),
    ],
)
def test_one_tile_matches_the_diffusers_controlnet_img2img_pipeline(
    refiners, family, sampler, cfg, strength, window, path
):
    refiner = refiners[family]
    tap = _LatentTap()
    refiner.decode, refiner.wrap_predictor = tap, (predictor_for if path == "untiled" else _one_tile)
    size = (96, 64) if family == "sdxl" else (64, 64)
    preset = Preset(
        name="t", steps=8, denoise=0.5, cfg=cfg, sampler=sampler, tile_size=64,
        control_strength=strength, control_start=window[0], control_end=window[1],
    )  # fmt: skip
    image = _image(*size)
    try:
        ours = refiner.refine(image, preset, prompt=PROMPT, negative_prompt=NEGATIVE, seed=1234)
    finally:
        refiner.decode, refiner.wrap_predictor = decode_tiled, predictor_for

    pipe, embeds = _pipeline(refiner, sampler), _embeds(refiner, cfg)
    run = dict(
        image=image, control_image=image, strength=0.5, num_inference_steps=8, guidance_scale=cfg,
        controlnet_conditioning_scale=strength, control_guidance_start=window[0],
        control_guidance_end=window[1], **embeds,
    )  # fmt: skip
    latent = pipe(**run, generator=torch.Generator("cpu").manual_seed(1234), output_type="latent").images
    assert (tap.latent - latent).abs().max().item() <= 1e-5  # 0.0 on CPU when written
    assert ours.size == image.size


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_strength_zero_is_byte_identical_to_no_controlnet_and_never_runs_it(
    refiners, tmp_path_factory, family
):
    plain = Refiner(tiny_controlnet.cpu_config(tmp_path_factory, family, controlnet=False))
    controlled = refiners[family]
    spy = tiny_controlnet.ControlNetSpy(controlled.models.controlnet)
    controlled.models.controlnet = spy
    preset = Preset(name="t", steps=4, denoise=0.5, cfg=1.5, sampler="euler", tile_size=8, overlap=2)
    image = _image(72, 56)
    try:
        off = controlled.refine(image, preset, prompt="a cat", negative_prompt="bad", seed=5)
        on = controlled.refine(
            image, replace(preset, control_strength=0.7), prompt="a cat", negative_prompt="bad", seed=5
        )
    finally:
        controlled.models.controlnet = spy.net
    none = plain.refine(image, preset, prompt="a cat", negative_prompt="bad", seed=5)
    assert off.tobytes() == none.tobytes()
    assert len(spy.calls) > 0  # only the strength-0.7 refine ran it ...
    assert on.tobytes() != none.tobytes()  # ... and it changes the result


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_every_tiles_controlnet_call_gets_its_own_crop_and_feeds_only_its_unet_call(refiners, family):
    refiner = refiners[family]
    # 203x141 px: padded to 208x144 (reflect), a 26x18 latent; tile 8 / overlap 3 gives 5 x 3 tiles with
    # the last row and column flush with the edges; batches of 4 tiles, the last one padded.
    image = _image(203, 141, seed=3)
    preset = Preset(
        name="t", steps=4, denoise=0.5, cfg=1.5, sampler="euler", tile_size=8, overlap=3, tile_batch_size=4,
        control_strength=0.9,
    )  # fmt: skip
    with tiny_controlnet.spying(refiner, "wrap_predictor", predictor_for) as spies:
        refiner.refine(image, preset, prompt="a cat", negative_prompt="bad", seed=9)
    spy, unet_calls, canvases = spies.control, spies.unet_calls, spies.canvases

    padded = np.pad(np.asarray(image), ((0, 3), (0, 5), (0, 0)), mode="reflect")
    hint_canvas = torch.from_numpy(padded).float().permute(2, 0, 1) / 255.0
    plan = plan_tiles(18, 26, 8, 3)
    assert plan.count == 15 and max(plan.starts_x) + 8 == 26 and max(plan.starts_y) + 8 == 18
    assert len(canvases) == 2 and len(spy.calls) == len(unet_calls) == 2 * 4  # 2 steps x 4 batches
    for j, call in enumerate(spy.calls):
        canvas = canvases[j // 4]
        sample, hint = call["sample"], call["hint"]
        assert sample.shape[0] == hint.shape[0] == 2 * 4  # CFG: [uncond tiles, cond tiles]
        assert torch.equal(sample[:4], sample[4:]) and torch.equal(hint[:4], hint[4:])
        for slot in range(4):
            # Which tile this latent is, found by content, then the hint must be its 8x crop.
            (y, x), *others = [
                (y, x)
                for y, x in plan.origins
                if torch.equal(canvas[0, :, y : y + 8, x : x + 8], sample[slot])
            ]
            assert not others
            assert torch.equal(hint[slot], hint_canvas[:, 8 * y : 8 * (y + 8), 8 * x : 8 * (x + 8)])
        # Its residuals go into the UNet call on the same batch, and into no other.
        tiny_controlnet.assert_feeds(call, unet_calls[j])
    # Every tile got a call at every step.
    for step in range(2):
        seen = set()
        for call in spy.calls[4 * step : 4 * step + 4]:
            for slot in range(4):
                seen |= {
                    (y, x)
                    for y, x in plan.origins
                    if torch.equal(canvases[step][0, :, y : y + 8, x : x + 8], call["sample"][slot])
                }
        assert seen == set(plan.origins)


def test_a_preset_with_control_but_no_controlnet_in_the_set_is_refused(tmp_path_factory):
    plain = Refiner(tiny_controlnet.cpu_config(tmp_path_factory, "sd15", controlnet=False))
    preset = Preset(name="strong", steps=4, denoise=0.5, control_strength=0.5)
    with pytest.raises(
        ConfigError, match=r"presets\.strong\.control_strength.*no ControlNet.*control_v11f1e_sd15_tile"
    ):
        plain.refine(_image(64, 64), preset, prompt="x", negative_prompt="", seed=1)
