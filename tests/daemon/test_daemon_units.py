"""Pieces of the daemon in-process: path filters, ledger rules, runtime state, watcher, rescan."""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import nai_writer
import pytest
from daemon_harness import wait_for

from naiup.config import Config, Preset, WatchConfig
from naiup.daemon.catchup import Scanner
from naiup.daemon.ledger import Ledger, State
from naiup.daemon.scheduler import remove_job_temps
from naiup.daemon.stabiliser import Stabiliser, has_partial_sibling, is_candidate
from naiup.daemon.watcher import Watcher
from naiup.errors import FatalError
from naiup.output.atomic import TEMP_SUFFIX, temp_prefix
from naiup.runtime_state import RuntimeState, load_state, save_state


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cat.png", True),
        ("Cat.PNG", True),
        ("cat.webp", True),
        ("cat.jpeg", True),
        ("cat.png.crdownload", False),
        ("Unconfirmed 123.crdownload", False),
        ("cat.png.part", False),
        ("cat.png.download", False),
        ("cat.png.aria2", False),
        (".cat.naiup-upscale-2x.png.naiup-tmp", False),
        (".com.google.Chrome.abc123", False),
        ("Thumbs.db", False),
        (".DS_Store", False),
        ("notes.txt", False),
        ("safari.png.download/safari.png", False),
    ],
)
def test_only_finished_image_names_are_candidates(tmp_path: Path, name: str, expected: bool):
    # absolute paths on purpose: watchdog 7's `*.png` pattern matches none of them (#1101)
    assert is_candidate(tmp_path / name) is expected


def test_a_partial_sibling_means_still_downloading(tmp_path: Path):
    final = tmp_path / "x.png"
    final.touch()
    assert not has_partial_sibling(final)
    (tmp_path / "x.png.part").touch()
    assert has_partial_sibling(final)


def test_ledger_recovery_requeues_interrupted_jobs_and_fails_poisoned_ones(tmp_path: Path):
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    a = ledger.upsert(tmp_path / "a.png", State.QUEUED, size=1, mtime_ns=1, hash="h1")
    b = ledger.upsert(tmp_path / "b.png", State.QUEUED, size=1, mtime_ns=1, hash="h2")
    for _ in range(3):
        ledger.start(b.id, "p", "m")
    ledger.start(a.id, "p", "m")
    requeued, failed = ledger.recover(max_attempts=3)
    assert requeued == 1 and [(i.id, i.state) for i in failed] == [(b.id, State.FAILED)]
    assert ledger.get(a.id).state is State.QUEUED and ledger.get(a.id).attempts == 1
    assert ledger.get(b.id).state is State.FAILED and "3 times" in ledger.get(b.id).error
    assert ledger.retry(None) == 1 and ledger.get(b.id).attempts == 0
    ledger.close()


def test_a_damaged_ledger_is_a_clear_error_naming_the_file(tmp_path: Path):
    path = tmp_path / "ledger.sqlite3"
    path.write_bytes(b"not a database, just junk " * 200)
    with pytest.raises(FatalError, match="ledger") as info:
        Ledger(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("src_name", "template", "output_name"),
    [
        ("a[1].png", "{stem}.naiup-{preset}.png", "a[1].naiup-up.png"),
        ("a.png", "refined-{stem}.png", "refined-a.png"),
        ("長" * 83 + ".png", "{stem}.naiup-{preset}.png", "長" * 80 + ".naiup-up.png"),  # shortened
    ],
)
def test_a_killed_jobs_temp_is_found_whatever_the_name(
    tmp_path: Path, src_name: str, template: str, output_name: str
):
    # The temp is named after the first output name (naiup.output.atomic), not after the source's stem.
    src = tmp_path / src_name
    src.write_bytes(b"x")
    temp = tmp_path / f"{temp_prefix(tmp_path / output_name)}0a1b2c3d{TEMP_SUFFIX}"
    temp.write_bytes(b"half")
    other = tmp_path / f"{temp_prefix(tmp_path / 'ab.naiup-up.png')}0a1b2c3d{TEMP_SUFFIX}"  # another's
    other.write_bytes(b"half")
    remove_job_temps(src, Preset(name="up", refine=False), template)
    assert not temp.exists() and other.exists()


def test_done_counts_only_while_its_output_exists(tmp_path: Path):
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    item = ledger.upsert(tmp_path / "a.png", State.QUEUED, hash="h")
    ledger.start(item.id, "refine-2x", "m1")
    out = tmp_path / "a.out.png"
    out.touch()
    ledger.finish(item.id, str(out))
    assert ledger.done_twin("h", "refine-2x", "m1").id == item.id
    assert ledger.done_twin("h", "refine-4x", "m1") is None  # another preset is another job
    assert ledger.done_twin("h", "refine-2x", "m2") is None  # and so is another model
    out.unlink()
    assert ledger.done_twin("h", "refine-2x", "m1") is None
    ledger.close()


def test_runtime_state_round_trips_and_a_damaged_file_means_defaults(tmp_path: Path):
    path = tmp_path / "runtime.json"
    state = RuntimeState(active_preset="refine-4x", paused=True, pause_reason="on battery")
    save_state(path, state)
    assert load_state(path) == state and list(tmp_path.iterdir()) == [path]
    path.write_text("{not json")
    assert load_state(path) == RuntimeState()


@pytest.mark.parametrize(
    "text",
    [
        "null",
        "[1, 2]",
        '{"paused": true, "paused_until": "soon"}',
        '{"active_preset": 4}',
        '{"paused": "no"}',
    ],
)
def test_runtime_state_of_the_wrong_shape_means_defaults(tmp_path: Path, text: str):
    # Valid JSON, wrong shape (a hand edit): the daemon loop compared paused_until with time.time()
    # and died at every start; a non-object crashed load_state itself.
    path = tmp_path / "runtime.json"
    path.write_text(text)
    assert load_state(path) == RuntimeState()


def test_a_raising_hint_does_not_kill_the_watcher(tmp_path: Path):
    seen: queue.Queue[Path] = queue.Queue()

    def hint(path: Path) -> None:
        if path.name == "boom.png":
            raise RuntimeError("a bug in a hint")
        seen.put(path)

    watcher = Watcher((tmp_path,), False, hint, lambda: None)
    watcher.start()
    try:
        (tmp_path / "boom.png").write_bytes(b"x")
        (tmp_path / "after.png").write_bytes(b"x")
        assert seen.get(timeout=10).name == "after.png"
        assert watcher.healthy()
    finally:
        watcher.stop()


def test_rescan_finds_files_the_watcher_never_reported(tmp_path: Path):
    """inotify overflow drops events silently: the reconciling scan must queue such files."""
    folder = tmp_path / "watch"
    folder.mkdir()
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    config = Config(watch=WatchConfig(folders=(folder,), quiet_seconds=0.05))
    queued = threading.Event()
    stabiliser = Stabiliser(ledger, lambda: config, queued.set)
    scanner = Scanner(ledger, lambda: config, stabiliser)
    stabiliser.start()
    try:
        assert scanner.scan((folder,), recursive=False) == 0  # the first-start baseline: an empty folder
        nai_writer.write_nai_png(folder / "missed.png", (16, 16))
        (folder / "other.png.crdownload").touch()  # a partial is never hinted by a scan
        assert scanner.scan((folder,), recursive=False) == 1
        assert queued.wait(10)
        row = ledger.by_path(folder / "missed.png")
        assert row.state is State.QUEUED and row.hash
        wait_for(lambda: stabiliser.pending() == 0, 10, "the stabiliser to settle")
        assert scanner.scan((folder,), recursive=False) == 0  # known as-is: not checked again
    finally:
        stabiliser.stop()
        ledger.close()


def test_a_missing_watch_folder_is_reported_not_fatal(tmp_path: Path):
    watcher = Watcher((tmp_path / "gone", tmp_path), False, lambda p: None, lambda: None)
    watcher.start()
    try:
        assert watcher.missing == [str(tmp_path / "gone")] and not watcher.healthy()
        (tmp_path / "gone").mkdir()
        watcher.restart()
        assert watcher.missing == [] and watcher.healthy()
    finally:
        watcher.stop()


def test_an_inotify_overflow_triggers_a_rescan(tmp_path: Path):
    """watchdog only logs an overflow; the hook turns its warning into a rescan request."""
    import logging

    rescans = threading.Event()
    watcher = Watcher((tmp_path,), False, lambda p: None, rescans.set)
    watcher.start()
    try:
        logging.getLogger("watchdog.observers.inotify_c").warning(
            "Inotify queue overflowed; events were lost"
        )
        assert rescans.is_set() and watcher.overflows == 1
    finally:
        watcher.stop()
    rescans.clear()
    logging.getLogger("watchdog.observers.inotify_c").warning("Inotify queue overflowed; events were lost")
    assert not rescans.is_set()  # the hook leaves with the watcher


def test_only_stale_publish_temps_are_removed_so_a_concurrent_refine_keeps_its_own(tmp_path: Path):
    import os
    import time

    from naiup.daemon.daemon import STALE_TEMP_SECONDS, remove_stale_temps
    from naiup.output.atomic import TEMP_SUFFIX

    sub = tmp_path / "sub"
    sub.mkdir()
    old, nested = tmp_path / f".a.png.1{TEMP_SUFFIX}", sub / f".a.png.1{TEMP_SUFFIX}"
    fresh = tmp_path / f".b.png.2{TEMP_SUFFIX}"
    user = tmp_path / f"notes{TEMP_SUFFIX}"  # not hidden: not one of ours
    for p in (old, fresh, nested, user):
        p.write_bytes(b"x")
    long_ago = time.time() - STALE_TEMP_SECONDS - 5
    for p in (old, nested, user):
        os.utime(p, (long_ago, long_ago))

    remove_stale_temps((tmp_path,))
    assert not old.exists() and fresh.exists() and nested.exists() and user.exists()
    remove_stale_temps((tmp_path,), recursive=True)
    assert not nested.exists() and fresh.exists()
    remove_stale_temps((tmp_path,), now=time.time() + STALE_TEMP_SECONDS + 5)
    assert not fresh.exists() and user.exists()


def test_a_stable_file_that_is_no_image_fails_at_once_and_a_cut_image_keeps_waiting(tmp_path: Path):
    # give_up_seconds is the default 600: only a prompt verdict lets this test end within its waits.
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    config = Config(watch=WatchConfig(folders=(tmp_path,), quiet_seconds=0.05))
    failed: list[str] = []
    stabiliser = Stabiliser(ledger, lambda: config, lambda: None, lambda item, error: failed.append(error))
    text = tmp_path / "notes.png"
    text.write_text("a text file someone named .png, long enough to hold any image signature")
    png = nai_writer.write_nai_png(tmp_path / "made.png", (64, 64)).read_bytes()
    cut = tmp_path / "cut.png"  # half an image: a download stalled mid-way looks just like it
    cut.write_bytes(png[: len(png) // 2])
    start = tmp_path / "start.png"  # fewer bytes than a signature: may be the start of anything
    start.write_bytes(png[:6])
    stabiliser.start()
    try:
        for path in (text, cut, start):
            stabiliser.hint(path)
        wait_for(lambda: (r := ledger.by_path(text)) and r.state is State.FAILED, 10, "the text file to fail")
        assert ledger.by_path(text).error == "not an image (unrecognised file format)"
        assert failed == ["not an image (unrecognised file format)"]  # status's last error hears it
        for path in (cut, start):
            row = wait_for(lambda p=path: ledger.by_path(p), 10, f"{path.name} to be checked")
            assert row.state is State.WAITING, row
    finally:
        stabiliser.stop()
        ledger.close()
