"""The client side of the control protocol: what the CLI, the tray and `naiup doctor` talk to the daemon
through. Verbs, replies and events are described in naiup/control/protocol.py."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection
from pathlib import Path
from typing import Any

from naiup.control.protocol import (
    NOT_RUNNING,
    ControlError,
    DaemonNotRunning,
    Status,
    address,
    recv,
    send,
    token_path,
)


class ControlClient:
    """Thread-safe: the tray's menu and its status poll share one client."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._lock = threading.Lock()  # one request and its reply at a time on the connection

    @classmethod
    def connect(cls) -> ControlClient:
        """DaemonNotRunning when no daemon listens; ControlError when one does but refuses us.

        No timeout: a local socket or pipe refuses or answers at once."""
        addr = address()
        if sys.platform != "win32" and not Path(addr).exists():
            raise DaemonNotRunning(NOT_RUNNING)
        try:
            authkey = token_path().read_bytes().strip()
        except OSError as exc:
            raise DaemonNotRunning(f"the naiup daemon is not running (no token: {exc})") from exc
        try:
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
        """The reply as JSON; ControlError(the daemon's reason) when it refused the request."""
        try:
            with self._lock:
                send(self._conn, {"verb": verb, **args})
                reply = recv(self._conn)
        except (EOFError, OSError) as exc:
            raise DaemonNotRunning(f"lost the connection to the daemon: {exc}") from exc
        if not reply.get("ok"):
            raise ControlError(reply.get("error") or f"{verb} failed")
        return reply

    def status(self) -> Status:
        return Status.from_json(self.request("status"))

    def subscribe(self) -> Iterator[dict]:
        """Events on a connection of their own; ends when the daemon stops."""
        sub = ControlClient.connect()
        try:
            send(sub._conn, {"verb": "subscribe"})
            while True:
                try:
                    yield recv(sub._conn)
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
