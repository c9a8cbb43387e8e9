"""`naiup info` as a real process: JSON lines, human summary, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nai_writer

REPO = Path(__file__).resolve().parents[2]


def _naiup(*args: str | Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONIOENCODING": "utf-8"}
    return subprocess.run(
        [sys.executable, "-m", "naiup", *map(str, args)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=60,
        check=False,
    )


def test_json_lines_for_novelai_and_plain_files(tmp_path: Path) -> None:
    nai = nai_writer.write_nai_png(
        tmp_path / "nai.png",
        prompt="{{best quality}}, [lowres]",
        seed=321,
        characters=[("girl, {red hair}", "", (0.3, 0.5))],
    )
    plain = tmp_path / "plain.png"
    nai_writer.Image.new("RGB", (8, 8)).save(plain)
    done = _naiup("info", "--json", nai, plain)
    assert done.returncode == 0, done.stderr
    first, second = (json.loads(line) for line in done.stdout.splitlines())
    assert first["path"] == str(nai) and first["format"] == "novelai" and first["source"] == "text"
    assert first["prompt"] == "{{best quality}}, [lowres]"
    assert first["prompt_a1111"] == "(best quality:1.1025), (lowres:0.9524)"
    assert first["negative_prompt"] == first["negative_prompt_a1111"] == "lowres, bad anatomy"
    assert first["characters"][0]["prompt"] == "girl, {red hair}"
    assert first["characters"][0]["center"] == [0.3, 0.5]
    assert (first["seed"], first["steps"], first["scale"], first["sampler"]) == (
        321,
        28,
        5.0,
        "k_euler_ancestral",
    )
    assert (first["width"], first["height"], first["signature"], first["error"]) == (64, 64, "absent", None)
    assert second["format"] == "none" and second["error"] is None


def test_unreadable_file_exits_1_and_names_it(tmp_path: Path) -> None:
    good = nai_writer.write_nai_png(tmp_path / "good.png")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"")
    done = _naiup("info", "--json", bad, good)
    assert done.returncode == 1
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert str(bad) in records[0]["error"] and "empty file" in records[0]["error"]
    assert records[1]["format"] == "novelai"  # one bad file does not stop the others


def test_human_summary(tmp_path: Path) -> None:
    nai = nai_writer.write_nai_png(tmp_path / "nai.png", seed=999)
    missing = tmp_path / "missing.png"
    done = _naiup("info", nai, missing)
    assert done.returncode == 1
    assert "novelai (from text)" in done.stdout and "seed 999" in done.stdout
    assert f"error: {missing}: cannot read file" in done.stderr


def test_a_naiup_output_says_it_is_one_of_which_source_at_which_scale(tmp_path: Path) -> None:
    import torch

    from naiup.config import Config, ModelConfig, Preset
    from naiup.engine import Engine
    from naiup.job import run_job

    src = nai_writer.write_nai_png(tmp_path / "original.png", (16, 16))
    preset = Preset(name="lz-3x", scale=3.0, upscaler="lanczos", refine=False)
    out = run_job(src, preset, Engine(ModelConfig(device="cpu"), torch.device("cpu")), Config()).output
    human = _naiup("info", out)
    assert human.returncode == 0, human.stderr
    assert "naiup output of original.png, 3x with preset lz-3x (upscale only)" in human.stdout
    record = json.loads(_naiup("info", "--json", out).stdout)
    assert record["naiup_output"]["source_name"] == "original.png"
    assert (record["naiup_output"]["scale"], record["naiup_output"]["preset"]) == (3.0, "lz-3x")
    assert json.loads(_naiup("info", "--json", src).stdout)["naiup_output"] is None
