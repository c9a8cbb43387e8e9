"""Automatic pause policy: on battery, GPU busy with another process, a listed process running.

Pure policy over injected sensors, so the daemon calls it from its loop and tests drive it with fakes:

    rules = PauseRules(config.pause, SystemSensors())
    reason = rules.evaluate(time.monotonic())   # "on battery" | "GPU busy …" | "… is running" | None

Sensors are sampled at most every `check_seconds`; between samples the last answer is returned.
Hysteresis: a rule must hold for `engage_samples` consecutive samples before it pauses, and once it has
paused it must be clear for `release_seconds` before it lets go, so a laptop on a flaky charger or a
GPU spike does not flip the queue on and off every few seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import psutil

from naiup.config import PauseConfig

log = logging.getLogger(__name__)

# Below the threshold by this many points before a GPU-busy pause lets go (band, not a single line).
GPU_RELEASE_MARGIN = 10


class Sensors(Protocol):
    """What the rules read. Each method returns None when the machine cannot tell."""

    def on_battery(self) -> bool | None: ...

    def gpu_busy_percent(self) -> float | None:
        """GPU utilisation caused by processes other than ours, 0-100."""
        ...

    def process_names(self) -> Iterable[str]: ...


class SystemSensors:
    """Real sensors: psutil for battery and processes, NVML (nvidia-ml-py) for the GPU when present.

    `own_pids`: the daemon and its GPU worker, whose GPU use is not "another process". A callable is
    asked at every read, because the worker is restarted (new pid) after a crash or `pause --free-gpu`.
    """

    def __init__(
        self, own_pids: Iterable[int] | Callable[[], Iterable[int]] = (), nvml: Any | None = None
    ) -> None:
        self._own_pids = own_pids if callable(own_pids) else frozenset(own_pids)
        self._nvml: Any | None = nvml  # an initialised pynvml-like module; None: import on first use
        self._nvml_failed = False

    def on_battery(self) -> bool | None:
        battery_reader = getattr(psutil, "sensors_battery", None)
        battery = battery_reader() if battery_reader else None
        if battery is None or battery.power_plugged is None:
            return None  # desktop without a battery, or the OS does not say
        return not battery.power_plugged

    def process_names(self) -> Iterable[str]:
        names = []
        for proc in psutil.process_iter(["name"]):
            name = proc.info.get("name")
            if name:
                names.append(name)
        return names

    def gpu_busy_percent(self) -> float | None:
        nvml = self._load_nvml()
        if nvml is None:
            return None
        try:
            handle = nvml.nvmlDeviceGetHandleByIndex(0)
            procs = list(nvml.nvmlDeviceGetComputeRunningProcesses(handle))
            procs += list(nvml.nvmlDeviceGetGraphicsRunningProcesses(handle))
            own = set(self._own_pids()) if callable(self._own_pids) else self._own_pids
            others = {p.pid for p in procs if p.pid not in own}
            if not others:
                return 0.0
            try:
                # Per-process SM use, so our own worker's load never counts as "someone else".
                samples = nvml.nvmlDeviceGetProcessUtilization(handle, 0)
                return float(sum(s.smUtil for s in samples if s.pid in others))
            except Exception:  # not supported on this GPU/driver: whole-device use is the best we have
                return float(nvml.nvmlDeviceGetUtilizationRates(handle).gpu)
        except Exception as exc:  # NVML raises its own NVMLError family; one bad read is "unknown"
            log.debug("nvml read failed err=%s", exc)
            return None

    def _load_nvml(self) -> Any | None:
        # Imported lazily: nvidia-ml-py is optional, and NVML init fails on machines without the driver.
        if self._nvml is not None or self._nvml_failed:
            return self._nvml
        try:
            import pynvml

            pynvml.nvmlInit()
            self._nvml = pynvml
        except Exception as exc:
            log.info("gpu-busy rule unavailable reason=%s", exc)
            self._nvml_failed = True
        return self._nvml


@dataclass(slots=True)
class _RuleState:
    streak: int = 0  # consecutive triggered samples
    engaged: bool = False
    clear_since: float | None = None
    reason: str = ""  # what it said when it last triggered, shown while it holds


class PauseRules:
    """Evaluates the configured rules with hysteresis. Not thread-safe: one caller (the daemon loop)."""

    def __init__(
        self,
        config: PauseConfig,
        sensors: Sensors,
        engage_samples: int = 2,
        release_seconds: float | None = None,
    ) -> None:
        self.config = config
        self.sensors = sensors
        self.engage_samples = max(1, engage_samples)
        self._fixed_release = release_seconds
        # Default: clear for three checks before resuming.
        self.release_seconds = 3 * config.check_seconds if release_seconds is None else release_seconds
        self._states = {name: _RuleState() for name in ("battery", "gpu", "process")}
        self._last_sample: float | None = None
        self._reason: str | None = None
        self._unavailable: dict[str, str] = {}

    def reconfigure(self, config: PauseConfig) -> None:
        """A hot-reloaded [pause] table: rules still on keep their state (no flap), others start afresh."""
        self.config = config
        if self._fixed_release is None:
            self.release_seconds = 3 * config.check_seconds
        enabled = self.enabled_rules()
        for name in self._states:
            if name not in enabled:
                self._states[name] = _RuleState()
                self._unavailable.pop(name, None)
        self._last_sample = None  # sample at the next evaluate, with the new switches

    def engaged(self) -> dict[str, str]:
        """Rules that hold now (after hysteresis), name -> reason, in the order they are checked."""
        return {n: self._states[n].reason for n in self.enabled_rules() if self._states[n].engaged}

    def enabled_rules(self) -> list[str]:
        rules = []
        if self.config.on_battery:
            rules.append("battery")
        if self.config.gpu_busy_percent > 0:
            rules.append("gpu")
        if self.config.processes:
            rules.append("process")
        return rules

    def unavailable(self) -> dict[str, str]:
        """Rules switched on whose sensor cannot tell on this machine, with why (for status/doctor)."""
        return dict(self._unavailable)

    def evaluate(self, now: float) -> str | None:
        """The pause reason at `now` (monotonic seconds), or None to run."""
        if self._last_sample is not None and now - self._last_sample < self.config.check_seconds:
            return self._reason
        self._last_sample = now
        reason = None
        for name in self.enabled_rules():
            triggered, why = self._read(name)
            state = self._states[name]
            if triggered:
                state.reason = why
            if self._step(state, triggered, now) and reason is None:
                reason = state.reason
        if reason != self._reason:
            log.debug("pause rule changed reason=%s", reason)  # the daemon's RuleGate logs the effect at info
        self._reason = reason
        return reason

    def _read(self, name: str) -> tuple[bool, str]:
        if name == "battery":
            on_battery = self.sensors.on_battery()
            self._mark(name, on_battery is None, "no battery information")
            return bool(on_battery), "on battery"
        if name == "gpu":
            busy = self.sensors.gpu_busy_percent()
            self._mark(name, busy is None, "no NVML (install nvidia-ml-py; NVIDIA GPUs only)")
            threshold = self.config.gpu_busy_percent
            # While engaged, stay paused until busy drops below the band, not just below the line.
            if self._states[name].engaged:
                threshold -= GPU_RELEASE_MARGIN
            return busy is not None and busy > threshold, f"GPU busy ({busy or 0:.0f}%)"
        wanted = {_stem(p) for p in self.config.processes}
        running = sorted({n for n in self.sensors.process_names() if _stem(n) in wanted})
        return bool(running), f"{running[0] if running else ''} is running"

    def _mark(self, name: str, missing: bool, why: str) -> None:
        if missing:
            self._unavailable[name] = why
        else:
            self._unavailable.pop(name, None)

    def _step(self, state: _RuleState, triggered: bool, now: float) -> bool:
        if triggered:
            state.streak += 1
            state.clear_since = None
            if state.streak >= self.engage_samples:
                state.engaged = True
            return state.engaged
        state.streak = 0
        if state.engaged:
            if state.clear_since is None:
                state.clear_since = now
            if now - state.clear_since >= self.release_seconds:
                state.engaged = False
                state.clear_since = None
        return state.engaged


def _stem(process_name: str) -> str:
    # "Game.exe" on Windows and "game" on Linux both match a configured "game" or "game.exe".
    name = process_name.strip().lower()
    return name.removesuffix(".exe")
