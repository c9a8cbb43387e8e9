"""The `naiup` entry point as a user runs it: a real process, real files, real exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

import naiup

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fake home with a Downloads folder, so defaults never touch the real user's folders."""
    (tmp_path / "home" / "Downloads").mkdir(parents=True)
    return tmp_path / "home"


def naiup_cli(home: Path, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "HOME": str(home),
        "USERPROFILE": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "NAIUP_CONFIG_DIR": str(home / "cfg"),
        "HF_HUB_CACHE": str(home / "hf"),  # empty cache: hub models read as "not downloaded yet"
        "PYTHONPATH": str(REPO),
    }
    for key in ("XDG_DOWNLOAD_DIR", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):  # none download anything
        env.pop(key, None)
    env.update(extra_env)
    return subprocess.run(
        [sys.executable, "-m", "naiup", *args], env=env, capture_output=True, text=True, timeout=60
    )


def test_version_prints_the_package_version(home: Path):
    run = naiup_cli(home, "--version")
    assert run.returncode == 0
    assert run.stdout.strip() == f"naiup {naiup.__version__}"


def test_no_command_is_a_usage_error(home: Path):
    run = naiup_cli(home)
    assert run.returncode == 2
    assert "COMMAND" in run.stderr


def test_config_needs_a_known_action(home: Path):
    run = naiup_cli(home, "config", "edit")
    assert run.returncode == 2
    assert "invalid choice: 'edit'" in run.stderr


def test_config_path_is_the_per_user_file_and_honours_the_override(home: Path, tmp_path: Path):
    assert naiup_cli(home, "config", "path").stdout.strip() == str(home / "cfg" / "config.toml")
    other = tmp_path / "other.toml"
    assert naiup_cli(home, "--config", str(other), "config", "path").stdout.strip() == str(other)
    assert naiup_cli(home, "config", "path", "--config", str(other)).stdout.strip() == str(other)


def test_config_check_without_a_file_uses_defaults_and_succeeds(home: Path):
    run = naiup_cli(home, "config", "check")
    assert run.returncode == 0, run.stderr
    assert "no config file at" in run.stderr
    assert "ok: built-in defaults (7 presets, active 'refine-2x')" in run.stdout
    # Not downloaded yet is a note, not an error: the first refine downloads it.
    assert "note: built-in defaults: [model.checkpoint] hub model" in run.stderr


def test_config_check_with_hf_hub_offline_says_a_missing_hub_model_cannot_be_downloaded(home: Path):
    run = naiup_cli(home, "config", "check", HF_HUB_OFFLINE="1")
    assert run.returncode == 1, run.stderr
    assert "error: built-in defaults: [model.checkpoint] hub model" in run.stderr
    assert "HF_HUB_OFFLINE is set" in run.stderr and "first refine downloads it" not in run.stderr


def test_config_check_offline_with_an_upscale_preset_notes_the_model_cannot_be_downloaded(
    home: Path, tmp_path: Path
):
    config = tmp_path / "up.toml"
    config.write_text('[daemon]\nactive_preset = "upscale-2x"\n', encoding="utf-8")
    run = naiup_cli(home, "config", "check", "--config", str(config), HF_HUB_OFFLINE="1")
    assert run.returncode == 0, run.stderr  # the active preset does not need the model: a note
    assert f"note: {config}: [model.checkpoint] hub model" in run.stderr
    assert "cannot be while HF_HUB_OFFLINE is set" in run.stderr
    assert "first refine downloads it" not in run.stderr


def test_config_is_accepted_after_any_command(home: Path, tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[watch\n", encoding="utf-8")
    for args in (("run", "--config", str(bad)), ("refine", "--config", str(bad), str(tmp_path / "a.png"))):
        run = naiup_cli(home, *args)
        assert run.returncode == 1, run.stderr  # read that file (and refused it), not a usage error
        assert run.stderr.splitlines()[-1].startswith(f"error: {bad}: [toml] is not valid TOML"), run.stderr


def test_config_check_refuses_an_invalid_file_naming_file_key_and_reason(home: Path, tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[presets.refine-2x]\ncfg = 3.0\n", encoding="utf-8")
    run = naiup_cli(home, "config", "check", "--config", str(bad))
    assert run.returncode == 1
    assert run.stderr.strip() == f"error: {bad}: [presets.refine-2x.cfg] is 3.0 with the lcm sampler: " + (
        "LCM burns above CFG 2 (use 1-1.8)"
    )
    assert run.stdout == ""


def test_config_check_reports_a_missing_watch_folder(home: Path, tmp_path: Path):
    cfg = tmp_path / "config.toml"
    cfg.write_text('[watch]\nfolders = ["gone"]\n', encoding="utf-8")
    run = naiup_cli(home, "--config", str(cfg), "config", "check")
    assert run.returncode == 1
    assert f"error: {cfg}: [watch.folders[0]] folder not found: {tmp_path / 'gone'}" in run.stderr


def test_config_check_passes_a_valid_file(home: Path, tmp_path: Path):
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[watch]\nfolders = ["{(home / "Downloads").as_posix()}"]\n[presets.mine]\nsteps = 20\n')
    run = naiup_cli(home, "--config", str(cfg), "config", "check")
    assert run.returncode == 0, run.stderr
    assert f"ok: {cfg} (8 presets, active 'refine-2x')" in run.stdout


def test_config_show_prints_the_effective_config_as_toml(home: Path, tmp_path: Path):
    cfg = tmp_path / "config.toml"
    cfg.write_text("[presets.refine-4x]\ndenoise = 0.5\n", encoding="utf-8")
    run = naiup_cli(home, "--config", str(cfg), "config", "show")
    assert run.returncode == 0, run.stderr
    shown = tomllib.loads(run.stdout)
    assert shown["presets"]["refine-4x"]["denoise"] == 0.5
    assert shown["presets"]["refine-4x"]["steps"] == 8  # untouched keys keep the built-in value
    assert shown["presets"]["upscale-2x"]["refine"] is False
    assert shown["watch"]["folders"] == [str(home / "Downloads")]


def test_config_show_refuses_an_invalid_file_with_exit_1(home: Path, tmp_path: Path):
    cfg = tmp_path / "config.toml"
    cfg.write_text("[wach]\n", encoding="utf-8")
    run = naiup_cli(home, "--config", str(cfg), "config", "show")
    assert run.returncode == 1
    assert "[wach] is not a known key; did you mean 'watch'?" in run.stderr


def test_config_check_notes_an_lcm_preset_without_an_lcm_lora(home: Path, tmp_path: Path):
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[watch]\nfolders = ["{(home / "Downloads").as_posix()}"]\n[model]\nlcm_lora = ""\n')
    run = naiup_cli(home, "--config", str(cfg), "config", "check")
    assert run.returncode == 0, run.stderr
    assert (
        "[model.lcm_lora] is empty but preset(s) refine-2x, refine-2x-strong, refine-4x use the lcm sampler"
        in run.stderr
    )


@pytest.mark.parametrize("text", ["0s", "-5m", "nan", "inf", "1e400h", "m"])
def test_pause_for_refuses_durations_that_would_pause_forever_or_never(
    text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    # `--for 0s` used to mean "no end" (a paused_until of None), nan/inf never ended either.
    for kind in ("STATE", "RUNTIME"):
        monkeypatch.setenv(f"NAIUP_{kind}_DIR", str(tmp_path / kind.lower()))  # never the real daemon
    from naiup.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["pause", f"--for={text}"])
    assert exit_info.value.code == 2
    assert "not a duration" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["retry", "twelve"], "expected an id or `all`, got 'twelve'"),
        (["gallery", "--limit", "0"], "must be a whole number of at least 1, got '0'"),
    ],
)
def test_bad_arguments_are_usage_errors_before_anything_runs(
    argv: list[str],
    says: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
):
    for kind in ("STATE", "RUNTIME", "CACHE"):
        monkeypatch.setenv(f"NAIUP_{kind}_DIR", str(tmp_path / kind.lower()))
    from naiup.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert says in capsys.readouterr().err


def test_the_cli_reports_a_daemon_that_is_not_running_with_exit_3(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    for kind in ("STATE", "RUNTIME"):
        monkeypatch.setenv(f"NAIUP_{kind}_DIR", str(tmp_path / kind.lower()))
    from naiup.cli.main import main

    for argv in (["status"], ["pause"], ["queue", "--failed"], ["retry", "all"], ["stop"]):
        assert main(argv) == 3, argv
        assert (
            capsys.readouterr().err.strip()
            == "naiup: the naiup daemon is not running (start it with naiup run)"
        )
    assert main(["status", "--json"]) == 3
    assert json.loads(capsys.readouterr().out) == {
        "ok": False,
        "error": "the naiup daemon is not running (start it with naiup run)",
    }


def test_a_config_file_named_with_config_must_exist(tmp_path, capsys):
    # A typo in --config used to run on built-in defaults (watching ~/Downloads) without a word.
    from naiup.cli.main import main

    missing = tmp_path / "typo.toml"
    assert main(["--config", str(missing), "status"]) == 1
    assert f"--config {missing}: does not exist" in capsys.readouterr().err
    assert main(["refine", "--config", str(tmp_path), "x.png"]) == 1
    assert "is a folder, not a file" in capsys.readouterr().err
    assert main(["--config", str(missing), "config", "path"]) == 0  # where it would be read from
    assert str(missing) in capsys.readouterr().out


def test_status_dates_the_last_error_so_an_old_one_does_not_read_as_news():
    from naiup.cli.daemon_cmds import _at

    now = time.mktime((2025, 6, 11, 15, 0, 0, 0, 0, -1))  # a Wednesday, local time
    assert _at(None, now) == ""
    assert _at(now - 3600, now) == " (14:00)"  # today: the time
    assert _at(now - 86400, now) == " (Tue 15:00)"  # this week: the day too
    assert _at(now - 30 * 86400, now) == " (2025-05-12)"  # older: the date
