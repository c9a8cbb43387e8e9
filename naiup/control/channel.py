"""Control IPC between the daemon and its clients (CLI, tray).

CONTRACT (daemon issue implements; the tray and CLI use only this module):
    Transport: multiprocessing.connection over AF_UNIX in user_runtime_dir (dir 0700, socket 0600), a
    named pipe on Windows; authkey from a 0600 token file in the state dir; JSON via send_bytes /
    recv_bytes only (never pickle).

    class ControlClient:
        @classmethod connect(cls, timeout: float = 2.0) -> ControlClient   # DaemonNotRunning if none
        request(verb: str, **args) -> dict      # raises ControlError(message) on {"ok": false}
        subscribe() -> Iterator[dict]           # event stream on its own connection
        close()
    class DaemonNotRunning(NaiupError)

    Verbs and replies (all replies carry "ok": bool, and "error": str when not ok):
        ping -> {"ok", "version", "pid"}
        status -> {"ok", "state": "idle"|"working"|"paused"|"loading"|"error",
                   "active_preset": str, "presets": [str],
                   "current": {"id", "path", "preset", "progress", "stage"} | null,
                   "queue_length": int (queued, not counting current),
                   "counts": {state | "naiup_output": n}, "last_error": str | null (until that file
                   is done),
                   "existing": int (older images in watched folders: what `backfill` would queue),
                   "pause_reason": str | null, "paused_until": float | null,
                   "pause_source": "user"|"rule"|null, "pause_rule": str | null (a rule holding now),
                   "pause_rule_overridden": str | null (a holding rule the user resumed over),
                   "pause_rules_unavailable": {rule: why},
                   "last_output": str | null, "engine_error": str | null,
                   "watch_folders": [str], "missing_folders": [str] (watched folders not there now),
                   "config_path": str | null, "log_path": str}
    Paths are exact: a name that is not UTF-8 arrives as a str with surrogate escapes (JSON "\\udcXX"), as
    os.fsdecode gives it; show it with naiup.pathnames.shown.
        queue {failed: bool} -> {"ok", "items": [{"id", "path", "state", "attempts", "error", "output"}]}
                   (failed: failed and skipped rows, never our own outputs)
        pause {free_gpu: bool, for_seconds: float | null, reason: str | null} -> status
        resume -> status
        preset {name} -> status
        retry {id: int | "all"} -> {"ok", "requeued": n}   (an id that is unknown or not failed: error)
        backfill {since: float | null (epoch s), folder: str | null, dry_run: bool}
            -> {"ok", "count": n, "dry_run": bool, "paths": [str] (the first 1000)}
        rescan -> {"ok"}   reload -> {"ok"}
        stop -> {"ok", "pid", "current": as in status, "grace_seconds": float}
    Events on subscribe: {"event": "status", "status": {...}} whenever status changes,
        {"event": "job_done", "path", "output"}, {"event": "job_failed", "path", "error"}.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import secrets
import socket
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection, Listener, answer_challenge, deliver_challenge
from pathlib import Path
from typing import Any

from naiup import paths
from naiup.errors import FatalError, NaiupError

log = logging.getLogger(__name__)

MAX_MESSAGE = 1 << 20  # a reply with a long queue listing stays well under this


class DaemonNotRunning(NaiupError):
    pass


# The README quotes this line word for word.
NOT_RUNNING = "the naiup daemon is not running (start it with naiup run)"


class ControlError(NaiupError):
    pass


def address() -> str:
    if sys.platform == "win32":
        return rf"\\.\pipe\naiup-{os.getlogin()}"
    return str(paths.runtime_dir() / "control.sock")


def token_path() -> Path:
    return paths.state_dir() / "control.token"


def ensure_private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def create_token() -> bytes:
    """The authkey: 32 random bytes in a 0600 file, reused across restarts, replaced if others can read
    it or it is empty (a crash between creating and writing it)."""
    path = token_path()
    ensure_private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        exposed = sys.platform != "win32" and stat.S_IMODE(path.stat().st_mode) & 0o077
        if exposed or not path.read_bytes().strip():
            os.chmod(path, 0o600)  # a token others could read is compromised: replace it
            path.write_text(secrets.token_hex(32))
        return path.read_bytes().strip()
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return path.read_bytes().strip()


def _send(conn: Connection, msg: dict) -> None:
    conn.send_bytes(json.dumps(msg).encode())


def _recv(conn: Connection) -> dict:
    data = conn.recv_bytes(MAX_MESSAGE)  # recv_bytes never unpickles
    msg = json.loads(data)
    if not isinstance(msg, dict):
        raise ValueError("message is not a JSON object")
    return msg


def _wake(conn: Connection) -> None:
    """Unblock a thread sitting in recv on this connection (closing alone does not, on Linux)."""
    try:
        s = socket.socket(fileno=os.dup(conn.fileno()))
        s.shutdown(socket.SHUT_RDWR)
        s.close()
    except OSError:
        pass


class ControlServer:
    """Accepts clients on the socket; `handle(verb, args) -> reply` is the daemon's dispatcher."""

    def __init__(self, handle: Callable[[str, dict], dict]) -> None:
        self._handle = handle
        self._authkey = create_token()
        self._address = address()
        self._subscribers: list[queue.Queue] = []
        self._conns: set[Connection] = set()
        self._lock = threading.Lock()
        self._stopping = False
        if sys.platform != "win32":
            ensure_private_dir(Path(self._address).parent)
            Path(self._address).unlink(missing_ok=True)  # stale socket: we hold the instance lock
        old = os.umask(0o177)  # the socket is born 0600, no window where others could connect
        try:
            self._listener = Listener(self._address, authkey=None)  # auth runs per connection thread
        except OSError as exc:
            raise FatalError(f"cannot open the control socket {self._address}: {exc}") from exc
        finally:
            os.umask(old)
        if sys.platform != "win32":
            os.chmod(self._address, 0o600)
        self._thread = threading.Thread(target=self._accept_loop, name="naiup-control", daemon=True)
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        self._thread.start()

    def publish(self, event: dict) -> None:
        with self._lock:
            for q in self._subscribers:
                q.put(event)

    def stop(self) -> None:
        self._stopping = True
        with contextlib.suppress(OSError):  # wake accept() with a throwaway connection
            Client(self._address).close()
        self._thread.join(5.0)
        with self._lock:
            for q in self._subscribers:
                q.put(None)
            for conn in self._conns:
                _wake(conn)
        for t in self._threads:
            t.join(5.0)
        self._listener.close()

    def _accept_loop(self) -> None:
        while not self._stopping:
            try:
                conn = self._listener.accept()
            except OSError:
                if self._stopping:
                    return
                continue
            if self._stopping:
                conn.close()
                return
            t = threading.Thread(target=self._serve, args=(conn,), name="naiup-control-conn", daemon=True)
            self._threads = [x for x in self._threads if x.is_alive()] + [t]
            t.start()

    def _serve(self, conn: Connection) -> None:
        with self._lock:
            self._conns.add(conn)
        try:
            deliver_challenge(conn, self._authkey)
            answer_challenge(conn, self._authkey)
            while not self._stopping:
                msg = _recv(conn)
                verb = str(msg.pop("verb", ""))
                if verb == "subscribe":
                    self._stream(conn)
                    return
                try:
                    reply = self._handle(verb, msg)
                except NaiupError as exc:
                    reply = {"ok": False, "error": str(exc)}
                except Exception as exc:  # loop boundary: a bad request must not kill the server
                    log.exception("control verb failed verb=%s", verb)
                    reply = {"ok": False, "error": f"internal error: {type(exc).__name__}: {exc}"}
                _send(conn, reply)
        except AuthenticationError:
            log.warning("control client refused: wrong authkey")
        except (EOFError, OSError, ValueError):
            pass  # client went away, or sent something that is not JSON: drop it
        finally:
            with self._lock:
                self._conns.discard(conn)
            conn.close()

    def _stream(self, conn: Connection) -> None:
        q: queue.Queue = queue.Queue()
        with self._lock:
            self._subscribers.append(q)
        try:
            q.put({"event": "status", "status": self._handle("status", {})})
            while (event := q.get()) is not None:
                _send(conn, event)
        finally:
            with self._lock:
                self._subscribers.remove(q)


class ControlClient:
    """Thread-safe: the tray's menu and its status poll share one client."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()  # one request and its reply at a time on the connection

    @classmethod
    def connect(cls, timeout: float = 2.0) -> ControlClient:
        addr = address()
        if sys.platform != "win32" and not Path(addr).exists():
            raise DaemonNotRunning(NOT_RUNNING)
        try:
            authkey = token_path().read_bytes().strip()
        except OSError as exc:
            raise DaemonNotRunning(f"the naiup daemon is not running (no token: {exc})") from exc
        try:  # `timeout` is kept for the contract: a local socket refuses or answers at once
            conn = Client(addr, authkey=authkey)
        except (ConnectionRefusedError, FileNotFoundError) as exc:
            # Refused: a socket file a killed daemon left behind, nobody listens on it. Not found: the
            # daemon stopped between our check and the connect (or no pipe on Windows). Either way: down.
            raise DaemonNotRunning(NOT_RUNNING) from exc
        except AuthenticationError as exc:
            raise ControlError(f"the daemon refused our token {token_path()}: {exc}") from exc
        except OSError as exc:  # e.g. permission denied: a socket that is not ours
            raise ControlError(f"cannot connect to the daemon at {addr}: {exc.strerror or exc}") from exc
        return cls(conn)

    def request(self, verb: str, **args: Any) -> dict:
        try:
            with self._lock:
                _send(self._conn, {"verb": verb, **args})
                reply = _recv(self._conn)
        except (EOFError, OSError) as exc:
            raise DaemonNotRunning(f"lost the connection to the daemon: {exc}") from exc
        if not reply.get("ok"):
            raise ControlError(reply.get("error") or f"{verb} failed")
        return reply

    def subscribe(self) -> Iterator[dict]:
        """Events on a connection of their own; ends when the daemon stops."""
        sub = ControlClient.connect()
        try:
            _send(sub._conn, {"verb": "subscribe"})
            while True:
                try:
                    yield _recv(sub._conn)
                except (EOFError, OSError):
                    return
        finally:
            sub.close()

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
