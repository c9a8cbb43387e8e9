"""Decide when a hinted path is a complete image worth queueing: per-path trailing debounce plus checks.

A path is queued only when it is not hidden / partial / ours, has no partial sibling, is non-empty,
kept the same size and mtime across a quiet period, and fully decodes. Transient failures retry with
backoff; a file still incomplete after `give_up_seconds` is failed as incomplete.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from naiup.atomic import TEMP_SUFFIX
from naiup.config import Config
from naiup.daemon.ledger import OWN_OUTPUT, Ledger, State
from naiup.engine.metadata import read_metadata
from naiup.errors import InputError, MetadataError, NaiupError, UnsafeInputError
from naiup.job import is_naiup_output

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".webp", ".jpg", ".jpeg"})
PARTIAL_SUFFIXES = (
    ".crdownload",
    ".part",
    ".download",
    ".tmp",
    ".partial",
    ".opdownload",
    ".aria2",
    ".td",
    TEMP_SUFFIX,
)
JUNK_NAMES = frozenset({"thumbs.db", "desktop.ini", ".ds_store"})
MAX_BACKOFF = 30.0


def is_partial_download(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(PARTIAL_SUFFIXES) or any(p.endswith(".download") for p in path.parts[:-1])


def is_candidate(path: Path) -> bool:
    """Static filter on the candidate path only (never a move's source)."""
    name = path.name
    return (
        not name.startswith(".")
        and name.lower() not in JUNK_NAMES
        and not is_partial_download(path)
        and path.suffix.lower() in IMAGE_SUFFIXES
    )


def has_partial_sibling(path: Path) -> bool:
    # Firefox keeps an empty placeholder under the final name while it writes `name.part`.
    return any(
        path.with_name(path.name + s).exists() for s in (".part", ".crdownload", ".aria2", ".download")
    )


def hash_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@dataclass(slots=True)
class _Pending:
    first: float
    size: int
    mtime_ns: int
    due: float
    tries: int = 0


class Stabiliser:
    def __init__(self, ledger: Ledger, config: Callable[[], Config], on_queued: Callable[[], None]) -> None:
        self._ledger, self._config, self._on_queued = ledger, config, on_queued
        self._pending: dict[Path, _Pending] = {}
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="naiup-stabiliser")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(10.0)

    def pending(self) -> int:
        with self._cond:
            return len(self._pending)

    def hint(self, path: Path) -> None:
        """Called from the watchdog thread: cheap, never raises. Every hint restarts the quiet period."""
        if not is_candidate(path):
            return
        try:
            st = path.stat()
        except OSError:
            return
        quiet = self._config().watch.quiet_seconds
        now = time.monotonic()
        with self._cond:
            p = self._pending.get(path)
            if p is None:
                self._pending[path] = _Pending(now, st.st_size, st.st_mtime_ns, now + quiet)
            else:
                p.size, p.mtime_ns, p.due = st.st_size, st.st_mtime_ns, max(p.due, now + quiet)
            self._cond.notify_all()

    def scan(self, folders: tuple[Path, ...], recursive: bool) -> int:
        """Catch-up / periodic rescan: hint every candidate the ledger does not already know as-is."""
        hinted = 0
        for folder in folders:
            try:
                paths = folder.rglob("*") if recursive else folder.iterdir()
                for path in paths:
                    if not is_candidate(path) or not path.is_file():
                        continue
                    if self._known_as_is(path, path.stat()):
                        continue
                    with self._cond:
                        if path in self._pending:
                            continue
                    self.hint(path)
                    hinted += 1
            except OSError as exc:
                log.warning("rescan failed folder=%s error=%s", folder, exc)
        return hinted

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop:
                    now = time.monotonic()
                    due = [p for p, v in self._pending.items() if v.due <= now]
                    if due:
                        break
                    nxt = min((v.due for v in self._pending.values()), default=now + 3600)
                    self._cond.wait(max(0.0, nxt - now))
                if self._stop:
                    return
                batch = [(p, self._pending[p]) for p in due]
            for path, pend in batch:
                try:
                    retry_in = self._check(path, pend)
                except Exception:  # loop boundary: one bad file must not stop the stabiliser
                    log.exception("stabiliser check crashed path=%s", path)
                    retry_in = None
                with self._cond:
                    if retry_in is None:
                        if self._pending.get(path) is pend:
                            del self._pending[path]
                    else:
                        pend.due = max(pend.due, time.monotonic() + retry_in)

    def _transient(self, path: Path, pend: _Pending, reason: str) -> float | None:
        cfg = self._config().watch
        if time.monotonic() - pend.first > cfg.give_up_seconds:
            log.warning("gave up on incomplete file path=%s reason=%s", path, reason)
            self._ledger.upsert(
                path,
                State.FAILED,
                size=pend.size,
                mtime_ns=pend.mtime_ns,
                error=f"incomplete: {reason} (gave up after {cfg.give_up_seconds:.0f} s)",
            )
            return None
        self._ledger.upsert(path, State.WAITING, size=pend.size, mtime_ns=pend.mtime_ns, error=reason)
        pend.tries += 1
        return min(cfg.quiet_seconds * 2**pend.tries, MAX_BACKOFF)

    def _known_as_is(self, path: Path, st: os.stat_result) -> bool:
        """The ledger already decided this exact file (done, queued, failed, skipped...)."""
        row = self._ledger.by_path(path)
        return bool(
            row
            and (row.size, row.mtime_ns) == (st.st_size, st.st_mtime_ns)
            and row.state not in (State.SEEN, State.WAITING)
        )

    def _check(self, path: Path, pend: _Pending) -> float | None:
        """None: decided (or gone). A float: look again in that many seconds."""
        cfg = self._config()
        try:
            st = path.stat()
        except FileNotFoundError:
            return None  # polling invents deletes; a real new file will hint again
        if (st.st_size, st.st_mtime_ns) != (pend.size, pend.mtime_ns):
            pend.size, pend.mtime_ns = st.st_size, st.st_mtime_ns
            return cfg.watch.quiet_seconds  # still being written
        if self._known_as_is(path, st):
            return None
        if has_partial_sibling(path):
            return self._transient(path, pend, "a partial download is still beside it")
        if st.st_size == 0:
            return self._transient(path, pend, "file is empty")
        if is_naiup_output(path):
            self._ledger.upsert(
                path, State.SKIPPED, size=st.st_size, mtime_ns=st.st_mtime_ns, error=OWN_OUTPUT
            )
            return None
        try:
            meta = read_metadata(path, check_signature=False)
        except (MetadataError, UnsafeInputError) as exc:  # bombs, bad metadata: waiting will not fix them
            self._record_failed(path, st, str(exc))
            return None
        except (InputError, NaiupError, OSError) as exc:
            return self._transient(path, pend, _reason(exc))
        if cfg.watch.only_novelai and not meta.is_novelai:
            self._ledger.upsert(
                path,
                State.SKIPPED,
                size=st.st_size,
                mtime_ns=st.st_mtime_ns,
                error=f"not a NovelAI image (metadata: {meta.format})",
            )
            return None
        self._ledger.upsert(
            path, State.QUEUED, size=st.st_size, mtime_ns=st.st_mtime_ns, hash=hash_file(path)
        )
        log.info("queued path=%s", path)
        self._on_queued()
        return None

    def _record_failed(self, path: Path, st: os.stat_result, error: str) -> None:
        log.error("input refused path=%s error=%s", path, error)
        self._ledger.upsert(path, State.FAILED, size=st.st_size, mtime_ns=st.st_mtime_ns, error=error)


def _reason(exc: Exception) -> str:
    return getattr(exc, "reason", None) or str(exc)
