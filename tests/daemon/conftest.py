"""Daemon fixtures (the harness itself is in daemon_harness.py, importable by the tests)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from daemon_harness import HERE, REPO, DaemonRun
from tray_harness import TrayHost, tray_host, xvfb_display

from naiup import seams
from naiup.upscaler_names import BUILTIN_UPSCALERS, SHIPPED


@pytest.fixture
def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DaemonRun]:
    kinds = ("STATE", "LOG", "RUNTIME", "CONFIG", "MODELS")
    dirs = {f"NAIUP_{k}_DIR": str(tmp_path / k.lower()) for k in kinds}
    # The stand-in engines never load upscaler weights, but a preset whose built-in upscaler weights are
    # missing cannot be chosen: empty stand-ins keep every built-in preset selectable, whatever the
    # developer's own models folder holds (a test about missing weights points NAIUP_MODELS_DIR elsewhere).
    models = tmp_path / "models"
    models.mkdir()
    for name, file in BUILTIN_UPSCALERS.items():
        if name not in SHIPPED:
            (models / file).touch()
    for key, value in dirs.items():
        monkeypatch.setenv(key, value)  # the test's ControlClient must find this daemon's socket
    env = {
        **os.environ,
        **dirs,
        "HF_HUB_OFFLINE": "1",
        seams.ENGINE: "stub_engine:ResizeEngine",  # a test that wants the real one: use_real_engine()
        "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE), str(REPO / "tests")]),
    }
    run = DaemonRun(tmp_path, env)
    run.write_config()
    yield run
    if run.proc is not None and run.proc.poll() is None:
        run.stop()
    alive = lambda: [p for p in run.worker_pids if psutil.pid_exists(p) and _is_ours(p)]  # noqa: E731
    deadline = time.monotonic() + 10
    while alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    left = alive()
    for pid in left:
        psutil.Process(pid).kill()
    assert not left, f"worker processes outlived their daemon: {left}"


def _is_ours(pid: int) -> bool:
    try:
        p = psutil.Process(pid)
        return p.status() != psutil.STATUS_ZOMBIE and "multiprocessing" in " ".join(p.cmdline())
    except psutil.Error:
        return False


@pytest.fixture(autouse=True)
def _no_leaks() -> Iterator[None]:
    """Fail a test that leaves threads or processes (daemon, worker) behind; clean them up either way."""
    threads = set(threading.enumerate())
    yield
    me = psutil.Process()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and me.children(recursive=True):
        time.sleep(0.05)
    left = me.children(recursive=True)
    for p in left:
        p.kill()
    extra = [t for t in threading.enumerate() if t not in threads and t.is_alive()]
    assert not left, f"leaked processes: {[p.cmdline() for p in left if p.is_running()]}"
    assert not extra, f"leaked threads: {extra}"


@pytest.fixture
def xvfb() -> Iterator[str]:
    """A private Xvfb display (":N"); skips when the Xvfb binary is missing (.ci/run installs it)."""
    with xvfb_display() as display:
        yield display


@pytest.fixture
def panel(xvfb: str, tmp_path: Path) -> Iterator[TrayHost]:
    """A tray host (system tray selection owner) on the test's Xvfb display."""
    with tray_host(xvfb, tmp_path) as host:
        yield host
