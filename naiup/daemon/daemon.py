"""`naiup run`: the composition of watcher, stabiliser, ledger, scheduler and control server.

Start order: instance lock -> logging -> config -> ledger (crash recovery) -> temp cleanup -> control
socket bound -> threads -> control socket served -> observer -> catch-up scan (the observer starts first
so nothing lands unseen; a folder seen for the first time is baselined instead, see catchup.py).
Stop (SIGTERM/SIGINT/`stop`): the main thread only sets an event; the loop then tears down in reverse,
writing each folder's "last ran" mark once the observer is stopped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import filelock

from naiup import __version__, paths
from naiup.config import Config, load_config
from naiup.control.protocol import CurrentJob, DaemonState, PauseSource, Status, ensure_private_dir
from naiup.daemon import verbs
from naiup.daemon.catchup import BackfillCount, Scanner, backfill_candidates
from naiup.daemon.ledger import NOT_NOVELAI, OWN_OUTPUT, Item, Ledger, State, default_path
from naiup.daemon.logs import setup_logging
from naiup.daemon.pause_gate import RuleGate, sensors_from_env
from naiup.daemon.pause_rules import Sensors
from naiup.daemon.scheduler import Scheduler
from naiup.daemon.server import ControlServer
from naiup.daemon.sorter import Sorter
from naiup.daemon.stabiliser import Stabiliser
from naiup.daemon.watcher import Watcher
from naiup.errors import FatalError, NaiupError
from naiup.output.atomic import TEMP_SUFFIX, replace_file
from naiup.pathnames import shown
from naiup.runtime_state import RuntimeState, active_preset, load_state, save_state, state_path
from naiup.upscaler_names import missing_weights, not_shipped

log = logging.getLogger(__name__)

TICK = 0.25
WATCH_CHECK_SECONDS = 1.0  # a stat of each watch folder: is it there, is it still the one we watch


def info_path() -> Path:
    return paths.state_dir() / "daemon.json"


# A publish holds its temp for well under a second; one this old was left by a killed process. A
# younger one may belong to a `naiup refine` writing into the same folder right now.
STALE_TEMP_SECONDS = 600.0


def remove_stale_temps(folders: tuple[Path, ...], recursive: bool = False, now: float | None = None) -> None:
    """Remove the hidden temps a process killed mid-publish left behind, leaving any still fresh."""
    now = time.time() if now is None else now
    pattern = f".*{TEMP_SUFFIX}"
    for folder in folders:
        try:
            for tmp in folder.rglob(pattern) if recursive else folder.glob(pattern):
                try:
                    if now - tmp.stat().st_mtime < STALE_TEMP_SECONDS:
                        continue
                    tmp.unlink()
                except FileNotFoundError:
                    continue  # its writer published or removed it meanwhile
                log.info("removed stale temp path=%s", tmp)
        except OSError as exc:
            log.warning("temp cleanup failed folder=%s error=%s", folder, exc)


class Daemon:
    """The service. `run()` holds the instance lock, reads the config, then `start()` builds the
    collaborators and starts their threads; the control verbs (verbs.py) call the public methods below."""

    # Built by start(): they need the instance lock held (the ledger's crash recovery) and the config.
    rules: RuleGate
    ledger: Ledger
    scheduler: Scheduler
    stabiliser: Stabiliser
    scanner: Scanner
    existing_count: BackfillCount
    sorter: Sorter
    watcher: Watcher
    server: ControlServer

    def __init__(self, config_path: Path | None = None, sensors: Sensors | None = None) -> None:
        self.config_path = config_path
        self._sensors = sensors  # None: the real ones (or NAIUP_PAUSE_SENSORS, see pause_gate)
        self.config: Config = Config()
        self.config_error: str | None = None
        self._config_mtime: float | None = None
        self._state_path = state_path()
        self._runtime_lock = threading.Lock()
        self._runtime = RuntimeState()
        self._rescan_now = threading.Event()
        self.stop_event = threading.Event()
        self.log_path: Path | None = None

    # --- runtime choices, shared with the control threads ---
    def runtime(self) -> RuntimeState:
        with self._runtime_lock:
            return self._runtime

    def effective_runtime(self) -> RuntimeState:
        """What the scheduler obeys: the user's choices, paused too while a pause rule holds."""
        rs = self.runtime()
        reason = None if rs.paused else self.rules.reason()
        return rs.but(paused=True, pause_reason=reason) if reason else rs

    def set_runtime(self, **changes: object) -> RuntimeState:
        with self._runtime_lock:
            self._runtime = self._runtime.but(**changes)
            save_state(self._state_path, self._runtime)
            return self._runtime

    # --- what the control verbs ask (verbs.py maps each verb to one of these) ---
    def status(self) -> Status:
        user, rs, sch, cfg = self.runtime(), self.effective_runtime(), self.scheduler, self.config
        counts = self.ledger.counts()
        if rs.paused:
            state = DaemonState.PAUSED
        elif sch.loading or sch.switching:
            state = DaemonState.LOADING
        elif sch.engine_error:  # a rejected config edit is no error state: the previous config runs on
            state = DaemonState.ERROR
        elif sch.current is not None:
            state = DaemonState.WORKING
        else:
            state = DaemonState.IDLE
        rules = self.rules.status()
        active = active_preset(cfg, rs)
        return Status(
            state=state,
            active_preset=active,
            presets=tuple(sorted(cfg.presets)),
            **_model_status(cfg, active),
            current=sch.current,
            download=sch.download,
            queue_length=counts.get(State.QUEUED, 0),  # waiting to start: `current` is the one running
            waiting=self.stabiliser.pending(),
            existing=self.existing_count(
                cfg.watch.folders, cfg.watch.only_novelai
            ),  # what `backfill` would queue
            counts=counts,
            last_error=sch.last_error,
            last_error_at=sch.last_error_at,
            pause_reason=rs.pause_reason if rs.paused else None,
            paused_until=rs.paused_until if rs.paused else None,
            pause_source=(PauseSource.USER if user.paused else PauseSource.RULE) if rs.paused else None,
            pause_rule=rules.holding,
            pause_rule_overridden=rules.overridden,
            pause_rules_unavailable=rules.unavailable,
            last_output=sch.last_output,
            engine_error=sch.engine_error,
            config_error=self.config_error,
            worker_pid=sch.worker_pid,
            watch_folders=tuple(str(f) for f in cfg.watch.folders),
            missing_folders=tuple(self.watcher.missing),
            event_overflows=self.watcher.overflows,
            config_path=str(self.config_path) if self.config_path else None,
            log_path=str(self.log_path) if self.log_path else None,
            pid=os.getpid(),
        )

    def queue(self, failed: bool = False, limit: int = 1000) -> list[Item]:
        """Files waiting or queued or being refined; with `failed`, failed and skipped ones instead."""
        if not failed:
            return self.ledger.items((State.WAITING, State.QUEUED, State.PROCESSING), limit)
        # Our own outputs are skipped on purpose, not a problem to list (status counts them apart).
        return self.ledger.items((State.FAILED, State.SKIPPED), limit, except_error=OWN_OUTPUT)

    def pause(self, free_gpu: bool = False, until: float | None = None, reason: str | None = None) -> Status:
        """`until`: the wall-clock time the pause ends by itself (None: when the user resumes)."""
        self.set_runtime(
            paused=True,
            free_gpu=free_gpu,
            paused_until=until,
            pause_reason=reason or "by you",  # reads right in `paused: …` and the tray's "paused (…)"
        )
        self.scheduler.wake()
        return self.status()

    def resume(self) -> Status:
        self.rules.override()  # the user's resume wins over rules holding now (README: Pause rules)
        self.set_runtime(paused=False, free_gpu=False, paused_until=None, pause_reason=None)
        self.scheduler.wake(retry_load=True)
        return self.status()

    def use_preset(self, name: str) -> Status:
        presets = self.config.presets
        if name not in presets:  # the name came from the command line or the tray, not the config file
            raise NaiupError(f"unknown preset {name!r} (known: {', '.join(sorted(presets))})")
        # An SDXL preset before [models.xl] is filled in, a ControlNet preset whose set names none: say so.
        self.config.usable_model(presets[name])
        # A built-in upscaler whose weights are not shipped and not yet put in place: every job would fail.
        spec = presets[name].upscaler
        if (weights := missing_weights(spec)) is not None:
            raise NaiupError(f"preset {name} cannot run yet: {not_shipped(spec, weights)}")
        self.set_runtime(active_preset=name)
        self.scheduler.preset_chosen()
        return self.status()

    def retry(self, item_id: int | None = None) -> int:
        """Queue failed files again: the one with this ledger id, or all (None). Returns how many.
        One id may also name a file skipped as no NovelAI image: it is refined, whatever only_novelai."""
        if item_id is not None:
            item = self.ledger.get(item_id)
            if item is None:
                raise NaiupError(f"no file with id {item_id} (`naiup queue --failed` lists the ids)")
            not_novelai = item.state is State.SKIPPED and (item.error or "").startswith(NOT_NOVELAI)
            if item.state is not State.FAILED and not not_novelai:
                where = shown(item.path)
                raise NaiupError(f"id {item_id} is {item.state}, not failed: nothing to retry ({where})")
        n = self.ledger.retry(item_id)
        self.scheduler.wake()
        return n

    def backfill(
        self, since: float | None = None, folder: Path | None = None, dry_run: bool = False
    ) -> list[Item]:
        """Send `existing` images (oldest first) through the stabiliser's full check, like new files.
        Returns the images chosen (all of them, queued unless `dry_run`)."""
        watched = self.config.watch.folders
        # Only a watched folder or one inside it: a parent (say /tmp) would sweep in every watched
        # folder below it, which is not what naming one folder asks for.
        if folder is not None and not any(folder.is_relative_to(r) for r in watched):
            names = ", ".join(map(shown, watched))
            raise NaiupError(f"{shown(folder)} is not a watched folder or inside one (watched: {names})")
        chosen = backfill_candidates(self.ledger, watched, since, folder, self.config.watch.only_novelai)
        if not dry_run and chosen:
            self.ledger.reconsider([i.id for i in chosen])
            for item in chosen:
                self.stabiliser.hint(Path(item.path))
            log.info("backfill count=%d since=%s folder=%s", len(chosen), since, folder)
        return chosen

    def request_rescan(self) -> None:
        self._rescan_now.set()

    def reload(self) -> None:
        """Re-read the config; an invalid one keeps the old config and shows the error in status."""
        old = self.config
        self._load_config()
        new = self.config
        if old.daemon.active_preset != new.daemon.active_preset and self.runtime().active_preset is not None:
            # The user edited active_preset after choosing one with `naiup preset`/the tray: the later
            # choice wins, or the edit would be silently overridden by a choice they may have forgotten.
            log.info(
                "config active_preset=%s replaces the earlier runtime choice %s",
                new.daemon.active_preset,
                self.runtime().active_preset,
            )
            self.set_runtime(active_preset=None)
        worker_changed = (old.model, old.models) != (new.model, new.models)
        self.scheduler.wake(retry_load=True, restart_worker=worker_changed)
        if old.pause != new.pause:
            self.rules.reconfigure(new.pause)
        if old.watch.only_novelai and not new.watch.only_novelai:
            self._release_not_novelai()
        if (old.watch.folders, old.watch.recursive) != (new.watch.folders, new.watch.recursive):
            self.watcher.retarget(new.watch.folders, new.watch.recursive)
            self.request_rescan()  # files already waiting in a newly watched folder

    def _release_not_novelai(self) -> None:
        """With only_novelai off, the files it skipped become older images like any other: `naiup
        backfill` queues them (status counts them). Not queued at once: turning a filter off should not
        start refining a folder's worth of old files unasked."""
        if n := self.ledger.release_not_novelai():
            log.info("only_novelai is off: files it skipped are offered to backfill count=%d", n)

    def request_stop(self) -> CurrentJob | None:
        """Stop soon (the loop tears down); returns the job that may still finish meanwhile."""
        self.stop_event.set()
        return self.scheduler.current

    # --- life cycle ---
    def _load_config(self, startup: bool = False) -> None:
        """`startup`: the first read, with no previous config to keep (a bad one stops the start)."""
        path = self.config_path
        try:
            self._config_mtime = path.stat().st_mtime if path and path.exists() else None
            # A missing model file is the engine's error to report (status), not a reason to stop.
            new = load_config(path, model_files_must_exist=False)
        except (NaiupError, OSError) as exc:
            self.config_error = str(exc)
            if startup:
                log.error("config invalid, not starting error=%s", exc)
            else:
                log.error("config reload failed, keeping the previous config error=%s", exc)
            raise
        self.config, self.config_error = new, None
        log.info("config loaded path=%s", path)

    def _poll_config(self) -> None:
        path = self.config_path
        try:
            mtime = path.stat().st_mtime if path and path.exists() else None
        except OSError:
            return
        if mtime != self._config_mtime:
            with contextlib.suppress(NaiupError, OSError):  # logged, and kept in status
                self.reload()

    def run(self) -> int:
        state_dir = ensure_private_dir(paths.state_dir())
        lock = filelock.FileLock(
            state_dir / "daemon.lock", timeout=0, thread_local=False, fallback_to_soft=False
        )  # a soft lock would outlive a crash
        try:
            lock.acquire()
        except filelock.Timeout:
            pid = _running_pid()
            msg = f"naiup is already running (pid {pid})" if pid else "naiup is already running"
            raise FatalError(msg) from None
        handlers: list[logging.Handler] = []
        try:
            self.log_path, handlers = setup_logging(paths.log_dir())
            self.config_path = self.config_path or _default_config_path()
            self._load_config(startup=True)
            self.start()
            try:
                self._install_signals()
                log.info("naiup daemon started pid=%d version=%s", os.getpid(), __version__)
                self.request_rescan()
                self._loop()
            finally:
                self._shutdown()
            log.info("stopped")
            return 0
        except NaiupError:
            raise  # a sentence for the user (bad config, ledger): the CLI prints it
        except BaseException as exc:
            if not isinstance(exc, KeyboardInterrupt | SystemExit):
                # A bug ends the service: its traceback goes to daemon.log, not only to a stderr
                # nobody reads under systemd or launchd.
                log.critical("the daemon crashed", exc_info=True)
            raise
        finally:
            info_path().unlink(missing_ok=True)
            lock.release()
            for h in handlers:
                logging.getLogger().removeHandler(h)
                h.close()

    def start(self) -> None:
        """Build the collaborators and start their threads, the control socket and the observer.
        Called by run() with the instance lock held and the config read."""
        cfg = self.config
        # Our own processes never count as "another process using the GPU"; the worker pid changes.
        own_pids = lambda: {os.getpid(), self.scheduler.worker_pid} - {None}  # noqa: E731
        self.rules = RuleGate(cfg.pause, self._sensors or sensors_from_env(own_pids))
        self._runtime = load_state(self._state_path)
        self.ledger = Ledger(default_path())
        try:
            requeued, poisoned = self.ledger.recover(cfg.daemon.max_attempts)
            if requeued:
                log.info("requeued jobs interrupted by a crash count=%d", requeued)
            remove_stale_temps(cfg.watch.folders, cfg.watch.recursive)
            self.scheduler = Scheduler(
                self.ledger, lambda: self.config, self.effective_runtime, self._publish
            )
            self.stabiliser = Stabiliser(
                self.ledger, lambda: self.config, self.scheduler.wake, on_failed=self.scheduler.note_failure
            )
            self.scanner = Scanner(self.ledger, lambda: self.config, self.stabiliser)
            self.existing_count = BackfillCount(self.ledger)
            self.sorter = Sorter(self.ledger, lambda: self.config)
            self.watcher = Watcher(
                cfg.watch.folders,
                cfg.watch.recursive,
                self.stabiliser.hint,
                self.request_rescan,
                self.stabiliser.moved,
            )
            # Bound now, served once the threads run: a socket that cannot open stops us before any.
            self.server = ControlServer(lambda verb, args: verbs.handle(self, verb, args))
        except BaseException:
            self.ledger.close()
            raise
        if not cfg.watch.only_novelai:  # turned off while the daemon was not running
            self._release_not_novelai()
        if (last := self.ledger.last_failed()) is not None:  # survives a restart, until that file is done
            self.scheduler.note_failure(last, last.error or "", at=last.finished or last.created)
        for item in poisoned:  # failed by the recovery above: as much news as a job failing now
            self.scheduler.note_failure(item, item.error or "")
        try:
            self.stabiliser.start()
            self.sorter.start()
            self.scheduler.start()
            self.server.start()
            _write_info({"pid": os.getpid(), "address": self.server.address, "version": __version__})
            self.watcher.start()
        except BaseException:
            self._shutdown()
            raise

    def _shutdown(self) -> None:
        """Tear down in reverse: each folder's "last ran" mark is written once the observer is stopped."""
        log.info("stopping")
        self.watcher.stop()
        self._mark_folders()
        self.stabiliser.stop()
        self.sorter.stop()
        self.scheduler.stop()
        self.server.stop()
        self.ledger.close()

    def _mark_folders(self) -> None:
        """At stop: each folder's "last ran" mark, so the next start catches up from here."""
        for folder in self.config.watch.folders:
            try:
                self.scanner.mark(folder)
            except Exception:  # the marks from the last rescan stay: never a reason to hang the stop
                log.exception("could not write the last-ran mark folder=%s", folder)

    def _install_signals(self) -> None:
        def on_signal(signum: int, _frame: object) -> None:
            self.stop_event.set()  # only set the flag: the loop does the work

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, lambda *_: self._poll_config_forced())

    def _poll_config_forced(self) -> None:
        self._config_mtime = -1.0

    def _loop(self) -> None:
        next_rescan = next_config = next_watch_check = next_watch_restart = time.monotonic()
        next_temp_sweep = next_rescan + STALE_TEMP_SECONDS  # start-up swept already
        last_status: Status | None = None
        rule = None
        while not self.stop_event.wait(TICK):
            now = time.monotonic()
            self.rules.check(now)
            held, rule = rule, self.rules.reason()
            if held and not rule:
                self.scheduler.wake(retry_load=True)  # a rule let go: take jobs now, not at the next poll
            if self._rescan_now.is_set() or now >= next_rescan:
                self._rescan_now.clear()
                watch = self.config.watch
                n = self.scanner.scan(watch.folders, watch.recursive, self.watcher.started_at)
                if n:
                    log.info("rescan found files to check count=%d", n)
                next_rescan = now + self.config.watch.rescan_seconds
            if now >= next_temp_sweep:
                # Its own slow timer: a second walk of every watch folder on each rescan would double
                # the rescan's I/O, and a temp cannot turn stale faster than STALE_TEMP_SECONDS anyway.
                remove_stale_temps(self.config.watch.folders, self.config.watch.recursive)
                next_temp_sweep = now + STALE_TEMP_SECONDS
            if now >= next_config:
                self._poll_config()
                next_config = now + 1.0
            rs = self.runtime()
            if rs.paused and rs.paused_until is not None and time.time() >= rs.paused_until:
                log.info("timed pause over, resuming")
                self.set_runtime(paused=False, pause_reason=None, paused_until=None, free_gpu=False)
                self.scheduler.wake(retry_load=True)
            if now >= next_watch_check:
                # A dead observer, or a folder back after it went missing (unmounted, renamed, moved
                # away and recreated: the old inotify watch stays on the old folder, wherever it went).
                next_watch_check = now + WATCH_CHECK_SECONDS
                if self.watcher.needs_restart() and now >= next_watch_restart:
                    next_watch_restart = now + 5.0  # an observer that cannot start is not retried at 1 Hz
                    log.warning("re-attaching the watch observer missing=%s", self.watcher.missing)
                    self.watcher.restart()
                    self.request_rescan()
            status = self.status()
            if status != last_status:
                self.server.publish({"event": "status", "status": status.to_json()})
                last_status = status

    def _publish(self, event: dict) -> None:
        self.server.publish(event)  # the scheduler's thread starts after the server is built


def _default_config_path() -> Path:
    from naiup.config import default_config_path

    return default_config_path()


def _write_info(info: dict) -> None:
    replace_file(info_path(), json.dumps(info).encode())


def _running_pid() -> int | None:
    try:
        return int(json.loads(info_path().read_text())["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _model_status(cfg: Config, active: str) -> dict[str, Any]:
    """Status's model fields: the active preset's set and its checkpoint (None when the preset does
    not refine, or its set is not filled in: engine_error says so), and the presets that cannot run
    with what the config holds, with what they need (`naiup preset` and the tray mark them)."""
    preset = cfg.presets.get(active)
    model = None
    if preset is not None and preset.refine:
        with contextlib.suppress(NaiupError):
            model = cfg.model_for(preset).checkpoint
    missing = {name: need for name, p in sorted(cfg.presets.items()) if (need := cfg.missing_for(p))}
    return {
        "model_set": preset.model if preset is not None else None,
        "model": model,
        "presets_without_model": missing,
    }
