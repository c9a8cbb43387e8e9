"""The ledger: one SQLite (WAL) row per input path, the daemon's source of truth.

States: seen -> waiting (stabilising) -> queued -> processing -> done | failed | skipped.
Done is keyed by (content hash, preset, model): such a row with its output still present is never redone.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from naiup.errors import FatalError


class State(StrEnum):
    SEEN = "seen"
    WAITING = "waiting"
    QUEUED = "queued"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


# The reason recorded for the service's own outputs met in a watch folder: skipped by design, so
# `queue --failed` leaves them out and status counts them apart.
OWN_OUTPUT = "a naiup output"

_SCHEMA = """
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


@dataclass(frozen=True, slots=True)
class Item:
    id: int
    path: str
    size: int | None
    mtime_ns: int | None
    hash: str | None
    preset: str | None
    model: str | None
    state: State
    attempts: int
    error: str | None
    output: str | None
    created: float | None
    queued_at: float | None
    started: float | None
    finished: float | None

    def as_reply(self) -> dict:
        return {
            "id": self.id,
            "path": self.path,
            "state": str(self.state),
            "attempts": self.attempts,
            "error": self.error,
            "output": self.output,
            "preset": self.preset,
        }


_COLUMNS = ", ".join(Item.__slots__)  # type: ignore[attr-defined]


class Ledger:
    """Thread-safe: one connection, every call under one lock (the daemon's threads share it)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:  # a damaged file: say which, instead of a traceback at every start
            self._db.close()
            raise FatalError(
                f"cannot open the ledger {path}: {exc} (move it aside to start with an empty ledger;"
                " finished outputs are still recognised by their provenance)"
            ) from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _rows(self, sql: str, args: tuple = ()) -> list[Item]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM items {sql}", args).fetchall()
        return [Item(*r[:7], State(r[7]), *r[8:]) for r in rows]

    def _exec(self, sql: str, args: tuple = ()) -> int:
        with self._lock:
            return self._db.execute(sql, args).rowcount

    def get(self, item_id: int) -> Item | None:
        rows = self._rows("WHERE id = ?", (item_id,))
        return rows[0] if rows else None

    def by_path(self, path: Path) -> Item | None:
        rows = self._rows("WHERE path = ?", (str(path),))
        return rows[0] if rows else None

    def upsert(
        self,
        path: Path,
        state: State,
        *,
        size: int | None = None,
        mtime_ns: int | None = None,
        hash: str | None = None,
        error: str | None = None,
    ) -> Item:
        """Record what the stabiliser decided for a path (a new file, or a changed one: fresh row data)."""
        now = time.time()
        queued_at = now if state is State.QUEUED else None
        with self._lock:
            self._db.execute(
                "INSERT INTO items (path, size, mtime_ns, hash, state, error, created, queued_at, attempts)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0) ON CONFLICT(path) DO UPDATE SET size=excluded.size,"
                " mtime_ns=excluded.mtime_ns, hash=excluded.hash, state=excluded.state, error=excluded.error,"
                " queued_at=excluded.queued_at, attempts=0, output=NULL, started=NULL, finished=NULL",
                (str(path), size, mtime_ns, hash, str(state), error, now, queued_at),
            )
        item = self.by_path(path)
        assert item is not None
        return item

    def done_twin(self, hash: str, preset: str, model: str) -> Item | None:
        """A done row with this content, preset and model whose output still exists."""
        for item in self._rows(
            "WHERE hash = ? AND preset = ? AND model = ? AND state = ?",
            (hash, preset, model, str(State.DONE)),
        ):
            if item.output and Path(item.output).exists():
                return item
        return None

    def next_queued(self) -> Item | None:
        rows = self._rows("WHERE state = ? ORDER BY queued_at, id LIMIT 1", (str(State.QUEUED),))
        return rows[0] if rows else None

    def start(self, item_id: int, preset: str, model: str) -> None:
        # Count the attempt before running: a kill -9 mid-job must still count toward the poison limit.
        self._exec(
            "UPDATE items SET state=?, preset=?, model=?, attempts=attempts+1, started=? WHERE id=?",
            (str(State.PROCESSING), preset, model, time.time(), item_id),
        )

    def finish(self, item_id: int, output: str, model: str | None = None) -> None:
        """Done; `model` (the engine's id of what made the output) replaces the one given at start."""
        self._exec(
            "UPDATE items SET state=?, output=?, error=NULL, finished=?, model=COALESCE(?, model) WHERE id=?",
            (str(State.DONE), output, time.time(), model, item_id),
        )

    def skip(self, item_id: int, reason: str) -> None:
        self._exec(
            "UPDATE items SET state=?, error=?, finished=? WHERE id=?",
            (str(State.SKIPPED), reason, time.time(), item_id),
        )

    def fail(self, item_id: int, error: str) -> None:
        self._exec(
            "UPDATE items SET state=?, error=?, finished=? WHERE id=?",
            (str(State.FAILED), error, time.time(), item_id),
        )

    def requeue(self, item_id: int, error: str | None, *, uncount: bool = False) -> None:
        """Back to the queue (keeps its place); uncount=True when we abandoned it, not it failing."""
        self._exec(
            "UPDATE items SET state=?, error=?, attempts=attempts-? WHERE id=?",
            (str(State.QUEUED), error, 1 if uncount else 0, item_id),
        )

    def recover(self, max_attempts: int) -> int:
        """At start: rows left `processing` by a crash go back to the queue, or fail when poisoned."""
        with self._lock:
            self._db.execute(
                "UPDATE items SET state=?, error=? WHERE state=? AND attempts>=?",
                (
                    str(State.FAILED),
                    f"failed {max_attempts} times (worker died mid-job)",
                    str(State.PROCESSING),
                    max_attempts,
                ),
            )
            return self._db.execute(
                "UPDATE items SET state=? WHERE state=?", (str(State.QUEUED), str(State.PROCESSING))
            ).rowcount

    def retry(self, item_id: int | None) -> int:
        """failed -> queued with attempts reset; None = all failed rows."""
        where, args = (
            ("state=?", (str(State.FAILED),))
            if item_id is None
            else ("state=? AND id=?", (str(State.FAILED), item_id))
        )
        return self._exec(
            f"UPDATE items SET state=?, attempts=0, error=NULL, queued_at=? WHERE {where}",
            (str(State.QUEUED), time.time(), *args),
        )

    def items(
        self, states: tuple[State, ...], limit: int = 1000, except_error: str | None = None
    ) -> list[Item]:
        marks = ",".join("?" * len(states))
        where = f"state IN ({marks})" + ("" if except_error is None else " AND error IS NOT ?")
        args = (*map(str, states), *(() if except_error is None else (except_error,)), limit)
        return self._rows(f"WHERE {where} ORDER BY id LIMIT ?", args)

    def counts(self) -> dict[str, int]:
        """Rows per state; our own outputs (skipped by design) under "naiup_output", not "skipped"."""
        with self._lock:
            rows = self._db.execute(
                "SELECT CASE WHEN state = ? AND error = ? THEN 'naiup_output' ELSE state END AS k, COUNT(*)"
                " FROM items GROUP BY k",
                (str(State.SKIPPED), OWN_OUTPUT),
            ).fetchall()
        return {state: n for state, n in rows}
