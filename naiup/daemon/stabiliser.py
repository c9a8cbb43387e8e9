"""Decide when a hinted path is a complete image worth queueing: per-path trailing debounce plus checks.

A path is queued only when it is not hidden / partial / ours, has no partial sibling, is non-empty,
kept the same size and mtime across a quiet period, and fully decodes. Transient failures retry with
backoff; a file still incomplete after `give_up_seconds` is failed as incomplete. A stable file that is
no image at all (its first bytes are no image format's) is failed at once: see _check.

Only regular files are looked at, never through a symbolic link: a FIFO named `x.png` would block the
first read forever, a folder named `x.png` is no image, and a link may lead out of the watched folder
(or round in a loop). A file that goes away before it is decided is dropped without a trace; a crash
while checking one file fails that file (traceback in the log) and the others go on.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from naiup.config import Config, WatchConfig
from naiup.daemon.filetimes import arrival_time
from naiup.daemon.ledger import NOT_NOVELAI, OWN_OUTPUT, Item, Ledger, State
from naiup.errors import InputError, MetadataError, NaiupError, NotAnImageError, UnsafeInputError
from naiup.job import is_naiup_output
from naiup.metadata.read import read_metadata
from naiup.output.atomic import TEMP_SUFFIX
from naiup.pathnames import shown

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
PARTIAL_SIBLINGS = (".part", ".crdownload", ".aria2", ".download")
JUNK_NAMES = frozenset({"thumbs.db", "desktop.ini", ".ds_store"})
MAX_BACKOFF = 30.0
# PIL tells an image format by its first 16 bytes at most (PNG needs 8, JPEG 3, WebP 12): a file with
# fewer may be the start of an image still on its way.
SIGNATURE_BYTES = 16


def in_download_bundle(folder: Path) -> bool:
    """Safari writes inside a `name.download` folder: nothing in one is finished."""
    return any(p.endswith(".download") for p in folder.parts)


def is_candidate_name(name: str) -> bool:
    """The name-only part of is_candidate (a folder listing checks its folder once, not per file)."""
    lower = name.lower()
    return (
        not name.startswith(".")
        and lower not in JUNK_NAMES
        and not lower.endswith(PARTIAL_SUFFIXES)
        and os.path.splitext(lower)[1] in IMAGE_SUFFIXES
    )


def is_candidate(path: Path) -> bool:
    """Static filter on the candidate path only (never a move's source)."""
    return is_candidate_name(path.name) and not in_download_bundle(path.parent)


def has_partial_sibling(path: Path) -> bool:
    # Firefox keeps an empty placeholder under the final name while it writes `name.part`.
    return any(_exists(path.with_name(path.name + s)) for s in PARTIAL_SIBLINGS)


def _exists(path: Path) -> bool:
    try:
        path.lstat()
    except OSError:  # gone, or a name too long to exist (a 255-byte name plus ".part")
        return False
    return True


def regular_file_stat(path: Path) -> os.stat_result | None:
    """The file's stat when it is a plain file (not a link, FIFO, folder...), else None. Raises OSError
    (FileNotFoundError when it is gone)."""
    st = path.lstat()
    return st if stat.S_ISREG(st.st_mode) else None


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
    arrived: float  # filetimes.arrival_time at the first hint: a folder's "last ran" mark stays before it
    tries: int = 0


class Stabiliser:
    def __init__(
        self,
        ledger: Ledger,
        config: Callable[[], Config],
        on_queued: Callable[[], None],
        on_failed: Callable[[Item, str], None] = lambda _item, _error: None,
    ) -> None:
        """`on_failed(row, error)`: a file was marked failed here (status shows it as last_error)."""
        self._ledger, self._config, self._on_queued, self._on_failed = ledger, config, on_queued, on_failed
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
            st = regular_file_stat(path)
        except OSError:
            return
        if st is None:
            return
        quiet = self._config().watch.quiet_seconds
        now = time.monotonic()
        with self._cond:
            p = self._pending.get(path)
            if p is None:
                self._pending[path] = _Pending(now, st.st_size, st.st_mtime_ns, now + quiet, arrival_time(st))
            else:
                p.size, p.mtime_ns, p.due = st.st_size, st.st_mtime_ns, max(p.due, now + quiet)
            self._cond.notify_all()

    def moved(self, src: Path, dest: Path) -> None:
        """Called from the watchdog thread for a rename. A file waiting or queued under `src` is the
        same file under `dest`: its row follows (keeping its place in the queue); never raises."""
        try:
            if is_candidate(dest):
                self._ledger.follow(src, dest)  # false for a download's .part -> final rename: no row
            else:
                self._forget_undecided(src, queued_too=True)  # renamed to something we would not take
            with self._cond:
                self._pending.pop(src, None)
        except Exception:
            log.exception("following a rename failed src=%s dest=%s", src, dest)
        self.hint(dest)

    def is_pending(self, path: Path) -> bool:
        with self._cond:
            return path in self._pending

    def pending_paths(self) -> set[Path]:
        with self._cond:
            return set(self._pending)

    def oldest_arrival(self, folder: Path) -> float | None:
        """The earliest arrival time among the files under `folder` still being decided, if any."""
        with self._cond:
            times = [p.arrived for path, p in self._pending.items() if path.is_relative_to(folder)]
        return min(times, default=None)

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
                except Exception as exc:  # loop boundary: one bad file must not stop the stabiliser
                    log.exception("stabiliser check crashed path=%s", path)
                    self._record_crash(path, pend, exc)
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
            gave_up = f"gave up after {cfg.give_up_seconds:.0f} s"
            self._fail_pending(path, pend, f"incomplete: {reason} ({gave_up})")
            return None
        self._ledger.upsert(path, State.WAITING, size=pend.size, mtime_ns=pend.mtime_ns, error=reason)
        pend.tries += 1
        return min(cfg.quiet_seconds * 2**pend.tries, MAX_BACKOFF)

    def _known_as_is(self, path: Path, st: os.stat_result) -> bool:
        return known_as_is(self._ledger.by_path(path), st.st_size, st.st_mtime_ns, self._config().watch)

    def _check(self, path: Path, pend: _Pending) -> float | None:
        """None: decided (or gone). A float: look again in that many seconds."""
        cfg = self._config()
        try:
            st = regular_file_stat(path)
        except FileNotFoundError:
            # Deleted or renamed before it was decided: nothing to record (a rename hints its new name).
            self._forget_undecided(path)
            return None
        if st is None:
            return None  # replaced by a link, FIFO or folder meanwhile
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
        except NotAnImageError as exc:
            if st.st_size < SIGNATURE_BYTES:
                return self._transient(path, pend, _reason(exc))
            # Not a partial download: a download is written front to back, so even a half-written
            # image starts with its format's signature (a truncated one fails as "truncated or
            # corrupt", which stays transient: a slow or stalled download looks just like it). This
            # file holds more than any signature, kept its size and mtime over the quiet period, and
            # its start is no image format: a text file or web page named .png. Waiting
            # give_up_seconds would only delay the verdict. Should its bytes change after all (a
            # downloader filling a pre-allocated file out of order), its size or mtime no longer
            # match the failed row, and it is checked afresh like any changed file.
            self._record_failed(path, st, _reason(exc))
            return None
        except (InputError, NaiupError, OSError) as exc:
            return self._transient(path, pend, _reason(exc))
        if cfg.watch.only_novelai and not meta.is_novelai:
            self._ledger.upsert(
                path,
                State.SKIPPED,
                size=st.st_size,
                mtime_ns=st.st_mtime_ns,
                error=f"{NOT_NOVELAI} (metadata: {meta.format})",
            )
            return None
        self._ledger.upsert(
            path, State.QUEUED, size=st.st_size, mtime_ns=st.st_mtime_ns, hash=hash_file(path)
        )
        log.info("queued path=%s", path)
        self._on_queued()
        return None

    def _forget_undecided(self, path: Path, queued_too: bool = False) -> None:
        row = self._ledger.by_path(path)
        undecided = (State.SEEN, State.WAITING, State.QUEUED) if queued_too else (State.SEEN, State.WAITING)
        if row is not None and row.state in undecided:
            self._ledger.forget([row.id])

    def _record_crash(self, path: Path, pend: _Pending, exc: Exception) -> None:
        """Fail the file a crash happened on, so the next rescan does not crash on it again."""
        try:
            self._fail_pending(
                path, pend, f"internal error while checking it: {type(exc).__name__}: {exc} (see the log)"
            )
        except Exception:
            log.exception("could not record the failure path=%s", shown(path))

    def _fail_pending(self, path: Path, pend: _Pending, error: str) -> None:
        self._failed(path, pend.size, pend.mtime_ns, error)

    def _record_failed(self, path: Path, st: os.stat_result, error: str) -> None:
        log.error("input refused path=%s error=%s", path, error)
        self._failed(path, st.st_size, st.st_mtime_ns, error)

    def _failed(self, path: Path, size: int, mtime_ns: int, error: str) -> None:
        """The one way this marks a file failed: the ledger row, then whoever reports failures."""
        item = self._ledger.upsert(path, State.FAILED, size=size, mtime_ns=mtime_ns, error=error)
        self._on_failed(item, error)


def known_as_is(row: Item | None, size: int, mtime_ns: int, watch: WatchConfig) -> bool:
    """The ledger already decided this exact file (done, queued, failed, skipped, existing...).

    `existing` (found by a baseline) counts as decided unless `process_existing` asks for those too."""
    return bool(
        row
        and (row.size, row.mtime_ns) == (size, mtime_ns)
        and row.state not in (State.SEEN, State.WAITING)
        and not (row.state is State.EXISTING and watch.process_existing)
    )


def _reason(exc: Exception) -> str:
    return getattr(exc, "reason", None) or str(exc)
