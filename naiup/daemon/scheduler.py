"""The scheduler thread: takes queued rows in arrival order, one at a time, to the worker child.

It owns the Worker: starts it (lazily, kept warm), stops it on `pause --free-gpu`, restarts it after a
crash or a hang, and keeps files queued (not failed) while the engine cannot load.
"""

from __future__ import annotations

import glob
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from naiup.config import Config, Preset
from naiup.control.protocol import CurrentJob, ModelDownload
from naiup.daemon.ledger import Item, Ledger
from naiup.daemon.worker import Outcome, Worker
from naiup.daemon.worker_messages import Download
from naiup.errors import NaiupError, plain_message
from naiup.job import output_candidates
from naiup.output.atomic import TEMP_SUFFIX, temp_prefix
from naiup.pathnames import plain_text
from naiup.runtime_state import RuntimeState, active_preset

log = logging.getLogger(__name__)

LOAD_RETRY = 60.0  # engine load failed: try again after this (or at once on reload / preset / resume)
RETRY_BACKOFF = 2.0  # a job that failed in a way worth retrying waits 2 s, 4 s, 8 s... (other files go first)
MAX_RETRY_BACKOFF = 300.0


def _gone(src: Path) -> bool:
    try:
        src.lstat()
    except FileNotFoundError:
        return True
    except OSError:
        return False  # unreadable, not gone: the job says why
    return False


def remove_job_temps(src: Path, preset: Preset, template: str) -> None:
    """A killed worker cannot clean up: drop the hidden temp of its publish for this source.

    naiup.output.atomic names it `<temp_prefix(first output name)><random>.naiup-tmp` (whatever output.name
    says), so it is found from the source alone.
    """
    try:
        first = next(output_candidates(src, preset, template))
    except NaiupError:
        return  # a template the job refused: it never wrote anything
    for tmp in src.parent.glob(f"{glob.escape(temp_prefix(first))}*{TEMP_SUFFIX}"):
        tmp.unlink(missing_ok=True)


class Scheduler:
    def __init__(
        self,
        ledger: Ledger,
        config: Callable[[], Config],
        runtime: Callable[[], RuntimeState],
        event: Callable[[dict], None],
    ) -> None:
        self._ledger, self._config, self._runtime, self._event = ledger, config, runtime, event
        self._cond = threading.Condition()
        self._stopping = False
        self._retry_load_at = 0.0
        # Grows with every wake(retry_load=True) (a preset chosen, a reload, a resume): a load that
        # fails after one came in mid-load is tried again at once, not after LOAD_RETRY.
        self._load_asks = 0
        # Preset choices accepted / those a step has begun after: status says "loading" in between,
        # not the previous preset's idle or error, until the step that acts on the choice has run.
        self._chosen_asks = 0
        self._chosen_seen = 0
        self._asks_at_step = 0  # _load_asks when the current step began
        self._restart_worker = False
        self._worker: Worker | None = None
        self.loading = False
        self.engine_error: str | None = None
        self.current: CurrentJob | None = None
        self.download: ModelDownload | None = None  # a hub model downloading now, for status and the tray
        self.last_output: str | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None  # wall-clock time of that failure
        self._last_error_id: int | None = None  # the ledger row last_error is about
        self._thread = threading.Thread(target=self._run, name="naiup-scheduler")

    @property
    def worker_pid(self) -> int | None:
        return self._worker.pid if self._worker else None

    def start(self) -> None:
        self._thread.start()

    def wake(self, *, retry_load: bool = False, restart_worker: bool = False) -> None:
        with self._cond:
            if retry_load:
                self._retry_load_at = 0.0
                self._load_asks += 1
            self._restart_worker |= restart_worker
            self._cond.notify_all()

    def preset_chosen(self) -> None:
        """The user chose a preset: load for it now. An engine error is the previous preset's news
        (the next load says whether the chosen one fails too), so it goes at once."""
        with self._cond:
            self._chosen_asks += 1
            self.engine_error = None
        self.wake(retry_load=True)

    @property
    def switching(self) -> bool:
        """A preset choice no step has acted on yet (a running job says `working` meanwhile)."""
        return self._chosen_asks != self._chosen_seen and self.current is None

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(self._config().daemon.stop_grace_seconds + 15.0)

    def _idle(self, seconds: float) -> None:
        with self._cond:
            if not self._stopping:
                self._cond.wait(seconds)

    def _run(self) -> None:
        try:
            while not self._stopping:
                seen = self._chosen_asks
                try:
                    self._step()
                except Exception:  # loop boundary: log, keep scheduling
                    log.exception("scheduler step failed")
                    self._idle(1.0)
                finally:
                    self._chosen_seen = seen
        finally:
            if self._worker is not None:
                self._worker.stop()

    def _step(self) -> None:
        self._asks_at_step = self._load_asks
        rs, cfg = self._runtime(), self._config()
        if self._restart_worker and self._worker is not None:
            self._worker.stop()
            self._worker = None
            self._restart_worker = False
        if rs.paused:
            if rs.free_gpu and self._worker is not None and self._worker.alive():
                log.info("pause: stopping the worker to free the GPU")
                self._worker.stop()
            self._idle(1.0)
            return
        if self._worker is None or not self._worker.alive():
            # Load at start, not at the first file: the model stays warm and the first job starts fast.
            if time.monotonic() < self._retry_load_at:
                self._idle(1.0)
                return
            # Loading takes long: pause or preset may have changed meanwhile, so start a fresh step.
            self._load(cfg)
            return
        try:
            preset = cfg.preset(active_preset(cfg, rs))
            # A preset of a model set that is not filled in, or one whose set lacks the ControlNet it
            # runs: refused here too (a reload may empty it, a runtime choice may predate the edit).
            wanted = cfg.usable_model(preset) if preset.refine else None
        except NaiupError as exc:  # a reload dropped the chosen preset: say so, keep files queued
            if self.engine_error != str(exc):
                log.error("active preset unusable, files stay queued error=%s", exc)
            self.engine_error = str(exc)
            self._idle(1.0)
            return
        if wanted is not None and self._worker.model_set != wanted:
            # Switched to a preset of another model set: load it now (status says "loading"), so the
            # first file starts warm and a set that cannot load shows at once, not as a queued job.
            self._switch(cfg, preset)
            return
        self.engine_error = None  # the worker is up (a load error would have stopped it): nothing stale
        item = self._ledger.next_queued()
        if item is None:
            self._idle(1.0)
            return
        # The engine's own id (the one in the outputs' provenance), so done rows match what made them.
        model = self._worker.model_id(preset)
        self.download = None
        if isinstance(model, Outcome):
            if model.worker_lost:
                self._worker = None  # restarted on the next step
            else:
                self._engine_failed(model, preset)
            return
        try:
            self._take(item, cfg, preset, model)
        except Exception as exc:  # one file's bug must not stop the queue, nor come back every second
            log.exception("job crashed in the scheduler id=%s path=%s", item.id, item.path)
            self.current = None
            self._fail(item, f"internal error: {type(exc).__name__}: {exc} (traceback in the daemon log)")

    def _take(self, item: Item, cfg: Config, preset: Preset, model: str) -> None:
        if _gone(Path(item.path)):
            self._ledger.forget([item.id])  # deleted while queued (a rename was followed by the watcher)
            log.info("dropped a queued file that is gone id=%s path=%s", item.id, item.path)
            return
        twin = self._ledger.done_twin(item.hash or "", preset.name, model) if item.hash else None
        if twin is not None and twin.id != item.id:
            self._ledger.skip(item.id, f"duplicate: same image already done as {twin.path} -> {twin.output}")
            log.info("skipped duplicate id=%s path=%s twin=%s", item.id, item.path, twin.path)
            return
        self._process(item, cfg, preset, model)

    def note_failure(self, item: Item, error: str, at: float | None = None) -> None:
        """Status's last_error. Every path that marks a file failed comes through here: a job (below)
        and the intake (the stabiliser giving up on a file, or refusing it); at start, the ledger's
        latest failed row (`at`: when it failed), so a restart does not hide a file still failed."""
        self.last_error = plain_text(f"{Path(item.path).name}: {error}")
        self.last_error_at = time.time() if at is None else at
        self._last_error_id = item.id  # cleared when this file later succeeds

    def _fail(self, item: Item, error: str) -> None:
        self._ledger.fail(item.id, error)
        self.note_failure(item, error)
        log.error("job failed id=%s path=%s error=%s", item.id, item.path, error)
        self._event({"event": "job_failed", "path": item.path, "error": plain_text(error)})

    def _load(self, cfg: Config) -> None:
        asks = self._asks_at_step
        try:  # load what the active preset needs, so a missing model shows now, not as failed files
            preset: Preset | None = cfg.preset(active_preset(cfg, self._runtime()))
        except NaiupError:
            preset = None
        self.loading = True
        self._worker = Worker(cfg, preset, on_download=self._downloading)
        try:
            error = self._worker.start(self._cancelled(preset))
        finally:
            self.loading = False
            self.download = None
        if error is None:
            self.engine_error = None
            return
        self._worker = None  # Worker.start stopped it
        self._load_failed(error, preset, asks)

    def _cancelled(self, loading: Preset | None) -> Callable[[], bool]:
        """A load's cancel check: the service stops, or the load became moot (see _moot)."""
        return lambda: self._stopping or self._moot(loading)

    def _moot(self, loading: Preset | None) -> bool:
        """The user chose another preset since `loading`'s models began to load, and it needs other
        ones: an upscale-only preset needs no SD model, a refining one of another set needs that set.
        Finishing such a load (minutes of a download, or a failure that would hold the service in
        `error` for LOAD_RETRY) would only delay the preset now chosen; a cancelled hub download
        resumes where it stopped when that set is chosen again."""
        if loading is None:
            return False
        cfg = self._config()
        try:
            chosen = cfg.preset(active_preset(cfg, self._runtime()))
            if chosen.name == loading.name:
                return False
            if not chosen.refine:
                return loading.refine
            return cfg.model_for(chosen) != cfg.model_for(loading)
        except NaiupError:  # the chosen preset is unusable: the next step says why, this load is moot
            return True

    def _load_failed(self, error: str, preset: Preset | None, asks: int) -> None:
        """A load (at start, a switch, or found at a job) failed or was cancelled; no worker is left.
        `asks`: _load_asks when it began."""
        if self._stopping:
            return
        if self._moot(preset):
            # Its error is about a preset no longer chosen: status must not show it as the chosen
            # one's, nor wait LOAD_RETRY before loading what the chosen one needs.
            assert preset is not None
            self.engine_error = None
            self._retry_load_at = 0.0
            log.info(
                "load for preset %s dropped: another preset was chosen meanwhile error=%s", preset.name, error
            )
            return
        self.engine_error = plain_message(error)  # status and the tray show it: no library noise
        # A reload, resume or preset choice while it loaded may have fixed what failed: try it now.
        self._retry_load_at = 0.0 if self._load_asks != asks else time.monotonic() + LOAD_RETRY
        log.error("engine cannot load, files stay queued error=%s", error)

    def _downloading(self, msg: Download) -> None:
        """The worker's download progress: shown while bytes are still to come."""
        self.download = (
            ModelDownload(name=msg.name, done=msg.done, total=msg.total) if msg.done < msg.total else None
        )

    def _switch(self, cfg: Config, preset: Preset) -> None:
        """The worker unloads its model set and loads the one `preset` refines with."""
        assert self._worker is not None
        asks = self._asks_at_step
        self.loading = True
        try:
            error = self._worker.load(preset, cfg, self._cancelled(preset))
        finally:
            self.loading = False
            self.download = None  # the new set's downloads, if any, are done (or failed)
        if error is None:
            self.engine_error = None
            return
        self._worker = None  # Worker.load stopped it: the next step starts a fresh one
        self._load_failed(error, preset, asks)

    def _engine_failed(self, outcome: Outcome, preset: Preset) -> None:
        """The engine cannot load a model for `preset`: stop the worker, show why, retry later (files
        stay queued)."""
        if self._worker is not None:
            self._worker.stop()
        self._worker = None
        self._load_failed(outcome.error or "engine failed", preset, self._asks_at_step)

    def _process(self, item: Item, cfg: Config, preset: Preset, model: str) -> None:
        assert self._worker is not None
        src = Path(item.path)
        self._ledger.start(item.id, preset.name, model)
        attempts = item.attempts + 1

        def progress(fraction: float, stage: str) -> None:
            self.current = CurrentJob(
                id=item.id, path=item.path, preset=preset.name, progress=fraction, stage=stage
            )

        progress(0.0, "starting")
        log.info("job start id=%s path=%s preset=%s attempt=%d", item.id, src, preset.name, attempts)
        t0 = time.monotonic()
        outcome = self._worker.run(src, preset, cfg, progress, lambda: self._stopping)
        if outcome is None:  # shutting down mid-job: let it finish briefly, else abandon it cleanly
            outcome = self._worker.wait_result(cfg.daemon.stop_grace_seconds)
            if outcome is None:
                self._worker.kill()
                remove_job_temps(src, preset, cfg.output.name)
                self._ledger.requeue(item.id, None, uncount=True)
                log.info("job abandoned at shutdown id=%s path=%s", item.id, src)
                self.current = None
                return
        self._record(item, src, outcome, attempts, cfg, preset, time.monotonic() - t0)
        self.current = self.download = None

    def _record(
        self, item: Item, src: Path, outcome: Outcome, attempts: int, cfg: Config, preset: Preset, secs: float
    ) -> None:
        max_attempts = cfg.daemon.max_attempts
        if outcome.load_error:
            self._ledger.requeue(item.id, outcome.error, uncount=True)
            self._engine_failed(outcome, preset)
            return
        if outcome.output is not None:
            self._ledger.finish(item.id, outcome.output, outcome.model_id)
            self.last_output = outcome.output
            if self._last_error_id == item.id:  # the file that failed has now been done: old news
                self.last_error = self.last_error_at = self._last_error_id = None
            log.info("job done id=%s path=%s output=%s secs=%.2f", item.id, src, outcome.output, secs)
            self._event({"event": "job_done", "path": item.path, "output": outcome.output})
            return
        error = outcome.error or "unknown error"
        if outcome.worker_lost:
            remove_job_temps(src, preset, cfg.output.name)
            self._worker = None  # restarted (and the engine reloaded) for the next job
        if _gone(src):  # deleted (or renamed: followed by the watcher) while it ran: not a failure
            self._ledger.forget([item.id])
            log.info("dropped a file that went away mid-job id=%s path=%s", item.id, src)
        elif outcome.permanent or attempts >= max_attempts:
            if not outcome.permanent:
                error = f"{error} (failed {attempts} times)"
            self._fail(item, error)
        else:
            delay = min(RETRY_BACKOFF * 2 ** (attempts - 1), MAX_RETRY_BACKOFF)
            self._ledger.requeue(item.id, error, delay=delay)
            log.warning(
                "job retry id=%s path=%s attempt=%d in=%.0fs error=%s", item.id, src, attempts, delay, error
            )
