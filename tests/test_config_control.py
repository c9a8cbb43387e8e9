"""ControlNet keys: [model] controlnet (a local file or folder) and the presets' control_* keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from naiup.config import BUILTIN_PRESETS, Preset, load_config
from naiup.config.check import Severity, find_problems
from naiup.config.model import control_scales
from naiup.errors import ConfigError
from naiup.output.provenance import a1111_parameters


def _load(tmp_path: Path, text: str, **kw):
    path = tmp_path / "config.toml"
    path.write_text(f'[watch]\nfolders = ["{tmp_path.as_posix()}"]\n{text}', encoding="utf-8")
    return load_config(path, **kw)


@pytest.mark.parametrize(
    ("text", "key", "reason"),
    [
        ("[presets.x]\ncontrol_strength = 2.5", "presets.x.control_strength", "between 0 and 2"),
        ("[presets.x]\ncontrol_strength = -0.1", "presets.x.control_strength", "between 0 and 2"),
        ("[presets.x]\ncontrol_end = 1.2", "presets.x.control_end", "between 0 and 1"),
        ('[presets.x]\ncontrol_start = "0"', "presets.x.control_start", "must be a number"),
        (
            "[presets.x]\ncontrol_start = 0.5\ncontrol_end = 0.5",
            "presets.x.control_start",
            "must be below control_end (0.5), got 0.5",
        ),
        # 10 x 0.2 = 2 UNet steps: [0.6, 1] holds neither [0, 0.5] nor [0.5, 1].
        (
            "[presets.x]\ncontrol_strength = 0.5\ncontrol_start = 0.6",
            "presets.x.control_start",
            "covers none of the 2 UNet steps",
        ),
        ('[model]\ncontrolnet = "nope/tile.safetensors"', "model.controlnet", "file or folder not found"),
        ('[model]\ncontrolnet = "xinsir/controlnet-tile-sdxl-1.0"', "model.controlnet", "hf download xinsir"),
    ],
)
def test_bad_control_keys_are_refused_naming_the_key(tmp_path, text, key, reason):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, text)
    assert f"[{key}]" in str(err.value) and reason in str(err.value)


def test_controlnet_paths_are_taken_from_the_config_folder(tmp_path):
    (tmp_path / "cn").mkdir()
    (tmp_path / "tile.pth").write_bytes(b"x")
    assert _load(tmp_path, '[model]\ncontrolnet = "cn"').model.controlnet == str(tmp_path / "cn")
    assert _load(tmp_path, '[model]\ncontrolnet = "tile.pth"').model.controlnet == str(tmp_path / "tile.pth")
    # The daemon loads with missing model files allowed: the engine load reports them.
    later = _load(tmp_path, '[model]\ncontrolnet = "later"', model_files_must_exist=False)
    assert later.model.controlnet == str(tmp_path / "later")


def test_the_strong_preset_runs_the_controlnet_on_its_first_three_of_four_steps():
    strong = BUILTIN_PRESETS["refine-2x-strong"]
    assert strong.unet_steps == 4
    assert strong.control_scales == (0.8, 0.8, 0.8, 0.0)
    assert BUILTIN_PRESETS["xl-refine-2x-strong"].control_scales == strong.control_scales
    assert {name for name, p in BUILTIN_PRESETS.items() if p.control_strength} == {
        "refine-2x-strong",
        "xl-refine-2x-strong",
    }


def test_step_window_follows_diffusers_control_guidance_rule():
    # diffusers keeps step i when not (i/n < start or (i+1)/n > end).
    assert control_scales(4, 0.5, 0.25, 0.75) == (0.0, 0.5, 0.5, 0.0)
    assert control_scales(3, 1.0, 0.0, 1.0) == (1.0, 1.0, 1.0)
    assert control_scales(4, 0.0, 0.0, 1.0) == (0.0,) * 4
    assert Preset(name="x", refine=False, control_strength=1.0).control_scales == ()


def test_config_check_flags_control_without_a_controlnet(tmp_path):
    def problems(text: str):
        return [p for p in find_problems(_load(tmp_path, text)) if p.key.endswith("control_strength")]

    # The built-in strong preset, unused, is not news; active, its jobs would all fail.
    assert problems("") == []
    (active,) = problems('[daemon]\nactive_preset = "refine-2x-strong"')
    assert active.severity is Severity.ERROR and active.key == "presets.refine-2x-strong.control_strength"
    assert "model.controlnet is empty" in active.message
    (mine,) = problems("[presets.mine]\ncontrol_strength = 0.5")
    assert mine.severity is Severity.NOTE and mine.key == "presets.mine.control_strength"
    (tmp_path / "cn").mkdir()
    assert problems('[model]\ncontrolnet = "cn"\n[daemon]\nactive_preset = "refine-2x-strong"') == []


def test_a1111_infotext_names_the_controlnet_unit():
    params = {
        "refine": True, "prompt": "p", "steps": 10, "sampler": "lcm", "cfg": 1.0, "seed": 1, "denoise": 0.4,
        "controlnet": "control_v11f1e_sd15_tile", "control_strength": 0.8, "control_start": 0.0,
        "control_end": 0.75,
    }  # fmt: skip
    text = a1111_parameters(params, (128, 128), ("", ""))
    assert (
        'ControlNet 0: "Module: tile_resample, Model: control_v11f1e_sd15_tile, Weight: 0.8, '
        'Guidance Start: 0.0, Guidance End: 0.75"'
    ) in text
    assert "ControlNet" not in a1111_parameters({**params, "controlnet": None}, (128, 128), ("", ""))
