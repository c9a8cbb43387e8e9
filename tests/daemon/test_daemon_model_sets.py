"""Model sets in the running service: switching presets across sets reloads in the same worker, within a
set it does not, and a preset whose set is not filled in is refused with what to add.

A stand-in engine (set_engine.SetEngine) records what the worker builds, loads and unloads; the real
engine with tiny models does the same in test_daemon_e2e_sdxl.py.
"""

from __future__ import annotations

from pathlib import Path

import nai_writer
from daemon_harness import DaemonRun, wait_for
from hub_server import FakeHub
from set_engine import events

from naiup import seams

XL_SET = '[models.xl]\ncheckpoint = "{root}/xl.safetensors"\n'


def write_config(run: DaemonRun, xl: bool = True) -> None:
    for name in ("sd15.safetensors", "xl.safetensors"):
        (run.root / name).write_bytes(b"stand-in weights")
    root = run.root.as_posix()
    run.config_path.write_text(
        f'[watch]\nfolders = ["{run.watch.as_posix()}"]\nquiet_seconds = 0.2\n'
        '[daemon]\nactive_preset = "a"\n'
        "[pause]\non_battery = false\n"
        f'[model]\ncheckpoint = "{root}/sd15.safetensors"\nlcm_lora = ""\n'
        + (XL_SET.format(root=root) if xl else "")
        + '[presets.a]\nupscaler = "lanczos"\n'
        '[presets.b]\nupscaler = "lanczos"\nscale = 3.0\n'
        '[presets.x]\nupscaler = "lanczos"\nmodel = "xl"\n'
    )


def drop(run: DaemonRun, name: str, seed: int) -> Path:
    made = nai_writer.write_nai_png(run.root / f"made-{name}", (32, 32), seed=seed, pixel_seed=seed)
    return run.arrive(made, name)


def done(run: DaemonRun, src: Path) -> dict:
    return wait_for(lambda: (r := run.row(src)) and r["state"] == "done" and r, 30, f"{src.name} to be done")


def test_switching_presets_reloads_across_sets_and_not_within_one(daemon: DaemonRun):
    write_config(daemon)
    daemon.start(extra_env={seams.ENGINE: "set_engine:SetEngine"})
    state = daemon.root / "state"
    assert events(state) == ["build sd15.safetensors", "load sd15.safetensors a"]
    worker = daemon.status()["worker_pid"]
    assert done(daemon, drop(daemon, "one.png", 1))["model"] == "sd15.safetensors"

    # Same set: nothing is built, unloaded or loaded; the job runs on the engine already there.
    daemon.request("preset", name="b")
    row = done(daemon, drop(daemon, "two.png", 2))
    assert (row["preset"], row["model"]) == ("b", "sd15.safetensors")
    assert events(state) == ["build sd15.safetensors", "load sd15.safetensors a"]

    # Another set: switched at once (not at the next file), in the same worker, the old set unloaded
    # before the new one is built.
    status = daemon.request("preset", name="x")
    assert status["model_set"] == "xl" and status["model"] == str(daemon.root / "xl.safetensors")
    switch = ["unload sd15.safetensors", "build xl.safetensors", "load xl.safetensors x"]
    wait_for(lambda: events(state)[2:] == switch, 20, "the worker to switch model sets")
    wait_for(lambda: daemon.status()["state"] == "idle", 20, "the switch to finish")
    assert daemon.status()["worker_pid"] == worker
    row = done(daemon, drop(daemon, "three.png", 3))
    assert (row["preset"], row["model"]) == ("x", "xl.safetensors")
    assert len(events(state)) == 5  # the job needed no further load
    shown = daemon.cli("--config", str(daemon.config_path), "status")
    assert f"model set xl: {daemon.root / 'xl.safetensors'}" in shown.stdout
    logged = (daemon.root / "log" / "daemon.log").read_text()
    unloaded = logged.index("model set unloaded name=default")
    assert logged.index("model set loaded name=xl checkpoint=", unloaded) > unloaded  # with its secs=
    assert daemon.stop() == 0


def test_a_preset_whose_set_is_not_filled_in_is_refused_and_files_wait(daemon: DaemonRun):
    write_config(daemon, xl=False)
    models = daemon.root / "no-upscalers"
    daemon.start(extra_env={seams.ENGINE: "set_engine:SetEngine", "NAIUP_MODELS_DIR": str(models)})
    cli = lambda *a: daemon.cli("--config", str(daemon.config_path), *a)  # noqa: E731
    refused = cli("preset", "xl-refine-2x")
    assert refused.returncode == 1 and "[models.xl] is not filled in" in refused.stderr
    assert 'checkpoint = "<path to an SDXL' in refused.stderr
    # A ControlNet preset whose set names no controlnet: every job would fail, so it is refused alike.
    refused = cli("preset", "refine-2x-strong")
    assert refused.returncode == 1 and "[model.controlnet] is empty" in refused.stderr
    listed = cli("preset").stdout.splitlines()
    assert "  xl-refine-2x  (needs [models.xl] in the config)" in listed and "* a" in listed
    assert "  refine-2x-strong  (needs [model] controlnet in the config)" in listed
    # A built-in upscaler that is not shipped and not put in place: refused alike, saying what goes where.
    refused = cli("preset", "refine-4x")
    assert (
        refused.returncode == 1
        and f"put RealESRGAN_x4plus_anime_6B.safetensors in {models}" in refused.stderr
    )
    assert f"  refine-4x  (needs RealESRGAN_x4plus_anime_6B.safetensors in {models})" in listed
    assert daemon.status()["active_preset"] == "a"

    # Chosen while filled in, then a config edit empties the set: files wait, status says why.
    write_config(daemon, xl=True)
    wait_for(lambda: "x" not in daemon.status()["presets_without_model"], 20, "the reload")
    daemon.request("preset", name="x")
    wait_for(lambda: "load xl.safetensors x" in events(daemon.root / "state"), 20, "the switch")
    write_config(daemon, xl=False)
    wait_for(lambda: "x" in daemon.status()["presets_without_model"], 20, "the reload")
    src = drop(daemon, "waits.png", 4)
    status = wait_for(
        lambda: (s := daemon.status())["engine_error"] and daemon.row(src) and s, 20, "the engine error"
    )
    assert "[models.xl] is not filled in" in status["engine_error"]
    assert daemon.row(src)["state"] == "queued" and daemon.outputs() == []
    write_config(daemon, xl=True)
    assert done(daemon, src)["model"] == "xl.safetensors"
    assert daemon.stop() == 0


def test_a_switch_to_a_set_still_to_download_shows_its_bytes_while_it_loads(daemon: DaemonRun, tmp_path):
    write_config(daemon)
    repo, data = "someone/xl-model", bytes(range(256)) * (128 * 1024)  # 32 MiB, ≈ 2 s on the slow link
    with FakeHub({repo: {"pytorch_lora_weights.safetensors": data}}, chunk=2**20, delay=0.06) as hub:
        env = {seams.ENGINE: "set_engine:SetEngine", "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0",
               "HF_HUB_CACHE": str(tmp_path / "hf"),
               "NAIUP_SET_HUB_REPO": f"xl.safetensors={repo}"}  # fmt: skip
        daemon.start(extra_env=env)
        assert daemon.status()["download"] is None and hub.fetched == []  # the first set had nothing to fetch
        daemon.request("preset", name="x")
        seen = wait_for(
            lambda: (s := daemon.status())["download"] and s["download"]["done"] > 0 and s, 60, "the download"
        )
        assert seen["state"] == "loading" and seen["model_set"] == "xl"
        assert seen["download"]["name"] == repo
        assert seen["download"]["total"] == len(data) and 0 < seen["download"]["done"] < len(data)
        wait_for(lambda: daemon.status()["state"] == "idle", 60, "the switch to finish")
        assert daemon.status()["download"] is None
        assert hub.fetched == [f"{repo}:pytorch_lora_weights.safetensors"]
        assert events(daemon.root / "state")[2:] == [
            "unload sd15.safetensors",
            "build xl.safetensors",
            "load xl.safetensors x",
        ]
        assert daemon.stop() == 0
