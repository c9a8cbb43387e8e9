"""Watch folders with watchdog and turn every event into a path hint. The handler never raises.

Events are hints, not "file complete" (Chrome ends with a rename, Firefox with a rename over an empty
placeholder, Safari with a bare create): the stabiliser decides. watchdog 7 patterns are unreliable on
absolute paths and drop Chrome's completion rename, so filtering happens in our own code.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

log = logging.getLogger(__name__)


class _HintHandler(FileSystemEventHandler):
    def __init__(
        self,
        hint: Callable[[Path], None],
        rescan: Callable[[], None],
        moved: Callable[[Path, Path], None] | None = None,
    ) -> None:
        self._hint, self._rescan, self._moved = hint, rescan, moved

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
            if event.event_type == "moved" and event.src_path and event.dest_path and self._moved:
                self._moved(Path(os.fsdecode(event.src_path)), Path(os.fsdecode(event.dest_path)))
                return
            path = event.dest_path if event.event_type == "moved" else event.src_path
            if path:
                self._hint(Path(os.fsdecode(path)))
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


def _identity(folder: Path) -> tuple[int, int] | None:
    """Which folder is at this path now (device, inode); None when no folder is there."""
    try:
        st = folder.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


class Watcher:
    """Owns the watchdog observer. `needs_restart()` (called every few seconds) notices a dead observer,
    a folder that went missing (shown in status) and one that is back or was replaced: inotify watches
    the folder itself, not its name, so a folder moved away and recreated needs a new watch."""

    def __init__(
        self,
        folders: tuple[Path, ...],
        recursive: bool,
        hint: Callable[[Path], None],
        rescan: Callable[[], None],
        moved: Callable[[Path, Path], None] | None = None,
    ) -> None:
        self._folders, self._recursive = folders, recursive
        self._lock = threading.RLock()  # config reloads (control thread) and the daemon loop both restart
        self._handler = _HintHandler(hint, rescan, moved)
        self._overflow = _OverflowHook(rescan)
        self._observer: Observer | None = None
        self._armed: dict[Path, tuple[int, int]] = {}  # the folder each watch was put on
        self._lost: set[Path] = set()  # seen missing since armed: re-arm when back, whatever its inode
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
        self._armed, self._lost = {}, set()
        for folder in self._folders:
            # watchdog 7 raises FileNotFoundError for a missing root at schedule() or start() (#1157)
            ident = _identity(folder)
            if ident is None:
                self.missing.append(str(folder))
                log.warning("watch folder missing folder=%s", folder)
                continue
            self._armed[folder] = ident
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

    def needs_restart(self) -> bool:
        """Look at each folder now: refresh `missing`; True when a restart would watch more than now."""
        with self._lock:
            observer = self._observer
            dead = observer is None or not observer.is_alive()
            # watchdog ends the emitter of a folder that was deleted; a moved one it follows elsewhere
            dead = dead or any(not e.is_alive() for e in observer.emitters)  # type: ignore[union-attr]
            missing, back = [], False
            for folder in self._folders:
                ident = _identity(folder)
                if ident is None:
                    missing.append(str(folder))
                    if folder not in self._lost:
                        self._lost.add(folder)
                        log.warning("watch folder missing folder=%s", folder)
                elif folder in self._lost or ident != self._armed.get(folder):
                    back = True
            self.missing = missing
            return back or (dead and len(missing) < len(self._folders))

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
