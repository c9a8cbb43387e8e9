"""`naiup doctor`: each check finds what it should, and the CLI exits non-zero on a blocker."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from naiup import doctor
from naiup.config import Config, DaemonConfig, ModelConfig, Preset, WatchConfig
from naiup.doctor import Status, check_daemon, check_model_ref, check_models, check_tray, check_watch_folders
from naiup.errors import NaiupError

REPO = Path(__file__).resolve().parents[1]


def test_model_file_present_and_missing(tmp_path):
    weights = tmp_path / "my model.safetensors"
    weights.write_bytes(b"\0" * 16)
    assert check_model_ref("checkpoint", str(weights)).status is Status.OK
    missing = check_model_ref("checkpoint", str(tmp_path / "gone.safetensors"))
    assert missing.status is Status.FAIL and "gone.safetensors" in missing.detail


def test_a_diffusers_folder_checkpoint_is_present_not_missing(tmp_path):
    # The config allows a diffusers folder as the checkpoint; doctor used to call it a missing file.
    folder = tmp_path / "sd15 local"
    folder.mkdir()
    (folder / "model_index.json").write_text("{}")
    check = check_model_ref("checkpoint", str(folder))
    assert check.status is Status.OK and str(folder) in check.detail
    gone = check_model_ref("checkpoint", str(tmp_path / "sd15 gone"))
    assert gone.status is Status.FAIL and "sd15 gone" in gone.detail


def test_hub_id_must_be_in_the_local_cache(tmp_path):
    cache = tmp_path / "hub"
    absent = check_model_ref("lcm-lora", "latent-consistency/lcm-lora-sdv1-5", cache_dir=cache)
    assert absent.status is Status.FAIL
    assert "hf download latent-consistency/lcm-lora-sdv1-5" in absent.fix
    assert (
        absent.detail == "hub id 'latent-consistency/lcm-lora-sdv1-5' is not in the local Hugging Face cache"
    )
    bad = check_model_ref("lcm-lora", "a//b", cache_dir=cache)
    assert bad.status is Status.FAIL and "Error" not in bad.detail and "not a valid hub id" in bad.detail
    # The cache layout huggingface_hub writes: refs/main names a snapshot folder.
    repo = cache / "models--latent-consistency--lcm-lora-sdv1-5"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (snap / "pytorch_lora_weights.safetensors").write_bytes(b"\0")
    present = check_model_ref("lcm-lora", "latent-consistency/lcm-lora-sdv1-5", cache_dir=cache)
    assert present.status is Status.OK, present.detail


def test_models_are_not_needed_when_no_preset_refines():
    config = Config(
        presets={"up": Preset(name="up", refine=False)}, model=ModelConfig(checkpoint="/nope.ckpt")
    )
    assert [c.status for c in check_models(config)] == [Status.OK]
    refining = replace(config, presets={"r": Preset(name="r")})
    assert Status.FAIL in [c.status for c in check_models(refining)]


def test_models_only_other_presets_need_are_notes_not_failures():
    # The built-in refining presets are still there, but the user runs upscale-2x: a missing SD model
    # matters only after switching presets, so it must not block `naiup doctor`.
    config = Config(
        model=ModelConfig(checkpoint="/nope.ckpt"), daemon=DaemonConfig(active_preset="upscale-2x")
    )
    checkpoint = next(c for c in check_models(config) if c.name == "checkpoint")
    assert checkpoint.status is Status.NOTE
    assert "not by the active preset 'upscale-2x'" in checkpoint.detail and "refine-2x" in checkpoint.detail
    refining = replace(config, daemon=DaemonConfig(active_preset="refine-2x"))
    assert next(c for c in check_models(refining) if c.name == "checkpoint").status is Status.FAIL


def test_cli_doctor_exits_0_for_an_upscale_only_user_without_sd_models(tmp_path):
    (tmp_path / "in").mkdir()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[watch]\nfolders = ["{(tmp_path / "in").as_posix()}"]\n[daemon]\nactive_preset = "upscale-2x"\n'
    )
    proc = _doctor_cli(tmp_path, config)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "[note] checkpoint: hub id" in proc.stdout


def test_a_gpu_memory_cap_too_small_for_sd15_is_a_warning_with_the_fix():
    model = ModelConfig(checkpoint="/nope.ckpt", max_vram_gb=2)
    config = Config(presets={"r": Preset(name="r")}, model=model)
    cap = [c for c in check_models(config) if c.name == "gpu memory cap"]
    assert [c.status for c in cap] == [Status.WARN] and "at least 3" in cap[0].fix
    roomy = replace(config, model=replace(config.model, max_vram_gb=4))
    assert not [c for c in check_models(roomy) if c.name == "gpu memory cap"]


def test_watch_folders(tmp_path):
    ok, gone = tmp_path / "Downloads", tmp_path / "missing"
    ok.mkdir()
    checks = check_watch_folders(Config(watch=WatchConfig(folders=(ok, gone))))
    assert [c.status for c in checks] == [Status.OK, Status.FAIL]
    assert check_watch_folders(Config(watch=WatchConfig(folders=())))[0].status is Status.FAIL


def test_tray_backend_check():
    assert check_tray(lambda: None).status is Status.WARN
    assert "no menu" in check_tray(lambda: "xorg").detail
    assert check_tray(lambda: "appindicator").status is Status.OK


class FakeClient:
    def __init__(self) -> None:
        self.closed = False

    def request(self, verb: str, **args: object) -> dict:
        if verb == "status":
            return {"ok": True, "state": "idle", "pause_reason": None}
        assert verb == "ping"
        return {"ok": True, "pid": 4242, "version": "0.1.0"}

    def close(self) -> None:
        self.closed = True


def test_daemon_check_running_and_not():
    client = FakeClient()
    running = check_daemon(lambda: client)
    assert running.status is Status.OK and "4242" in running.detail
    assert client.closed

    def refuse() -> FakeClient:
        raise NaiupError("no daemon socket")

    down = check_daemon(refuse)
    assert down.status is Status.WARN and "naiup run" in down.fix


def test_format_shows_fixes_only_for_problems():
    lines = doctor.format_checks(
        [doctor.Check("a", Status.OK, "fine", "ignored"), doctor.Check("b", Status.FAIL, "broken", "do x")]
    )
    assert lines == ["[  ok] a: fine", "[FAIL] b: broken", "       fix: do x"]


def test_cli_doctor_exits_1_on_a_broken_config(tmp_path):
    bad = tmp_path / "config.toml"
    bad.write_text("[watch\nfolders = 3\n")
    proc = _doctor_cli(tmp_path, bad)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "[FAIL] config:" in proc.stdout
    assert "blocking: config" in proc.stderr
    assert "[warn] tray:" in proc.stdout  # no display here: said, not fatal
    assert "Traceback" not in proc.stderr


def test_cli_doctor_judges_the_preset_chosen_with_naiup_preset_and_says_so(tmp_path):
    # The config's refine-2x needs an SD model nobody downloaded; the user chose upscale-2x with
    # `naiup preset`, which the service runs: doctor used to fail the checkpoint and exit 1.
    (tmp_path / "in").mkdir()
    config = tmp_path / "config.toml"
    config.write_text(f'[watch]\nfolders = ["{(tmp_path / "in").as_posix()}"]\n')
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "runtime.json").write_text('{"active_preset": "upscale-2x"}')
    proc = _doctor_cli(tmp_path, config)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    chosen = "chosen with `naiup preset` or the tray; the config says 'refine-2x'"
    assert f"[  ok] active preset: upscale-2x ({chosen})" in proc.stdout
    assert "[note] checkpoint: hub id" in proc.stdout


def test_the_active_preset_check_fails_for_a_choice_the_config_cannot_run():
    config = Config()
    assert doctor.check_active_preset(config, "refine-2x", "x").status is Status.OK
    gone = doctor.check_active_preset(config, "mine", "chosen with `naiup preset`")
    assert (
        gone.status is Status.FAIL
        and "'mine', chosen with `naiup preset`, is not in the config" in gone.detail
    )
    strong = doctor.check_active_preset(config, "refine-2x-strong", "x")  # [model] names no controlnet
    assert strong.status is Status.FAIL and "needs [model] controlnet" in strong.detail


def _doctor_cli(tmp_path: Path, config: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "HOME": str(tmp_path),
        "NAIUP_CONFIG_DIR": str(tmp_path),
        "NAIUP_STATE_DIR": str(tmp_path / "s"),
        "NAIUP_RUNTIME_DIR": str(tmp_path / "r"),
        "HF_HUB_CACHE": str(tmp_path / "hf"),  # empty: no SD model is downloaded
    }
    env.pop("DISPLAY", None)
    return subprocess.run(
        [sys.executable, "-m", "naiup", "--config", str(config), "doctor"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )


def test_a_missing_built_in_upscaler_blocks_only_the_preset_that_uses_it(tmp_path, monkeypatch):
    # refine-4x's RealESRGAN weights are not shipped; a user on it must learn that before an image fails.
    monkeypatch.setenv("NAIUP_MODELS_DIR", str(tmp_path / "no-models"))
    from naiup.config import DaemonConfig

    on_2x = doctor.check_upscalers(Config(daemon=DaemonConfig(active_preset="refine-2x")))
    on_4x = doctor.check_upscalers(Config(daemon=DaemonConfig(active_preset="refine-4x")))
    assert next(c for c in on_2x if c.name == "upscaler realcugan-2x").status is Status.OK
    missing = next(c for c in on_4x if c.name == "upscaler realesrgan-x4-anime")
    assert missing.status is Status.FAIL and "RealESRGAN_x4plus_anime_6B" in missing.detail
    assert next(c for c in on_2x if c.name == "upscaler realesrgan-x4-anime").status is Status.NOTE


def test_an_explicit_device_torch_cannot_see_is_a_blocker():
    import torch

    assert doctor.check_device("auto") is None and doctor.check_device("cpu") is None
    cuda = doctor.check_device("cuda")
    expected = Status.OK if torch.cuda.is_available() else Status.FAIL
    assert cuda.status is expected
    if expected is Status.FAIL:
        assert "no CUDA device" in cuda.detail and "auto" in cuda.fix
    assert doctor.check_device("cuda:7").status is (
        Status.OK if torch.cuda.device_count() > 7 else Status.FAIL
    )


def test_a_model_sets_own_device_is_checked_under_its_table():
    import torch

    check = doctor.check_device("cuda:7", "models.xl")
    if torch.cuda.device_count() > 7:
        assert check.status is Status.OK
    else:  # the failure names the set's table, not [model]
        assert check.status is Status.FAIL and "models.xl.device = 'cuda:7'" in check.detail
        assert 'set models.xl.device = "auto"' in check.fix


def test_a_configured_controlnet_must_exist(tmp_path):
    presets = {"r": Preset(name="r")}
    gone = Config(presets=presets, model=ModelConfig(controlnet=str(tmp_path / "tile")))
    assert next(c for c in check_models(gone) if c.name == "controlnet").status is Status.FAIL
    (tmp_path / "tile").mkdir()
    assert next(c for c in check_models(gone) if c.name == "controlnet").status is Status.OK
    assert not [c for c in check_models(Config(presets=presets)) if c.name == "controlnet"]
