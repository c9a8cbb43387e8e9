"""Refusals and guards of the refine loop, the seams the tiling issue uses, and the seed policy."""

from __future__ import annotations

import numpy as np
import pytest
import tiny_sd
import torch
from PIL import Image

from naiup.config import ModelConfig, Preset
from naiup.engine.diffusion.refine import Refiner, decode_untiled, encode_untiled
from naiup.engine.diffusion.samplers import check_preset
from naiup.errors import ConfigError, EngineError


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tiny_sd.TinySD:
    return tiny_sd.session_tiny_sd(tmp_path_factory)


def _image() -> Image.Image:
    return Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8), "RGB")


@pytest.mark.parametrize(
    ("preset", "key"),
    [
        (Preset(name="p", steps=4, denoise=0.2), "presets.p.denoise"),  # int(4 x 0.2) = 0 steps
        (Preset(name="p", steps=0), "presets.p.steps"),
        (Preset(name="p", sampler="dpm"), "presets.p.sampler"),
        (Preset(name="p", denoise=0.0), "presets.p.denoise"),
    ],
)
def test_presets_that_cannot_run_are_refused_naming_the_key(preset, key):
    with pytest.raises(ConfigError) as err:
        check_preset(preset)
    assert err.value.key == key


def test_zero_steps_are_refused_before_any_model_work(tiny):
    r = Refiner(ModelConfig(checkpoint="does/not-exist-anywhere.safetensors", lcm_lora="", device="cpu"))
    with pytest.raises(ConfigError, match="0 refine steps"):
        r.refine(_image(), Preset(name="p", steps=4, denoise=0.2), prompt="", negative_prompt="", seed=0)


def test_nan_in_the_model_fails_with_an_engine_error_not_a_black_image(tiny):
    r = Refiner(ModelConfig(checkpoint=str(tiny.folder), lcm_lora="", device="cpu"))
    r.load()
    with torch.no_grad():
        r.models.unet.conv_out.bias.fill_(float("nan"))
    with pytest.raises(EngineError, match="NaN/Inf"):
        r.refine(_image(), Preset(name="p", steps=4, denoise=0.5), prompt="x", negative_prompt="", seed=0)


def test_tiling_seams_see_the_whole_canvas_once_per_step(tiny):
    """A wrapper in place of the tiled predictor and our own encode/decode are called as the contract says."""
    seen: list[tuple] = []
    vae_calls: list[str] = []

    def wrap(guided, preset, latent_hw):
        def predict(x, t):
            seen.append((tuple(x.shape), int(t), latent_hw))
            return guided(x, t)

        return predict

    def encode(vae, pixels, *, mode, generator=None, sample=False, attention_window=0):
        vae_calls.append(f"encode:{mode}:{attention_window}")
        return encode_untiled(vae, pixels, mode=mode, generator=generator, sample=sample)

    def decode(vae, latent, *, mode, attention_window=0):
        vae_calls.append(f"decode:{mode}:{attention_window}")
        return decode_untiled(vae, latent, mode=mode)

    cfg = ModelConfig(checkpoint=str(tiny.folder), lcm_lora=str(tiny.lcm_lora), device="cpu")
    plain = Refiner(cfg, wrap_predictor=None, encode=encode_untiled, decode=decode_untiled)
    wrapped = Refiner(cfg, wrap_predictor=wrap, encode=encode, decode=decode)
    preset = Preset(name="p", steps=8, denoise=0.5, vae_tiling="exact")
    img = Image.fromarray(np.random.default_rng(3).integers(0, 256, (72, 96, 3), dtype=np.uint8), "RGB")
    out = wrapped.refine(img, preset, prompt="x", negative_prompt="", seed=5)
    assert seen == [((1, 4, 9, 12), t, (9, 12)) for t in (499, 379, 259, 139)]
    assert vae_calls == ["encode:exact:256", "decode:exact:256"]
    # a pass-through wrapper changes nothing
    assert out.tobytes() == plain.refine(img, preset, prompt="x", negative_prompt="", seed=5).tobytes()


def test_progress_reports_each_step(tiny):
    r = Refiner(ModelConfig(checkpoint=str(tiny.folder), lcm_lora="", device="cpu"))
    reports: list[tuple[float, str]] = []
    r.refine(_image(), Preset(name="p", steps=4, denoise=0.5), prompt="", negative_prompt="", seed=0,
             progress=lambda f, stage: reports.append((f, stage)))  # fmt: skip
    assert reports == [(0.5, "refine"), (1.0, "refine")]
