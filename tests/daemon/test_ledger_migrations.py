"""A ledger from the first release opens with today's code: rows, paths and folder knowledge survive.

Two changes met there: paths became bytes (migration 1, for names that are not UTF-8) and the
`folders` table with its "last ran" marks arrived (migration 2, for the first-run baseline).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from legacy_ledger import write_original_ledger

from naiup.daemon.ledger import _MIGRATIONS, Ledger, State


def test_a_ledger_from_the_first_release_keeps_its_rows_paths_and_folders(tmp_path: Path):
    watch, deep, sibling = (
        tmp_path / "日本 dl",
        tmp_path / "日本 dl" / "sub" / "deeper",
        tmp_path / "日本 dl2",
    )
    done_src, done_out = watch / "a 50%_.png", watch / "a 50%_.naiup-refine-2x.png"
    failed = deep / "broken.png"
    path = tmp_path / "state" / "ledger.sqlite3"
    write_original_ledger(
        path,
        [
            {"path": str(done_src), "state": "done", "hash": "h1", "preset": "refine-2x", "model": "m",
             "size": 10, "mtime_ns": 5, "attempts": 1, "output": str(done_out), "finished": 100.0},
            {"path": str(failed), "state": "failed", "error": "incomplete: file is empty", "attempts": 3},
            {"path": str(sibling / "x.png"), "state": "queued", "queued_at": 50.0, "hash": "h2"},
        ],
    )  # fmt: skip
    done_out.parent.mkdir(parents=True)
    done_out.write_bytes(b"out")  # a done twin counts only while its output exists

    ledger = Ledger(path)
    try:
        row = ledger.by_path(done_src)
        assert (row.state, row.output, row.hash, row.size, row.mtime_ns) == (
            State.DONE,
            str(done_out),
            "h1",
            10,
            5,
        )
        assert ledger.by_output(done_out).id == row.id
        assert ledger.done_twin("h1", "refine-2x", "m").id == row.id  # still never redone
        assert ledger.by_path(failed).error == "incomplete: file is empty"
        assert ledger.next_queued().path == str(sibling / "x.png")
        assert ledger.by_paths([done_src, failed]).keys() == {str(done_src), str(failed)}
        # Folder knowledge: rows at any depth make a folder known (with no mark yet); a folder whose
        # name only starts with the same characters is not, nor is one the ledger never saw.
        assert ledger.folder_last_ran(watch) == (True, None)
        assert ledger.folder_last_ran(deep.parent) == (True, None)
        assert ledger.folder_last_ran(sibling) == (True, None)
        assert ledger.folder_last_ran(tmp_path / "日本") == (False, None)
        assert ledger.folder_last_ran(tmp_path / "elsewhere") == (False, None)
        ledger.set_folder_last_ran(watch, 1234.5)
        assert ledger.counts() == {"done": 1, "failed": 1, "queued": 1}
    finally:
        ledger.close()

    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(_MIGRATIONS)
        assert {t for (t,) in db.execute("SELECT DISTINCT typeof(path) FROM items")} == {"blob"}
        assert db.execute("SELECT typeof(path), last_ran FROM folders").fetchall() == [("blob", 1234.5)]
    finally:
        db.close()
    again = Ledger(path)  # reopening runs no migration twice and keeps the mark
    try:
        assert again.folder_last_ran(watch) == (True, 1234.5)
        assert again.by_path(done_src).id == row.id
    finally:
        again.close()


def test_folder_knowledge_of_names_that_are_not_utf8_is_exact(tmp_path: Path):
    folder = Path(os.fsdecode(bytes(tmp_path) + b"/dl\xfe"))
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    try:
        ledger.record_existing([(folder / "a.png", 1, 1)])
        assert ledger.folder_last_ran(folder) == (True, None)
        # "dl\xfe" + "/" < "dl\xfe" + "0": the byte range holds neither these siblings nor the parent
        assert ledger.folder_last_ran(Path(os.fsdecode(bytes(tmp_path) + b"/dl"))) == (False, None)
        assert ledger.folder_last_ran(Path(os.fsdecode(bytes(tmp_path) + b"/dl\xfe0"))) == (False, None)
        assert ledger.existing_paths() == [(1, str(folder / "a.png"))]
        ledger.set_folder_last_ran(folder, 7.0)
        assert ledger.folder_last_ran(folder) == (True, 7.0)
    finally:
        ledger.close()
