"""CI smoke test: the engine benchmark drives the real pipeline end to end on CPU with --small and
writes its JSON (and the JSON lines it appends as it measures)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _bench_small(out: Path, *args: str) -> tuple[dict, str]:
    """Run engine_bench.py --small with `args`; its JSON report and what it printed."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "engine_bench.py"), "--small", *args, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (report,) = out.glob("engine-*-small.json")
    return json.loads(report.read_text()), proc.stdout


def test_engine_bench_small_runs_and_reports_every_stage(tmp_path):
    data, printed = _bench_small(tmp_path / "out")
    ours = [r for r in data["results"] if r["variant"].startswith("naiup")]
    base = [r for r in data["results"] if r["variant"].startswith("diffusers")]
    assert {r["workload"] for r in ours} == {r["workload"] for r in base} == {"W2", "W4"}
    for r in ours:
        assert set(r["stages"]) == {"upscale", "encode", "denoise", "decode", "other", "png"}
        assert r["wall"] > 0 and all(v >= 0 for v in r["stages"].values())
    # The refine ran the tiled production path: at W4 (32x48 latent, 16/8 tiles) 15 tiles per step go
    # through the UNet in one batch (the presets' tile_batch_size 16), for 2 steps; every VAE mode
    # asked for ran (auto resolves to a concrete one). The levers are recorded with each run.
    for r in ours:
        if r["workload"] == "W4":
            assert r["unet_tiles"] == 15
            assert r["unet_calls"] == [[15, 4, 16, 16]] * 2
        assert r["levers"] == {
            "text_encoders_resident": True,  # no accelerator: nothing waits in host RAM
            "overlap": 8,
            "tile_batch": 16,
            "unet_graphs": False,  # auto: off on the CPU
            "device_pixels": True,
            "attention_unchunked_on_cuda": True,
            "regions": 0,
            "unet_samples_per_step": r["unet_tiles"],
        }
    assert {r["vae_plan"] for r in ours} <= {"off", "exact", "low-memory"}
    assert {r["variant"] for r in ours} == {f"naiup (vae {m})" for m in ("exact", "low-memory", "auto")}
    assert {r["output"] for r in ours if r["workload"] == "W4"} == {"256x384"}
    assert "W4" in printed and "wall" in printed
    # Each result was also appended as measured, after a header line naming the machine.
    (log,) = (tmp_path / "out").glob("engine-*-small.jsonl")
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert lines[0]["kind"] == "run" and lines[0]["machine"] == data["machine"]
    assert [{k: v for k, v in r.items() if k != "kind"} for r in lines[1:]] == data["results"]


def test_engine_bench_control_runs_the_controlnet_beside_every_unet_call(tmp_path):
    args = ("--workloads", "W2", "--vae-mode", "auto", "--no-baseline", "--control", "0.8")
    args += ("--regions", "0,3")
    plain, regional = _bench_small(tmp_path / "out", *args)[0]["results"]
    assert plain["variant"] == "naiup (vae auto), control 0.8"
    assert regional["variant"] == "naiup (vae auto), 3 regions, control 0.8"
    # One ControlNet call per UNet call: W2 (16x24 latent, 16/8 tiles) is 2 tiles in one batch, 2 steps;
    # with 3 characters every (tile, region) batch has its ControlNet call too.
    assert plain["unet_calls"] == [[2, 4, 16, 16]] * 2
    assert plain["levers"]["control"] == {"strength": 0.8, "calls": 2}
    assert regional["levers"]["unet_samples_per_step"] > 2
    assert regional["levers"]["control"] == {"strength": 0.8, "calls": len(regional["unet_calls"])}


def test_engine_bench_small_measures_character_regions(tmp_path):
    args = ("--workloads", "W4", "--vae-mode", "off", "--regions", "0,3", "--no-baseline")
    plain, regional = _bench_small(tmp_path / "out", *args)[0]["results"]
    assert (plain["variant"], regional["variant"]) == ("naiup (vae off)", "naiup (vae off), 3 regions")
    assert regional["stages"]["denoise"] > 0  # timed through the regional seam too
    # 15 tiles per step without regions; with three characters each tile runs once per region with
    # weight in it (the background only where the characters leave it some), all in fixed batches.
    assert plain["levers"]["unet_samples_per_step"] == 15
    samples = regional["levers"]["unet_samples_per_step"]
    assert 15 < samples < 4 * 15
    assert sum(shape[0] for shape in regional["unet_calls"]) >= 2 * samples
    assert len({tuple(shape) for shape in regional["unet_calls"]}) == 1


def test_engine_bench_sdxl_small_runs_w2_xl_against_the_sdxl_img2img_baseline(tmp_path):
    """--family sdxl on SDXL's block structure at toy widths: the same stages through the same Refiner
    (SDXL conditioning, two text encoders), and diffusers' SDXL img2img as the baseline."""
    data, _ = _bench_small(tmp_path / "out", "--family", "sdxl", "--vae-mode", "exact")
    assert data["levers"]["family"] == "sdxl"
    ours, base = data["results"]
    assert (ours["workload"], ours["variant"]) == ("W2-XL", "naiup (vae exact)")
    assert set(ours["stages"]) == {"upscale", "encode", "denoise", "decode", "other", "png"}
    # 16x24 latent, 16/8 tiles: 2 tiles per step in one batch, for LCM 8 x 0.25 = 2 steps.
    assert ours["unet_calls"] == [[2, 4, 16, 16]] * 2
    assert (base["workload"], base["variant"]) == ("W2-XL", "diffusers img2img + enable_tiling")
    assert base["output"] == ours["output"] == "128x192" and base["stages"]["img2img"] > 0


def test_engine_bench_sdxl_small_runs_controlnet_and_regions_together(tmp_path):
    """W2-XL with a ControlNet tile of SDXL's shape, without and with 3 characters: the columns the
    GPU run's sdxl part measures at full size."""
    args = ("--family", "sdxl", "--vae-mode", "auto", "--no-baseline", "--control", "0.8", "--regions", "0,3")
    plain, regional = _bench_small(tmp_path / "out", *args)[0]["results"]
    assert (plain["workload"], plain["variant"]) == ("W2-XL", "naiup (vae auto), control 0.8")
    assert regional["variant"] == "naiup (vae auto), 3 regions, control 0.8"
    # One ControlNet call per UNet call: 2 tiles in one batch for 2 steps; every (tile, region) batch too.
    assert plain["unet_calls"] == [[2, 4, 16, 16]] * 2
    assert plain["levers"]["control"] == {"strength": 0.8, "calls": 2}
    assert regional["levers"]["unet_samples_per_step"] > 2
    assert regional["levers"]["control"] == {"strength": 0.8, "calls": len(regional["unet_calls"])}


def test_each_gpu_run_part_fits_one_device_call():
    """bench/gpu/run.sh: each part's step limits add up to less than the 540 s one call is given, and
    the sdxl part measures W2-XL with regions and with ControlNet tile."""
    limits: dict[str, int] = {}
    part, sdxl_steps = "", []
    for line in (REPO / "bench" / "gpu" / "run.sh").read_text().splitlines():
        if line.startswith('if [ "$part" != '):
            part = "sd15" if "sdxl" in line else "sdxl"
        elif line == "fi":
            part = ""
        elif part and (step := re.match(r"\s*(?:bench|step) (\d+) ", line)):
            limits[part] = limits.get(part, 0) + int(step[1])
            sdxl_steps += [line] if part == "sdxl" else []
    assert set(limits) == {"sd15", "sdxl"} and all(total < 540 for total in limits.values()), limits
    assert any("--regions 0,3" in s and "--control" not in s for s in sdxl_steps)
    assert any("--regions 0,3" in s and "--control 0.8" in s for s in sdxl_steps)
