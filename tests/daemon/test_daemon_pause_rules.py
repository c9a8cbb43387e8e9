"""Pause rules inside a real `naiup run`: sensors injected through NAIUP_PAUSE_SENSORS (fake_sensors.py)."""

from __future__ import annotations

import json
from pathlib import Path

import fake_sensors
import nai_writer
from daemon_harness import DaemonRun, wait_for

RULES = "on_battery = true\ncheck_seconds = 0.2"  # engage after 2 checks, let go after 0.6 s clear


def start(daemon: DaemonRun, sensors: Path, pause: str = RULES, **values: object) -> None:
    fake_sensors.write(sensors, **values)
    daemon.write_config(watch="quiet_seconds = 0.2", pause=pause)
    env = {"NAIUP_PAUSE_SENSORS": "fake_sensors:from_file", "NAIUP_FAKE_SENSORS": str(sensors)}
    daemon.start(extra_env=env)


def paused_by_rule(daemon: DaemonRun, reason: str) -> dict:
    def check() -> dict | None:
        s = daemon.status()
        return s if (s["state"], s["pause_source"], s["pause_reason"]) == ("paused", "rule", reason) else None

    status = wait_for(check, 10, f"a rule pause ({reason})")
    assert status["pause_rule"] == reason
    return status


def more_checks(sensors: Path, n: int = 5) -> None:
    """Wait until the daemon has sampled the sensors n more times (proof that time passed under rules)."""
    seen = fake_sensors.samples(sensors)
    wait_for(lambda: fake_sensors.samples(sensors) >= seen + n, 10, f"{n} more pause-rule checks")


def test_rule_pause_holds_new_files_is_shown_and_not_persisted_then_lets_go(daemon: DaemonRun, tmp_path):
    sensors = tmp_path / "sensors.json"
    start(daemon, sensors, on_battery=False)
    fake_sensors.write(sensors, on_battery=True)  # unplugged while running
    paused_by_rule(daemon, "on battery")

    src = daemon.watch / "a.png"
    nai_writer.write_nai_png(src, (16, 16))
    wait_for(lambda: (r := daemon.row(src)) and r["state"] == "queued", 20, "a.png recorded as queued")
    more_checks(sensors)
    assert daemon.row(src)["state"] == "queued" and daemon.outputs() == []

    cli = daemon.cli("status")
    assert cli.returncode == 0 and cli.stdout.startswith("paused ")
    assert "paused: on battery (pause rule;" in cli.stdout
    # A user choice saved while the rule holds: the state file keeps only the user's (unpaused) state.
    daemon.request("preset", name="upscale-2x")
    saved = json.loads((tmp_path / "state" / "runtime.json").read_text())
    assert saved["paused"] is False and saved["pause_reason"] is None

    fake_sensors.write(sensors, on_battery=False)  # plugged in again
    wait_for(lambda: daemon.outputs(), 10, "the held file to be processed after the rule let go")
    status = daemon.status()
    assert status["state"] != "paused" and status["pause_reason"] is None and status["pause_rule"] is None
    assert daemon.stop() == 0


def test_user_resume_overrides_a_rule_until_it_clears_and_retriggers(daemon: DaemonRun, tmp_path):
    sensors = tmp_path / "sensors.json"
    start(daemon, sensors, on_battery=True)
    paused_by_rule(daemon, "on battery")

    # A user pause on top of a rule: the user's reason shows, the rule is still reported.
    paused = daemon.request("pause")
    assert (paused["state"], paused["pause_source"], paused["pause_reason"]) == ("paused", "user", "by you")
    assert paused["pause_rule"] == "on battery"

    resumed = daemon.cli("resume")
    assert resumed.returncode == 0
    assert "pause rule overridden by resume until it clears: on battery" in resumed.stdout
    status = daemon.status()
    assert status["state"] != "paused" and status["pause_rule_overridden"] == "on battery"
    nai_writer.write_nai_png(daemon.watch / "b.png", (16, 16))
    wait_for(lambda: daemon.outputs(), 20, "a file processed on battery after the user's resume")

    fake_sensors.write(sensors, on_battery=False)
    wait_for(lambda: daemon.status()["pause_rule_overridden"] is None, 10, "the rule to clear")
    fake_sensors.write(sensors, on_battery=True)
    paused_by_rule(daemon, "on battery")  # triggered again: it pauses again
    assert daemon.stop() == 0


def test_pause_keys_hot_reload_and_our_own_gpu_use_never_counts(daemon: DaemonRun, tmp_path):
    sensors = tmp_path / "sensors.json"
    start(daemon, sensors, pause="on_battery = false\ncheck_seconds = 0.2", on_battery=True)
    status = daemon.status()
    own = [[status["pid"], 90], [status["worker_pid"], 90]]
    fake_sensors.write(sensors, on_battery=False, gpu=own)
    assert fake_sensors.samples(sensors) == 0  # battery rule off: never even read

    daemon.write_config(watch="quiet_seconds = 0.2", pause=f"{RULES}\ngpu_busy_percent = 30")
    more_checks(sensors)  # the reload switched the battery rule on: the daemon samples now
    status = daemon.status()
    assert status["state"] != "paused" and status["pause_rule"] is None, status

    fake_sensors.write(sensors, on_battery=False, gpu=[*own, [4_000_000, 60]])  # a game on the GPU
    paused_by_rule(daemon, "GPU busy (60%)")

    daemon.write_config(
        watch="quiet_seconds = 0.2", pause=f'{RULES}\nprocesses = ["fakegame"]'
    )  # GPU rule off, a process rule on
    fake_sensors.write(sensors, on_battery=False, gpu=[[4_000_000, 60]], processes=["sh", "FakeGame.exe"])
    paused_by_rule(daemon, "FakeGame.exe is running")

    daemon.write_config(watch="quiet_seconds = 0.2", pause="on_battery = false")
    wait_for(lambda: daemon.status()["state"] != "paused", 10, "no pause once every rule is switched off")
    assert daemon.stop() == 0
