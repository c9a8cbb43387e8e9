"""`naiup config show` writes TOML that load_config reads back to the same Config."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from naiup.config import BUILTIN_PRESETS, Config, load_config
from naiup.config.dump import dump_config


def _reload(tmp_path: Path, config: Config) -> Config:
    path = tmp_path / "shown.toml"
    path.write_text(dump_config(config), encoding="utf-8")
    return dataclasses.replace(load_config(path), source=config.source)


def test_defaults_round_trip_and_include_the_built_in_presets(tmp_path: Path):
    config = load_config(tmp_path / "absent.toml")
    text = dump_config(config)
    assert set(tomllib.loads(text)["presets"]) == set(BUILTIN_PRESETS)
    assert _reload(tmp_path, config) == config


def test_a_full_user_config_round_trips(tmp_path: Path):
    (tmp_path / "style.safetensors").write_bytes(b"x")
    (tmp_path / "loras").mkdir()
    src = tmp_path / "config.toml"
    src.write_text(
        '[watch]\nfolders = ["a", "b"]\nrecursive = true\n'
        '[model]\nlora_dirs = ["loras"]\nloras = [{ path = "style.safetensors", weight = 0.75 }]\n'
        'device = "cpu"\nclip_skip = 2\n'
        '[pause]\nprocesses = ["game.exe"]\n'
        '[daemon]\nactive_preset = "my.preset"\n'
        '[presets."my.preset"]\nseed = 7\nprompt = "say \\"hi\\"\\\\ \\n ünïcode \\u007f"\n',
        encoding="utf-8",
    )
    config = load_config(src)
    assert _reload(tmp_path, config) == config


@settings(max_examples=60, deadline=None)
@given(prompt=st.text(), seed=st.one_of(st.sampled_from(["image", "random"]), st.integers(0, 2**32 - 1)))
def test_any_prompt_text_and_seed_round_trip(tmp_path_factory, prompt: str, seed: str | int):
    tmp = tmp_path_factory.mktemp("rt")
    preset = dataclasses.replace(BUILTIN_PRESETS["refine-2x"], prompt=prompt, negative_prompt=prompt)
    preset = dataclasses.replace(preset, seed=seed)
    config = Config(watch=dataclasses.replace(Config().watch, folders=(tmp,)))
    config = dataclasses.replace(config, presets={**config.presets, "refine-2x": preset})
    assert _reload(tmp, config) == config
