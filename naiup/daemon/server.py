"""The daemon's end of the control socket: accepts clients, authenticates them, answers each request
through the daemon's dispatcher and streams events to subscribers. Protocol: naiup/control/protocol.py."""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import socket
import sys
import threading
from collections.abc import Callable
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection, Listener, answer_challenge, deliver_challenge
from pathlib import Path

from naiup.control.protocol import address, create_token, ensure_private_dir, recv, send
from naiup.errors import FatalError, NaiupError

log = logging.getLogger(__name__)


def _wake(conn: Connection) -> None:
    """Unblock a thread sitting in recv on this connection (closing alone does not, on Linux)."""
    try:
        s = socket.socket(fileno=os.dup(conn.fileno()))
        s.shutdown(socket.SHUT_RDWR)
        s.close()
    except OSError:
        pass


class ControlServer:
    """Accepts clients on the socket; `handle(verb, args) -> reply` is the daemon's dispatcher.

    The reply is the verb's payload: "ok" is added here, and a NaiupError the handler raises becomes
    {"ok": false, "error": its message}, so no verb writes the envelope itself.
    """

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

    @property
    def address(self) -> str:
        return self._address

    def start(self) -> None:
        self._thread.start()

    def publish(self, event: dict) -> None:
        with self._lock:
            for q in self._subscribers:
                q.put(event)

    def stop(self) -> None:
        self._stopping = True
        if self._thread.is_alive():
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
                msg = recv(conn)
                verb = str(msg.pop("verb", ""))
                if verb == "subscribe":
                    self._stream(conn)
                    return
                try:
                    reply = {"ok": True, **self._handle(verb, msg)}
                except NaiupError as exc:
                    reply = {"ok": False, "error": str(exc)}
                except Exception as exc:  # loop boundary: a bad request must not kill the server
                    log.exception("control verb failed verb=%s", verb)
                    reply = {"ok": False, "error": f"internal error: {type(exc).__name__}: {exc}"}
                send(conn, reply)
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
                send(conn, event)
        finally:
            with self._lock:
                self._subscribers.remove(q)
