"""Pause-rule sensors for a daemon in its own process, driven by a JSON file the test rewrites.

The daemon loads them through NAIUP_PAUSE_SENSORS="fake_sensors:from_file"; NAIUP_FAKE_SENSORS names
the file: {"on_battery": bool|null, "processes": [name], "gpu": [[pid, sm_percent]]}. The GPU goes
through the real SystemSensors with a file-backed NVML stand-in, so the daemon's own-pid exclusion is
what is tested. Every battery read bumps a counter file beside it: tests wait on samples, not sleeps.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from naiup.daemon.pause_rules import SystemSensors


def write(path: Path, **values: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(values))
    os.replace(tmp, path)


def samples(path: Path) -> int:
    try:
        return int(path.with_suffix(".reads").read_text() or 0)
    except (FileNotFoundError, ValueError):
        return 0


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}


class FileNvml:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _procs(self) -> list[tuple[int, int]]:
        return [(int(pid), int(sm)) for pid, sm in _read(self.path).get("gpu", [])]

    def nvmlDeviceGetHandleByIndex(self, index: int) -> object:
        return object()

    def nvmlDeviceGetComputeRunningProcesses(self, handle: object) -> list[SimpleNamespace]:
        return [SimpleNamespace(pid=pid) for pid, _ in self._procs()]

    def nvmlDeviceGetGraphicsRunningProcesses(self, handle: object) -> list[SimpleNamespace]:
        return []

    def nvmlDeviceGetProcessUtilization(self, handle: object, since: int) -> list[SimpleNamespace]:
        return [SimpleNamespace(pid=pid, smUtil=sm) for pid, sm in self._procs()]


class FileSensors:
    def __init__(self, path: Path, own_pids: Callable[[], Iterable[int]]) -> None:
        self.path = path
        self._gpu = SystemSensors(own_pids=own_pids, nvml=FileNvml(path))

    def on_battery(self) -> bool | None:
        reads = self.path.with_suffix(".reads")
        write_count = samples(self.path) + 1
        tmp = reads.with_name(f".{reads.name}.tmp")
        tmp.write_text(str(write_count))
        os.replace(tmp, reads)
        return _read(self.path).get("on_battery", False)

    def gpu_busy_percent(self) -> float | None:
        return self._gpu.gpu_busy_percent()

    def process_names(self) -> Iterable[str]:
        return list(_read(self.path).get("processes", []))


def from_file(own_pids: Callable[[], Iterable[int]]) -> FileSensors:
    return FileSensors(Path(os.environ["NAIUP_FAKE_SENSORS"]), own_pids)
