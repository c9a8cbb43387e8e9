"""Refusals and guards of the refine loop (its one entry check, NaN), and the seams the tiling uses."""

from __future__ import annotations

import numpy as np
import pytest
import tiny_sd
import torch
from PIL import Image
from plain_vae import decode_untiled, encode_untiled

from naiup.config import ModelConfig, Preset
from naiup.config.schema import RULES
from naiup.engine.diffusion.inputs import check_inputs
from naiup.engine.diffusion.refine import Refiner
from naiup.engine.diffusion.samplers import SAMPLERS
from naiup.errors import ConfigError, EngineError

NOWHERE = ModelConfig(checkpoint="does/not-exist-anywhere.safetensors", lcm_lora="", device="cpu")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tiny_sd.TinySD:
    return tiny_sd.session_tiny_sd(tmp_path_factory)


def _image() -> Image.Image:
    return Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8), "RGB")


# Each rule itself is tested once, where it lives (tests/test_config_errors.py); these check that a
# Preset or ModelConfig built in code, which never went through load_config, meets the same rules at
# Refiner.refine, before any model work (the checkpoint below does not exist).
@pytest.mark.parametrize(
    ("model", "preset", "key"),
    [
        (NOWHERE, Preset(name="p", steps=4, denoise=0.2), "presets.p.steps"),  # int(4 x 0.2) = 0 steps
        (NOWHERE, Preset(name="p", sampler="dpm"), "presets.p.sampler"),
        (NOWHERE, Preset(name="p", tile_size=32, overlap=32), "presets.p.overlap"),
        (NOWHERE, Preset(name="p", vae_tiling="fast"), "presets.p.vae_tiling"),
        (NOWHERE, Preset(name="p", seed="7"), "presets.p.seed"),
        (NOWHERE, Preset(name="p", steps="10"), "presets.p.steps"),  # type: ignore[arg-type]
        # `refine` is the Engine's switch: a preset that only upscales still needs a UNet step here.
        (NOWHERE, Preset(name="p", refine=False, steps=1, denoise=0.5), "presets.p.steps"),
        (ModelConfig(device="gpu"), Preset(name="p"), "model.device"),
        (ModelConfig(clip_skip=0), Preset(name="p"), "model.clip_skip"),
    ],
)
def test_values_the_config_would_refuse_are_refused_at_refine_naming_the_key(model, preset, key):
    with pytest.raises(ConfigError) as err:
        Refiner(model).refine(_image(), preset, prompt="", negative_prompt="", seed=0)
    assert err.value.key == key and err.value.path is None


@pytest.mark.parametrize(
    ("image", "seed", "match"),
    [
        (Image.new("RGB", (0, 8)), 0, "non-empty image, got 0x8"),
        (torch.zeros(0, 8, 3, dtype=torch.uint8), 0, "non-empty image, got 8x0"),
        (torch.zeros(8, 8, 3), 0, r"uint8 pixels, got \(8, 8, 3\) torch.float32"),
        (torch.zeros(8, 8, 4, dtype=torch.uint8), 0, r"\(H, W, 3\) uint8 pixels, got \(8, 8, 4\)"),
        (np.zeros((8, 8, 3), dtype=np.uint8), 0, "PIL image or .* got ndarray"),
        (Image.new("RGB", (8, 8)), 2**64, "seed must be an integer"),
        (Image.new("RGB", (8, 8)), 1.0, "seed must be an integer"),
    ],
)
def test_what_the_config_cannot_know_is_checked_at_refine(image, seed, match):
    with pytest.raises(EngineError, match=match):
        check_inputs(NOWHERE, Preset(name="p"), image, seed)


def test_valid_inputs_pass_including_an_image_smaller_than_a_tile():
    for image in (Image.new("RGBA", (1, 1)), torch.zeros(3, 5, 3, dtype=torch.uint8)):
        check_inputs(NOWHERE, Preset(name="p"), image, -(2**63))


def test_the_config_allows_exactly_the_samplers_the_loop_has():
    assert RULES["Preset.sampler"]("nope") == f"must be one of {', '.join(SAMPLERS)}; got 'nope'"


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
