"""Desktop notifications from the tray: successes batched ("3 images refined"), failures always.

Never a modal dialog (users of batch upscalers complain about OK boxes, cupscale #137). Sent through
pystray's `Icon.notify` where the backend has it, else `notify-send` on Linux, else only logged.

Where the notification server can report a click (`notify-send --action --wait`, libnotify 0.7.10+ on
Linux), "done" notifications are sent that way and a click opens the result's before/after page (one
image) or the gallery (several). pystray's own notify reports no clicks (Windows, macOS): there they
stay plain notifications.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import PurePath
from typing import Any

from naiup.pathnames import plain_text, shown

log = logging.getLogger(__name__)

Send = Callable[[str, str], None]  # (title, message)
# (title, message, button label, on_click): a notification whose click is reported back.
ClickSend = Callable[[str, str, str, Callable[[], None]], None]

TITLE = "naiup"


class Notifier:
    """Turns daemon events into notifications. Call `on_event` per event and `flush` every tick."""

    def __init__(
        self,
        send: Send,
        successes: bool = True,
        batch_seconds: float = 5.0,
        click_send: ClickSend | None = None,
        on_click: Callable[[list[str]], None] | None = None,
    ) -> None:
        self._send = send
        self._click_send = click_send
        self._on_click = on_click  # gets the outputs a clicked "done" notification announced
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
            message, label = f"{shown(PurePath(done[0]).name)} refined", "Compare"
        else:
            message, label = f"{len(done)} images refined", "Open gallery"
        if self._click_send is not None and self._on_click is not None:
            on_click = self._on_click
            self._deliver_clickable(TITLE, message, label, lambda: on_click(done))
        else:
            self._deliver(TITLE, message)

    def notify_now(self, title: str, message: str) -> None:
        """Unbatched, for things the user just did that failed."""
        self._deliver(title, message)

    def close(self) -> None:
        """Withdraw what still waits for a click (the tray is quitting)."""
        close = getattr(self._click_send, "close", None)
        if close is not None:
            close()

    def _deliver_clickable(self, title: str, message: str, label: str, on_click: Callable[[], None]) -> None:
        assert self._click_send is not None
        log.info("notify title=%s message=%s clickable=%s", title, message, label)
        try:
            self._click_send(title, message, label, on_click)
        except Exception:
            log.exception("clickable notification failed; sending a plain one")
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


def pick_click_sender() -> ClickSend | None:
    """A sender whose notifications report a click, or None where the platform has none (see module doc)."""
    if sys.platform in ("win32", "darwin"):
        return None
    exe = shutil.which("notify-send")
    if exe is None:
        return None
    try:
        usage = subprocess.run(
            [exe, "--help"], capture_output=True, text=True, timeout=5, check=False, stdin=subprocess.DEVNULL
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.debug("notify-send --help failed err=%s", exc)
        return None
    if "--action" not in usage or "--wait" not in usage:
        log.info(
            "notify-send has no --action/--wait (libnotify before 0.7.10): notifications are not clickable"
        )
        return None
    return NotifySendActions(exe)


class NotifySendActions:
    """`notify-send --action ... --wait`: it prints the chosen action's name when the user clicks.

    One waiting process (and thread) per notification, until it is clicked, dismissed or expires;
    `close` ends those still waiting when the tray quits.
    """

    ACTIONS = ("default", "open")  # a click on the body, and the button

    def __init__(self, exe: str) -> None:
        self.exe = exe
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen[str]] = set()

    def __call__(self, title: str, message: str, label: str, on_click: Callable[[], None]) -> None:
        argv = [
            self.exe,
            "--app-name=naiup",
            f"--action=default={label}",
            f"--action=open={label}",
            "--wait",
            title,
            message,
        ]
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        with self._lock:
            self._procs.add(proc)
        threading.Thread(
            target=self._wait, args=(proc, on_click), name="naiup-notify-click", daemon=True
        ).start()

    def _wait(self, proc: subprocess.Popen[str], on_click: Callable[[], None]) -> None:
        try:
            out, _ = proc.communicate()
        finally:
            with self._lock:
                self._procs.discard(proc)
        if proc.returncode == 0 and out.strip() in self.ACTIONS:
            log.info("notification clicked action=%s", out.strip())
            try:
                on_click()
            except Exception:
                log.exception("opening a clicked notification failed")

    def close(self) -> None:
        with self._lock:
            procs, self._procs = list(self._procs), set()
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
