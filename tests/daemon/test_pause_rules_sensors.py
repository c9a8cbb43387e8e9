"""Pause rules driven by injected sensors: each rule, switches, hysteresis, unavailable sensors."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

from naiup.config import PauseConfig
from naiup.daemon.pause_rules import PauseRules, SystemSensors


@dataclass
class FakeSensors:
    battery: bool | None = False
    gpu: float | None = 0.0
    processes: list[str] = field(default_factory=list)
    reads: int = 0

    def on_battery(self) -> bool | None:
        self.reads += 1
        return self.battery

    def gpu_busy_percent(self) -> float | None:
        return self.gpu

    def process_names(self) -> Iterable[str]:
        return list(self.processes)


def rules_for(sensors: FakeSensors, **cfg: object) -> PauseRules:
    config = PauseConfig(**{"check_seconds": 5.0, **cfg})
    return PauseRules(config, sensors, engage_samples=2, release_seconds=15.0)


def run(rules: PauseRules, times: Iterable[float]) -> list[str | None]:
    return [rules.evaluate(t) for t in times]


def test_battery_pauses_after_two_samples_and_resumes_after_release_time():
    s = FakeSensors(battery=True)
    rules = rules_for(s)
    assert run(rules, [0, 5]) == [None, "on battery"]
    s.battery = False
    # Plugged in at t=10: stays paused until clear for 15 s (t=25), then runs.
    assert run(rules, [10, 15, 20, 25]) == ["on battery", "on battery", "on battery", None]


def test_a_single_blip_does_not_pause():
    s = FakeSensors(battery=True)
    rules = rules_for(s)
    assert rules.evaluate(0) is None
    s.battery = False
    assert run(rules, [5, 10]) == [None, None]


def test_sensors_are_sampled_at_most_every_check_seconds():
    s = FakeSensors(battery=True)
    rules = rules_for(s)
    run(rules, [0, 1, 2, 3, 4.9])
    assert s.reads == 1
    rules.evaluate(5)
    assert s.reads == 2


def test_battery_rule_switched_off_never_pauses():
    s = FakeSensors(battery=True)
    rules = rules_for(s, on_battery=False)
    assert run(rules, [0, 5, 10]) == [None, None, None]
    assert s.reads == 0


def test_gpu_busy_uses_a_band_so_it_does_not_flap_at_the_threshold():
    s = FakeSensors(gpu=80.0)
    rules = rules_for(s, on_battery=False, gpu_busy_percent=50)
    assert run(rules, [0, 5]) == [None, "GPU busy (80%)"]
    s.gpu = 45.0  # below the line but inside the 10-point band: still busy
    assert run(rules, [10, 15, 20, 25]) == ["GPU busy (45%)"] * 4
    s.gpu = 30.0
    assert run(rules, [30, 40, 45]) == ["GPU busy (45%)", "GPU busy (45%)", None]


def test_gpu_rule_off_when_threshold_is_zero():
    rules = rules_for(FakeSensors(gpu=100.0), on_battery=False, gpu_busy_percent=0)
    assert rules.enabled_rules() == []
    assert run(rules, [0, 5, 10]) == [None, None, None]


def test_process_rule_matches_names_case_insensitively_and_without_exe():
    s = FakeSensors(processes=["bash", "Game.EXE"])
    rules = rules_for(s, on_battery=False, processes=("game",))
    assert run(rules, [0, 5]) == [None, "Game.EXE is running"]
    s.processes = ["bash"]
    assert run(rules, [10, 25]) == ["Game.EXE is running", None]


def test_unavailable_sensor_is_reported_and_does_not_pause():
    s = FakeSensors(battery=None, gpu=None)
    rules = rules_for(s, gpu_busy_percent=50)
    assert run(rules, [0, 5, 10]) == [None, None, None]
    assert set(rules.unavailable()) == {"battery", "gpu"}
    assert "nvidia-ml-py" in rules.unavailable()["gpu"]


def test_first_engaged_rule_names_the_reason():
    s = FakeSensors(battery=True, processes=["obs"])
    rules = rules_for(s, processes=("obs",))
    assert run(rules, [0, 5]) == [None, "on battery"]


@pytest.mark.parametrize(
    "config", [PauseConfig(), PauseConfig(gpu_busy_percent=30, processes=("nothing-xyz",))]
)
def test_real_sensors_answer_without_raising(config):
    # The box may or may not have a battery or NVML; either way the rule answers and says why if it can't.
    rules = PauseRules(config, SystemSensors(), engage_samples=1)
    reason = rules.evaluate(0.0)
    assert reason in (None, "on battery") or reason.startswith("GPU busy")
    for why in rules.unavailable().values():
        assert why


class FakeNvml:
    """The handful of pynvml calls SystemSensors makes, answering like a GPU shared with a game."""

    def __init__(self, procs: list[tuple[int, int]], per_process: bool = True) -> None:
        self.procs = procs  # (pid, sm %)
        self.per_process = per_process

    def nvmlDeviceGetHandleByIndex(self, index):
        return object()

    def nvmlDeviceGetComputeRunningProcesses(self, handle):
        return [SimpleNamespace(pid=pid) for pid, _ in self.procs]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle):
        return []

    def nvmlDeviceGetProcessUtilization(self, handle, since):
        if not self.per_process:
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return [SimpleNamespace(pid=pid, smUtil=sm) for pid, sm in self.procs]

    def nvmlDeviceGetUtilizationRates(self, handle):
        return SimpleNamespace(gpu=sum(sm for _, sm in self.procs))


def test_gpu_use_of_our_own_worker_is_not_counted():
    nvml = FakeNvml([(100, 70), (200, 25)])
    assert SystemSensors(own_pids=[100], nvml=nvml).gpu_busy_percent() == 25.0
    assert SystemSensors(own_pids=[100, 200], nvml=nvml).gpu_busy_percent() == 0.0


def test_gpu_use_falls_back_to_whole_device_without_per_process_samples():
    nvml = FakeNvml([(100, 70), (200, 25)], per_process=False)
    assert SystemSensors(own_pids=[100], nvml=nvml).gpu_busy_percent() == 95.0
