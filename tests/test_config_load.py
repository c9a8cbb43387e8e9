"""What load_config builds from a valid file: defaults, preset merging, paths, hashability."""

from __future__ import annotations

from pathlib import Path

import platformdirs
import pytest

from naiup.config import BUILTIN_PRESETS, Config, Preset, load_config
from naiup.errors import ConfigError


def _load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def test_missing_file_means_built_in_defaults_watching_the_downloads_folder(tmp_path: Path):
    config = load_config(tmp_path / "absent.toml")
    assert config.presets == BUILTIN_PRESETS
    assert config.watch.folders == (Path(platformdirs.user_downloads_dir()),)
    assert config.source is None


def test_empty_file_gives_defaults_and_remembers_its_source(tmp_path: Path):
    config = _load(tmp_path, "")
    assert config.source == tmp_path / "config.toml"
    assert config.presets == BUILTIN_PRESETS
    assert config.watch.folders == (Path(platformdirs.user_downloads_dir()),)


def test_user_table_over_a_built_in_preset_overrides_only_its_keys(tmp_path: Path):
    config = _load(tmp_path, "[presets.refine-4x]\ndenoise = 0.5\n")
    assert config.preset("refine-4x") == Preset(
        name="refine-4x", scale=4.0, upscaler="realesrgan-x4-anime", denoise=0.5, steps=8
    )
    assert config.preset("refine-2x") == BUILTIN_PRESETS["refine-2x"]
    assert config.preset("upscale-2x") == BUILTIN_PRESETS["upscale-2x"]


def test_new_user_preset_is_added_and_takes_defaults_for_keys_it_omits(tmp_path: Path):
    config = _load(tmp_path, '[presets.soft-3x]\nscale = 3\nseed = 42\nupscaler = "lanczos"\n')
    assert config.preset("soft-3x") == Preset(name="soft-3x", scale=3.0, seed=42, upscaler="lanczos")
    assert isinstance(config.preset("soft-3x").scale, float)  # an int is fine where a float is expected
    assert set(config.presets) == {*BUILTIN_PRESETS, "soft-3x"}


def test_built_in_presets_match_the_method(tmp_path: Path):
    presets = load_config(tmp_path / "absent.toml").presets
    assert presets["refine-2x"].unet_steps == 2 and presets["refine-2x"].cfg == 1.0
    assert (presets["refine-2x"].tile_size, presets["refine-2x"].overlap) == (64, 16)
    assert presets["refine-4x"].unet_steps == 2 and presets["refine-4x"].scale == 4.0
    assert presets["upscale-2x"].refine is False and presets["upscale-2x"].unet_steps == 0


def test_upscale_only_preset_may_use_steps_that_would_give_no_unet_step(tmp_path: Path):
    config = _load(tmp_path, "[presets.up]\nrefine = false\nsteps = 1\ndenoise = 0.1\n")
    assert config.preset("up").unet_steps == 0


def test_active_preset_may_name_a_user_preset(tmp_path: Path):
    config = _load(tmp_path, '[daemon]\nactive_preset = "mine"\n[presets.mine]\ndenoise = 0.3\n')
    assert config.preset(config.daemon.active_preset).denoise == 0.3


def test_unknown_preset_lookup_names_the_known_ones(tmp_path: Path):
    config = _load(tmp_path, "")
    with pytest.raises(
        ConfigError,
        match="known: refine-2x, refine-2x-strong, refine-4x, upscale-2x, "
        "xl-refine-2x, xl-refine-2x-strong, xl-refine-4x",
    ):
        config.preset("nope")


def test_tilde_is_expanded_in_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("USERPROFILE", str(tmp_path))  # what expanduser reads on Windows
    config = _load(tmp_path, '[watch]\nfolders = ["~/pics", "~/more"]\n')
    assert config.watch.folders == (tmp_path / "pics", tmp_path / "more")


def test_relative_paths_are_taken_from_the_config_folder(tmp_path: Path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "vae.safetensors").write_bytes(b"x")
    (tmp_path / "models" / "style.safetensors").write_bytes(b"x")
    (tmp_path / "loras").mkdir()
    config = _load(
        tmp_path,
        '[watch]\nfolders = ["in"]\n'
        '[model]\nvae = "models/vae.safetensors"\nlora_dirs = ["loras"]\n'
        'loras = [{ path = "models/style.safetensors", weight = 0.5 }]\n'
        '[presets.x]\nupscaler = "models/style.safetensors"\n',
    )
    assert config.watch.folders == (tmp_path / "in",)
    assert config.model.vae == str(tmp_path / "models" / "vae.safetensors")
    assert config.model.lora_dirs == (tmp_path / "loras",)
    assert config.model.loras[0].path == str(tmp_path / "models" / "style.safetensors")
    assert config.model.loras[0].weight == 0.5
    assert config.preset("x").upscaler == str(tmp_path / "models" / "style.safetensors")


def test_checkpoint_may_be_a_hub_id_a_folder_or_a_file(tmp_path: Path):
    hub = _load(tmp_path, '[model]\ncheckpoint = "someone/anime-sd15"\n').model.checkpoint
    assert hub == "someone/anime-sd15"  # kept as is: downloaded on first use
    (tmp_path / "diffusers-model").mkdir()
    folder = _load(tmp_path, '[model]\ncheckpoint = "diffusers-model"\n').model.checkpoint
    assert folder == str(tmp_path / "diffusers-model")
    (tmp_path / "m.safetensors").write_bytes(b"x")
    assert _load(tmp_path, '[model]\ncheckpoint = "m.safetensors"\n').model.checkpoint == str(
        tmp_path / "m.safetensors"
    )


def test_empty_lcm_lora_means_none(tmp_path: Path):
    config = _load(tmp_path, '[model]\nlcm_lora = ""\n[presets.refine-2x]\nsampler = "euler"\ncfg = 5.0\n')
    assert config.model.lcm_lora == ""
    assert config.preset("refine-2x").cfg == 5.0  # cfg >= 2 is fine away from LCM


def test_config_is_frozen_and_hashable(tmp_path: Path):
    a, b = _load(tmp_path, "[watch]\nrecursive = true\n"), _load(tmp_path, "[watch]\nrecursive = true\n")
    assert a == b and hash(a) == hash(b)
    with pytest.raises(AttributeError):
        a.watch = a.watch  # type: ignore[misc]


def test_output_name_fills_stem_preset_and_ext(tmp_path: Path):
    config = _load(tmp_path, '[output]\nname = "{stem}-{ext}.{preset}.png"\n')
    assert config.output.output_name(Path("dl/img 1.webp"), "refine-2x") == "img 1-webp.refine-2x.png"
    assert load_config(tmp_path / "absent.toml").output.output_name(Path("a.png"), "up") == "a.naiup-up.png"


def test_watch_folders_are_real_paths_each_once(tmp_path: Path):
    # The OS watcher does not follow a link at the root (no live events), and one folder written two
    # ways would be watched, baselined and recorded twice.
    real = tmp_path / "RealDL"
    real.mkdir()
    (tmp_path / "LinkDL").symlink_to(real)
    (tmp_path / "sub").mkdir()
    folders = [f"{tmp_path}/LinkDL", f"{tmp_path}/sub/../RealDL/", str(real), "gone/../missing"]
    config = _load(tmp_path, "[watch]\nfolders = [" + ", ".join(f'"{f}"' for f in folders) + "]\n")
    assert config.watch.folders == (real.resolve(), tmp_path.resolve() / "missing")
