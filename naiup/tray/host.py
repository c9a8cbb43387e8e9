"""Is there a tray host (a panel's notification area) to show our icon in?

pystray cannot tell us: on X11 its xorg backend logs "Failed to dock icon" with a traceback on every
update while nothing owns the system tray selection, and when a panel restarts, the icon window the old
panel embedded dies with it and pystray's loop just ends. The tray app asks here instead:

    watch = HostWatch.for_backend("xorg")     # None where the question has no answer (macOS, Windows)
    watch.present() -> bool | None           # None: cannot tell right now

Two kinds of host exist on Linux: the X11 system tray (XEmbed; the `_NET_SYSTEM_TRAY_S<screen>`
selection has an owner) and StatusNotifierItem (the D-Bus name org.kde.StatusNotifierWatcher has an
owner; AppIndicator uses it and falls back to the X11 tray).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

SNI_WATCHER = "org.kde.StatusNotifierWatcher"
CHECK_SECONDS = 1.0  # how often to look for a host while waiting for one
# At login the panel may come up after the tray (autostart runs both at once); after a panel restart
# the new one needs a moment too. Longer than this without a host, the tray gives up (exit 1).
WAIT_SECONDS = 30.0


class HostWatch:
    """Answers present(); not thread-safe (the tray's ticks thread owns it once the icon runs)."""

    def __init__(self, x11: bool, sni: bool) -> None:
        self._x11, self._sni = x11, sni
        self._display: Any = None
        self._atom: int | None = None

    @classmethod
    def for_backend(cls, backend: str) -> HostWatch | None:
        """`backend`: pystray's backend module name ("xorg", "gtk", "appindicator", ...)."""
        if not sys.platform.startswith("linux") or backend not in ("xorg", "gtk", "appindicator"):
            return None  # macOS's menu bar and Windows' notification area are always there
        x11 = bool(os.environ.get("DISPLAY"))
        return cls(x11=x11, sni=backend == "appindicator")

    def present(self) -> bool | None:
        answers = [a for a in (self._x11_tray(), self._sni_watcher()) if a is not None]
        if not answers:
            return None
        return any(answers)

    def close(self) -> None:
        if self._display is not None:
            try:
                self._display.close()
            except Exception as exc:  # the server may be gone already
                log.debug("closing the X display err=%s", exc)
            self._display = None

    def _x11_tray(self) -> bool | None:
        if not self._x11:
            return None
        try:
            if self._display is None:
                import Xlib.display  # pystray's X11 dependency, present wherever its xorg backend is

                self._display = Xlib.display.Display()
                screen = self._display.get_default_screen()
                self._atom = self._display.intern_atom(f"_NET_SYSTEM_TRAY_S{screen}")
            owner = self._display.get_selection_owner(self._atom)
        except Exception as exc:  # no Xlib, or the X server went away: no answer from here
            log.debug("X11 tray check failed err=%s", exc)
            self.close()
            return None
        return bool(owner) and getattr(owner, "id", owner) != 0

    def _sni_watcher(self) -> bool | None:
        if not self._sni:
            return None
        try:
            from gi.repository import Gio, GLib

            bus = Gio.bus_get_sync(Gio.BusType.SESSION, None)
            reply = bus.call_sync(
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus",
                "NameHasOwner",
                GLib.Variant("(s)", (SNI_WATCHER,)),
                GLib.VariantType("(b)"),
                Gio.DBusCallFlags.NONE,
                1000,
                None,
            )
        except Exception as exc:  # no PyGObject, no session bus: no answer from here
            log.debug("StatusNotifierWatcher check failed err=%s", exc)
            return None
        return bool(reply.unpack()[0])


class DockNoise(logging.Filter):
    """Drops pystray's "Failed to dock icon" records (a traceback each): the tray says it once itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to dock icon")


def wait_for_host(watch: HostWatch, seconds: float, stop: threading.Event | None = None) -> bool:
    """True once a host is there (or we cannot tell); False after `seconds` without one, or on stop."""
    deadline = time.monotonic() + seconds
    stop = stop or threading.Event()
    while True:
        if watch.present() is not False:
            return True
        if time.monotonic() >= deadline or stop.wait(
            min(CHECK_SECONDS, max(0.0, deadline - time.monotonic()))
        ):
            return False
