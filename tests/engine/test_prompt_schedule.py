"""A1111 prompt editing and alternation: the text each UNet step sees, and that the UNet sees it."""

from __future__ import annotations

import numpy as np
import pytest
import tiny_sd
import torch
from PIL import Image

from naiup.config import Preset
from naiup.engine.diffusion.prompt_schedule import prompts_per_step
from naiup.engine.diffusion.refine import Refiner


@pytest.mark.parametrize(
    ("prompt", "steps", "expected"),
    [
        ("1girl, [red:blue:0.5] hair", 4, ["1girl, red hair"] * 2 + ["1girl, blue hair"] * 2),
        ("[red:blue:0.5]", 2, ["red", "blue"]),  # LCM's usual 2 steps
        ("[fox:3] x", 4, [" x"] * 3 + ["fox x"]),  # `when` >= 1 is a step number
        ("[a::0.5]b", 4, ["ab", "ab", "b", "b"]),
        ("[cat|dog|fox]", 4, ["cat", "dog", "fox", "cat"]),
        ("[[a|b]:c:0.5]", 4, ["a", "b", "c", "c"]),  # nested
        ("[cat:(dog:1.2):0.5]", 2, ["cat", "(dog:1.2)"]),  # a weight inside is not a separator
        ("[(red:1.2) hair], [x]", 3, ["[(red:1.2) hair], [x]"] * 3),  # de-emphasis stays
        ("a \\[x:y:0.5\\]", 2, ["a \\[x:y:0.5\\]"] * 2),  # escaped
        ("[open:x:0.5", 2, ["[open:x:0.5"] * 2),  # never closed: left to the attention parser
        ("[a:b:c]", 2, ["[a:b:c]"] * 2),  # `when` not a number: plain brackets
        ("", 3, ["", "", ""]),
    ],
)
def test_prompts_per_step(prompt, steps, expected):
    assert prompts_per_step(prompt, steps) == expected


def test_the_unet_sees_the_edited_prompt_on_each_step(tmp_path_factory):
    refiner = Refiner(tiny_sd.cpu_config(tmp_path_factory))
    refiner.load()
    seen: list[torch.Tensor] = []
    hook = refiner.models.unet.register_forward_hook(
        lambda _m, _a, kwargs, _o: seen.append(kwargs["encoder_hidden_states"][0].clone()), with_kwargs=True
    )
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8), "RGB")
    preset = Preset(name="p", steps=4, denoise=0.5)  # 2 UNet steps

    def run(prompt: str) -> bytes:
        seen.clear()
        return refiner.refine(image, preset, prompt=prompt, negative_prompt="", seed=2).tobytes()

    try:
        edited = run("1girl, [cat:dog:0.5]")
        cond_edited = list(seen)
        cat = run("1girl, cat")
        cond_cat = seen[0]
        run("1girl, dog")
        cond_dog = seen[0]
    finally:
        hook.remove()
    assert len(cond_edited) == 2
    assert torch.equal(cond_edited[0], cond_cat) and torch.equal(cond_edited[1], cond_dog)
    assert edited != cat
