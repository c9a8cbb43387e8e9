"""The ledger: one SQLite (WAL) row per input path, the daemon's source of truth.

States: seen -> waiting (stabilising) -> queued -> processing -> done | failed | skipped.
Done is keyed by (content hash, preset, model): such a row with its output still present is never redone.
`existing`: already in a folder the first time naiup watched it; recorded from a listing (size and
mtime, no decode, no hash) and left alone until a backfill sends it through the stabiliser's checks.
Its `novelai` column (migration 3) is what the sorter found reading it: 1 a NovelAI image, 0 anything
else (another generator's image, or no image at all), NULL not read yet (see sorter.py).

Paths (`path`, `output`, `folders.path`) are stored as the file system's bytes (BLOB), never as text: a
name that is not valid UTF-8 is an ordinary file to us, and SQLite refuses a str carrying surrogate
escapes. Error texts are display text (naiup.pathnames.plain_text). The schema evolves by numbered
migrations (PRAGMA user_version), each applied once, in order.

The `folders` table (migration 2) keeps, per watched folder, the moment up to which every arrival is in
`items` ("last ran"): catch-up at the next start judges unknown files against it. A folder of an older
ledger that has rows but no `folders` row counts as known with no time (catch-up as before: every
unknown file is new).
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from naiup import paths
from naiup.errors import FatalError
from naiup.pathnames import path_from_key, path_key, plain_text


class State(StrEnum):
    SEEN = "seen"
    WAITING = "waiting"
    QUEUED = "queued"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"
    EXISTING = "existing"


# The reason recorded for the service's own outputs met in a watch folder: skipped by design, so
# `queue --failed` leaves them out and status counts them apart.
OWN_OUTPUT = "a naiup output"
# The start of the error of a file skipped by [watch] only_novelai; with it off such a file is one to
# process again (release_not_novelai, and `naiup retry ID`).
NOT_NOVELAI = "not a NovelAI image"

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

# SQLite's default IN-list limit is 999 variables on older builds; stay well under it.
_CHUNK = 500


def _paths_as_bytes(db: sqlite3.Connection) -> None:
    # Rows written as TEXT (UTF-8) become the same bytes as BLOB; `path TEXT` keeps its declared type
    # (a table rebuild buys nothing: TEXT affinity stores a BLOB as it is).
    db.execute("UPDATE items SET path = CAST(path AS BLOB) WHERE typeof(path) = 'text'")
    db.execute("UPDATE items SET output = CAST(output AS BLOB) WHERE typeof(output) = 'text'")


def _folders_table(db: sqlite3.Connection) -> None:
    db.execute("CREATE TABLE IF NOT EXISTS folders (path BLOB PRIMARY KEY, last_ran REAL)")
    # A development build made this table with TEXT keys before migrations existed: same bytes as BLOB.
    db.execute("UPDATE folders SET path = CAST(path AS BLOB) WHERE typeof(path) = 'text'")


def _novelai_column(db: sqlite3.Connection) -> None:
    db.execute("ALTER TABLE items ADD COLUMN novelai INTEGER")


# Migration n (1-based) takes a ledger at user_version n-1 to n. Append only; never edit a shipped one.
_MIGRATIONS = (_paths_as_bytes, _folders_table, _novelai_column)


def _migrate(db: sqlite3.Connection) -> None:
    version = db.execute("PRAGMA user_version").fetchone()[0]
    for n, step in enumerate(_MIGRATIONS[version:], start=version + 1):
        db.execute("BEGIN IMMEDIATE")
        try:
            step(db)
            db.execute(f"PRAGMA user_version = {n}")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")


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


def default_path() -> Path:
    """The daemon's ledger file, in the per-user state folder."""
    return paths.state_dir() / "ledger.sqlite3"


class Ledger:
    """Thread-safe: one connection, every call under one lock (the daemon's threads share it)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._text_paths = False  # migrated below: paths are bytes
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes
            self._db.executescript(_SCHEMA)
            _migrate(self._db)
        except sqlite3.Error as exc:  # a damaged file: say which, instead of a traceback at every start
            self._db.close()
            raise FatalError(
                f"cannot open the ledger {path}: {exc} (move it aside to start with an empty ledger;"
                " finished outputs are still recognised by their provenance)"
            ) from exc

    @classmethod
    def open_readonly(cls, path: Path) -> Ledger | None:
        """A reader beside the daemon (compare, gallery, tray): never creates, migrates or writes the file.

        None when there is no ledger yet (the service never ran). WAL lets it read while the daemon writes.
        """
        if not path.is_file():
            return None
        self = cls.__new__(cls)
        self._lock = threading.Lock()
        self._text_paths = False
        try:
            self._db = sqlite3.connect(
                f"{path.absolute().as_uri()}?mode=ro", uri=True, check_same_thread=False, isolation_level=None
            )
        except sqlite3.Error as exc:
            raise FatalError(f"cannot read the ledger {path}: {exc}") from exc
        try:
            self._db.execute("SELECT 1 FROM items LIMIT 1").fetchall()
            # A ledger the daemon has not opened since paths became bytes (migration 1) still holds
            # them as TEXT; a reader must not migrate it, so it asks in that form instead.
            self._text_paths = self._db.execute("PRAGMA user_version").fetchone()[0] < 1
        except sqlite3.Error as exc:
            self._db.close()
            raise FatalError(f"cannot read the ledger {path}: {exc}") from exc
        return self

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _rows(self, sql: str, args: tuple = ()) -> list[Item]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM items {sql}", args).fetchall()
        return [
            Item(r[0], path_from_key(r[1]), *r[2:7], State(r[7]), r[8], r[9], _path_or_none(r[10]), *r[11:])
            for r in rows
        ]

    def _key(self, path: str | os.PathLike[str]) -> bytes | str:
        """What a path is compared with in SQL: its bytes, or its text in an unmigrated ledger."""
        key = path_key(path)
        if self._text_paths:
            try:
                return key.decode("utf-8")
            except UnicodeDecodeError:
                return key  # such a name could never be stored as TEXT: it matches nothing, as it should
        return key

    def _exec(self, sql: str, args: tuple = ()) -> int:
        with self._lock:
            return self._db.execute(sql, args).rowcount

    def get(self, item_id: int) -> Item | None:
        rows = self._rows("WHERE id = ?", (item_id,))
        return rows[0] if rows else None

    def by_path(self, path: Path) -> Item | None:
        rows = self._rows("WHERE path = ?", (self._key(path),))
        return rows[0] if rows else None

    def by_paths(self, paths: list[Path]) -> dict[str, Item]:
        """Rows for many paths, keyed by str(path): a folder scan asks once per chunk, not per file."""
        found: dict[str, Item] = {}
        for i in range(0, len(paths), _CHUNK):
            chunk = [self._key(p) for p in paths[i : i + _CHUNK]]
            marks = ",".join("?" * len(chunk))
            found.update((item.path, item) for item in self._rows(f"WHERE path IN ({marks})", tuple(chunk)))
        return found

    def record_existing(
        self, files: list[tuple[Path, int, int]], state: State = State.EXISTING, error: str | None = None
    ) -> int:
        """(path, size, mtime_ns) of files found by a baseline listing -> `existing`, in one transaction.
        (`state`/`error`: our own outputs found there are recorded as skipped OWN_OUTPUT instead.)

        A path the ledger already has keeps its row (the stabiliser may have decided it meanwhile)."""
        now = time.time()
        rows = [(path_key(p), size, mtime_ns, str(state), error, now) for p, size, mtime_ns in files]
        with self._lock:
            before = self._db.total_changes
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "INSERT OR IGNORE INTO items (path, size, mtime_ns, state, error, created, attempts)"
                    " VALUES (?, ?, ?, ?, ?, ?, 0)",
                    rows,
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return self._db.total_changes - before

    def reconsider(self, item_ids: list[int]) -> int:
        """existing -> seen: checked like new files (a backfill); seen survives a restart."""
        n = 0
        for i in range(0, len(item_ids), _CHUNK):
            chunk = item_ids[i : i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            n += self._exec(
                f"UPDATE items SET state=? WHERE state=? AND id IN ({marks})",
                (str(State.SEEN), str(State.EXISTING), *chunk),
            )
        return n

    def existing_paths(self) -> list[tuple[int, str]]:
        """(id, path) of every `existing` row: a rescan's check for files that left, without full rows."""
        with self._lock:
            rows = self._db.execute("SELECT id, path FROM items WHERE state = ?", (str(State.EXISTING),))
            return [(item_id, path_from_key(key)) for item_id, key in rows.fetchall()]

    def unsorted_existing(self, limit: int) -> list[tuple[int, str, int | None, int | None]]:
        """(id, path, size, mtime_ns) of `existing` rows nobody has read yet (novelai NULL), oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, path, size, mtime_ns FROM items WHERE state = ? AND novelai IS NULL"
                " ORDER BY id LIMIT ?",
                (str(State.EXISTING), limit),
            ).fetchall()
        return [(item_id, path_from_key(key), size, mtime_ns) for item_id, key, size, mtime_ns in rows]

    def set_novelai(self, verdicts: list[tuple[int, int | None, int | None, bool]]) -> None:
        """(id, size, mtime_ns, is NovelAI) of rows read, in one transaction: recorded only while the row
        is still `existing` with that size and mtime (what was read is what the row describes)."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany(
                    "UPDATE items SET novelai = ? WHERE id = ? AND state = ? AND size IS ? AND mtime_ns IS ?",
                    [(int(nai), i, str(State.EXISTING), size, mtime) for i, size, mtime, nai in verdicts],
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def existing_not_novelai(self) -> set[int]:
        """Ids of `existing` rows the sorter read and found no NovelAI image."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM items WHERE state = ? AND novelai = 0", (str(State.EXISTING),)
            ).fetchall()
        return {item_id for (item_id,) in rows}

    def forget(self, item_ids: list[int]) -> int:
        """Drop rows: existing ones whose file left the folder; a file that went away before it was
        processed (deleted, or renamed: see `follow`)."""
        n = 0
        for i in range(0, len(item_ids), _CHUNK):
            chunk = item_ids[i : i + _CHUNK]
            n += self._exec(f"DELETE FROM items WHERE id IN ({','.join('?' * len(chunk))})", tuple(chunk))
        return n

    def folder_last_ran(self, folder: Path) -> tuple[bool, float | None]:
        """(known, last ran): known once baselined, or when an older ledger has rows under it (no time)."""
        with self._lock:
            key = path_key(folder)
            row = self._db.execute("SELECT last_ran FROM folders WHERE path = ?", (key,)).fetchone()
            if row is not None:
                return True, row[0]
            # Rows directly or deeper under the folder: the path range (folder + sep, folder + the next
            # byte value) is exact, as SQLite orders BLOBs by memcmp; no LIKE escaping of % or _ in names.
            sep = path_key(os.sep)
            lo = key.rstrip(sep) + sep
            hi = lo[:-1] + bytes([sep[0] + 1])
            hit = self._db.execute(
                "SELECT 1 FROM items WHERE path > ? AND path < ? LIMIT 1", (lo, hi)
            ).fetchone()
        return hit is not None, None

    def set_folder_last_ran(self, folder: Path, when: float) -> None:
        self._exec(
            "INSERT INTO folders (path, last_ran) VALUES (?, ?)"
            " ON CONFLICT(path) DO UPDATE SET last_ran=excluded.last_ran",
            (path_key(folder), when),
        )

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
                (path_key(path), size, mtime_ns, hash, str(state), _text(error), now, queued_at),
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
        """The oldest queued row that is due (a retry after a transient error waits out its backoff)."""
        rows = self._rows(
            "WHERE state = ? AND (queued_at IS NULL OR queued_at <= ?) ORDER BY queued_at, id LIMIT 1",
            (str(State.QUEUED), time.time()),
        )
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
            (str(State.DONE), path_key(output), time.time(), model, item_id),
        )

    def skip(self, item_id: int, reason: str) -> None:
        self._exec(
            "UPDATE items SET state=?, error=?, finished=? WHERE id=?",
            (str(State.SKIPPED), _text(reason), time.time(), item_id),
        )

    def fail(self, item_id: int, error: str) -> None:
        self._exec(
            "UPDATE items SET state=?, error=?, finished=? WHERE id=?",
            (str(State.FAILED), _text(error), time.time(), item_id),
        )

    def requeue(
        self, item_id: int, error: str | None, *, uncount: bool = False, delay: float | None = None
    ) -> None:
        """Back to the queue (keeps its place); uncount=True when we abandoned it, not it failing.
        `delay`: not taken again before that many seconds (it goes behind files queued meanwhile)."""
        self._exec(
            "UPDATE items SET state=?, error=?, attempts=attempts-?,"
            " queued_at=CASE WHEN ? IS NULL THEN queued_at ELSE ? END WHERE id=?",
            (str(State.QUEUED), _text(error), int(uncount), delay, time.time() + (delay or 0), item_id),
        )

    def follow(self, old: Path, new: Path) -> bool:
        """A file renamed while waiting or queued keeps its row (and its place) under the new name; an
        `existing` one stays existing (renaming an old image does not make it new).
        False when there is nothing to follow, or the new name has a row of its own already."""
        states = (State.SEEN, State.WAITING, State.QUEUED, State.EXISTING)
        try:
            return (
                self._exec(
                    "UPDATE items SET path=? WHERE path=? AND state IN (?, ?, ?, ?)",
                    (path_key(new), path_key(old), *map(str, states)),
                )
                > 0
            )
        except sqlite3.IntegrityError:  # the new name is known already: that row decides
            return False

    def recover(self, max_attempts: int) -> tuple[int, list[Item]]:
        """At start: rows left `processing` by a crash go back to the queue, or fail when poisoned.
        Returns how many were requeued, and the rows it failed (for status's last_error)."""
        poisoned = self._rows("WHERE state=? AND attempts>=?", (str(State.PROCESSING), max_attempts))
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
            requeued = self._db.execute(
                "UPDATE items SET state=? WHERE state=?", (str(State.QUEUED), str(State.PROCESSING))
            ).rowcount
        return requeued, [row for item in poisoned if (row := self.get(item.id)) is not None]

    def last_failed(self) -> Item | None:
        """The most recently failed row: status's last_error after a restart. A row failed at intake
        may have no finish time; its creation time stands in."""
        rows = self._rows(
            "WHERE state=? ORDER BY COALESCE(finished, created) DESC, id DESC LIMIT 1", (str(State.FAILED),)
        )
        return rows[0] if rows else None

    def retry(self, item_id: int | None) -> int:
        """failed -> queued with attempts reset; None = all failed rows. One id may also be a file
        skipped as no NovelAI image: the user asked for that file by name (all never takes those, or
        it would undo [watch] only_novelai)."""
        where, args = (
            ("state=?", (str(State.FAILED),))
            if item_id is None
            else (
                "id=? AND (state=? OR (state=? AND error LIKE ?))",
                (item_id, str(State.FAILED), str(State.SKIPPED), f"{NOT_NOVELAI}%"),
            )
        )
        return self._exec(
            f"UPDATE items SET state=?, attempts=0, error=NULL, queued_at=? WHERE {where}",
            (str(State.QUEUED), time.time(), *args),
        )

    def release_not_novelai(self) -> int:
        """Files skipped as no NovelAI image -> existing, for `naiup backfill` to offer, once [watch]
        only_novelai is off. Marked as read by the sorter (novelai=0): should only_novelai come back on,
        they are not counted as older images to process, and need no second read."""
        return self._exec(
            "UPDATE items SET state=?, error=NULL, novelai=0 WHERE state=? AND error LIKE ?",
            (str(State.EXISTING), str(State.SKIPPED), f"{NOT_NOVELAI}%"),
        )

    def items(
        self, states: tuple[State, ...], limit: int = 1000, except_error: str | None = None
    ) -> list[Item]:
        marks = ",".join("?" * len(states))
        where = f"state IN ({marks})" + ("" if except_error is None else " AND error IS NOT ?")
        args = (*map(str, states), *(() if except_error is None else (except_error,)), limit)
        return self._rows(f"WHERE {where} ORDER BY id LIMIT ?", args)

    def by_output(self, output: Path) -> Item | None:
        """The row whose job wrote `output` (the newest, should a path have been reused)."""
        rows = self._rows("WHERE output = ? ORDER BY finished DESC, id DESC LIMIT 1", (self._key(output),))
        return rows[0] if rows else None

    def recent(self, states: tuple[State, ...], since: float | None = None, limit: int = 100) -> list[Item]:
        """Rows in `states` finished at or after `since` (epoch seconds), newest first."""
        marks = ",".join("?" * len(states))
        return self._rows(
            f"WHERE state IN ({marks}) AND finished >= ? ORDER BY finished DESC, id DESC LIMIT ?",
            (*map(str, states), since if since is not None else float("-inf"), limit),
        )

    def version(self) -> int:
        """Grows with every row this connection changes: a cache of a query result is stale when it did."""
        with self._lock:
            return self._db.total_changes

    def counts(self) -> dict[str, int]:
        """Rows per state; our own outputs (skipped by design) under "naiup_output", not "skipped"."""
        with self._lock:
            rows = self._db.execute(
                "SELECT CASE WHEN state = ? AND error = ? THEN 'naiup_output' ELSE state END AS k, COUNT(*)"
                " FROM items GROUP BY k",
                (str(State.SKIPPED), OWN_OUTPUT),
            ).fetchall()
        return {state: n for state, n in rows}


def _path_or_none(key: bytes | str | None) -> str | None:
    return None if key is None else path_from_key(key)


def _text(message: str | None) -> str | None:
    """Messages may quote a file name with undecodable bytes: store the readable form (SQLite wants UTF-8)."""
    return None if message is None else plain_text(message)
