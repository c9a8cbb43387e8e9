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
from naiup.daemon.logs import forward

log = logging.getLogger(__name__)

LOAD_TIMEOUT = 600.0  # a hang past this counts as a load failure (a download that moves is no hang)
# A hub model's download reports at most this often over the pipe (and once more when complete).
DOWNLOAD_REPORT_INTERVAL = 0.5
# No next job this long after the last one (the scheduler sends the next at once): the queue is idle,
# and the engine gives back the accelerator memory it caches (a game started now gets it).
IDLE_AFTER = 2.0


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


def engine_model_id(engine: object, config: Config, preset: Preset) -> str:
    """The engine's id of the model set a preset uses (what provenance records), else the config's."""
    model_id = getattr(engine, "model_id", None)
    if callable(model_id):
        return str(model_id(preset))
    return config_model_id(config)


def engine_idle(engine: object) -> None:
    """Tell the engine the queue went idle (engines without an `idle` method have nothing to free)."""
    idle = getattr(engine, "idle", None)
    if callable(idle):
        try:
            idle()
        except Exception:  # freeing a cache must never cost the worker
            log.exception("engine idle hook failed")


def config_model_id(config: Config) -> str:
    m = config.model
    return "|".join((m.checkpoint, m.vae, m.lcm_lora))


def download_reporter(send: Callable[[dict], None], clock: Callable[[], float] = time.monotonic):
    """The engine's download callback in the child: {"download": {name, done, total}} messages,
    throttled (the hub client reports every chunk), the first and the completing one always sent."""
    last: list[float] = []

    def report(done: int, total: int, what: str) -> None:
        now = clock()
        if last and done < total and now - last[0] < DOWNLOAD_REPORT_INTERVAL:
            return
        last[:] = [now]
        send({"download": {"name": what, "done": int(done), "total": int(total)}})

    return report


def _message(exc: BaseException) -> str:
    """Our errors are already sentences for the user; anything else gets its type (it is a bug)."""
    from naiup.errors import NaiupError

    return str(exc) if isinstance(exc, NaiupError) else f"{type(exc).__name__}: {exc}"


def _child_main(conn: Connection, config: Config, preset: Preset | None) -> None:
    """Runs in the child: load, report, then serve jobs until told to stop or the pipe closes."""
    from naiup.daemon.logs import child_logging
    from naiup.errors import (  # child: a bare interpreter
        ConfigError,
        ModelLoadError,
        NaiupError,
        OutOfMemoryError,
        OutputError,
    )
    from naiup.job import run_job

    lock = threading.Lock()  # log records may come from any thread: one message at a time on the pipe

    def send(obj: object) -> None:
        with lock:
            conn.send(obj)

    child_logging(send)
    # Ctrl+C in a terminal, and `systemctl stop` with the default KillMode=control-group, signal the
    # whole process group: the daemon decides when we stop (after the current job, within its grace)
    # and ends us itself with SIGKILL when that runs out.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    try:
        engine = load_factory(config.daemon.engine)(config.model)
        report_downloads = getattr(engine, "report_downloads", None)  # engines that never download lack it
        if callable(report_downloads):
            report_downloads(download_reporter(send))
        # Load now, not at the first job: a missing model is an engine error (files stay queued), not
        # a failed job, and the first file starts on a warm model.
        load = getattr(engine, "load", None)
        if preset is not None and callable(load):
            load(preset)
    except Exception as exc:  # any load failure is reported, never a traceback-only death
        if not isinstance(exc, NaiupError):
            log.exception("engine load crashed")  # a bug: its traceback goes to the daemon log
        send({"load_error": _message(exc)})
        return
    send({"ready": True})
    ran = False  # a job ran since the engine last heard that the queue is idle
    while True:
        try:
            if ran and not conn.poll(IDLE_AFTER):
                engine_idle(engine)
                ran = False
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        if "model_id_of" in msg:
            try:
                send({"model_id": engine_model_id(engine, config, msg["model_id_of"])})
            except Exception as exc:  # e.g. a <lora:name> of the preset that is nowhere: not the file's fault
                send({"error": _message(exc), "load_error": True, "permanent": False})
            continue
        src, preset = Path(msg["src"]), msg["preset"]
        config = msg["config"]  # the daemon's config now: a hot reload of [output] reaches a warm worker

        def progress(fraction: float, stage: str) -> None:
            send({"progress": float(fraction), "stage": stage})

        ran = True
        try:
            result = run_job(src, preset, engine, config, progress)
            model = engine_model_id(engine, config, preset)
            send({"output": str(result.output), "timings": result.timings, "model_id": model})
        except (ModelLoadError, ConfigError) as exc:  # the model or config, not this file: keep it queued
            send({"error": str(exc), "permanent": False, "load_error": True})
        except OutOfMemoryError as exc:  # another program's memory, likely: worth another try later
            send({"error": str(exc), "permanent": False})
        except OutputError as exc:  # a full disk may have room later; a read-only folder will not
            send({"error": str(exc), "permanent": not exc.transient})
        except NaiupError as exc:
            send({"error": str(exc), "permanent": True})
        except Exception as exc:  # a bug in a job: report it, keep the worker for the next job
            log.exception("job crashed src=%s", src)
            send({"error": _message(exc), "permanent": False})


@dataclass(frozen=True, slots=True)
class Outcome:
    output: str | None = None
    error: str | None = None
    permanent: bool = False  # the job itself is bad: do not retry
    worker_lost: bool = False  # crashed or hung: restart the worker, retry the job
    load_error: bool = False  # the engine cannot load a model: the file stays queued
    model_id: str | None = None  # the engine's id of the model set that made the output


def _error_outcome(msg: dict) -> Outcome:
    return Outcome(error=msg["error"], permanent=msg["permanent"], load_error=msg.get("load_error", False))


class Worker:
    """Owns the child. Not thread-safe: only the scheduler thread calls it."""

    def __init__(
        self,
        config: Config,
        preset: Preset | None = None,
        on_download: Callable[[dict], None] | None = None,
    ) -> None:
        """on_download({name, done, total}): a hub model's download progress, while it lasts."""
        self.config, self.preset = config, preset  # the engine loads what this preset needs at start
        self._on_download = on_download
        self._proc: mp.process.BaseProcess | None = None
        self._conn: Connection | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.is_alive() else None

    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive()

    def _aside(self, msg: dict) -> bool:
        """Handle a message that is not an answer (a log record, download progress); True if it was."""
        if "log" in msg:
            forward(msg)
        elif "download" in msg:
            if self._on_download is not None:
                self._on_download(msg["download"])
        else:
            return False
        return True

    def start(self, cancelled: Callable[[], bool]) -> str | None:
        """Start and load; returns the load error, or None when ready."""
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_child_main, args=(child, self.config, self.preset), name="naiup-worker", daemon=True
        )
        self._proc.start()
        child.close()
        self._conn = parent
        deadline = time.monotonic() + LOAD_TIMEOUT
        while time.monotonic() < deadline and not cancelled():
            try:
                if parent.poll(0.2):
                    msg = parent.recv()
                    if self._aside(msg):
                        if "download" in msg:  # bytes arriving: not hung, however long it takes
                            deadline = time.monotonic() + LOAD_TIMEOUT
                        continue
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
        config: Config,
        progress: Callable[[float, str], None],
        cancelled: Callable[[], bool],
    ) -> Outcome | None:
        """Run one job under `config` (the current one, which may be newer than the worker's start);
        None if cancelled (the caller decides whether to wait or kill)."""
        assert self._conn is not None
        timeout = config.daemon.job_timeout_seconds
        try:
            self._conn.send({"src": str(src), "preset": preset, "config": config})
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
            elif self._aside(msg):
                if "download" in msg:  # a model first used by this job is downloading: not hung
                    deadline = time.monotonic() + timeout
            elif "output" in msg:
                return Outcome(output=msg["output"], model_id=msg.get("model_id"))
            else:
                return _error_outcome(msg)

    def model_id(self, preset: Preset, timeout: float = 60.0) -> str | Outcome:
        """The engine's model id for `preset` (what the ledger's done rows are keyed by), or the failure."""
        assert self._conn is not None
        try:
            self._conn.send({"model_id_of": preset})
            deadline = time.monotonic() + timeout
            while True:
                if not self._conn.poll(0.1):
                    if not self.alive() or time.monotonic() > deadline:
                        self.kill()
                        return Outcome(error="worker lost while asking for the model id", worker_lost=True)
                    continue
                msg = self._conn.recv()
                if not self._aside(msg):
                    break
                if "download" in msg:  # the id needs the model loaded, and it is downloading
                    deadline = time.monotonic() + timeout
        except (EOFError, OSError):
            self.kill()
            return Outcome(error="worker crashed", worker_lost=True)
        return msg["model_id"] if "model_id" in msg else _error_outcome(msg)

    def wait_result(self, grace: float) -> Outcome | None:
        """During shutdown: give the current job `grace` seconds to finish."""
        assert self._conn is not None
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                if self._conn.poll(0.1):
                    msg = self._conn.recv()
                    if self._aside(msg):
                        pass
                    elif "output" in msg:
                        return Outcome(output=msg["output"], model_id=msg.get("model_id"))
                    elif "error" in msg:
                        return _error_outcome(msg)
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
            # The worker ignores SIGTERM (see _child_main), so no terminate() first: straight to SIGKILL.
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(2.0)
            self._proc = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None
