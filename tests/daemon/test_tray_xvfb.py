"""`naiup tray` as a real process: on Xvfb with pystray's xorg backend against the stand-in daemon, and
without any display (a clear message, exit 1, no traceback).

The same against the real daemon: test_tray_daemon_e2e.py.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from daemon_harness import wait_for
from tray_harness import read_state, tray_env, tray_seams, uncaught_traceback
from tray_standin import StandinDaemon

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def _xorg_tray(
    cwd: Path,
    env: dict[str, str],
    state_file: Path,
    actions: Path | None = None,
    host_wait: float | None = None,
) -> subprocess.Popen:
    """`naiup tray` on pystray's xorg backend, talking to the stand-in daemon, gone after 120 s."""
    argv = [sys.executable, "-m", "naiup", "tray", "--backend", "xorg"]
    env = {
        **env,
        **tray_seams(state_file, actions, exit_after=120, client="tray_standin:connect", host_wait=host_wait),
    }
    return subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _quit(proc: subprocess.Popen, actions: Path) -> str:
    """Click Quit through the actions file; the tray's stderr once it has exited."""
    with open(actions, "a") as f:
        f.write("quit\n")
    return proc.communicate(timeout=15)[1]


def _kill(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        err = proc.communicate()[1]
        pytest.fail(f"tray did not exit after quit; stderr:\n{err}")


def test_tray_on_xvfb_follows_the_daemon_and_toggles_pause_from_its_menu(tmp_path, xvfb, panel):
    daemon = StandinDaemon(tmp_path / "daemon.json").start()
    state_file, actions = tmp_path / "tray.json", tmp_path / "actions.txt"
    env = tray_env(tmp_path, DISPLAY=xvfb, NAIUP_STANDIN_STATE=str(daemon.path))
    proc = _xorg_tray(tmp_path, env, state_file, actions)
    try:
        first = wait_for(lambda: (s := read_state(state_file)) and s["connected"] and s, timeout=30)
        assert first["backend"] == "pystray._xorg"
        assert (first["icon"], first["paused"]) == ("idle", False)

        # Paused from the CLI (here: straight in the stand-in): the tray shows it (its 1 s status poll
        # shows it within about a second; the timeout only guards a hang: latency flakes on a loaded box).
        daemon.set_status(state="paused", pause_reason="by you")
        wait_for(lambda: (s := read_state(state_file)) and s["paused"], timeout=15)
        shown = read_state(state_file)
        assert shown["icon"] == "paused" and "paused (by you)" in shown["tooltip"]

        # The menu's Pause item, triggered through the actions file: the daemon resumes.
        with open(actions, "a") as f:
            f.write("toggle-pause\n")
        wait_for(lambda: daemon.read()["status"]["state"] == "idle", timeout=2.0)
        wait_for(lambda: (s := read_state(state_file)) and not s["paused"], timeout=2.0)
        assert daemon.read()["requests"][-1][0] == "resume"

        err = _quit(proc, actions)
    finally:
        _kill(proc)
    assert proc.returncode == 0, err
    assert not uncaught_traceback(err), err
    assert daemon.read()["running"], "quitting the tray must not stop the service"


def test_tray_without_a_display_is_a_clear_error(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "naiup", "tray"],
        env=tray_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: tray: no graphical display")
    assert "Traceback" not in proc.stderr


def test_a_missing_model_file_does_not_keep_the_tray_from_starting(tmp_path):
    # The daemon runs with a missing model (status shows why); the tray, where the user reads that
    # status, must not refuse the same config. Without a display, the display is the only complaint.
    config = tmp_path / "config.toml"
    config.write_text('[model]\ncheckpoint = "gone.safetensors"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "naiup", "--config", str(config), "tray"],
        env=tray_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: tray: no graphical display"), proc.stderr


def test_tray_with_an_unreachable_x_server_is_a_clear_error(tmp_path):
    env = tray_env(tmp_path, DISPLAY=":9173")  # nothing listens there
    proc = subprocess.run(
        [sys.executable, "-m", "naiup", "tray", "--backend", "xorg"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert "error: tray: no usable tray backend" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_sigterm_stops_the_tray_cleanly(tmp_path, xvfb, panel):
    daemon = StandinDaemon(tmp_path / "daemon.json").start()
    state_file = tmp_path / "tray.json"
    env = tray_env(tmp_path, DISPLAY=xvfb, NAIUP_STANDIN_STATE=str(daemon.path))
    proc = _xorg_tray(tmp_path, env, state_file)
    try:
        wait_for(lambda: (s := read_state(state_file)) and s["connected"], timeout=30)
        proc.terminate()
        _out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert not uncaught_traceback(err), err


def test_no_tray_host_is_one_clear_line_and_exit_1(tmp_path, xvfb):
    env = tray_env(tmp_path, DISPLAY=xvfb, **tray_seams(host_wait=1))  # a bare X server: no system tray
    proc = subprocess.run(
        [sys.executable, "-m", "naiup", "tray", "--backend", "xorg"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("error: tray: no tray host on this desktop")
    assert "Traceback" not in proc.stderr and "Failed to dock" not in proc.stderr


def test_the_tray_docks_again_when_the_panel_restarts(tmp_path, xvfb, panel):
    daemon = StandinDaemon(tmp_path / "daemon.json").start()
    state_file, actions = tmp_path / "tray.json", tmp_path / "actions.txt"
    env = tray_env(tmp_path, DISPLAY=xvfb, NAIUP_STANDIN_STATE=str(daemon.path))
    proc = _xorg_tray(tmp_path, env, state_file, actions, host_wait=30)
    try:
        wait_for(lambda: panel.docked() >= 1, 30, "the icon to dock")
        panel.crash()  # the panel restarts: its window, and the icon embedded in it, are gone
        daemon.set_status(state="paused", pause_reason="by you")  # an update while there is no panel
        time.sleep(1.5)
        assert proc.poll() is None, "the tray exited when the panel went away"
        panel.start()
        wait_for(lambda: panel.docked() >= 1, 30, "the icon to dock in the new panel")
        assert proc.poll() is None
        err = _quit(proc, actions)
    finally:
        _kill(proc)
    assert proc.returncode == 0, err
    assert not uncaught_traceback(err) and "Failed to dock" not in err, err


def test_a_panel_that_never_comes_back_ends_the_tray_with_status_1(tmp_path, xvfb, panel):
    daemon = StandinDaemon(tmp_path / "daemon.json").start()
    state_file = tmp_path / "tray.json"
    env = tray_env(tmp_path, DISPLAY=xvfb, NAIUP_STANDIN_STATE=str(daemon.path))
    proc = _xorg_tray(tmp_path, env, state_file, host_wait=2)
    try:
        wait_for(lambda: panel.docked() >= 1, 30, "the icon to dock")
        panel.crash()
        _out, err = proc.communicate(timeout=30)  # not a silent 0: autostart or a supervisor restarts it
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
            pytest.fail("the tray kept running without a panel")
    assert proc.returncode == 1, err
    assert "no tray host" in err and not uncaught_traceback(err) and "Failed to dock" not in err, err
