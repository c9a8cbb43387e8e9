"""Watch folders with watchdog and turn every event into a path hint. The handler never raises.

Events are hints, not "file complete" (Chrome ends with a rename, Firefox with a rename over an empty
placeholder, Safari with a bare create): the stabiliser decides. watchdog 7 patterns are unreliable on
absolute paths and drop Chrome's completion rename, so filtering happens in our own code.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

log = logging.getLogger(__name__)


class _HintHandler(FileSystemEventHandler):
    def __init__(self, hint: Callable[[Path], None], rescan: Callable[[], None]) -> None:
        self._hint, self._rescan = hint, rescan

    def on_any_event(self, event: FileSystemEvent) -> None:
        # An exception here would kill watchdog's single dispatcher thread for every watch (E3).
        try:
            if event.is_directory:
                # Safari: the finished file moves out of its *.download bundle, then the bundle goes.
                if event.event_type == "deleted" and str(event.src_path).endswith(".download"):
                    self._rescan()
                return
            if event.event_type in ("opened", "closed_no_write", "deleted"):
                return
            path = event.dest_path if event.event_type == "moved" else event.src_path
            if path:
                self._hint(Path(str(path)))
        except Exception:
            log.exception("watch handler failed on event=%r", event)


class _OverflowHook(logging.Handler):
    """watchdog only logs an inotify queue overflow (events lost): turn that line into a rescan."""

    def __init__(self, rescan: Callable[[], None]) -> None:
        super().__init__(logging.WARNING)
        self._rescan = rescan
        self.overflows = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.overflows += 1
            self._rescan()


OVERFLOW_LOGGERS = ("watchdog.observers.inotify_c", "watchdog.observers.inotify")


class Watcher:
    """Owns the watchdog observer; `healthy()` lets the daemon restart it if its thread died."""

    def __init__(
        self,
        folders: tuple[Path, ...],
        recursive: bool,
        hint: Callable[[Path], None],
        rescan: Callable[[], None],
    ) -> None:
        self._folders, self._recursive = folders, recursive
        self._lock = threading.RLock()  # config reloads (control thread) and the daemon loop both restart
        self._handler = _HintHandler(hint, rescan)
        self._overflow = _OverflowHook(rescan)
        self._observer: Observer | None = None
        self.missing: list[str] = []
        # Wall time the observer last (re)started: a file that arrived after it gets an event of its
        # own, so a first-seen folder's baseline counts it as new, not as existing.
        self.started_at: float | None = None

    @property
    def overflows(self) -> int:
        return self._overflow.overflows

    def start(self) -> None:
        with self._lock:
            self._start()

    def _start(self) -> None:
        for name in OVERFLOW_LOGGERS:
            logging.getLogger(name).addHandler(self._overflow)
        self._observer = Observer()
        self.missing = []
        for folder in self._folders:
            # watchdog 7 raises FileNotFoundError for a missing root at schedule() or start() (#1157)
            if not folder.is_dir():
                self.missing.append(str(folder))
                log.warning("watch folder missing folder=%s", folder)
                continue
            self._observer.schedule(self._handler, str(folder), recursive=self._recursive)
        self.started_at = time.time()
        try:
            self._observer.start()
        except OSError as exc:  # vanished between the check and start, or no inotify watches left
            log.warning("watch observer failed to start error=%s", exc)
            self._observer.stop()
            self._observer = None
            self.missing = [str(f) for f in self._folders]
            return
        log.info("watching folders=%s", ", ".join(map(str, self._folders)))

    def healthy(self) -> bool:
        return self._observer is not None and self._observer.is_alive() and not self.missing

    def restart(self) -> None:
        with self._lock:  # read the folders under the lock: a reload may be re-targeting right now
            self.retarget(self._folders, self._recursive)

    def retarget(self, folders: tuple[Path, ...], recursive: bool) -> None:
        """Watch other folders from now on (a config reload): the observer is rebuilt for them."""
        with self._lock:
            self._stop()
            self._folders, self._recursive = folders, recursive
            self._start()

    def stop(self) -> None:
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        for name in OVERFLOW_LOGGERS:
            logging.getLogger(name).removeHandler(self._overflow)
        if self._observer is not None:
            self._observer.stop()
            if self._observer.is_alive():
                self._observer.join(5.0)
            self._observer = None
