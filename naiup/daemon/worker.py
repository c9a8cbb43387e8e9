"""The engine's process: a spawned child that loads the engine once and runs one job at a time.

Spawn, never fork: CUDA does not survive a fork. "Pause and free GPU" is stopping this child, since a
CUDA context only goes away with its process. The pipe to the child is private (never a socket), so
plain multiprocessing messages are safe on it.
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing as mp
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

from naiup.config import Config, Preset

log = logging.getLogger(__name__)

LOAD_TIMEOUT = 600.0  # a cold hub load can be slow; a hang past this counts as a load failure


def load_factory(spec: str) -> Callable:
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ValueError(f"engine factory must be 'module:callable', got {spec!r}")
    return getattr(importlib.import_module(module), attr)


def _exit_with_parent(parent: int) -> None:
    # After a kill -9 of the daemon nobody would stop us, and a late publish would race the restarted
    # daemon redoing the job: die with the parent instead.
    while os.getppid() == parent:
        time.sleep(0.2)
    os._exit(3)


def _child_main(conn: Connection, config: Config) -> None:
    """Runs in the child: load, report, then serve jobs until told to stop or the pipe closes."""
    from naiup.errors import NaiupError  # imported here: the child starts from a bare interpreter
    from naiup.job import run_job

    # Ctrl+C in a terminal reaches the whole process group: the daemon decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    try:
        engine = load_factory(config.daemon.engine)(config.model)
    except Exception as exc:  # any load failure is reported, never a traceback-only death
        conn.send({"load_error": str(exc) if isinstance(exc, NaiupError) else f"{type(exc).__name__}: {exc}"})
        return
    conn.send({"ready": True})
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        src, preset = Path(msg["src"]), msg["preset"]

        def progress(fraction: float, stage: str) -> None:
            conn.send({"progress": float(fraction), "stage": stage})

        try:
            result = run_job(src, preset, engine, config, progress)
            conn.send({"output": str(result.output), "timings": result.timings})
        except NaiupError as exc:
            conn.send({"error": str(exc), "permanent": True})
        except Exception as exc:  # a bug in a job: report it, keep the worker for the next job
            conn.send({"error": f"{type(exc).__name__}: {exc}", "permanent": False})


@dataclass(frozen=True, slots=True)
class Outcome:
    output: str | None = None
    error: str | None = None
    permanent: bool = False  # the job itself is bad: do not retry
    worker_lost: bool = False  # crashed or hung: restart the worker, retry the job


class Worker:
    """Owns the child. Not thread-safe: only the scheduler thread calls it."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._proc: mp.process.BaseProcess | None = None
        self._conn: Connection | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.is_alive() else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def start(self, cancelled: Callable[[], bool]) -> str | None:
        """Start and load; returns the load error, or None when ready."""
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_child_main, args=(child, self.config), name="naiup-worker", daemon=True
        )
        self._proc.start()
        child.close()
        self._conn = parent
        deadline = time.monotonic() + LOAD_TIMEOUT
        while time.monotonic() < deadline and not cancelled():
            try:
                if parent.poll(0.2):
                    msg = parent.recv()
                    if msg.get("ready"):
                        log.info("worker ready pid=%s", self._proc.pid)
                        return None
                    self.stop()
                    return msg.get("load_error", "engine failed to load")
            except (EOFError, OSError):
                self.stop()
                return "worker exited while loading the engine"
        self.stop()
        return "cancelled" if cancelled() else "engine load timed out"

    def run(
        self,
        src: Path,
        preset: Preset,
        timeout: float,
        progress: Callable[[float, str], None],
        cancelled: Callable[[], bool],
    ) -> Outcome | None:
        """Run one job; None if cancelled (the caller decides whether to wait or kill)."""
        assert self._conn is not None
        try:
            self._conn.send({"src": str(src), "preset": preset})
        except OSError:
            self.kill()
            return Outcome(error="worker crashed", worker_lost=True)
        deadline = time.monotonic() + timeout
        while True:
            if cancelled():
                return None
            try:
                if not self._conn.poll(0.1):
                    if not self.alive():
                        self.kill()
                        return Outcome(
                            error=f"worker crashed (exit code {self._proc.exitcode if self._proc else '?'})",
                            worker_lost=True,
                        )
                    if time.monotonic() > deadline:
                        self.kill()
                        return Outcome(error=f"job timed out after {timeout:.0f} s", worker_lost=True)
                    continue
                msg = self._conn.recv()
            except (EOFError, OSError):
                self.kill()
                return Outcome(error="worker crashed", worker_lost=True)
            if "progress" in msg:
                progress(msg["progress"], msg["stage"])
            elif "output" in msg:
                return Outcome(output=msg["output"])
            else:
                return Outcome(error=msg["error"], permanent=msg["permanent"])

    def wait_result(self, grace: float) -> Outcome | None:
        """During shutdown: give the current job `grace` seconds to finish."""
        assert self._conn is not None
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                if self._conn.poll(0.1):
                    msg = self._conn.recv()
                    if "output" in msg:
                        return Outcome(output=msg["output"])
                    if "error" in msg:
                        return Outcome(error=msg["error"], permanent=msg["permanent"])
                elif not self.alive():
                    return None
            except (EOFError, OSError):
                return None
        return None

    def stop(self, grace: float = 5.0) -> None:
        if self._proc is None:
            return
        try:
            if self._conn is not None:
                self._conn.send(None)  # sentinel: exit after the current job
        except OSError:
            pass
        self._proc.join(grace)
        self.kill()

    def kill(self) -> None:
        if self._proc is not None:
            if self._proc.is_alive():
                self._proc.terminate()
                self._proc.join(2.0)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(2.0)
            self._proc = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
