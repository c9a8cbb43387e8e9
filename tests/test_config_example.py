"""config.example.toml documents every key and states the real defaults, so it cannot drift."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

from naiup.config import BUILTIN_PRESETS, Config, LoraSpec, Preset, default_watch_folder, load_config

EXAMPLE = Path(__file__).resolve().parents[1] / "config.example.toml"
SECTIONS = [f.name for f in dataclasses.fields(Config) if f.name not in ("presets", "source", "models")]


def _names(cls: type, skip: tuple[str, ...] = ()) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.name not in skip}


def test_example_loads_and_equals_the_built_in_defaults():
    config = load_config(EXAMPLE)
    # `folders` stays commented out: a copied example must keep asking the OS for the downloads folder
    # (a moved or localised one), not pin "~/Downloads" and watch nothing.
    assert config.watch.folders == (default_watch_folder(),)
    defaults = dataclasses.replace(Config(), watch=dataclasses.replace(Config().watch, folders=()))
    loaded = dataclasses.replace(config, watch=dataclasses.replace(config.watch, folders=()), source=None)
    assert loaded == defaults


# Keys the example shows only in a comment: setting them would replace a default the OS decides.
COMMENTED = {"watch": {"folders"}}


def test_example_documents_every_field_of_every_section():
    text = EXAMPLE.read_text(encoding="utf-8")
    raw = tomllib.loads(text)
    assert set(raw) == {*SECTIONS, "presets"}
    for name in SECTIONS:
        cls = type(getattr(Config(), name))
        shown = set(raw[name]) | COMMENTED.get(name, set())
        assert shown == _names(cls), f"[{name}] in config.example.toml is missing or has extra keys"
    for key in COMMENTED["watch"]:
        line = re.search(rf"^# ({key} = .*)$", text, re.M)
        assert line, f"config.example.toml lost its commented {key} example"
        tomllib.loads(line.group(1))  # and it is valid TOML once uncommented


def test_example_documents_every_preset_key_and_every_built_in_preset():
    raw = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    assert set(raw["presets"]) == set(BUILTIN_PRESETS)
    # Every refining built-in shows every key (upscale-2x shows its few: the refine keys are ignored).
    for name, preset in BUILTIN_PRESETS.items():
        if preset.refine:
            assert set(raw["presets"][name]) == _names(Preset, skip=("name",)), name


def test_example_shows_a_lora_entry_with_every_lora_key():
    # `loras` must stay [] in the example (a real entry would need the file); the commented line shows one.
    line = re.search(r"^#\s*(loras = \[\{.*\}\])\s*$", EXAMPLE.read_text(encoding="utf-8"), re.M)
    assert line, "config.example.toml lost its commented loras example"
    entry = tomllib.loads(line.group(1))["loras"][0]
    assert set(entry) == _names(LoraSpec)


def test_every_key_up_to_the_first_repeated_preset_is_explained_by_a_comment():
    text = EXAMPLE.read_text(encoding="utf-8")
    lines = text[: text.index("[presets.refine-4x]")].splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[a-z_]+ = ", line):
            # A key shares its comment with at most one neighbour (prompt / negative_prompt).
            assert any(x.startswith("#") for x in lines[max(0, i - 2) : i]), f"no comment above: {line}"


def _readme_toml(pattern: str, home: Path, monkeypatch, files: tuple[str, ...]) -> Config:
    """The README's ```toml block matching `pattern`, loaded with `files` (under ~/models) present."""
    readme = (EXAMPLE.parent / "README.md").read_text(encoding="utf-8")
    block = re.search(rf"```toml\n({pattern}.*?)```", readme, re.S)
    assert block, f"README lost its toml example starting {pattern!r}"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("USERPROFILE", str(home))
    (home / "models").mkdir()
    for name in files:
        (home / "models" / name).write_bytes(b"x")
    path = home / "config.toml"
    path.write_text(block.group(1), encoding="utf-8")
    return load_config(path)


def test_readme_configuration_example_loads(tmp_path: Path, monkeypatch):
    config = _readme_toml("", tmp_path, monkeypatch, ("my-4x-upscaler.safetensors",))
    assert config.preset("refine-4x").denoise == 0.3 and config.preset("refine-4x").steps == 8
    assert config.preset(config.daemon.active_preset).name == "soft-3x"


def test_example_shows_a_model_set_that_fills_in_the_xl_presets(tmp_path: Path):
    text = EXAMPLE.read_text(encoding="utf-8")
    block = re.search(r"^# (\[models\.xl\])\n# (checkpoint = .*)$", text, re.M)
    assert block, "config.example.toml lost its commented [models.xl] example"
    config_file = tmp_path / "config.toml"
    config_file.write_text(f"{block.group(1)}\n{block.group(2)}\n", encoding="utf-8")
    config = load_config(config_file, model_files_must_exist=False)
    xl = config.model_for(config.preset("xl-refine-2x"))
    assert xl.checkpoint.endswith("illustrious-xl.safetensors") and "sdxl" in xl.lcm_lora
    assert config.model_for(config.preset("xl-refine-4x")) is xl


def test_readme_model_set_example_loads(tmp_path: Path, monkeypatch):
    config = _readme_toml(r"\[models\.xl\]", tmp_path, monkeypatch, ("illustrious-xl.safetensors",))
    active = config.preset(config.daemon.active_preset)
    assert active.name == "xl-refine-2x"
    assert config.model_for(active).checkpoint == str(tmp_path / "models" / "illustrious-xl.safetensors")


def test_readme_names_every_built_in_preset_and_counts_them_right():
    # It said "Five presets are built in" and showed `(6 presets, ...)` once there were seven.
    readme = (EXAMPLE.parent / "README.md").read_text(encoding="utf-8")
    words = {5: "Five", 6: "Six", 7: "Seven", 8: "Eight", 9: "Nine"}
    n = len(BUILTIN_PRESETS)
    listed = re.search(rf"{words[n]} presets are built in: (.*?)\.\s", readme, re.S)
    assert listed, f"README must say '{words[n]} presets are built in: ...'"
    assert set(re.findall(r"`([\w.-]+)`", listed[1])) == set(BUILTIN_PRESETS)
    counts = {int(c) for c in re.findall(r"\((\d+) presets, active", readme)}
    assert counts == {n}
