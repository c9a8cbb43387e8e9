"""Engine composition: alpha dropped, models cached, seed and prompt policy (real stand-in refiner)."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from naiup.config import ModelConfig, Preset
from naiup.engine import Engine
from naiup.engine.engine import choose_seed
from naiup.metadata.read import CharacterPrompt, ImageMetadata, MetadataFormat

CPU = torch.device("cpu")
LANCZOS_ONLY = Preset(name="lz", upscaler="lanczos", refine=False, scale=2.0)
REFINE = Preset(name="rf", upscaler="lanczos", refine=True, scale=2.0, cfg=1.0)
NAI_META = ImageMetadata(
    format=MetadataFormat.NOVELAI,
    prompt="1girl, {blue hair}",
    negative_prompt="lowres",
    characters=(CharacterPrompt("girl, red eyes"),),
    seed=4242,
)


class SeedShiftRefiner:
    """A small real refiner: shifts pixels by the seed, so the seed visibly decides the output."""

    model_id, family, prediction, accepts_pixels = "seed-shift", "sd15", "epsilon", False
    controlnet_id = controlnet_name = ""

    def __init__(self, model: ModelConfig, device: torch.device) -> None:
        self.loads, self.calls = 0, []

    def load(self) -> None:
        self.loads += 1

    def model_id_for(self, prompt: str, negative_prompt: str = "") -> str:
        return self.model_id

    def refine(self, image, preset, *, prompt, negative_prompt, seed, progress=None):
        self.calls.append({"prompt": prompt, "negative_prompt": negative_prompt, "seed": seed})
        arr = (np.asarray(image, dtype=np.int64) + seed) % 256
        if progress:
            progress(1.0, "refine")
        return Image.fromarray(arr.astype(np.uint8), "RGB")


def _engine() -> tuple[Engine, list[SeedShiftRefiner]]:
    made: list[SeedShiftRefiner] = []

    def factory(model, device):
        made.append(SeedShiftRefiner(model, device))
        return made[-1]

    return Engine(ModelConfig(device="cpu"), CPU, refiner_factory=factory), made


def _rgba(seed: int = 0, alpha: int = 255) -> Image.Image:
    arr = np.random.default_rng(seed).integers(0, 256, (16, 20, 4), dtype=np.uint8)
    arr[..., 3] = alpha
    return Image.fromarray(arr, "RGBA")


def test_alpha_is_dropped_not_composited():
    engine, _ = _engine()
    opaque = engine.process(_rgba(alpha=255), ImageMetadata(), LANCZOS_ONLY)
    clear = engine.process(_rgba(alpha=3), ImageMetadata(), LANCZOS_ONLY)
    assert opaque.image.mode == "RGB" and opaque.image.size == (40, 32)
    assert opaque.image.tobytes() == clear.image.tobytes()  # alpha holds stealth bits, not transparency
    assert opaque.seed is None and "upscale" in opaque.timings


def test_palette_and_grey_inputs_become_rgb():
    engine, _ = _engine()
    for im in (_rgba().convert("P"), _rgba().convert("L"), _rgba().convert("LA")):
        assert engine.process(im, ImageMetadata(), LANCZOS_ONLY).image.mode == "RGB"


def test_upscaler_loads_once_and_refiner_only_for_refine_presets():
    engine, made = _engine()
    engine.process(_rgba(), ImageMetadata(), LANCZOS_ONLY)
    assert made == []
    engine.process(_rgba(), NAI_META, REFINE)
    engine.process(_rgba(), NAI_META, REFINE)
    assert len(made) == 1 and made[0].loads == 1 and len(made[0].calls) == 2
    assert engine.model_id(REFINE) == "lanczos+seed-shift"


def test_switching_upscalers_keeps_only_the_one_in_use(monkeypatch):
    from naiup.engine import engine as engine_module

    loads: list[str] = []
    real = engine_module.load_upscaler
    monkeypatch.setattr(
        engine_module, "load_upscaler", lambda spec, dev: loads.append(spec) or real(spec, dev)
    )
    engine, _ = _engine()
    cugan = replace(LANCZOS_ONLY, upscaler="realcugan-2x")
    for preset in (LANCZOS_ONLY, LANCZOS_ONLY, cugan, cugan, LANCZOS_ONLY):
        engine.process(_rgba(), ImageMetadata(), preset)
    assert loads == ["lanczos", "realcugan-2x", "lanczos"]
    assert list(engine._upscalers) == ["lanczos"]


def test_image_seed_policy_uses_the_nai_seed():
    engine, made = _engine()
    result = engine.process(_rgba(), NAI_META, REFINE)
    assert result.seed == 4242 and made[0].calls[-1]["seed"] == 4242
    assert result.parameters["seed"] == 4242


def test_image_seed_without_a_nai_seed_is_derived_from_the_pixels():
    engine, _ = _engine()
    a = engine.process(_rgba(1), ImageMetadata(), REFINE)
    b = engine.process(_rgba(1), ImageMetadata(), REFINE)
    c = engine.process(_rgba(2), ImageMetadata(), REFINE)
    assert a.seed == b.seed != c.seed
    assert a.image.tobytes() == b.image.tobytes()


@pytest.mark.parametrize("claimed", [10**30, -1, 2**32])
def test_a_nai_seed_outside_32_bits_falls_back_to_the_pixel_seed(claimed):
    # A crafted Comment's seed of 1e30 overflowed torch's manual_seed (a bare ValueError mid-job).
    image = _rgba(1).convert("RGB")
    seed = choose_seed("image", replace(NAI_META, seed=claimed), image)
    assert seed == choose_seed("image", ImageMetadata(), image)
    torch.Generator("cpu").manual_seed(seed)


def test_fixed_and_random_seed_policies():
    engine, _ = _engine()
    assert engine.process(_rgba(), NAI_META, replace(REFINE, seed=7)).seed == 7
    seeds = {engine.process(_rgba(), NAI_META, replace(REFINE, seed="random")).seed for _ in range(4)}
    assert len(seeds) > 1
    # Other policies ("7" in quotes, "sometimes") are the config's to refuse (tests/test_config_errors.py),
    # and Refiner.refine's for a preset built in code (tests/engine/test_refine_guards.py).


def test_prompt_is_the_preset_tags_unless_the_image_prompt_is_asked_for():
    engine, made = _engine()
    engine.process(_rgba(), NAI_META, REFINE)
    assert made[0].calls[-1]["prompt"] == REFINE.prompt
    engine.process(_rgba(), NAI_META, replace(REFINE, use_image_prompt=True))
    prompt = made[0].calls[-1]["prompt"]
    assert prompt.startswith(REFINE.prompt) and "blue hair" in prompt and prompt.endswith("girl, red eyes")


def test_lora_tags_in_the_image_prompt_are_inert():
    engine, made = _engine()
    meta = replace(NAI_META, prompt="1girl, <lora:evil:1.5>", characters=(CharacterPrompt("<lora:x:.>cat"),))
    engine.process(_rgba(), meta, replace(REFINE, use_image_prompt=True))
    prompt = made[0].calls[-1]["prompt"]
    assert "<lora" not in prompt and "1girl" in prompt and prompt.endswith("cat")


def test_negative_prompt_only_when_cfg_above_one():
    engine, made = _engine()
    engine.process(_rgba(), NAI_META, replace(REFINE, cfg=1.0))
    assert made[0].calls[-1]["negative_prompt"] == ""
    engine.process(_rgba(), NAI_META, replace(REFINE, cfg=2.0))
    assert made[0].calls[-1]["negative_prompt"] == REFINE.negative_prompt


def test_progress_reaches_one_and_never_goes_back():
    engine, _ = _engine()
    seen: list[float] = []
    engine.process(_rgba(), NAI_META, REFINE, progress=lambda f, _label: seen.append(f))
    assert seen[-1] == 1.0 and seen == sorted(seen)


def test_upscale_only_presets_never_import_diffusers():
    code = (
        "import sys, torch\n"
        "from PIL import Image\n"
        "from naiup.config import BUILTIN_PRESETS, ModelConfig\n"
        "from naiup.engine import Engine\n"
        "from naiup.metadata.read import ImageMetadata\n"
        "e = Engine(ModelConfig(device='cpu'), torch.device('cpu'))\n"
        "im = Image.new('RGBA', (40, 40), 'red')\n"
        "out = e.process(im, ImageMetadata(), BUILTIN_PRESETS['upscale-2x'])\n"
        "assert out.image.size == (80, 80), out.image.size\n"
        "assert 'diffusers' not in sys.modules and 'transformers' not in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
