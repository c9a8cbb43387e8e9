"""`naiup run` end to end with the real engine ("naiup.engine:Engine", no stand-in) and a tiny SD model.

Real daemon process, real spawned worker that imports torch and loads the tiny model, real watchdog.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nai_writer
import psutil
import pytest
import tiny_sd
from daemon_harness import DaemonRun, wait_for
from PIL import Image

# Loading torch + diffusers in a fresh worker on a loaded 2-core box is the slow part.
LOAD = 90.0


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tiny_sd.TinySD:
    return tiny_sd.session_tiny_sd(tmp_path_factory)


def write_config(run: DaemonRun, checkpoint: Path, tiny: tiny_sd.TinySD) -> None:
    # The default engine, naiup.engine:Engine, not the stand-in. One UNet step per 64x64 image.
    run.use_real_engine()
    run.config_path.write_text(
        f'[watch]\nfolders = ["{run.watch.as_posix()}"]\nquiet_seconds = 0.3\n'
        '[daemon]\nactive_preset = "tiny"\n'
        f'[model]\ncheckpoint = "{checkpoint.as_posix()}"\nlcm_lora = "{tiny.lcm_lora.as_posix()}"\n'
        'device = "cpu"\n'
        '[presets.tiny]\nupscaler = "lanczos"\nscale = 2.0\nsteps = 2\ndenoise = 0.5\n'
        # A built-in upscaler name whose weights are not installed: only the engine can tell.
        '[presets.no-weights]\nupscaler = "realesr-animevideov3-x4"\nscale = 2.0\nsteps = 2\ndenoise = 0.5\n'
        '[presets.no-lora]\nupscaler = "lanczos"\nsteps = 2\ndenoise = 0.5\nprompt = "<lora:nowhere:1>"\n'
    )


def drop(run: DaemonRun, name: str, seed: int) -> Path:
    """A finished download: written elsewhere, then renamed into the watched folder."""
    staging = run.root / "staging"
    staging.mkdir(exist_ok=True)
    tmp = nai_writer.write_nai_png(staging / name, (64, 64), seed=seed, pixel_seed=seed)
    os.replace(tmp, run.watch / name)
    return run.watch / name


def torch_mapped(pid: int) -> bool:
    return any("libtorch" in Path(m.path).name for m in psutil.Process(pid).memory_maps())


def done_row(run: DaemonRun, src: Path):
    row = run.row(src)
    return row if row is not None and row["state"] == "done" else None


def test_a_dropped_nai_file_is_refined_by_the_real_engine_and_never_redone(daemon: DaemonRun, tiny):
    write_config(daemon, tiny.folder, tiny)
    daemon.start()
    src = drop(daemon, "first.png", 11)
    original = src.read_bytes()
    row = wait_for(lambda: done_row(daemon, src), LOAD, "the first file to be done")
    out = Path(row["output"])
    assert out == daemon.watch / "first.naiup-tiny.png" and daemon.outputs() == [out]
    with Image.open(out) as im:
        prov = json.loads(im.text["naiup"])
        assert im.size == (128, 128) and im.text["Comment"] == json.dumps(nai_writer.nai_comment(
            seed=11, width=64, height=64))  # fmt: skip
    assert prov["seed"] == 11 and prov["preset"]["name"] == "tiny" and "refiner_id" in prov["parameters"]
    # The ledger keys done rows by the engine's own model id, the one the output records.
    assert row["model"] == prov["model_id"] and row["model"].startswith("lanczos+tiny-")
    assert src.read_bytes() == original
    # The worker's own records reach the daemon's log: the model load and the job with its timings.
    logged = (daemon.root / "log" / "daemon.log").read_text()
    assert (
        "naiup.engine.diffusion.refine: model loaded id=tiny-" in logged
        and "job done src=first.png" in logged
    )
    if sys.platform == "linux":  # torch lives only in the worker: the daemon stays small and quick
        assert not torch_mapped(daemon.proc.pid) and torch_mapped(daemon.status()["worker_pid"])
    out_bytes, attempts = out.read_bytes(), row["attempts"]
    assert daemon.stop() == 0

    # Restart: the catch-up scan sees `first` done; a new file proves the scan and the worker ran.
    daemon.start()
    second = drop(daemon, "second.png", 12)
    wait_for(lambda: done_row(daemon, second), LOAD, "the second file to be done")
    assert daemon.outputs() == [out, daemon.watch / "second.naiup-tiny.png"]
    again = daemon.row(src)
    assert again["state"] == "done" and again["attempts"] == attempts and out.read_bytes() == out_bytes
    assert daemon.stop() == 0
    # One model load per worker start (two daemon runs), none per job.
    assert (daemon.root / "log" / "daemon.log").read_text().count("model loaded id=") == 2


def test_a_missing_checkpoint_keeps_files_queued_until_the_config_is_fixed(daemon: DaemonRun, tiny):
    missing = daemon.root / "models" / "tiny"
    write_config(daemon, missing, tiny)
    daemon.start(wait_worker=False)
    src = drop(daemon, "waiting.png", 21)
    status = wait_for(
        lambda: (s := daemon.status())["engine_error"] and daemon.row(src) and s, LOAD, "the engine error"
    )
    assert str(missing) in status["engine_error"] and "Traceback" not in status["engine_error"]
    assert status["state"] == "error" and status["config_error"] is None
    assert wait_for(lambda: daemon.row(src), 20, "the file in the ledger")["state"] == "queued"
    shown = daemon.cli("--config", str(daemon.config_path), "status")
    assert shown.returncode == 0 and f"engine: {status['engine_error']}" in shown.stdout
    assert daemon.outputs() == []

    # Fix the config: hot reload restarts the worker with the real model and the file is processed.
    write_config(daemon, tiny.folder, tiny)
    row = wait_for(lambda: done_row(daemon, src), LOAD, "the queued file to be done after the fix")
    assert Path(row["output"]).is_file() and row["attempts"] == 1
    assert daemon.status()["engine_error"] is None
    assert daemon.stop() == 0


def test_switching_to_a_preset_whose_model_cannot_load_keeps_the_file_queued(daemon: DaemonRun, tiny):
    write_config(daemon, tiny.folder, tiny)
    daemon.start()

    def engine_error(*words: str) -> dict:
        status = wait_for(
            lambda: (
                (s := daemon.status())["engine_error"] and all(w in s["engine_error"] for w in words) and s
            ),
            LOAD,
            f"an engine error naming {words}",
        )
        row = daemon.row(src)
        # The model's or config's fault, not the file's: it stays queued and no attempt is counted.
        assert row["state"] == "queued" and row["attempts"] == 0 and daemon.outputs() == []
        return status

    # Found by the warm worker at the job: a <lora:name> of the preset prompt that is in no lora_dirs.
    daemon.request("preset", name="no-lora")
    src = drop(daemon, "switched.png", 31)
    engine_error("nowhere", "not found")
    # Found by the worker's load at start: an upscaler whose weights are not installed.
    daemon.request("preset", name="no-weights")
    engine_error("realesr-animevideov3-x4")

    daemon.request("preset", name="tiny")  # back to a preset that loads: the file is processed
    row = wait_for(lambda: done_row(daemon, src), LOAD, "the file to be done after switching back")
    assert row["preset"] == "tiny" and Path(row["output"]).name == "switched.naiup-tiny.png"
    assert daemon.stop() == 0
