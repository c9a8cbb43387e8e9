"""The sorter: reads each `existing` row's file once, in the background, to tell NovelAI images from
the rest, so that with [watch] only_novelai `naiup status` ("older images not processed: N"), the
tray's "Process N older images" and `naiup backfill` count and offer only what a backfill would
actually process.

A baseline records a folder's old files from a listing alone: a first watch of a downloads folder
must be quick whatever it holds, and a listing cannot tell a NovelAI image from a photo. A backfill
would send every one through the stabiliser, which reads it and skips what is not NovelAI; the
sorter makes that same read ahead of time, one file at a time, and keeps the verdict in the ledger
(valid while the row's size and mtime are the file's), so each old file is read once, ever. It reads
only while only_novelai is on: with it off every image counts, and no read can change the count.
A row not read yet counts as one to process, so the count only falls as the sorter goes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

from naiup.config import Config
from naiup.daemon.ledger import Ledger
from naiup.daemon.stabiliser import regular_file_stat
from naiup.errors import InputError
from naiup.metadata.read import read_metadata

log = logging.getLogger(__name__)

# Verdicts are written (and status's count recounted) once per batch: each write makes the count of
# older images be worked out again (~0.3 s for 20 000 rows), so not once per file.
BATCH = 100
IDLE_SECONDS = 2.0  # nothing to read: look again this much later (a baseline may add rows)


def backfill_would_process(path: Path, size: int | None, mtime_ns: int | None) -> bool:
    """Whether the stabiliser, with only_novelai, would queue this file as the baseline listed it: a
    plain file (never read through a link, as the stabiliser does not) still of the listed size and
    mtime, that decodes and carries NovelAI metadata. Anything else is no older NovelAI image to offer:
    a changed file is a new arrival (the rescan hints it), a gone one leaves at the next rescan, an
    undecodable one would fail."""
    try:
        st = regular_file_stat(path)
        if st is None or (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
            return False
        return read_metadata(path, check_signature=False).is_novelai
    except (InputError, OSError):
        return False


def sort_some(ledger: Ledger, limit: int = BATCH, stop: Callable[[], bool] = lambda: False) -> int:
    """Read up to `limit` existing files no one has read yet, record what each is; returns how many."""
    verdicts = []
    for item_id, path, size, mtime_ns in ledger.unsorted_existing(limit):
        if stop():
            break
        try:
            novelai = backfill_would_process(Path(path), size, mtime_ns)
        except Exception:  # a bug reading one file: recorded as not to offer, so it is not read again
            log.exception("reading an older file crashed path=%s", path)
            novelai = False
        verdicts.append((item_id, size, mtime_ns, novelai))
    if verdicts:
        ledger.set_novelai(verdicts)
    return len(verdicts)


class Sorter:
    """The thread running sort_some while only_novelai is on and there is something to read."""

    def __init__(self, ledger: Ledger, config: Callable[[], Config]) -> None:
        self._ledger, self._config = ledger, config
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="naiup-sorter")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            read = 0
            try:
                if self._config().watch.only_novelai:
                    read = sort_some(self._ledger, stop=self._stop.is_set)
                    if read:
                        log.debug("sorted older files count=%d", read)
            except Exception:  # loop boundary: log, try again later
                log.exception("sorting older files failed")
            if not read:
                self._stop.wait(IDLE_SECONDS)
