"""Folder scans: baseline a folder the first time it is watched, catch up on the ones naiup knows.

Baseline: a folder with no ledger rows yet (first start, or a config edit added it). The images
already in it are recorded as `existing` from a directory listing (name, size, mtime; nothing is
opened or decoded, so a folder of 20,000 takes well under a second) and are not processed; only those
that arrived since the watcher began are new. `naiup backfill` later sends chosen ones through the
stabiliser's full check. `[watch] process_existing = true` processes them instead. With only_novelai,
the sorter (sorter.py) reads them afterwards, in the background, so the older images counted and
offered are only the NovelAI ones.

Catch-up: in a known folder, a file the ledger lacks is new when it arrived (filetimes.arrival_time)
after the folder's "last ran" mark, else it is recorded as existing as well. The mark is written after
every scan and at stop as the scan's start time, or earlier while a file found before it is still being
decided: every file that arrived before the mark is in the ledger, so a crash costs no file, only a
mark up to one rescan interval old (files in that interval already have rows and are unaffected).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from naiup.config import Config
from naiup.daemon.filetimes import CLOCK_SLACK, arrival_time
from naiup.daemon.ledger import OWN_OUTPUT, Item, Ledger, State
from naiup.daemon.stabiliser import Stabiliser, in_download_bundle, is_candidate_name, known_as_is
from naiup.job import is_naiup_output

log = logging.getLogger(__name__)

Stat = Callable[[Path], os.stat_result]
Arrival = Callable[[os.stat_result], float]


@dataclass(frozen=True, slots=True)
class Found:
    path: Path
    size: int
    mtime_ns: int
    arrived: float


def list_images(
    folder: Path, recursive: bool, stat: Stat | None = None, arrival: Arrival = arrival_time
) -> list[Found]:
    """Candidate images in `folder` (OSError if the folder itself cannot be listed). One scandir per
    folder and one stat per image (none on Windows, where scandir carries it); no file is opened.

    Only regular files, never through a symbolic link (as the stabiliser): a FIFO or a folder named
    `x.png` is no image, and a link may lead out of the folder or round in a loop. A crash on one entry
    (a bug, a name something refuses) is logged and costs that entry only."""
    found: list[Found] = []
    folders = [folder]
    while folders:
        current = folders.pop()
        try:
            entries = list(os.scandir(current))
        except OSError as exc:
            if current == folder:
                raise
            log.warning("cannot list sub-folder folder=%s error=%s", current, exc)
            continue
        bundle = in_download_bundle(current)
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    if recursive:
                        folders.append(Path(entry.path))
                    continue
                # The name first, from the listing: no Path is built for the files that are not images.
                if bundle or not is_candidate_name(entry.name) or not entry.is_file(follow_symlinks=False):
                    continue
                path = Path(entry.path)
                st = stat(path) if stat is not None else entry.stat(follow_symlinks=False)
                found.append(Found(path, st.st_size, st.st_mtime_ns, arrival(st)))
            except OSError:
                continue  # gone between the listing and the stat
            except Exception:  # one file must not end the scan, nor the daemon loop running it
                log.exception("rescan: listing one file crashed path=%s", entry.path)
    return found


def _listed(files: list[Found]) -> list[tuple[Path, int, int]]:
    return [(f.path, f.size, f.mtime_ns) for f in files]


def _under(path: Path, folder: Path, recursive: bool) -> bool:
    return path.parent == folder or (recursive and path.is_relative_to(folder))


class Scanner:
    """Runs on the daemon's loop thread; `clock`, `stat` and `arrival` are injectable for tests."""

    def __init__(
        self,
        ledger: Ledger,
        config: Callable[[], Config],
        stabiliser: Stabiliser,
        *,
        clock: Callable[[], float] = time.time,
        stat: Stat | None = None,
        arrival: Arrival = arrival_time,
    ) -> None:
        self._ledger, self._config, self._stabiliser = ledger, config, stabiliser
        self._clock, self._stat, self._arrival = clock, stat, arrival
        self._scanned_at: dict[Path, float] = {}  # the start of the last full listing, per folder

    def scan(self, folders: Iterable[Path], recursive: bool, watching_since: float | None = None) -> int:
        """Hint every new or changed image; record the old ones of a first-seen folder as existing.

        `watching_since`: when the watcher began on these folders; in a first-seen folder, files that
        arrived after it are new (the watcher reports them too, perhaps a moment later). Returns the
        number of files hinted."""
        hinted = 0
        for folder in folders:
            try:
                hinted += self._scan_folder(folder, recursive, watching_since)
            except Exception:  # a bug must not end the daemon loop, nor keep the other folders unscanned
                log.exception("rescan crashed folder=%s", folder)
        return hinted

    def _scan_folder(self, folder: Path, recursive: bool, watching_since: float | None) -> int:
        watch = self._config().watch
        started = self._clock()
        try:
            found = list_images(folder, recursive, self._stat, self._arrival)
        except OSError as exc:
            log.warning("rescan failed folder=%s error=%s", folder, exc)
            return 0  # no mark either: nothing was seen
        known, last_ran = self._ledger.folder_last_ran(folder)
        # Known: its mark (None in a ledger older than the marks: every unknown file is new).
        first_seen_cutoff = (started if watching_since is None else watching_since) - CLOCK_SLACK
        cutoff = last_ran if known else first_seen_cutoff
        rows = self._ledger.by_paths([f.path for f in found]) if known else {}  # unknown: it has none
        pending = self._stabiliser.pending_paths()
        new: list[Path] = []
        old: list[Found] = []
        for f in found:
            row = rows.get(str(f.path))
            if f.path in pending or (row is not None and known_as_is(row, f.size, f.mtime_ns, watch)):
                continue
            if row is not None or watch.process_existing or cutoff is None or f.arrived >= cutoff:
                new.append(f.path)
            else:
                old.append(f)
        # Our own outputs are no "older images" to offer: recorded like the stabiliser records them
        # (skipped, OWN_OUTPUT). Only the old files are opened, and only their PNG chunk headers.
        own = [f for f in old if is_naiup_output(f.path)]
        if own:
            own_paths = {f.path for f in own}
            old = [f for f in old if f.path not in own_paths]
            self._ledger.record_existing(_listed(own), State.SKIPPED, OWN_OUTPUT)
        recorded = self._ledger.record_existing(_listed(old)) if old else 0
        if known:  # a first-seen folder has no rows to forget
            self._forget_gone(folder, recursive, {str(f.path) for f in found})
        for path in new:
            self._stabiliser.hint(path)
        if not known:
            log.info(
                "baseline folder=%s existing=%d new=%d secs=%.2f",
                folder, recorded, len(new), self._clock() - started,
            )  # fmt: skip
        elif recorded:
            log.info("older files recorded as existing folder=%s count=%d", folder, recorded)
        self._scanned_at[folder] = started
        self.mark(folder)
        return len(new)

    def _forget_gone(self, folder: Path, recursive: bool, present: set[str]) -> None:
        """Existing rows whose file left the folder: nothing to offer for backfill any more."""
        gone = [
            item_id
            for item_id, path in self._ledger.existing_paths()
            if path not in present and _under(Path(path), folder, recursive)
        ]
        if gone:
            self._ledger.forget(gone)

    def mark(self, folder: Path) -> None:
        """Write the folder's "last ran" mark (after each scan, and at stop)."""
        scanned = self._scanned_at.get(folder)
        if scanned is None:
            return  # never listed in this run (missing): keep the mark it has
        pending = self._stabiliser.oldest_arrival(folder)
        when = scanned - CLOCK_SLACK if pending is None else min(scanned - CLOCK_SLACK, pending)
        self._ledger.set_folder_last_ran(folder, when)


def backfill_candidates(
    ledger: Ledger,
    watched: Iterable[Path],
    since: float | None = None,
    folder: Path | None = None,
    only_novelai: bool = False,
) -> list[Item]:
    """What `backfill` would queue; status's `existing` is its length, so the two always agree (rows
    under a folder no longer watched count for neither). With `only_novelai` ([watch] only_novelai),
    not the files the sorter found to be no NovelAI image: the stabiliser would skip them anyway."""
    items = ledger.items((State.EXISTING,), limit=-1)
    if only_novelai:
        others = ledger.existing_not_novelai()
        items = [i for i in items if i.id not in others]
    return select_backfill(items, watched, since, folder)


class BackfillCount:
    """len(backfill_candidates(...)) for status, which the daemon loop asks for four times a second:
    recounted only after the ledger or the watched folders changed (20 000 rows take ~0.3 s)."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._key: tuple[tuple[Path, ...], bool, int] | None = None
        self._count = 0

    def __call__(self, watched: Iterable[Path], only_novelai: bool = False) -> int:
        key = (tuple(watched), only_novelai, self._ledger.version())
        if key != self._key:
            self._count = len(backfill_candidates(self._ledger, key[0], only_novelai=only_novelai))
            self._key = key
        return self._count


def select_backfill(
    items: Iterable[Item], watched: Iterable[Path], since: float | None = None, folder: Path | None = None
) -> list[Item]:
    """The `existing` rows a backfill takes: under a watched folder (and under `folder` if given),
    modified at or after `since` (epoch seconds), oldest first."""
    roots = tuple(watched)
    chosen = [
        i
        for i in items
        if i.state is State.EXISTING
        and any(Path(i.path).is_relative_to(r) for r in roots)
        and (folder is None or Path(i.path).is_relative_to(folder))
        and (since is None or (i.mtime_ns or 0) >= since * 1e9)
    ]
    return sorted(chosen, key=lambda i: (i.mtime_ns or 0, i.id))
