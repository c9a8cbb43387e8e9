"""install / uninstall / status against a temporary home, with a recording runner for systemctl."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from naiup.service.autostart import install, plan_autostart, status, uninstall

REPO = Path(__file__).resolve().parents[2]
ARGV = ["/opt/naiup env/bin/naiup"]


class Recorder:
    def __init__(self, code: int = 0) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.code = code

    def __call__(self, cmd: Sequence[str]) -> tuple[int, str]:
        self.calls.append(tuple(cmd))
        return self.code, "" if self.code == 0 else "Failed to connect to bus"


@pytest.fixture
def plan(tmp_path):
    return plan_autostart("linux", home=tmp_path, argv=ARGV, env={})


def test_install_writes_unit_and_desktop_entry_then_enables(tmp_path, plan):
    rec = Recorder()
    report = install(plan, runner=rec)
    unit = tmp_path / ".config/systemd/user/naiup.service"
    desktop = tmp_path / ".config/autostart/naiup-tray.desktop"
    assert report.ok
    assert unit.read_bytes() == plan.entries[0].content
    assert desktop.read_bytes() == plan.entries[1].content
    assert rec.calls == [
        ("systemctl", "--user", "daemon-reload"),
        ("systemctl", "--user", "enable", "--now", "naiup.service"),
    ]
    assert any("loginctl enable-linger" in line for line in report.lines)
    assert not list(unit.parent.glob(".*naiup-tmp"))  # no temp file left behind


def test_xdg_config_home_is_respected(tmp_path):
    plan = plan_autostart("linux", home=tmp_path, argv=ARGV, env={"XDG_CONFIG_HOME": str(tmp_path / "cfg")})
    assert plan.entries[0].location == str(tmp_path / "cfg/systemd/user/naiup.service")


def test_dry_run_prints_the_files_and_touches_nothing(tmp_path, plan):
    rec = Recorder()
    report = install(plan, dry_run=True, runner=rec)
    text = "\n".join(report.lines)
    assert "Restart=on-failure" in text and "[Desktop Entry]" in text
    assert "would run: systemctl --user enable --now naiup.service" in text
    assert rec.calls == []
    assert not (tmp_path / ".config").exists()


def test_status_reports_missing_installed_and_outdated(tmp_path, plan):
    assert not status(plan).ok
    install(plan, runner=Recorder())
    assert status(plan).ok
    moved = plan_autostart("linux", home=tmp_path, argv=["/elsewhere/naiup"], env={})
    report = status(moved)
    assert not report.ok
    assert all("outdated" in line for line in report.lines)


def test_install_is_idempotent_and_uninstall_removes_both(tmp_path, plan):
    install(plan, runner=Recorder())
    install(plan, runner=Recorder())
    rec = Recorder()
    report = uninstall(plan, runner=rec)
    assert rec.calls == [("systemctl", "--user", "disable", "--now", "naiup.service")]
    assert sum(line.startswith("removed") for line in report.lines) == 2
    assert not status(plan).ok
    again = uninstall(plan, runner=Recorder())
    assert sum(line.startswith("not installed") for line in again.lines) == 2


def test_failed_enable_is_reported_not_hidden(plan):
    report = install(plan, runner=Recorder(code=1))
    assert not report.ok
    assert any("Failed to connect to bus" in line for line in report.lines)


def test_unknown_platform_is_a_clear_error(tmp_path):
    from naiup.service.autostart import ServiceError

    with pytest.raises(ServiceError, match="not supported"):
        plan_autostart("sunos5", home=tmp_path, argv=ARGV)


def _service_cli(tmp_path: Path, *args: str, **naiup_env: str) -> subprocess.CompletedProcess[str]:
    """`naiup ARGS` with a temporary home; NAIUP_* variables only those given (they end up in entries)."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("NAIUP_")},
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
        "PYTHONPATH": str(REPO),
        **naiup_env,
    }
    return subprocess.run(
        [sys.executable, "-m", "naiup", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="writes Linux paths")
def test_cli_service_install_dry_run(tmp_path):
    proc = _service_cli(tmp_path, "service", "install", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert f"--- daemon: {tmp_path / 'cfg/systemd/user/naiup.service'}" in proc.stdout
    assert "WantedBy=default.target" in proc.stdout
    assert not (tmp_path / "cfg").exists()
    status_proc = _service_cli(tmp_path, "service", "status")
    assert status_proc.returncode == 1
    assert "daemon: missing" in status_proc.stdout


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="writes Linux paths")
def test_cli_service_install_writes_the_given_config_as_an_absolute_path(tmp_path):
    (tmp_path / "mine.toml").write_text("")
    proc = _service_cli(tmp_path, "--config", "mine.toml", "service", "install", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    unit, tray = proc.stdout.split("--- tray:")
    assert f'"--config" "{tmp_path / "mine.toml"}" "run"' in unit
    assert f"--config {tmp_path / 'mine.toml'} tray" in tray


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="writes Linux paths")
def test_cli_service_install_refuses_a_config_the_service_would_refuse(tmp_path):
    # It used to write the unit anyway (exit 0): the service then failed at every login, restarted in
    # a loop. uninstall and status must still work with the broken file.
    (tmp_path / "typo.toml").write_text("[wach]\nrecursive = true\n")
    problem = "error: typo.toml: [wach] is not a known key; did you mean 'watch'?"
    for dry_run in (["--dry-run"], []):
        proc = _service_cli(tmp_path, "--config", "typo.toml", "service", "install", *dry_run)
        assert proc.returncode == 1, proc.stdout
        assert proc.stderr.splitlines()[0].startswith("not installing: ")
        assert proc.stderr.splitlines()[-1] == problem
        assert "WantedBy" not in proc.stdout and not (tmp_path / "cfg").exists()
    status_proc = _service_cli(tmp_path, "--config", "typo.toml", "service", "status")
    assert (status_proc.returncode, status_proc.stderr) == (1, "")
    assert "daemon: missing" in status_proc.stdout
    uninstall_proc = _service_cli(tmp_path, "--config", "typo.toml", "service", "uninstall", "--dry-run")
    assert uninstall_proc.returncode == 0, uninstall_proc.stderr


def test_macos_install_unloads_before_loading_so_it_can_be_rerun(tmp_path):
    plan = plan_autostart("darwin", home=tmp_path, argv=ARGV)
    rec = Recorder()
    install(plan, runner=rec)
    verbs = [c[1] for c in rec.calls]
    assert verbs == ["bootout", "bootout", "bootstrap", "bootstrap"]
    assert (tmp_path / "Library/LaunchAgents/org.naiup.daemon.plist").exists()


def test_a_missing_service_manager_is_a_failed_step_not_a_traceback(tmp_path):
    from naiup.service.autostart import _run

    code, out = _run([str(tmp_path / "no-such-systemctl"), "--user", "daemon-reload"])
    assert code == 127 and "cannot run" in out


def test_folder_variables_set_at_install_are_carried_into_every_entry(tmp_path):
    # A user running naiup with redirected folders must get a login service using the same ones: the
    # same ledger, config and socket. Relative values are made absolute (the service's cwd differs).
    env = {"NAIUP_STATE_DIR": "rel/state", "NAIUP_MODELS_DIR": str(tmp_path / "m"), "NAIUP_LOG_DIR": ""}
    state = f"NAIUP_STATE_DIR={Path('rel/state').absolute()}"
    models = f"NAIUP_MODELS_DIR={tmp_path / 'm'}"
    for platform in ("linux", "darwin", "win32"):
        plan = plan_autostart(platform, home=tmp_path, argv=ARGV, env=env)
        for entry in plan.entries:
            assert state in entry.text and models in entry.text, (platform, entry.what)
            assert "NAIUP_LOG_DIR" not in entry.text  # empty: not set
    assert all(
        "--env" not in e.text for e in plan_autostart("linux", home=tmp_path, argv=ARGV, env={}).entries
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="writes Linux paths")
def test_cli_install_dry_run_shows_the_carried_folders_and_naiup_applies_them(tmp_path):
    mine = str(tmp_path / "mine")
    proc = _service_cli(tmp_path, "service", "install", "--dry-run", NAIUP_CONFIG_DIR=mine)
    assert proc.returncode == 0, proc.stderr
    unit, tray = proc.stdout.split("--- tray:")
    assert f'"--env" "NAIUP_CONFIG_DIR={tmp_path / "mine"}" "run"' in unit
    assert f"--env NAIUP_CONFIG_DIR={tmp_path / 'mine'} tray" in tray
    # What the entries run: the option sets the folder for that run.
    path = _service_cli(tmp_path, "--env", f"NAIUP_CONFIG_DIR={mine}", "config", "path")
    assert path.stdout.strip() == str(tmp_path / "mine" / "config.toml"), path.stderr
    refused = _service_cli(tmp_path, "--env", "PATH=/nowhere", "config", "path")
    assert refused.returncode == 1 and "--env PATH=/nowhere: expected NAME=VALUE" in refused.stderr
