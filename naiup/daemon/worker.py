"""The engine's process: a spawned child that loads the engine once and runs one job at a time.

Spawn, never fork: CUDA does not survive a fork. "Pause and free GPU" is stopping this child, since a
CUDA context only goes away with its process. The pipe to the child is private (never a socket), so
pickled messages are safe on it; what goes over it is the dataclasses of worker_messages.py, and
Worker._receive is the one place that reads them on the daemon's side.
"""

from __future__ import annotations

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

from naiup import seams
from naiup.config import Config, ModelConfig, Preset
from naiup.daemon.engine_slot import EngineSlot
from naiup.daemon.logs import child_logging, forward
from naiup.daemon.worker_messages import (
    Done,
    Download,
    Failed,
    Job,
    LoadFailed,
    LoadSet,
    Log,
    ModelId,
    ModelIdOf,
    Notice,
    Progress,
    Ready,
    Reply,
    SetLoaded,
    Stop,
)
from naiup.errors import ConfigError, ModelLoadError, NaiupError, OutOfMemoryError, OutputError
from naiup.job import ImageEngine, run_job

log = logging.getLogger(__name__)

LOAD_TIMEOUT = 600.0  # a hang past this counts as a load failure (a download that moves is no hang)
# A hub model's download reports at most this often over the pipe (and once more when complete).
DOWNLOAD_REPORT_INTERVAL = 0.5
MODEL_ID_TIMEOUT = 60.0
# No next job this long after the last one (the scheduler sends the next at once): the queue is idle,
# and the engine gives back the accelerator memory it caches (a game started now gets it).
IDLE_AFTER = 2.0
_POLL = 0.1  # how often a wait looks at `cancelled` and at whether the child still lives


def _exit_with_parent(parent: int) -> None:
    # After a kill -9 of the daemon nobody would stop us, and a late publish would race the restarted
    # daemon redoing the job: die with the parent instead.
    while os.getppid() == parent:
        time.sleep(0.2)
    os._exit(3)


def download_reporter(send: Callable[[Download], None], clock: Callable[[], float] = time.monotonic):
    """The engine's download callback in the child: Download notices, throttled (the hub client
    reports every chunk), the first and the completing one always sent."""
    last: list[float] = []

    def report(done: int, total: int, what: str) -> None:
        now = clock()
        if last and done < total and now - last[0] < DOWNLOAD_REPORT_INTERVAL:
            return
        last[:] = [now]
        send(Download(what, int(done), int(total)))

    return report


def _message(exc: BaseException) -> str:
    """Our errors are already sentences for the user; anything else gets its type (it is a bug)."""
    return str(exc) if isinstance(exc, NaiupError) else f"{type(exc).__name__}: {exc}"


def _child_main(conn: Connection, config: Config, preset: Preset | None) -> None:
    """Runs in the child: load, report, then serve jobs until told to stop or the pipe closes."""
    lock = threading.Lock()  # log records may come from any thread: one message at a time on the pipe

    def send(msg: Notice | Reply) -> None:
        with lock:
            conn.send(msg)

    child_logging(send)
    # Ctrl+C in a terminal, and `systemctl stop` with the default KillMode=control-group, signal the
    # whole process group: the daemon decides when we stop (after the current job, within its grace)
    # and ends us itself with SIGKILL when that runs out.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    # The engine of the model set the preset at hand uses, one set at a time; the daemon hears of
    # every switch (SetLoaded), so it knows whether the active preset's set is the one loaded, and of
    # every engine's hub downloads (Download), the first set's and each switch's alike.
    slot = EngineSlot(lambda model: send(SetLoaded(model)), on_download=download_reporter(send))
    # Load now, not at the first job: a missing model is an engine error (files stay queued), not
    # a failed job, and the first file starts on a warm model.
    reply = _load(slot, config, preset)
    send(reply)
    if isinstance(reply, LoadFailed):
        return
    ran = False  # a job ran since the engine last heard that the queue is idle
    while True:
        try:
            if ran and not conn.poll(IDLE_AFTER):
                _idle(slot.current)
                ran = False
            msg = conn.recv()
        except (EOFError, OSError):
            return
        match msg:
            case Stop():
                return
            case LoadSet(preset=wanted, config=config):
                send(_load(slot, config, wanted))
            case ModelIdOf(preset=asked):
                send(_model_id(slot, config, asked))
            case Job():
                ran, config = True, msg.config
                send(_run(slot, msg, send))
            case _:  # a daemon newer than this child's code, or a bug: say so, serve the next message
                log.error("worker: ignored an unknown message %s", type(msg).__name__)


def _load(slot: EngineSlot, config: Config, preset: Preset | None) -> Ready | LoadFailed:
    """Build the engine (the first time) and load what `preset` needs, switching model sets if it
    is of another one."""
    try:
        if slot.factory is None:  # here, not at the slot's creation: a bad NAIUP_ENGINE is a load error
            slot.factory = seams.factory(seams.ENGINE, seams.DEFAULT_ENGINE)
        if preset is not None:
            slot.engine_for(config, preset, load=True)
    except Exception as exc:  # any load failure is reported, never a traceback-only death
        if not isinstance(exc, NaiupError):
            log.exception("engine load crashed")  # a bug: its traceback goes to the daemon log
        return LoadFailed(_message(exc))
    return Ready()


def _idle(engine: ImageEngine | None) -> None:
    if engine is None:
        return
    try:
        engine.idle()
    except Exception:  # freeing a cache must never cost the worker
        log.exception("engine idle hook failed")


def _model_id(slot: EngineSlot, config: Config, preset: Preset) -> ModelId | LoadFailed:
    try:
        return ModelId(slot.engine_for(config, preset).model_id(preset))
    except Exception as exc:  # e.g. a <lora:name> of the preset that is nowhere: not the file's fault
        if not isinstance(exc, NaiupError):
            log.exception("engine model id crashed")
        return LoadFailed(_message(exc))


def _run(slot: EngineSlot, job: Job, send: Callable[[Notice | Reply], None]) -> Reply:
    """One job, as the reply that reports it."""

    def progress(fraction: float, stage: str) -> None:
        send(Progress(float(fraction), stage))

    try:
        engine = slot.engine_for(job.config, job.preset)  # another set's preset: it switches sets
        result = run_job(Path(job.src), job.preset, engine, job.config, progress)
    except (ModelLoadError, ConfigError) as exc:  # the model or config, not this file: keep it queued
        return LoadFailed(str(exc))
    except OutOfMemoryError as exc:  # another program's memory, likely: worth another try later
        return Failed(str(exc), permanent=False)
    except OutputError as exc:  # a full disk may have room later; a read-only folder will not
        return Failed(str(exc), permanent=not exc.transient)
    except NaiupError as exc:
        return Failed(str(exc), permanent=True)
    except Exception as exc:  # a bug in a job: report it, keep the worker for the next job
        log.exception("job crashed src=%s", job.src)
        return Failed(_message(exc), permanent=False)
    return Done(output=str(result.output), model_id=result.model_id, timings=result.timings)


@dataclass(frozen=True, slots=True)
class Outcome:
    output: str | None = None
    error: str | None = None
    permanent: bool = False  # the job itself is bad: do not retry
    worker_lost: bool = False  # crashed or hung: restart the worker, retry the job
    load_error: bool = False  # the engine cannot load a model: the file stays queued
    model_id: str | None = None  # the engine's id of the model set that made the output


# How a wait ends without a reply. Not messages: no one sends them, Worker._receive makes them up.
@dataclass(frozen=True, slots=True)
class Cancelled:
    pass


@dataclass(frozen=True, slots=True)
class TimedOut:
    pass


@dataclass(frozen=True, slots=True)
class Exited:
    exitcode: int | None  # None: gone from the pipe, not (yet) reaped


class Worker:
    """Owns the child. Not thread-safe: only the scheduler thread calls it."""

    def __init__(
        self,
        config: Config,
        preset: Preset | None = None,
        on_download: Callable[[Download], None] | None = None,
    ) -> None:
        """on_download(Download): a hub model's download progress, while it lasts."""
        self.config, self.preset = config, preset  # the engine loads what this preset needs at start
        self._on_download = on_download
        self._proc: mp.process.BaseProcess | None = None
        self._conn: Connection | None = None
        # The model set the child's engine was built with, as its last SetLoaded said (None: none).
        self.model_set: ModelConfig | None = None

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
            target=_child_main, args=(child, self.config, self.preset), name="naiup-worker", daemon=True
        )
        self._proc.start()
        child.close()
        self._conn = parent
        error = self._loaded(cancelled)
        if error is None:
            log.info("worker ready pid=%s", self._proc.pid)
        return error

    def load(self, preset: Preset, config: Config, cancelled: Callable[[], bool]) -> str | None:
        """Have the running child load what `preset` needs, unloading its model set first when the
        preset is of another one; returns the load error (the worker is stopped then), else None."""
        if not self._send(LoadSet(preset, config)):
            return "worker exited while loading the engine"
        return self._loaded(cancelled)

    def _loaded(self, cancelled: Callable[[], bool]) -> str | None:
        """The end of a load (at start or a switch): None when ready, else the error (worker stopped)."""
        match self._receive(LOAD_TIMEOUT, cancelled):
            case Ready():
                return None
            case LoadFailed(error=error):
                pass
            case Cancelled():
                error = "cancelled"
            case TimedOut():
                error = "engine load timed out"
            case Exited():
                error = "worker exited while loading the engine"
            case other:
                error = self._unexpected(other, "while loading the engine")
        self.stop()
        return error

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
        timeout = config.daemon.job_timeout_seconds
        if not self._send(Job(str(src), preset, config)):
            return Outcome(error="worker crashed", worker_lost=True)
        match self._receive(timeout, cancelled, progress):
            case Cancelled():
                return None
            case TimedOut():
                self.kill()
                return Outcome(error=f"job timed out after {timeout:.0f} s", worker_lost=True)
            case Exited(exitcode=code):
                self.kill()
                crashed = "worker crashed" if code is None else f"worker crashed (exit code {code})"
                return Outcome(error=crashed, worker_lost=True)
            case reply:
                return self._job_outcome(reply)

    def model_id(self, preset: Preset, timeout: float = MODEL_ID_TIMEOUT) -> str | Outcome:
        """The engine's model id for `preset` (what the ledger's done rows are keyed by), or the failure."""
        if not self._send(ModelIdOf(preset)):
            return Outcome(error="worker crashed", worker_lost=True)
        match self._receive(timeout):
            case ModelId(model_id=model_id):
                return model_id
            case LoadFailed(error=error):
                return Outcome(error=error, load_error=True)
            case Cancelled() | TimedOut() | Exited():
                error = "worker lost while asking for the model id"
            case other:
                error = self._unexpected(other, "when asked for the model id")
        self.kill()
        return Outcome(error=error, worker_lost=True)

    def wait_result(self, grace: float) -> Outcome | None:
        """During shutdown: give the current job `grace` seconds to finish."""
        match self._receive(grace):
            case Done() | Failed() | LoadFailed() as reply:
                return self._job_outcome(reply)
            case _:
                return None

    def _job_outcome(self, reply: object) -> Outcome:
        match reply:
            case Done(output=output, model_id=model_id):
                return Outcome(output=output, model_id=model_id)
            case Failed(error=error, permanent=permanent):
                return Outcome(error=error, permanent=permanent)
            case LoadFailed(error=error):
                return Outcome(error=error, load_error=True)
        error = self._unexpected(reply, "for a job")
        self.kill()
        return Outcome(error=error, worker_lost=True)

    def _send(self, msg: Job | LoadSet | ModelIdOf | Stop) -> bool:
        """False (and the child killed) when the pipe is gone: the child died since the last reply."""
        assert self._conn is not None
        try:
            self._conn.send(msg)
        except OSError:
            self.kill()
            return False
        return True

    def _receive(
        self,
        timeout: float,
        cancelled: Callable[[], bool] = lambda: False,
        progress: Callable[[float, str], None] | None = None,
    ) -> Reply | Cancelled | TimedOut | Exited:
        """The one loop that reads the pipe: notices are handled on the way, and it returns the next
        reply, or how the wait ended without one (asked to stop, past `timeout`, the child gone)."""
        assert self._conn is not None and self._proc is not None
        deadline = time.monotonic() + timeout
        while True:
            if cancelled():
                return Cancelled()
            try:
                ready = self._conn.poll(_POLL)
                msg = self._conn.recv() if ready else None
            except (EOFError, OSError):  # the child closed its end: it is exiting, or gone
                self._proc.join(1.0)  # reaped, for its exit code
                return Exited(self._proc.exitcode)
            if ready and not isinstance(msg, Notice):
                return msg
            if ready:
                self._notice(msg, progress)
                if isinstance(msg, Download):  # bytes arriving: not hung, however long it takes
                    deadline = time.monotonic() + timeout
            elif not self._proc.is_alive():
                return Exited(self._proc.exitcode)
            # Checked after every message too: a job that keeps reporting progress is still timed.
            if time.monotonic() > deadline:
                return TimedOut()

    def _notice(self, msg: Notice, progress: Callable[[float, str], None] | None) -> None:
        match msg:
            case Log():
                forward(msg)
            case Progress(fraction=fraction, stage=stage):
                if progress is not None:
                    progress(fraction, stage)
            case Download():
                if self._on_download is not None:
                    self._on_download(msg)
            case SetLoaded(model_set=model_set):
                self.model_set = model_set

    @staticmethod
    def _unexpected(msg: object, when: str) -> str:
        # Both ends ship in one package, so this is a bug: the worker is restarted, the file retried.
        log.error("worker sent %s %s", type(msg).__name__, when)
        return f"worker sent an unexpected {type(msg).__name__} {when}"

    def stop(self, grace: float = 5.0) -> None:
        if self._proc is None:
            return
        try:
            if self._conn is not None:
                self._conn.send(Stop())
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
