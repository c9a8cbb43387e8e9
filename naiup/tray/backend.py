"""The tray's contact with the desktop: picking a pystray backend, opening files, starting the daemon."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

from naiup.errors import NaiupError
from naiup.service.command import naiup_command
from naiup.tray.menu import MenuEntry

log = logging.getLogger(__name__)

LINUX_HINT = (
    "install a tray backend: PyGObject with AppIndicator (Debian/Ubuntu: apt install python3-gi "
    "gir1.2-ayatanaappindicator3-0.1, and a venv made with --system-site-packages), "
    "or run under X11 for the xorg fallback"
)


class TrayUnavailableError(NaiupError):
    """No display or no tray backend: the tray cannot run here (the daemon is unaffected)."""


def load_pystray(backend: str | None = None) -> Any:
    """Import pystray, turning "no display" and "no backend" into one clear TrayUnavailableError.

    pystray picks its backend when imported (PYSTRAY_BACKEND, else appindicator -> gtk -> xorg on
    Linux), and the xorg backend connects to the X server right then, so both failures surface here.
    """
    if backend:
        os.environ["PYSTRAY_BACKEND"] = backend
    if sys.platform.startswith("linux") and not (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    ):
        raise TrayUnavailableError(
            "tray: no graphical display (DISPLAY and WAYLAND_DISPLAY are unset); "
            "start `naiup tray` from your desktop session. The service itself does not need it."
        )
    try:
        import pystray
    except Exception as exc:  # ImportError, Xlib.error.DisplayConnectionError, GLib errors...
        hint = LINUX_HINT if sys.platform.startswith("linux") else "reinstall pystray (pip install pystray)"
        raise TrayUnavailableError(
            f"tray: no usable tray backend ({type(exc).__name__}: {exc}); {hint}"
        ) from exc
    return pystray


def backend_name() -> str | None:
    """The backend pystray would use here, or None if none imports (for `naiup doctor`)."""
    try:
        pystray = load_pystray()
    except TrayUnavailableError:
        return None
    return pystray.Icon.__module__.rsplit("._", 1)[-1]


def call_on_gui_thread(fn: Callable[[], None]) -> None:
    # pystray's darwin backend calls AppKit from the calling thread; AppKit wants the main thread.
    if sys.platform == "darwin":
        try:
            from PyObjCTools import AppHelper

            AppHelper.callAfter(fn)
            return
        except ImportError:
            pass
    fn()


def open_path(path: str) -> None:
    """Open a file or folder with the desktop's default application, without waiting for it.

    A file that does not exist yet (the config before the first save) opens its folder instead.
    """
    if not os.path.exists(path) and os.path.isdir(os.path.dirname(path)):
        path = os.path.dirname(path)
    if sys.platform == "win32":
        os.startfile(path)  # type: ignore[attr-defined]  # Windows only
        return
    opener = "open" if sys.platform == "darwin" else "xdg-open"
    try:
        subprocess.Popen(
            [opener, path],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as exc:
        raise NaiupError(f"{path}: cannot open ({opener}: {exc})") from exc


def spawn_daemon(config_path: str | None = None) -> None:
    """Start `naiup run` detached from the tray, so quitting the tray leaves the service running.

    `config_path`: the tray's own `--config`, passed on so the service it starts reads the same file.
    """
    argv = [*naiup_command(windowed=True), *(["--config", config_path] if config_path else []), "run"]
    log.info("starting daemon argv=%s", argv)
    kwargs: dict[str, Any] = {
        "stdin": subprocess.DEVNULL,
        "stdout": subprocess.DEVNULL,
        "stderr": subprocess.DEVNULL,
    }
    if sys.platform == "win32":
        kwargs["creationflags"] = subprocess.DETACHED_PROCESS | subprocess.CREATE_NEW_PROCESS_GROUP
    else:
        kwargs["start_new_session"] = True
    try:
        proc = subprocess.Popen(argv, **kwargs)
    except OSError as exc:
        raise NaiupError(f"cannot start the service ({argv[0]}: {exc})") from exc
    # While the tray runs, the service is its child: reap it when it exits ("Stop service"), or it
    # lingers as a zombie that still looks alive to pid checks until the tray quits.
    threading.Thread(target=proc.wait, name="naiup-reap-daemon", daemon=True).start()


def to_pystray_items(
    pystray: Any, entries: list[MenuEntry], on_click: Callable[[Any, Any], None]
) -> list[Any]:
    """pystray MenuItems for the menu model; a click calls on_click(action, arg)."""
    items = []
    for e in entries:
        if e.separator:
            items.append(pystray.Menu.SEPARATOR)
        elif e.submenu:
            sub = pystray.Menu(*to_pystray_items(pystray, list(e.submenu), on_click))
            items.append(pystray.MenuItem(e.text, sub, enabled=e.enabled))
        else:
            # pystray menus are immutable; the tray rebuilds them from the model on every change.
            action = None if e.action is None else _clicker(on_click, e.action, e.arg)
            checked = None if e.checked is None else _constant(e.checked)
            items.append(
                pystray.MenuItem(
                    e.text, action, checked=checked, radio=e.radio, default=e.default, enabled=e.enabled
                )
            )
    return items


# pystray inspects co_argcount of callbacks, so no default-argument lambdas: closures of exact arity.
def _clicker(on_click: Callable[[Any, Any], None], action: Any, arg: Any) -> Callable[[Any, Any], None]:
    return lambda _icon, _item: on_click(action, arg)


def _constant(value: bool) -> Callable[[Any], bool]:
    return lambda _item: value
