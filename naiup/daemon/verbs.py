"""The control verbs: one table from verb name to the Daemon method that does it, with the JSON in and
out around the call (protocol in naiup/control/protocol.py; the server adds the "ok" of each reply)."""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from naiup import __version__
from naiup.errors import NaiupError

if TYPE_CHECKING:
    from naiup.daemon.daemon import Daemon

BACKFILL_LISTED = 1000  # paths named in a backfill reply; the count covers all (replies stay < 1 MiB)


def handle(daemon: Daemon, verb: str, args: dict[str, Any]) -> dict[str, Any]:
    """Answer one request; a NaiupError's message goes back to the client as the reason it failed."""
    fn = VERBS.get(verb)  # only names in the table: a client's string never reaches getattr
    if fn is None:
        raise NaiupError(f"unknown verb {verb!r}")
    try:
        # Bound apart from the call: a TypeError from inside the verb is a bug, not the client's.
        bound = inspect.signature(fn).bind(daemon, **args)
    except TypeError as exc:  # unknown or missing arguments from a client
        raise NaiupError(f"bad arguments for {verb}: {exc}") from exc
    return fn(*bound.args, **bound.kwargs)


def _ping(d: Daemon) -> dict[str, Any]:
    return {"version": __version__, "pid": os.getpid()}


def _status(d: Daemon) -> dict[str, Any]:
    return d.status().to_json()


def _queue(d: Daemon, failed: bool = False, limit: int = 1000) -> dict[str, Any]:
    return {"items": [i.as_reply() for i in d.queue(bool(failed), int(limit))]}


def _pause(
    d: Daemon, free_gpu: bool = False, for_seconds: float | None = None, reason: str | None = None
) -> dict[str, Any]:
    until = time.time() + float(for_seconds) if for_seconds else None
    return d.pause(bool(free_gpu), until, reason).to_json()


def _resume(d: Daemon) -> dict[str, Any]:
    return d.resume().to_json()


def _preset(d: Daemon, name: str) -> dict[str, Any]:
    return d.use_preset(str(name)).to_json()


def _retry(d: Daemon, id: int | str = "all") -> dict[str, Any]:
    return {"requeued": d.retry(None if id == "all" else int(id))}


def _backfill(
    d: Daemon, since: float | None = None, folder: str | None = None, dry_run: bool = False
) -> dict[str, Any]:
    chosen = d.backfill(
        since=None if since is None else float(since),
        folder=None if folder is None else Path(folder),
        dry_run=bool(dry_run),
    )
    listed = [i.path for i in chosen[:BACKFILL_LISTED]]
    return {"count": len(chosen), "dry_run": bool(dry_run), "paths": listed}


def _rescan(d: Daemon) -> dict[str, Any]:
    d.request_rescan()
    return {}


def _reload(d: Daemon) -> dict[str, Any]:
    d.reload()  # a bad config raises: the reply carries the error, the old config stays
    return {}


def _stop(d: Daemon) -> dict[str, Any]:
    current = d.request_stop()
    # What `naiup stop` needs to wait well: the job that may still finish, and for how long.
    return {
        "pid": os.getpid(),
        "current": None if current is None else current.to_json(),
        "grace_seconds": d.config.daemon.stop_grace_seconds,
    }


VERBS: dict[str, Callable[..., dict[str, Any]]] = {
    "ping": _ping,
    "status": _status,
    "queue": _queue,
    "pause": _pause,
    "resume": _resume,
    "preset": _preset,
    "retry": _retry,
    "backfill": _backfill,
    "rescan": _rescan,
    "reload": _reload,
    "stop": _stop,
}
