"""`naiup refine` with a ControlNet in the model set, end to end on the tiny SD1.5 model: the output
records which ControlNet ran at what strength, and only presets that run it carry it in the model id."""

from __future__ import annotations

import json
from pathlib import Path

import nai_writer
import tiny_controlnet
import tiny_sd
from PIL import Image

from naiup.cli.main import main

PRESETS = """
[presets.plain]
upscaler = "lanczos"
steps = 2
denoise = 0.5

[presets.held]
upscaler = "lanczos"
steps = 2
denoise = 0.5
control_strength = 0.7
"""


def _outputs(folder: Path, name: str) -> tuple[dict, str, bytes]:
    with Image.open(folder / name) as out:
        return json.loads(out.text["naiup"]), out.text["parameters"], out.convert("RGB").tobytes()


def test_refine_with_a_controlnet_records_it(tmp_path_factory, tmp_path, capsys):
    tiny = tiny_sd.session_tiny_sd(tmp_path_factory)
    cn = tiny_controlnet.session_tiny_controlnets(tmp_path_factory).sd15
    config = tmp_path / "config.toml"
    config.write_text(
        f'[watch]\nfolders = ["{tmp_path.as_posix()}"]\n'
        f'[model]\ncheckpoint = "{tiny.folder.as_posix()}"\nlcm_lora = "{tiny.lcm_lora.as_posix()}"\n'
        f'device = "cpu"\ncontrolnet = "{cn.folder.as_posix()}"\n' + PRESETS
    )
    src = nai_writer.write_nai_png(tmp_path / "a.png", (64, 64), seed=77, pixel_seed=2)
    for preset in ("plain", "held"):
        assert main(["--config", str(config), "refine", str(src), "--preset", preset]) == 0, (
            capsys.readouterr().err
        )

    plain, plain_text, plain_pixels = _outputs(tmp_path, "a.naiup-plain.png")
    held, held_text, held_pixels = _outputs(tmp_path, "a.naiup-held.png")
    assert held_pixels != plain_pixels
    assert held["parameters"]["controlnet"] == cn.folder.name
    assert held["parameters"]["control_strength"] == 0.7 and held["preset"]["control_strength"] == 0.7
    assert "controlnet" not in plain["parameters"]
    # upscaler + model set, + the ControlNet only where it ran.
    assert held["model_id"].startswith(plain["model_id"] + f"+{cn.folder.name}-")
    assert f"Model: {cn.folder.name}, Weight: 0.7" in held_text and "ControlNet" not in plain_text
