"""Our SDXL img2img loop against diffusers' StableDiffusionXLImg2ImgPipeline, and SDXL tile batching."""

from __future__ import annotations

import numpy as np
import pytest
import tiny_sdxl
import torch
from diffusers import EulerDiscreteScheduler, LCMScheduler, StableDiffusionXLImg2ImgPipeline
from PIL import Image

from naiup.config import ModelConfig, Preset
from naiup.engine.diffusion.refine import Refiner
from naiup.engine.diffusion.samplers import dmd2_timesteps

PROMPT, NEGATIVE = "(masterpiece:1.2), 1girl", "(worst quality:1.4)"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tiny_sdxl.TinySDXL:
    return tiny_sdxl.session_tiny_sdxl(tmp_path_factory)


@pytest.fixture(scope="module")
def refiners(tiny) -> dict[str, Refiner]:
    out = {}
    for kind, folder in (("epsilon", tiny.folder), ("v", tiny.v_folder)):
        r = Refiner(ModelConfig(checkpoint=str(folder), lcm_lora="", device="cpu"))
        r.load()
        out[kind] = r
    return out


def _image(w: int = 96, h: int = 64, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


@pytest.mark.parametrize(
    ("kind", "sampler", "cfg"),
    [
        ("epsilon", "lcm", 1.0),
        ("epsilon", "dmd2", 1.0),
        ("epsilon", "euler", 1.0),
        ("epsilon", "euler", 1.5),
        ("v", "lcm", 1.0),
        ("v", "euler", 1.0),
        ("v", "euler", 1.5),
    ],
)
def test_one_tile_matches_the_sdxl_img2img_pipeline(refiners, kind, sampler, cfg):
    refiner = refiners[kind]
    steps = 4 if sampler == "dmd2" else 8
    preset = Preset(name="t", steps=steps, denoise=0.5, cfg=cfg, sampler=sampler, tile_size=64)
    image = _image()
    ours = refiner.refine(image, preset, prompt=PROMPT, negative_prompt=NEGATIVE, seed=1234)

    m, enc = refiner.models, refiner._encoder
    assert m.prediction.label == {"epsilon": "epsilon", "v": "v+zsnr"}[kind]
    scheduler_cls = EulerDiscreteScheduler if sampler == "euler" else LCMScheduler
    scheduler = scheduler_cls.from_config(m.scheduler_config)
    assert scheduler.config.prediction_type == {"epsilon": "epsilon", "v": "v_prediction"}[kind]
    pipe = StableDiffusionXLImg2ImgPipeline(
        vae=m.vae, text_encoder=m.text_encoder, text_encoder_2=m.text_encoder_2, tokenizer=m.tokenizer,
        tokenizer_2=m.tokenizer_2, unet=m.unet, scheduler=scheduler, requires_aesthetics_score=False,
        force_zeros_for_empty_prompt=True, add_watermarker=False,
    )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    cond, uncond = enc.pair(PROMPT, NEGATIVE if cfg > 1 else None)
    extra = (
        {"negative_prompt_embeds": uncond.context, "negative_pooled_prompt_embeds": uncond.pooled}
        if uncond
        else {}
    )
    schedule = {"timesteps": dmd2_timesteps(steps)} if sampler == "dmd2" else {"num_inference_steps": steps}
    oracle = pipe(
        prompt_embeds=cond.context,
        pooled_prompt_embeds=cond.pooled,
        image=image,
        strength=0.5,
        guidance_scale=cfg,
        generator=torch.Generator("cpu").manual_seed(1234),
        output_type="pil",
        **schedule,
        **extra,
    ).images[0]
    assert ours.size == oracle.size and ours.mode == "RGB"
    assert np.array_equal(np.asarray(ours), np.asarray(oracle))


def test_dmd2_runs_its_own_grid_tail():
    assert dmd2_timesteps(4) == [999, 749, 499, 249]


def test_every_tiled_unet_call_gets_text_embeds_and_time_ids_batched_with_its_tiles(refiners):
    refiner = refiners["epsilon"]
    calls: list[tuple[int, dict]] = []

    def spy(_module, args, kwargs):
        calls.append((args[0].shape[0], {k: v.clone() for k, v in kwargs["added_cond_kwargs"].items()}))

    handle = refiner.models.unet.register_forward_pre_hook(spy, with_kwargs=True)
    preset = Preset(
        name="t", steps=4, denoise=0.5, cfg=1.5, sampler="euler", tile_size=8, overlap=4, tile_batch_size=3
    )
    try:
        refiner.refine(_image(128, 96), preset, prompt="a cat", negative_prompt="bad", seed=3)
    finally:
        handle.remove()
    cond, uncond = refiner._encoder.pair("a cat", "bad")
    # latent 12x16, tile 8, overlap 4: 2 x 3 = 6 tiles in 2 batches of 3 -> 6 UNet inputs (uncond + cond)
    assert len(calls) == 2 * 2 and all(batch == 6 for batch, _ in calls)
    for _, added in calls:
        assert added["time_ids"].tolist() == [[96.0, 128.0, 0.0, 0.0, 96.0, 128.0]] * 6
        assert torch.equal(added["text_embeds"][:3], uncond.pooled.expand(3, -1))
        assert torch.equal(added["text_embeds"][3:], cond.pooled.expand(3, -1))
