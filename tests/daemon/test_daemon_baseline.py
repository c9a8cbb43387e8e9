"""Baseline and catch-up in-process: which files a folder scan leaves alone, and the "last ran" clock.

Times are injected (a fake clock for the scan, a stat function for the files), so the Windows branch of
filetimes.arrival_time runs here on any OS.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace

import nai_writer
import pytest
from daemon_harness import wait_for
from legacy_ledger import write_original_ledger
from PIL import Image

from naiup.config import Config, WatchConfig
from naiup.daemon.catchup import BackfillCount, Scanner, backfill_candidates, list_images, select_backfill
from naiup.daemon.filetimes import CLOCK_SLACK, arrival_time
from naiup.daemon.ledger import Ledger, State
from naiup.daemon.sorter import sort_some
from naiup.daemon.stabiliser import Stabiliser

# The fake clock's "now" at the scans below: an hour after the test's files really were written, so
# a file the (real) stabiliser has pending carries a real arrival time an hour before T.
T = float(int(time.time()) + 3600)


def _fake_stat(size: int = 10, mtime: float = T, ctime: float = T, birthtime: float | None = None):
    st = SimpleNamespace(st_size=size, st_mtime=mtime, st_mtime_ns=int(mtime * 1e9), st_ctime=ctime)
    if birthtime is not None:
        st.st_birthtime = birthtime
    return st


class _Setup:
    """A ledger, an unstarted stabiliser (hints stay pending, nothing is decided) and a scanner."""

    def __init__(self, tmp_path: Path, **watch: object) -> None:
        self.folder = tmp_path / "watch"
        self.folder.mkdir(exist_ok=True)
        self.ledger = Ledger(tmp_path / "ledger.sqlite3")
        self.config = Config(watch=WatchConfig(folders=(self.folder,), **watch))
        self.stabiliser = Stabiliser(self.ledger, lambda: self.config, lambda: None)
        self.stats: dict[str, SimpleNamespace] = {}
        self.now = T

    def scanner(self, windows: bool = False) -> Scanner:
        return Scanner(
            self.ledger,
            lambda: self.config,
            self.stabiliser,
            clock=lambda: self.now,
            stat=lambda p: self.stats.get(p.name) or os.stat(p),
            arrival=lambda st: arrival_time(st, windows=windows),
        )

    def file(self, name: str, **times: float) -> Path:
        path = self.folder / name
        path.write_bytes(b"x" * 10)
        self.stats[name] = _fake_stat(**times)
        return path

    def state(self, name: str) -> State | None:
        row = self.ledger.by_path(self.folder / name)
        return row.state if row else None


@pytest.fixture
def setup(tmp_path: Path):
    s = _Setup(tmp_path)
    yield s
    s.ledger.close()


def test_arrival_is_the_later_of_mtime_and_ctime_on_posix_and_of_mtime_and_creation_on_windows():
    moved_in = _fake_stat(mtime=100.0, ctime=500.0, birthtime=50.0)
    assert arrival_time(moved_in, windows=False) == 500.0  # POSIX ctime: the rename into the folder
    assert arrival_time(moved_in, windows=True) == 100.0  # Windows 3.12+: st_birthtime is the creation
    assert arrival_time(_fake_stat(mtime=100.0, ctime=300.0), windows=True) == 300.0  # < 3.12: st_ctime


def test_a_first_seen_folder_is_baselined_from_a_listing_and_only_later_arrivals_are_new(setup: _Setup):
    nai = nai_writer.write_nai_png(setup.folder / "old-nai.png", (16, 16))
    setup.stats["old-nai.png"] = _fake_stat(size=nai.stat().st_size, mtime=T - 86400, ctime=T - 86400)
    setup.file("old-junk.png", mtime=T - 100, ctime=T - 100)  # not even an image: never opened
    fresh = setup.file("fresh.png", mtime=T - 1, ctime=T - 1)  # arrived after the watcher began
    setup.file("half.png.part", mtime=T - 100, ctime=T - 100)  # never a candidate
    scanner = setup.scanner()

    assert scanner.scan((setup.folder,), recursive=False, watching_since=T - 5) == 1
    assert setup.state("old-nai.png") is State.EXISTING and setup.state("old-junk.png") is State.EXISTING
    row = setup.ledger.by_path(setup.folder / "old-nai.png")
    assert (row.size, row.mtime_ns, row.hash) == (nai.stat().st_size, int((T - 86400) * 1e9), None)
    assert setup.state("fresh.png") is None and setup.stabiliser.is_pending(setup.folder / "fresh.png")
    assert setup.state("half.png.part") is None
    # The mark stays before the file still being decided, so a stop now would not lose it.
    assert setup.ledger.folder_last_ran(setup.folder) == (True, arrival_time(os.stat(fresh)))

    # The next scan knows the folder: the existing rows are decided, nothing is hinted again.
    setup.now = T + 60
    assert scanner.scan((setup.folder,), recursive=False) == 0
    assert setup.ledger.counts() == {"existing": 2}


def test_a_file_the_watcher_reported_during_the_baseline_is_not_recorded_as_existing(setup: _Setup):
    path = setup.file("racing.png", mtime=T - 100, ctime=T - 100)  # old times, but hinted meanwhile
    setup.stabiliser.hint(path)
    assert setup.scanner().scan((setup.folder,), recursive=False, watching_since=T - 5) == 0
    assert setup.state("racing.png") is None and setup.stabiliser.is_pending(path)


@pytest.mark.parametrize("windows", [False, True])
def test_catch_up_in_a_known_folder_judges_unknown_files_by_arrival_against_the_last_run(
    setup: _Setup, windows: bool
):
    scanner = setup.scanner(windows=windows)
    assert scanner.scan((setup.folder,), recursive=False) == 0  # baseline of the empty folder at T
    assert setup.ledger.folder_last_ran(setup.folder) == (True, T - CLOCK_SLACK)

    # Stopped, a day passes. Arrivals meanwhile, each with the times its OS gives it:
    old = T - 30 * 86400
    setup.file("downloaded.png", mtime=T + 3600, ctime=T + 3600, birthtime=T + 3600)
    setup.file("copied.png", mtime=old, ctime=T + 3600, birthtime=T + 3600)  # a copy keeps only mtime
    # A rename within a volume: POSIX sets ctime to now, Windows keeps creation and mtime.
    setup.file("moved.png", mtime=old, ctime=T + 3600 if not windows else old, birthtime=old)
    setup.file("stale.png", mtime=old, ctime=old, birthtime=old)  # no row, yet older than the last run
    setup.now = T + 86400
    scanner.scan((setup.folder,), recursive=False)

    pending = {n for n in setup.stats if setup.stabiliser.is_pending(setup.folder / n)}
    expected_new = {"downloaded.png", "copied.png"} | (set() if windows else {"moved.png"})
    assert pending == expected_new
    assert {n for n in setup.stats if setup.state(n) is State.EXISTING} == set(setup.stats) - expected_new


def test_a_legacy_ledger_folder_catches_up_on_every_unknown_file(tmp_path: Path):
    folder = tmp_path / "watch"
    folder.mkdir()
    # the schema before baselines: items only
    write_original_ledger(tmp_path / "ledger.sqlite3", [{"path": str(folder / "a.png"), "state": "done"}])
    s = _Setup(tmp_path)
    try:
        assert s.ledger.folder_last_ran(folder) == (True, None)
        assert s.ledger.folder_last_ran(tmp_path / "wat") == (False, None)  # a sibling sharing a prefix
        s.file("old.png", mtime=T - 86400, ctime=T - 86400)
        assert s.scanner().scan((folder,), recursive=False) == 1  # today's catch-up: processed
        assert s.ledger.folder_last_ran(folder)[1] is not None  # marked from now on
    finally:
        s.ledger.close()


def test_process_existing_hints_the_old_files_and_those_already_recorded(tmp_path: Path):
    s = _Setup(tmp_path)
    try:
        s.file("a.png", mtime=T - 86400, ctime=T - 86400)
        s.scanner().scan((s.folder,), recursive=False)
        assert s.state("a.png") is State.EXISTING
        s.file("b.png", mtime=T - 86400, ctime=T - 86400)
        s.config = Config(watch=WatchConfig(folders=(s.folder,), process_existing=True))
        assert s.scanner().scan((s.folder,), recursive=False) == 2
        assert s.stabiliser.is_pending(s.folder / "a.png") and s.stabiliser.is_pending(s.folder / "b.png")
    finally:
        s.ledger.close()


def test_existing_rows_of_files_that_left_the_folder_are_forgotten(setup: _Setup):
    gone = setup.file("gone.png", mtime=T - 100, ctime=T - 100)
    setup.file("kept.png", mtime=T - 100, ctime=T - 100)
    scanner = setup.scanner()
    scanner.scan((setup.folder,), recursive=False)
    gone.unlink()
    scanner.scan((setup.folder,), recursive=False)
    assert setup.state("gone.png") is None and setup.state("kept.png") is State.EXISTING


def test_backfill_selects_existing_rows_in_range_under_watched_folders(tmp_path: Path):
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    watch, sub, elsewhere = tmp_path / "w", tmp_path / "w" / "sub", tmp_path / "elsewhere"
    files = [
        (watch / "old.png", 10, int((T - 86400) * 1e9)),
        (watch / "new.png", 10, int((T - 60) * 1e9)),
        (sub / "new-sub.png", 10, int((T - 30) * 1e9)),
        (elsewhere / "new-unwatched.png", 10, int((T - 60) * 1e9)),
    ]
    assert ledger.record_existing(files) == 4
    assert ledger.record_existing(files[:1]) == 0  # a known path keeps its row
    done = ledger.upsert(watch / "done.png", State.QUEUED)
    items = [*ledger.items((State.EXISTING,), limit=-1), done]
    names = lambda chosen: [Path(i.path).name for i in chosen]  # noqa: E731
    assert names(select_backfill(items, (watch,))) == ["old.png", "new.png", "new-sub.png"]
    assert names(select_backfill(items, (watch,), since=T - 3600)) == ["new.png", "new-sub.png"]
    assert names(select_backfill(items, (watch,), folder=sub)) == ["new-sub.png"]
    assert ledger.reconsider([i.id for i in select_backfill(items, (watch,), since=T - 3600)]) == 2
    assert ledger.counts() == {"existing": 2, "seen": 2, "queued": 1}
    ledger.close()


def test_with_only_novelai_the_older_images_counted_and_offered_are_the_novelai_ones(tmp_path: Path):
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    watch = tmp_path / "w"
    watch.mkdir()
    nai = nai_writer.write_nai_png(watch / "nai.png", (16, 16))
    photo = watch / "photo.jpg"
    Image.new("RGB", (16, 16), "red").save(photo)  # no generation metadata: the stabiliser skips it
    notes = watch / "notes.png"
    notes.write_text("not an image at all")
    changed = nai_writer.write_nai_png(watch / "changed.png", (16, 16), seed=3)
    listed = [(p, p.stat().st_size, p.stat().st_mtime_ns) for p in (nai, photo, notes, changed)]
    ledger.record_existing(listed)
    changed.write_bytes(b"rewritten since the listing: a new arrival, the rescan's to hint")
    count = BackfillCount(ledger)
    names = lambda chosen: sorted(Path(i.path).name for i in chosen)  # noqa: E731
    everything = ["changed.png", "nai.png", "notes.png", "photo.jpg"]
    assert count((watch,), only_novelai=True) == 4  # not read yet: each may be one
    assert sort_some(ledger) == 4 and sort_some(ledger) == 0  # each file is read once
    assert count((watch,), only_novelai=True) == 1
    assert names(backfill_candidates(ledger, (watch,), only_novelai=True)) == ["nai.png"]
    # With only_novelai off, a backfill processes every image again: all are offered.
    assert count((watch,)) == 4 and names(backfill_candidates(ledger, (watch,))) == everything
    ledger.close()


def test_a_baseline_of_20000_placeholders_records_them_all_from_the_listing(setup: _Setup):
    """The scale of a real Downloads folder: every file empty, so a decode of any of them would fail;
    all are recorded as existing. bench/baseline_bench.py times the same on a real folder."""
    for i in range(20_000):
        (setup.folder / f"image_{i:05}.png").touch()
    assert len(list_images(setup.folder, recursive=False)) == 20_000
    scanner = Scanner(setup.ledger, lambda: setup.config, setup.stabiliser)
    assert scanner.scan((setup.folder,), recursive=False) == 0
    assert setup.ledger.counts() == {"existing": 20_000} and setup.stabiliser.pending() == 0
    assert scanner.scan((setup.folder,), recursive=False) == 0  # and a rescan leaves them be


def test_an_old_image_renamed_in_the_folder_stays_existing(tmp_path: Path):
    s = _Setup(tmp_path, quiet_seconds=0.05)
    try:
        old = nai_writer.write_nai_png(s.folder / "old.png", (16, 16))
        s.scanner().scan((s.folder,), recursive=False, watching_since=time.time() + 3600)
        row = s.ledger.by_path(old)
        assert row.state is State.EXISTING
        renamed = old.rename(s.folder / "renamed.png")
        s.stabiliser.start()
        s.stabiliser.moved(old, renamed)  # what the watcher reports for the rename
        wait_for(lambda: s.stabiliser.pending() == 0, 10, "the renamed file to be looked at")
        assert s.ledger.by_path(old) is None
        assert (s.ledger.by_path(renamed).id, s.state("renamed.png")) == (row.id, State.EXISTING)
    finally:
        s.stabiliser.stop()
        s.ledger.close()


def test_the_existing_count_follows_the_ledger_and_the_watched_folders(tmp_path: Path):
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    watched, dropped = tmp_path / "watched", tmp_path / "dropped"
    ledger.record_existing([(watched / "a.png", 1, 1), (dropped / "b.png", 1, 1)])
    count = BackfillCount(ledger)
    assert count([watched]) == 1 == len(backfill_candidates(ledger, [watched]))
    assert count([watched, dropped]) == 2
    ledger.record_existing([(watched / "c.png", 1, 1)])  # a new row: the cached count is stale
    assert count([watched]) == 2
    ledger.close()
