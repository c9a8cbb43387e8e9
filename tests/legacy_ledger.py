"""A ledger file as the first release wrote it: paths as TEXT, no `folders` table, user_version 0.

The schema text is copied verbatim from that release's naiup/daemon/ledger.py, so a test can open such a
file with today's code and see that its rows, paths and folder knowledge survive.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

ORIGINAL_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    path TEXT NOT NULL UNIQUE,
    size INTEGER, mtime_ns INTEGER, hash TEXT,
    preset TEXT, model TEXT,
    state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    error TEXT, output TEXT,
    created REAL, queued_at REAL, started REAL, finished REAL
);
CREATE INDEX IF NOT EXISTS items_state ON items(state, queued_at, id);
CREATE INDEX IF NOT EXISTS items_done ON items(hash, preset, model);
"""


def write_original_ledger(path: Path, rows: list[dict]) -> None:
    """`rows`: column -> value for `items` (path and output as str, as that release stored them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    try:
        db.executescript(ORIGINAL_SCHEMA)
        db.execute("PRAGMA journal_mode=WAL")  # as the daemon ran it: readers see a WAL-mode file
        for row in rows:
            columns = ", ".join(row)
            marks = ", ".join("?" * len(row))
            db.execute(f"INSERT INTO items ({columns}) VALUES ({marks})", tuple(row.values()))
        db.commit()
    finally:
        db.close()
