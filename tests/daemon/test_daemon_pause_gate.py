"""RuleGate: how rule pauses meet the user's resume, hot reload, and sensors that fail."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import pytest

from naiup.config import PauseConfig
from naiup.daemon.pause_gate import RuleGate, RulesStatus, sensors_from_env
from naiup.daemon.pause_rules import SystemSensors
from naiup.errors import ConfigError


@dataclass
class Sensors:
    battery: bool | None = False
    processes: list[str] = field(default_factory=list)
    broken: bool = False

    def on_battery(self) -> bool | None:
        if self.broken:
            raise RuntimeError("sensor library fell over")
        return self.battery

    def gpu_busy_percent(self) -> float | None:
        return None

    def process_names(self) -> Iterable[str]:
        return list(self.processes)


def gate_at(sensors: Sensors, **cfg: object) -> RuleGate:
    return RuleGate(PauseConfig(**{"check_seconds": 1.0, **cfg}), sensors)


def step(gate: RuleGate, times: Iterable[float]) -> str | None:
    for t in times:
        gate.check(t)
    return gate.reason()


def test_resume_overrides_a_holding_rule_until_it_clears_and_triggers_again():
    s = Sensors(battery=True)
    gate = gate_at(s)
    assert step(gate, [0, 1]) == "on battery"
    gate.override()
    assert gate.reason() is None
    assert gate.status().overridden == "on battery"
    assert step(gate, [2, 3]) is None  # still on battery: the override holds
    s.battery = False
    assert step(gate, [4, 5, 6, 7]) is None
    assert gate.status().overridden is None  # released after 3 s clear: override spent
    s.battery = True
    assert step(gate, [8, 9]) == "on battery"


def test_override_covers_only_rules_holding_at_the_resume():
    s = Sensors(battery=True)
    gate = gate_at(s, processes=("game",))
    step(gate, [0, 1])
    gate.override()
    s.processes = ["game"]
    assert step(gate, [2, 3]) == "game is running"
    assert gate.status() == RulesStatus(holding="game is running", overridden="on battery", unavailable={})


def test_resume_with_no_rule_holding_does_not_pre_empt_a_later_rule():
    s = Sensors()
    gate = gate_at(s)
    step(gate, [0, 1])
    gate.override()
    s.battery = True
    assert step(gate, [2, 3]) == "on battery"


def test_reconfigure_switches_rules_off_at_once_and_keeps_held_ones():
    s = Sensors(battery=True, processes=["game"])
    gate = gate_at(s, processes=("game",))
    assert step(gate, [0, 1]) == "on battery"
    gate.reconfigure(PauseConfig(on_battery=False, processes=("game",), check_seconds=1.0))
    assert step(gate, [1.1]) == "game is running"  # sampled at once after a reload, no new hysteresis
    gate.reconfigure(PauseConfig(on_battery=False, check_seconds=1.0))
    assert step(gate, [1.2]) is None


def test_a_failing_sensor_keeps_the_last_answer_and_never_raises():
    s = Sensors(battery=True)
    gate = gate_at(s)
    step(gate, [0, 1])
    s.broken = True
    assert step(gate, [2, 3, 4, 5]) == "on battery"
    s.broken, s.battery = False, False
    assert step(gate, [6, 7, 8, 9]) is None


def test_sensors_from_env(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("NAIUP_PAUSE_SENSORS", raising=False)
    assert isinstance(sensors_from_env(lambda: [1]), SystemSensors)
    monkeypatch.setenv("NAIUP_PAUSE_SENSORS", "no_such_module_xyz:make")
    with pytest.raises(ConfigError, match="no_such_module_xyz"):
        sensors_from_env(lambda: [1])
