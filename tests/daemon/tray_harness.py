"""`naiup tray` as a real process in tests: its environment, Xvfb, and reading its state file."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from naiup import seams

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def tray_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "PYSTRAY_BACKEND")}
    env.update(
        PYTHONPATH=os.pathsep.join([str(REPO), str(HERE)]),
        NAIUP_CONFIG_DIR=str(tmp_path / "config"),
        NAIUP_STATE_DIR=str(tmp_path / "state"),
        NAIUP_LOG_DIR=str(tmp_path / "log"),
        NAIUP_RUNTIME_DIR=str(tmp_path / "run"),
    )
    env.update(extra)
    return env


@contextmanager
def xvfb_display() -> Iterator[str]:
    exe = shutil.which("Xvfb")
    if exe is None:
        pytest.skip("Xvfb is not installed (apt-get install xvfb)")
    read_fd, write_fd = os.pipe()
    # -displayfd: Xvfb picks a free display and writes its number once it accepts connections.
    proc = subprocess.Popen(
        [exe, "-displayfd", str(write_fd), "-screen", "0", "800x600x24", "-nolisten", "tcp"],
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    try:
        ready, _, _ = select.select([read_fd], [], [], 20.0)
        number = os.read(read_fd, 16).decode().strip() if ready else ""
        assert number, "Xvfb did not report a display within 20 s"
        yield f":{number}"
    finally:
        os.close(read_fd)
        proc.terminate()
        proc.wait(10)


def uncaught_traceback(stderr: str) -> bool:
    # pystray's "Failed to dock icon" tracebacks are filtered by the tray now: any traceback counts.
    return "Traceback (most recent call last):" in stderr


def read_state(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def tray_argv(*extra: str) -> list[str]:
    return [sys.executable, "-m", "naiup", *extra]


def tray_seams(
    state_file: Path | None = None,
    actions_file: Path | None = None,
    exit_after: float | None = None,
    client: str | None = None,
    host_wait: float | None = None,
) -> dict[str, str]:
    """The environment that drives a `naiup tray` process without clicks (naiup.seams)."""
    values = {
        seams.TRAY_STATE_FILE: state_file,
        seams.TRAY_ACTIONS_FILE: actions_file,
        seams.TRAY_EXIT_AFTER: exit_after,
        seams.TRAY_CLIENT: client,
        seams.TRAY_HOST_WAIT: host_wait,
    }
    return {var: str(value) for var, value in values.items() if value is not None}


class TrayHost:
    """tray_host_standin.py as a process on a display: a panel the test can crash and restart."""

    def __init__(self, display: str, state_dir: Path) -> None:
        self.display, self.state_dir = display, state_dir
        self.proc: subprocess.Popen | None = None
        self.runs = 0

    @property
    def state_file(self) -> Path:
        return self.state_dir / f"tray-host-{self.runs}.txt"

    def start(self) -> TrayHost:
        self.runs += 1
        env = {**os.environ, "DISPLAY": self.display}
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "tray_host_standin.py"), str(self.state_file)], env=env
        )
        from daemon_harness import wait_for

        wait_for(lambda: "ready" in self.lines(), 20, "the tray host to own the tray selection")
        return self

    def lines(self) -> list[str]:
        try:
            return self.state_file.read_text().splitlines()
        except FileNotFoundError:
            return []

    def docked(self) -> int:
        return sum(line.startswith("docked") for line in self.lines())

    def crash(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)
        self.proc = None


@contextmanager
def tray_host(display: str, state_dir: Path) -> Iterator[TrayHost]:
    host = TrayHost(display, state_dir).start()
    try:
        yield host
    finally:
        if host.proc is not None:
            host.crash()
