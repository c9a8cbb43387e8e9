"""`naiup doctor` against a real `naiup run`: the real config loader and the real control client."""

from __future__ import annotations

from daemon_harness import DaemonRun


def test_doctor_reports_the_running_daemon_and_its_pause(daemon: DaemonRun):
    daemon.write_config(watch="quiet_seconds = 0.2", pause="on_battery = false\ngpu_busy_percent = 40")
    daemon.start()
    daemon.request("pause", reason="doctor test")
    up = daemon.cli("--config", str(daemon.config_path), "doctor")
    assert "Traceback" not in up.stderr, up.stderr
    line = next(x for x in up.stdout.splitlines() if "] daemon:" in x)
    version = daemon.request("ping")["version"]
    assert line == f"[  ok] daemon: running, pid {daemon.proc.pid} version {version}, paused (doctor test)"
    assert f"[  ok] config: valid: {daemon.config_path}" in up.stdout  # the file the daemon reads
    assert f"[  ok] watch {daemon.watch}: readable" in up.stdout
    assert "] pause rule gpu:" in up.stdout
    assert daemon.stop() == 0
