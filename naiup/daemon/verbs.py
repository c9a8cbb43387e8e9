"""The control verbs: what each request to the daemon does (protocol in naiup/control/channel.py)."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from naiup import __version__
from naiup.daemon.catchup import backfill_candidates
from naiup.daemon.ledger import OWN_OUTPUT, State
from naiup.errors import NaiupError
from naiup.pathnames import shown

if TYPE_CHECKING:
    from naiup.daemon.daemon import Daemon

log = logging.getLogger(__name__)

VERBS = frozenset(
    {"ping", "status", "queue", "pause", "resume", "preset", "retry", "rescan", "reload", "stop", "backfill"}
)
BACKFILL_LISTED = 1000  # paths named in a backfill reply; the count covers all (replies stay < 1 MiB)


class Verbs:
    def __init__(self, daemon: Daemon) -> None:
        self._d = daemon

    def handle(self, verb: str, args: dict) -> dict:
        if verb not in VERBS:  # never a lookup by a client's string alone: `_init__` would reach __init__
            raise NaiupError(f"unknown verb {verb!r}")
        fn = getattr(self, f"_{verb}")
        try:
            return fn(**args)
        except TypeError as exc:  # unknown or missing arguments from a client
            raise NaiupError(f"bad arguments for {verb}: {exc}") from exc

    def _ping(self) -> dict:
        return {"ok": True, "version": __version__, "pid": os.getpid()}

    def _status(self) -> dict:
        return self._d.status()

    def _queue(self, failed: bool = False, limit: int = 1000) -> dict:
        if not failed:
            states = (State.WAITING, State.QUEUED, State.PROCESSING)
            return {"ok": True, "items": [i.as_reply() for i in self._d.ledger.items(states, int(limit))]}
        # Our own outputs are skipped on purpose, not a problem to list (status counts them apart).
        items = self._d.ledger.items((State.FAILED, State.SKIPPED), int(limit), except_error=OWN_OUTPUT)
        return {"ok": True, "items": [i.as_reply() for i in items]}

    def _pause(
        self, free_gpu: bool = False, for_seconds: float | None = None, reason: str | None = None
    ) -> dict:
        until = time.time() + float(for_seconds) if for_seconds else None
        self._d.set_runtime(
            paused=True,
            free_gpu=bool(free_gpu),
            paused_until=until,
            pause_reason=reason or "by you",  # reads right in `paused: …` and the tray's "paused (…)"
        )
        self._d.scheduler.wake()
        return self._d.status()

    def _resume(self) -> dict:
        self._d.rules.override()  # the user's resume wins over rules holding now (README: Pause rules)
        self._d.set_runtime(paused=False, free_gpu=False, paused_until=None, pause_reason=None)
        self._d.scheduler.wake(retry_load=True)
        return self._d.status()

    def _preset(self, name: str) -> dict:
        presets = self._d.config.presets
        if name not in presets:  # the name came from the command line or the tray, not the config file
            raise NaiupError(f"unknown preset {name!r} (known: {', '.join(sorted(presets))})")
        self._d.set_runtime(active_preset=name)
        self._d.scheduler.wake(retry_load=True)
        return self._d.status()

    def _retry(self, id: int | str = "all") -> dict:
        if id != "all":
            item = self._d.ledger.get(int(id))
            if item is None:
                raise NaiupError(f"no file with id {id} (`naiup queue --failed` lists the ids)")
            if item.state is not State.FAILED:
                where = shown(item.path)
                raise NaiupError(f"id {id} is {item.state}, not failed: nothing to retry ({where})")
        n = self._d.ledger.retry(None if id == "all" else int(id))
        self._d.scheduler.wake()
        return {"ok": True, "requeued": n}

    def _rescan(self) -> dict:
        self._d.request_rescan()
        return {"ok": True}

    def _reload(self) -> dict:
        self._d.reload()  # a bad config raises: the reply carries the error, the old config stays
        return {"ok": True}

    def _backfill(self, since: float | None = None, folder: str | None = None, dry_run: bool = False) -> dict:
        """Send `existing` images (oldest first) through the stabiliser's full check, like new files."""
        watched = self._d.config.watch.folders
        where = None if folder is None else Path(folder)
        if where is not None and not any(where.is_relative_to(r) or r.is_relative_to(where) for r in watched):
            names = ", ".join(map(shown, watched))
            raise NaiupError(f"{shown(where)} is not a watched folder or inside one (watched: {names})")
        since = None if since is None else float(since)
        chosen = backfill_candidates(self._d.ledger, watched, since, where)
        if not dry_run and chosen:
            self._d.ledger.reconsider([i.id for i in chosen])
            for item in chosen:
                self._d.stabiliser.hint(Path(item.path))
            log.info("backfill count=%d since=%s folder=%s", len(chosen), since, where)
        listed = [i.path for i in chosen[:BACKFILL_LISTED]]
        return {"ok": True, "count": len(chosen), "dry_run": bool(dry_run), "paths": listed}

    def _stop(self) -> dict:
        self._d.stop_event.set()
        # What `naiup stop` needs to wait well: the job that may still finish, and for how long.
        grace = self._d.config.daemon.stop_grace_seconds
        return {"ok": True, "pid": os.getpid(), "current": self._d.scheduler.current, "grace_seconds": grace}
