"""A stand-in daemon for tray tests: its whole state is one JSON file, so a test process and a tray in
another process share it. It speaks the control contract's client side (request/subscribe/close).

`connect()` (module level) reads the file from $NAIUP_STANDIN_STATE: a `naiup tray` with
NAIUP_TRAY_CLIENT=tray_standin:connect in its environment uses it. The real daemon replaces all of
this in the lead's end-to-end test.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from naiup.errors import NaiupError


class StandinNotRunning(NaiupError):
    pass


def default_status() -> dict[str, Any]:
    return {
        "ok": True,
        "state": "idle",
        "active_preset": "refine-2x",
        "presets": ["refine-2x", "refine-4x", "upscale-2x"],
        "current": None,
        "queue_length": 0,
        "counts": {},
        "last_error": None,
        "pause_reason": None,
        "paused_until": None,
        "last_output": None,
        "engine_error": None,
        "watch_folders": [],
        "config_path": None,
        "log_path": "",
    }


class StandinDaemon:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def start(self, **status: Any) -> StandinDaemon:
        self._write({"running": True, "status": {**default_status(), **status}, "requests": [], "events": []})
        return self

    def read(self) -> dict[str, Any]:
        return json.loads(self.path.read_text())

    def _write(self, data: dict[str, Any]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}.{threading.get_ident()}")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.path)

    def update(self, fn: Any) -> dict[str, Any]:
        with self._lock:
            data = self.read()
            fn(data)
            self._write(data)
            return data

    def set_status(self, **changes: Any) -> None:
        self.update(lambda d: d["status"].update(changes))

    def emit(self, event: dict[str, Any]) -> None:
        self.update(lambda d: d["events"].append(event))

    def connect(self) -> StandinClient:
        if not self.path.exists() or not self.read()["running"]:
            raise StandinNotRunning("stand-in daemon is not running")
        return StandinClient(self)


class StandinClient:
    def __init__(self, daemon: StandinDaemon) -> None:
        self.daemon = daemon
        self.closed = threading.Event()

    def request(self, verb: str, **args: Any) -> dict[str, Any]:
        if self.closed.is_set():
            raise OSError("client closed")
        data = self.daemon.update(lambda d: _apply(d, verb, args))
        if not data["running"] and verb != "stop":
            raise StandinNotRunning("stand-in daemon stopped")
        if verb in ("status", "pause", "resume", "preset"):
            return dict(data["status"])
        if verb == "ping":
            return {"ok": True, "version": "standin", "pid": os.getpid()}
        return {"ok": True}

    def subscribe(self) -> Iterator[dict[str, Any]]:
        seen_status = None
        seen_events = 0
        while not self.closed.is_set():
            data = self.daemon.read()
            if not data["running"]:
                raise StandinNotRunning("stand-in daemon stopped")
            if data["status"] != seen_status:
                seen_status = data["status"]
                yield {"event": "status", "status": dict(seen_status)}
            yield from data["events"][seen_events:]
            seen_events = len(data["events"])
            self.closed.wait(0.05)  # a poll interval of the fake transport, not a test sleep

    def close(self) -> None:
        self.closed.set()


def _apply(d: dict[str, Any], verb: str, args: dict[str, Any]) -> None:
    if verb not in ("status", "ping"):
        d["requests"].append([verb, args])
    s = d["status"]
    if verb == "pause":
        s.update(
            state="paused",
            pause_reason=args.get("reason") or "by you",
            paused_until=(time.time() + args["for_seconds"]) if args.get("for_seconds") else None,
        )
    elif verb == "resume":
        s.update(state="idle", pause_reason=None, paused_until=None)
    elif verb == "preset":
        s["active_preset"] = args["name"]
    elif verb == "retry":
        s["counts"] = {**s.get("counts", {}), "failed": 0}
    elif verb == "stop":
        d["running"] = False


def connect() -> StandinClient:
    return StandinDaemon(Path(os.environ["NAIUP_STANDIN_STATE"])).connect()
