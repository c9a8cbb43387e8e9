"""`naiup refine` on a real NovelAI file, and a daemon job through the spawned worker, on CUDA."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nai_writer
import pytest
import tiny_sd
from daemon_harness import DaemonRun, wait_for
from PIL import Image

from naiup.cli.main import main

LOAD = 120.0  # a cold worker imports torch + diffusers and initialises CUDA


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tiny_sd.TinySD:
    return tiny_sd.session_tiny_sd(tmp_path_factory)


def _model(tiny: tiny_sd.TinySD) -> str:
    return (
        f'[model]\ncheckpoint = "{tiny.folder.as_posix()}"\nlcm_lora = "{tiny.lcm_lora.as_posix()}"\n'
        'device = "cuda"\n'
    )


def test_naiup_refine_on_a_real_nai_file_on_cuda(tiny, nai_fixtures, tmp_path, capsys):
    src = tmp_path / "nai.png"
    shutil.copy(nai_fixtures / "nai3_1024_text_stealth.png", src)
    config = tmp_path / "config.toml"
    config.write_text(
        _model(tiny) + '[presets.gpu]\nupscaler = "realcugan-2x"\nscale = 2.0\nsteps = 8\ndenoise = 0.25\n'
    )
    rc = main(["--config", str(config), "refine", str(src), "--preset", "gpu"])
    shown = capsys.readouterr()
    assert rc == 0, shown.err
    out = tmp_path / "nai.naiup-gpu.png"
    assert shown.out.strip() == str(out)
    with Image.open(out) as o, Image.open(src) as i:
        assert o.size == (2 * i.width, 2 * i.height) and o.mode == "RGB"
        assert o.text["Comment"] == i.text["Comment"]  # NovelAI's own data carried over
        prov = json.loads(o.text["naiup"])
    assert prov["model_id"].startswith("realcugan-2x@") and "refiner_id" in prov["parameters"]


def test_a_daemon_job_runs_through_the_spawned_worker_on_cuda(daemon: DaemonRun, tiny):
    daemon.config_path.write_text(
        f'[watch]\nfolders = ["{daemon.watch.as_posix()}"]\nquiet_seconds = 0.3\n'
        '[daemon]\nactive_preset = "tiny"\n[pause]\non_battery = false\n'
        + _model(tiny)
        + '[presets.tiny]\nupscaler = "realcugan-2x"\nscale = 2.0\nsteps = 2\ndenoise = 0.5\n'
    )
    daemon.start()
    staging = daemon.root / "staging"
    staging.mkdir()
    tmp = nai_writer.write_nai_png(staging / "a.png", (128, 128), seed=11, pixel_seed=11)
    os.replace(tmp, daemon.watch / "a.png")
    row = wait_for(
        lambda: (r := daemon.row(daemon.watch / "a.png")) is not None and r["state"] == "done" and r,
        LOAD,
        "the job to be done on the GPU",
    )
    with Image.open(Path(row["output"])) as im:
        assert im.size == (256, 256)
    logged = (daemon.root / "log" / "daemon.log").read_text()
    assert "model loaded id=tiny-" in logged and "device=cuda:" in logged
    assert daemon.stop() == 0
