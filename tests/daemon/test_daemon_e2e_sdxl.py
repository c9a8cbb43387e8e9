"""`naiup run` with the real engine and two model sets: a tiny SD1.5 folder as [model] and a tiny SDXL
single file as [models.xl]. A real NovelAI file is refined 4x, tiled, by the SDXL set; switching to an
SD1.5 preset unloads the SDXL set in the same worker and loads SD1.5.

The worker builds tiny_engine.TinyEngine: naiup's Engine, with the tiny single file's own configs
(the full-size bundled ones do not fit its weights).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nai_writer
import pytest
import tiny_sd
import tiny_sdxl
from daemon_harness import DaemonRun, wait_for
from PIL import Image
from tiny_engine import TinyEngine

from naiup import seams
from naiup.config import load_config
from naiup.job import run_job

LOAD = 120.0  # a fresh worker imports torch and diffusers and loads the tiny model on a loaded box
FIXTURE = "nai3_128_text_stealth_smea_vibe.png"  # 128 px: x4 = a 64x64 latent, 3 x 3 tiles of 32


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[tiny_sd.TinySD, Path]:
    # Built before the test's leak check starts: the builders' progress bars leave a tqdm thread.
    return tiny_sd.session_tiny_sd(tmp_path_factory), tiny_sdxl.session_tiny_sdxl(
        tmp_path_factory
    ).single_file


def write_config(run: DaemonRun, sd: tiny_sd.TinySD, xl: Path) -> None:
    # [models.xl] sets no device: it comes from [model] (a machine setting), so both run on the CPU.
    run.config_path.write_text(
        f'[watch]\nfolders = ["{run.watch.as_posix()}"]\nquiet_seconds = 0.3\n'
        '[daemon]\nactive_preset = "xl-tiny"\n'
        "[pause]\non_battery = false\n"
        f'[model]\ncheckpoint = "{sd.folder.as_posix()}"\nlcm_lora = "{sd.lcm_lora.as_posix()}"\n'
        'device = "cpu"\n'
        f'[models.xl]\ncheckpoint = "{xl.as_posix()}"\nlcm_lora = ""\n'
        '[presets.xl-tiny]\nmodel = "xl"\nupscaler = "lanczos"\nscale = 4.0\nsteps = 4\ndenoise = 0.5\n'
        'sampler = "euler"\ntile_size = 32\noverlap = 16\ntile_batch_size = 4\n'
        '[presets.sd-tiny]\nupscaler = "lanczos"\nscale = 2.0\nsteps = 2\ndenoise = 0.5\n'
    )


def ready(run: DaemonRun) -> bool:
    status = run.status()
    assert not status["engine_error"], status["engine_error"]  # fail now, not at the deadline
    return bool(status["worker_pid"]) and status["state"] == "idle"


def done(run: DaemonRun, src: Path) -> dict:
    return wait_for(lambda: (r := run.row(src)) and r["state"] == "done" and r, LOAD, f"{src.name} done")


def provenance(path: Path) -> dict:
    with Image.open(path) as im:
        return {"size": im.size, **json.loads(im.text["naiup"])}


def test_the_daemon_refines_a_real_nai_file_with_an_sdxl_model_set_then_switches_sets(
    daemon: DaemonRun, models, tmp_path, nai_fixtures
):
    write_config(daemon, *models)
    daemon.start(extra_env={seams.ENGINE: "tiny_engine:TinyEngine"}, wait_worker=False)
    wait_for(lambda: ready(daemon), LOAD, "the SDXL set to load")
    worker = daemon.status()["worker_pid"]

    src = daemon.arrive(nai_fixtures / FIXTURE, "nai.png")
    row = done(daemon, src)
    out = Path(row["output"])
    prov = provenance(out)
    assert out.name == "nai.naiup-xl-tiny.png" and prov["size"] == (512, 512)
    assert prov["parameters"]["family"] == "sdxl" and prov["parameters"]["prediction"] == "epsilon"
    assert prov["preset"]["model"] == "xl" and row["model"] == prov["model_id"]
    assert prov["model_id"].startswith("lanczos+tiny-xl-")  # the single file's name, not SD1.5's

    # Same seed -> same bytes: the same job in this process (what `naiup refine` runs) writes them again.
    again = tmp_path / "again"
    again.mkdir()
    shutil.copy(nai_fixtures / FIXTURE, again / "nai.png")
    config = load_config(daemon.config_path)
    preset = config.preset("xl-tiny")
    result = run_job(again / "nai.png", preset, TinyEngine(config.model_for(preset)), config)
    assert result.output.read_bytes() == out.read_bytes()

    # Another set: the SDXL set is unloaded first, then SD1.5 loads, in the same worker.
    daemon.request("preset", name="sd-tiny")
    log = daemon.root / "log" / "daemon.log"
    wait_for(lambda: "model set loaded name=default" in log.read_text(), LOAD, "the SD1.5 set to load")
    small = nai_writer.write_nai_png(tmp_path / "small.png", (64, 64), seed=5)
    second = done(daemon, daemon.arrive(small, "small.png"))
    assert provenance(Path(second["output"]))["parameters"]["family"] == "sd15"
    assert daemon.status()["worker_pid"] == worker
    logged = log.read_text()
    unloaded = logged.index("model set unloaded name=xl")
    assert logged.index("model set loaded name=xl") < unloaded < logged.index("model set loaded name=default")
    assert logged.count("naiup.engine.diffusion.refine: model loaded id=") == 2  # one load per set
    assert daemon.stop() == 0
