"""Desktop notifications from the tray: successes batched ("3 images refined"), failures always.

Never a modal dialog (users of batch upscalers complain about OK boxes, cupscale #137). Sent through
pystray's `Icon.notify` where the backend has it, else `notify-send` on Linux, else only logged.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Callable
from pathlib import PurePath
from typing import Any

from naiup.pathnames import plain_text, shown

log = logging.getLogger(__name__)

Send = Callable[[str, str], None]  # (title, message)

TITLE = "naiup"


class Notifier:
    """Turns daemon events into notifications. Call `on_event` per event and `flush` every tick."""

    def __init__(self, send: Send, successes: bool = True, batch_seconds: float = 5.0) -> None:
        self._send = send
        self.successes = successes
        self.batch_seconds = batch_seconds
        self._done: list[str] = []
        self._window_start: float | None = None

    def on_event(self, event: dict[str, Any], now: float) -> None:
        kind = event.get("event")
        if kind == "job_done":
            if not self.successes:
                return
            if self._window_start is None:
                self._window_start = now
            self._done.append(str(event.get("output") or event.get("path") or ""))
        elif kind == "job_failed":
            # Failures are not batched and not switchable: a silent failure looks like "still working".
            name = shown(PurePath(str(event.get("path") or "?")).name)
            error = plain_text(str(event.get("error") or "unknown error"))
            self._deliver(f"{TITLE}: refine failed", f"{name}: {error}")
        self.flush(now)

    def flush(self, now: float, force: bool = False) -> None:
        if self._window_start is None:
            return
        if not force and now - self._window_start < self.batch_seconds:
            return
        done, self._done, self._window_start = self._done, [], None
        if len(done) == 1:
            self._deliver(TITLE, f"{shown(PurePath(done[0]).name)} refined")
        else:
            self._deliver(TITLE, f"{len(done)} images refined")

    def notify_now(self, title: str, message: str) -> None:
        """Unbatched, for things the user just did that failed."""
        self._deliver(title, message)

    def _deliver(self, title: str, message: str) -> None:
        log.info("notify title=%s message=%s", title, message)
        try:
            self._send(title, message)
        except Exception:
            # A broken notification daemon must not take the tray down; the log still has the line.
            log.exception("notification failed")


def pick_sender(icon: Any | None) -> Send:
    """The best way to notify from this tray backend."""
    if icon is not None and getattr(icon, "HAS_NOTIFICATION", False):
        # pystray's darwin backend crashes on title=None, so a title is always passed.
        return lambda title, message: icon.notify(message, title)
    notify_send = shutil.which("notify-send")
    if notify_send:
        return lambda title, message: _run_notify_send(notify_send, title, message)
    return lambda title, message: None  # logged by Notifier; nothing else to show it with


def _run_notify_send(exe: str, title: str, message: str) -> None:
    subprocess.run([exe, "--app-name=naiup", title, message], timeout=5, check=False, capture_output=True)
