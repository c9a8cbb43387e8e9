"""NovelAI character regions with ControlNet tile: every (tile, region) UNet sample runs beside the
ControlNet on its own tile's crop under its own region's prompt, and control_strength = 0 leaves the
regional refine exactly as it is without a ControlNet."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import tiny_controlnet
import torch
from PIL import Image

from naiup.config import Preset
from naiup.engine.diffusion.prompt_encoder import PromptEncoder
from naiup.engine.diffusion.refine import Refiner
from naiup.engine.diffusion.regions import region_predictor_for
from naiup.engine.diffusion.sdxl_conditioning import SDXLPromptEncoder
from naiup.engine.diffusion.tiling import batch_shape, plan_tiles
from naiup.engine.image_prompts import Region

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BACKGROUND = "park"
# A girl on the left, a boy up right: 128x96 px is a 16x12 latent, 8-latent tiles overlapping by 2 are
# 3 x 2 tiles, and the regions overlap some of them, so one tile's crop serves several prompts.
REGIONS = (
    Region("1girl, red hair", "bad hands", (0.3, 0.5), 0.5),
    Region("1boy, blue hair", "", (0.75, 0.4), 0.4),
)
PRESET = Preset(
    name="t", steps=4, denoise=0.5, cfg=1.5, sampler="euler", tile_size=8, overlap=2, tile_batch_size=6,
    vae_tiling="off", control_strength=0.9,
)  # fmt: skip


@pytest.fixture(scope="module")
def refiners(tmp_path_factory) -> dict[str, Refiner]:
    return tiny_controlnet.loaded_refiners(tmp_path_factory)


def _image(seed: int) -> Image.Image:
    """128x96 px of noise: a 16x12 latent."""
    pixels = np.random.default_rng(seed).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def _first_chunks(refiner: Refiner, prompts: list[str]) -> list[torch.Tensor]:
    """Each prompt's first 77-token context chunk, as the Refiner's encoder makes it."""
    m = refiner.models
    if m.family == "sdxl":
        enc = SDXLPromptEncoder(m.tokenizer, m.text_encoder, m.tokenizer_2, m.text_encoder_2, 1)
        return [enc.encode(p).context[0, :77] for p in prompts]
    enc = PromptEncoder(m.tokenizer, m.text_encoder, refiner.model.clip_skip)
    return [enc.encode(p)[0, :77] for p in prompts]


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_every_tile_and_region_sample_gets_its_own_tiles_control_residuals(refiners, family):
    refiner = refiners[family]
    image = _image(4)
    with tiny_controlnet.spying(refiner, "wrap_regions", region_predictor_for) as spies:
        refiner.refine(image, PRESET, prompt=BACKGROUND, negative_prompt="lowres", seed=7, regions=REGIONS)
    spy, unet_calls, canvases = spies.control, spies.unet_calls, spies.canvases

    plan = plan_tiles(12, 16, 8, 2)
    (predictor,) = spies.predictors  # one: the same prompts and ControlNet scale at both steps
    items = predictor.work  # (tile, region) per UNet sample, in batch order
    per_call = batch_shape(len(items), PRESET.tile_batch_size)
    calls = -(-len(items) // per_call)
    assert plan.count == 6 and len(canvases) == 2
    assert {r for _, r in items} == {0, 1, 2}
    shared = [k for k in range(plan.count) if len({r for t, r in items if t == k}) > 1]
    assert shared, "no tile runs more than one prompt: the test would not show per-sample control"
    assert len(items) % per_call, "no padded slot: the test would not cover the padded last batch"
    assert len(spy.calls) == len(unet_calls) == 2 * calls  # one ControlNet call per UNet call

    hint_canvas = torch.from_numpy(np.asarray(image).copy()).float().permute(2, 0, 1) / 255.0
    references = _first_chunks(refiner, [BACKGROUND, *(r.prompt for r in REGIONS)])
    for j, (call, unet) in enumerate(zip(spy.calls, unet_calls, strict=True)):
        canvas = canvases[j // calls]
        sample, hint, context = call["sample"], call["hint"], call["context"]
        # CFG: [uncond samples, cond samples], the hint repeated in the same order.
        assert sample.shape[0] == hint.shape[0] == context.shape[0] == 2 * per_call
        assert torch.equal(sample[:per_call], sample[per_call:])
        assert torch.equal(hint[:per_call], hint[per_call:])
        for slot in range(per_call):
            tile, region = items[min((j % calls) * per_call + slot, len(items) - 1)]  # padding repeats
            y, x = plan.origins[tile]
            assert torch.equal(sample[slot], canvas[0, :, y : y + 8, x : x + 8])
            # Its own tile's crop of the upscaled input, whatever region's prompt the sample carries ...
            assert torch.equal(hint[slot], hint_canvas[:, 8 * y : 8 * (y + 8), 8 * x : 8 * (x + 8)])
            # ... and that region's prompt in the ControlNet's context, as in the UNet's.
            cond = context[per_call + slot, :77].float()
            hits = [i for i, ref in enumerate(references) if torch.allclose(cond, ref.float(), atol=1e-5)]
            assert hits == [region], (j, slot, hits)
        # Its residuals go into the UNet call on the same samples and contexts, and into no other.
        tiny_controlnet.assert_feeds(call, unet)


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_regions_at_strength_zero_are_byte_identical_to_no_controlnet(refiners, tmp_path_factory, family):
    plain = Refiner(tiny_controlnet.cpu_config(tmp_path_factory, family, controlnet=False))
    controlled = refiners[family]
    spy = tiny_controlnet.ControlNetSpy(controlled.models.controlnet)
    image = _image(2)
    args = {"prompt": BACKGROUND, "negative_prompt": "lowres", "seed": 3, "regions": REGIONS}
    off = replace(PRESET, control_strength=0.0)
    controlled.models.controlnet = spy
    try:
        zero = controlled.refine(image, off, **args)
        assert spy.calls == []  # strength 0 runs no ControlNet at all
        # The control window: of the 2 UNet steps only the first runs it, on every (tile, region) batch.
        first = controlled.refine(image, replace(PRESET, control_end=0.5), **args)
        per_step = len(spy.calls)
        spy.calls.clear()
        both = controlled.refine(image, PRESET, **args)
        assert per_step > 0 and len(spy.calls) == 2 * per_step
    finally:
        controlled.models.controlnet = spy.net
    none = plain.refine(image, off, **args)
    assert zero.tobytes() == none.tobytes()
    assert len({zero.tobytes(), first.tobytes(), both.tobytes()}) == 3  # the ControlNet does steer it


def test_control_without_regions_is_the_single_prompt_controlled_refine(refiners):
    # Regions given but turned off by the preset: the controlled refine of the single prompt, bytes equal.
    refiner = refiners["sd15"]
    image = _image(5)
    args = {"prompt": BACKGROUND, "negative_prompt": "lowres", "seed": 11}
    single = refiner.refine(image, PRESET, **args)
    off = refiner.refine(image, replace(PRESET, regions="off"), **args, regions=REGIONS)
    regional = refiner.refine(image, PRESET, **args, regions=REGIONS)
    assert off.tobytes() == single.tobytes()
    assert regional.tobytes() != single.tobytes()
