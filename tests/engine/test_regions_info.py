"""`naiup info` shows each character's region as the preset would run it, or why there are none; and
the region prompts themselves (plan_regions, drop_tags) without a model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import nai_writer
import pytest

from naiup.config import Preset
from naiup.engine.image_prompts import build_prompts, drop_tags, plan_regions
from naiup.info import describe
from naiup.metadata.read import read_metadata

REPO = Path(__file__).resolve().parents[2]
CHARS = [("girl, {red hair}", "glasses", (0.3, 0.5)), ("boy, blue hair", "", (0.9, 0.1))]
ON = Preset(name="on", use_image_prompt=True)


def _naiup(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONIOENCODING": "utf-8"}
    return subprocess.run(
        [sys.executable, "-m", "naiup", *map(str, args)],
        capture_output=True, text=True, encoding="utf-8", env=env, timeout=60, check=False,
    )  # fmt: skip


@pytest.fixture(autouse=True)
def _own_state_dir(tmp_path, monkeypatch):
    """`info` reads the preset chosen with `naiup preset` from the state dir: never the user's."""
    monkeypatch.setenv("NAIUP_STATE_DIR", str(tmp_path / "state"))


def test_info_shows_each_characters_region_with_the_chosen_preset(tmp_path):
    nai = nai_writer.write_nai_png(tmp_path / "nai.png", prompt="2girls, {solo}, park", characters=CHARS)
    config = tmp_path / "config.toml"
    config.write_text(
        '[presets.mine]\nuse_image_prompt = true\nregion_size = 0.4\n[daemon]\nactive_preset = "mine"\n'
    )
    done = _naiup("--config", config, "info", nai)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "  character 1 at 0.3,0.5, region x 0.10-0.50 y 0.30-0.70: girl, {red hair}" in lines
    assert "  character 2 at 0.9,0.1, region x 0.70-1.00 y 0.00-0.30: boy, blue hair" in lines
    assert lines[-1] == (
        "  regions with preset mine: 2 character regions, each 0.4 of the image wide and high; "
        "background prompt without 2girls, solo"
    )
    record = json.loads(_naiup("--config", config, "info", "--json", nai).stdout)
    assert record["regions"]["active"] and record["regions"]["size"] == 0.4
    assert record["characters"][1]["region"] == {
        "center": [0.9, 0.1],
        "size": 0.4,
        "box": [0.7, 0.0, 1.0, 0.3],
    }
    # Another preset: the built-in refine-2x does not use the image's prompt, so no regions, and why.
    other = _naiup("--config", config, "info", "--preset", "refine-2x", nai)
    assert other.stdout.splitlines()[-1] == (
        "  regions with preset refine-2x: none, one prompt for the whole image; "
        "the preset has use_image_prompt = false: it refines with its own prompt only"
    )
    assert "region x" not in other.stdout
    bad = _naiup("--config", config, "info", "--preset", "nope", nai)
    assert bad.returncode != 0 and "unknown preset" in bad.stderr


def test_info_shows_regions_as_the_preset_chosen_with_naiup_preset_runs_them(tmp_path):
    nai = nai_writer.write_nai_png(tmp_path / "nai.png", prompt="2girls, {solo}, park", characters=CHARS)
    config = tmp_path / "config.toml"
    config.write_text('[presets.mine]\nuse_image_prompt = true\n[daemon]\nactive_preset = "refine-2x"\n')
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "runtime.json").write_text('{"active_preset": "mine"}')  # as `naiup preset` writes
    done = _naiup("--config", config, "info", nai)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("  regions with preset mine: 2 character regions")
    # A choice the config no longer has (the table was removed since) costs the regions only.
    (tmp_path / "state" / "runtime.json").write_text('{"active_preset": "gone"}')
    done = _naiup("--config", config, "info", nai)
    assert done.returncode == 0 and "regions with" not in done.stdout
    assert "the active preset 'gone', chosen with `naiup preset`" in done.stderr


def test_info_without_a_loadable_config_still_reads_the_image(tmp_path):
    nai = nai_writer.write_nai_png(tmp_path / "nai.png", characters=CHARS)
    config = tmp_path / "config.toml"
    config.write_text("[presets.x]\nregions = 3\n")
    done = _naiup("--config", config, "info", nai)
    assert done.returncode == 0
    assert "character 1 at 0.3,0.5: girl" in done.stdout and "regions with" not in done.stdout
    assert "character regions not shown" in done.stderr and "presets.x.regions" in done.stderr


def test_describe_without_characters_says_so(tmp_path):
    plain = nai_writer.write_nai_png(tmp_path / "v3.png", prompt="1girl, solo")
    record = describe(plain, ON)
    assert record["regions"]["active"] is False
    assert record["regions"]["reason"] == "the image has no character prompts"
    assert "regions" not in describe(plain)


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        ({"use_coords": False}, "use_coords is not true"),
        ({"preset": replace(ON, regions="off")}, 'regions = "off"'),
        ({"preset": replace(ON, refine=False)}, "only upscales"),
        ({"preset": replace(ON, use_image_prompt=False)}, "use_image_prompt = false"),
    ],
)
def test_without_regions_the_prompts_are_exactly_the_single_prompt_ones(tmp_path, edit, reason):
    path = nai_writer.write_nai_png(
        tmp_path / "a.png", prompt="2girls, park", characters=CHARS, use_coords=edit.get("use_coords", True)
    )
    meta = read_metadata(path)
    preset = replace(edit.get("preset", ON), cfg=1.5)
    plan = plan_regions(preset, meta)
    assert plan.regions == () and reason in plan.reason
    assert (plan.prompt, plan.negative_prompt) == build_prompts(preset, meta)


def test_region_prompts_and_negatives(tmp_path):
    path = nai_writer.write_nai_png(tmp_path / "a.png", prompt="2girls, {park}", characters=CHARS)
    meta = read_metadata(path)
    plan = plan_regions(replace(ON, cfg=1.5, prompt="best", negative_prompt="worst"), meta)
    assert plan.prompt == "best, (park:1.05)"
    assert plan.negative_prompt == "worst, lowres, bad anatomy"
    first, second = plan.regions
    assert first.prompt == "best, 2girls, (park:1.05), girl, (red hair:1.05)"
    # A character's own NovelAI negative is for that character only.
    assert first.negative_prompt == "worst, lowres, bad anatomy, glasses"
    assert second.negative_prompt == "worst, lowres, bad anatomy"
    assert (first.center, first.size) == ((0.3, 0.5), 0.5)
    # At CFG 1 no negative has an effect, so none is claimed (as build_prompts does).
    cfg1 = plan_regions(replace(ON, prompt="best"), meta)
    assert cfg1.negative_prompt == "" and {r.negative_prompt for r in cfg1.regions} == {""}


@pytest.mark.parametrize(
    ("prompt", "kept", "dropped"),
    [
        ("2girls, 1boy, dancing", "dancing", ("2girls", "1boy")),
        ("{{2girls}}, dancing", "{{}}, dancing", ("2girls",)),  # weights of the rest stay balanced
        ("{2girls, park}, Solo", "{, park}", ("2girls", "Solo")),
        ("1.2::multiple_girls::, sky", "1.2::::, sky", ("multiple_girls",)),
        ("no humans, 1girlfriend, sky", "no humans, 1girlfriend, sky", ()),
        ("", "", ()),
    ],
)
def test_drop_tags(prompt, kept, dropped):
    assert drop_tags(prompt, ["1girl", "2girls", "1boy", "solo", "multiple girls"]) == (kept, dropped)
