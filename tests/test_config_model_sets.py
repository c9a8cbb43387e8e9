"""Model sets: [models.NAME] tables beside [model], chosen per preset with `model = "NAME"`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from naiup.config import BUILTIN_PRESETS, Config, load_config
from naiup.config.check import Severity, find_problems
from naiup.config.dump import dump_config
from naiup.doctor import Status, check_models
from naiup.errors import ConfigError


def _load(tmp_path: Path, text: str, must_exist: bool = True) -> Config:
    path = tmp_path / "config.toml"
    path.write_text(f'[watch]\nfolders = ["{tmp_path.as_posix()}"]\n{text}', encoding="utf-8")
    return load_config(path, model_files_must_exist=must_exist)


@pytest.fixture
def files(tmp_path: Path) -> Path:
    for name in ("sd15.safetensors", "xl.safetensors", "sd15-vae.safetensors", "style.safetensors"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "loras").mkdir()
    return tmp_path


TWO_SETS = """
[model]
checkpoint = "sd15.safetensors"
vae = "sd15-vae.safetensors"
lcm_lora = ""
loras = [{ path = "style.safetensors", weight = 0.5 }]
clip_skip = 2
device = "cpu"
max_vram_gb = 7
unet_graphs = "off"
lora_dirs = ["loras"]

[models.xl]
checkpoint = "xl.safetensors"

[models.noob]
checkpoint = "xl.safetensors"
prediction = "v"
lcm_lora = ""
device = "cuda"

[presets.noob-2x]
model = "noob"
sampler = "euler"
"""


def test_a_set_takes_machine_keys_from_model_and_model_keys_from_its_defaults(files: Path):
    config = _load(files, TWO_SETS)
    xl, noob = config.models["xl"], config.models["noob"]
    assert xl.checkpoint == str(files / "xl.safetensors")  # relative to the config file, like [model]
    # This machine's settings carry over...
    assert (xl.device, xl.max_vram_gb, xl.unet_graphs) == ("cpu", 7.0, "off")
    assert xl.lora_dirs == (files / "loras",)
    # ...what belongs to the SD1.5 checkpoint does not: its VAE, LoRAs and clip skip would not fit.
    assert (xl.vae, xl.loras, xl.clip_skip) == ("", (), 1)
    assert xl.lcm_lora == "latent-consistency/lcm-lora-sdxl"  # the built-in xl set's default
    assert noob.lcm_lora == "" and noob.prediction == "v" and noob.device == "cuda"  # set's own keys win
    assert config.model_for(config.preset("xl-refine-2x")) is xl
    assert config.model_for(config.preset("noob-2x")) is noob
    assert config.model_for(config.preset("refine-2x")) is config.model


def test_a_preset_naming_no_set_is_refused_at_load_with_the_known_sets(files: Path):
    with pytest.raises(ConfigError) as err:
        _load(files, TWO_SETS + '[presets.typo]\nmodel = "nob"\n')
    assert err.value.key == "presets.typo.model"
    assert "'nob'" in str(err.value) and "(known: default, noob, xl)" in str(err.value)


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ('[models.mine]\nvae = "x"\n', "models.mine.checkpoint", "is required"),
        ('[models.default]\ncheckpoint = "xl.safetensors"\n', "models.default", "[model] table's name"),
        ('[models."a b"]\ncheckpoint = "xl.safetensors"\n', "models.a b", "letters, digits"),
        ('[models.xl]\ncheckpoint = "gone.safetensors"\n', "models.xl.checkpoint", "neither an existing"),
        ('[models.xl]\ncheckpoint = "xl.safetensors"\nvea = ""\n', "models.xl.vea", "did you mean 'vae'"),
        ('[models.xl]\ncheckpoint = "xl.safetensors"\nclip_skip = 13\n', "models.xl.clip_skip", "between"),
        ("[models]\nxl = 1\n", "models.xl", "must be a table"),
    ],
)
def test_bad_model_sets_are_refused_naming_the_key(files: Path, text: str, key: str, words: str):
    with pytest.raises(ConfigError) as err:
        _load(files, text)
    assert err.value.key == key and words in str(err.value)


def test_the_xl_presets_load_without_a_set_and_say_what_to_add_when_chosen(files: Path):
    config = _load(files, "")  # every user has the xl presets; most never fill in [models.xl]
    assert "xl" not in config.models
    with pytest.raises(ConfigError) as err:
        config.model_for(config.preset("xl-refine-4x"))
    message = str(err.value)
    assert err.value.key == "models.xl" and "not filled in" in message
    assert (
        "xl-refine-2x, xl-refine-2x-strong, xl-refine-4x" in message
        and 'checkpoint = "<path to an SDXL' in message
    )
    # A preset that does not refine loads no SD model: an unfilled set never stops it.
    upscale = dataclasses.replace(config.preset("xl-refine-2x"), refine=False)
    assert config.model_for(upscale) is config.model


def test_a_controlnet_preset_whose_set_names_none_is_unusable_like_an_unfilled_set(files: Path):
    config = _load(files, "")  # the built-in ControlNet presets are there; [model] names no controlnet
    assert config.missing_for(config.preset("refine-2x-strong")) == "[model] controlnet in the config"
    assert (
        config.missing_for(config.preset("xl-refine-2x-strong")) == "[models.xl] in the config"
    )  # the set first
    assert config.missing_for(config.preset("refine-2x")) is None
    with pytest.raises(ConfigError) as err:
        config.usable_model(config.preset("refine-2x-strong"))
    assert err.value.key == "model.controlnet" and "refine-2x-strong" in str(err.value)
    (files / "tile").mkdir()  # a ControlNet as a diffusers folder
    with_cn = _load(files, '[model]\ncontrolnet = "tile"\n')
    strong = with_cn.preset("refine-2x-strong")
    assert with_cn.missing_for(strong) is None and with_cn.usable_model(strong) is with_cn.model


def test_an_active_preset_whose_set_is_not_filled_in_is_refused_at_load(files: Path):
    with pytest.raises(ConfigError) as err:
        _load(files, '[daemon]\nactive_preset = "xl-refine-2x"\n')
    assert err.value.key == "daemon.active_preset" and "[models.xl] is not filled in" in str(err.value)
    filled = _load(
        files, '[daemon]\nactive_preset = "xl-refine-2x"\n[models.xl]\ncheckpoint = "xl.safetensors"\n'
    )
    assert filled.daemon.active_preset == "xl-refine-2x"


def test_built_in_xl_presets_refine_with_sdxl_tiles_and_two_unet_steps():
    for name in ("xl-refine-2x", "xl-refine-4x"):
        preset = BUILTIN_PRESETS[name]
        assert (preset.model, preset.tile_size, preset.overlap, preset.cfg) == ("xl", 128, 32, 1.0)
        assert preset.refine and preset.unet_steps == 2  # int(steps x denoise), not steps
    assert BUILTIN_PRESETS["xl-refine-2x"].scale == 2.0 and BUILTIN_PRESETS["xl-refine-4x"].scale == 4.0
    assert {p.model for n, p in BUILTIN_PRESETS.items() if not n.startswith("xl-")} == {"default"}


def test_config_show_round_trips_the_sets(files: Path):
    config = _load(files, TWO_SETS)
    text = dump_config(config)
    assert "[models.noob]" in text and "[models.xl]" in text and 'model = "noob"' in text
    shown = files / "shown.toml"
    shown.write_text(text, encoding="utf-8")
    again = dataclasses.replace(load_config(shown), source=config.source)
    assert again == config and again.models == config.models


def test_config_check_reports_per_set(files: Path, monkeypatch):
    monkeypatch.setattr("naiup.config.check._is_cached", lambda repo: False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    euler = '[presets.refine-2x]\nsampler = "euler"\n[presets.refine-4x]\nsampler = "euler"\n'
    text = '[model]\nlcm_lora = ""\n' + euler
    problems = {p.key: p for p in find_problems(_load(files, text))}
    # Not filled in: a note (only its presets cannot refine), never an error.
    assert (
        problems["models.xl"].severity is Severity.NOTE and "not filled in" in problems["models.xl"].message
    )
    filled = _load(files, text + '[models.xl]\ncheckpoint = "xl.safetensors"\n')
    problems = {p.key: p for p in find_problems(filled)}
    # The xl set's LCM-LoRA is a hub id not downloaded: offline that is an error only for the set the
    # active preset uses.
    assert problems["models.xl.lcm_lora"].severity is Severity.NOTE
    active_xl = _load(
        files, text + '[models.xl]\ncheckpoint = "xl.safetensors"\n[daemon]\nactive_preset = "xl-refine-2x"\n'
    )
    problems = {p.key: p for p in find_problems(active_xl)}
    assert problems["models.xl.lcm_lora"].severity is Severity.ERROR
    assert "hf download latent-consistency/lcm-lora-sdxl" in problems["models.xl.lcm_lora"].message
    empty = _load(files, '[models.xl]\ncheckpoint = "xl.safetensors"\nlcm_lora = ""\n')
    assert (
        "preset(s) xl-refine-2x, xl-refine-2x-strong, xl-refine-4x use the lcm sampler"
        in {p.key: p for p in find_problems(empty)}["models.xl.lcm_lora"].message
    )


def test_doctor_checks_each_set_and_fails_only_for_the_active_one(files: Path):
    text = (
        '[model]\ncheckpoint = "sd15.safetensors"\nlcm_lora = ""\n'
        '[models.xl]\ncheckpoint = "xl.safetensors"\nlcm_lora = ""\n'
    )
    config = _load(files, text)
    (files / "xl.safetensors").unlink()  # gone since the config was loaded
    checks = {c.name: c for c in check_models(config)}
    assert checks["checkpoint"].status is Status.OK
    gone = checks["xl checkpoint"]
    assert gone.status is Status.NOTE and "not by the active preset 'refine-2x'" in gone.detail
    on_xl = dataclasses.replace(
        config, daemon=dataclasses.replace(config.daemon, active_preset="xl-refine-2x")
    )
    assert {c.name: c for c in check_models(on_xl)}["xl checkpoint"].status is Status.FAIL
    unfilled = {c.name: c for c in check_models(_load(files, text.split("[models.xl]")[0]))}
    assert (
        unfilled["model set xl"].status is Status.NOTE and "not filled in" in unfilled["model set xl"].detail
    )


def test_refine_with_an_xl_preset_before_the_set_is_filled_in_says_what_to_add(files: Path, capsys):
    from naiup.cli.main import main

    config = files / "config.toml"
    config.write_text(f'[watch]\nfolders = ["{files.as_posix()}"]\n', encoding="utf-8")
    image = files / "a.png"
    image.write_bytes(b"not read: the preset is refused first")
    assert main(["--config", str(config), "refine", str(image), "--preset", "xl-refine-2x"]) == 1
    err = capsys.readouterr().err
    assert "[models.xl] is not filled in" in err and 'checkpoint = "<path to an SDXL' in err


def test_a_preset_whose_builtin_upscaler_is_not_in_place_is_marked_and_checked(files: Path, monkeypatch):
    models = files / "upscalers"
    monkeypatch.setenv("NAIUP_MODELS_DIR", str(models))
    config = _load(files, '[daemon]\nactive_preset = "refine-4x"\n')
    assert (
        config.missing_for(config.preset("refine-4x"))
        == f"RealESRGAN_x4plus_anime_6B.safetensors in {models}"
    )
    assert config.missing_for(config.preset("refine-2x")) is None  # realcugan-2x is shipped
    problems = {p.key: p for p in find_problems(config)}
    active = problems["presets.refine-4x.upscaler"]
    assert (
        active.severity is Severity.ERROR
        and f"put RealESRGAN_x4plus_anime_6B.safetensors in {models}" in active.message
    )
    other = problems["presets.xl-refine-4x.upscaler"]
    assert other.severity is Severity.NOTE and "xl-refine-4x cannot run yet" in other.message
    models.mkdir()
    (models / "RealESRGAN_x4plus_anime_6B.safetensors").write_bytes(b"x")
    assert config.missing_for(config.preset("refine-4x")) is None
    assert not [p for p in find_problems(config) if p.key.endswith(".upscaler")]
