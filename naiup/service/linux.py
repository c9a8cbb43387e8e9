"""Linux autostart: a systemd user unit for the daemon, an XDG autostart entry for the tray.

Two quoting languages meet here, and neither is the shell's:
- systemd ExecStart= (systemd.service(5) "Command lines"): double quotes with C escapes; `%` is a
  specifier (`%%`), `$` expands environment variables (`$$`).
- Desktop Entry Exec= (Desktop Entry spec, "The Exec key"): double quotes with \\ " ` $ escaped by a
  backslash, then the string-value escape doubles every backslash again; `%` is a field code (`%%`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from naiup.config import DaemonConfig

UNIT_NAME = "naiup.service"
DESKTOP_NAME = "naiup-tray.desktop"


def systemd_quote(arg: str) -> str:
    escaped = arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'"{escaped}"'


# After its grace the daemon still stops its worker and closes its sockets: allow this much more.
STOP_TEARDOWN_SECONDS = 30.0


def daemon_unit(argv: Sequence[str], stop_grace_seconds: float | None = None) -> str:
    """The user unit that runs `naiup run`; restarts it when it crashes, not when it is stopped.

    `stop_grace_seconds`: the daemon's [daemon] stop_grace_seconds (the default when None)."""
    grace = DaemonConfig().stop_grace_seconds if stop_grace_seconds is None else stop_grace_seconds
    exec_start = " ".join(systemd_quote(a) for a in [*argv, "run"])
    return "\n".join(
        [
            "[Unit]",
            "Description=naiup: refine NovelAI images landing in your downloads",
            # Four crashes within a minute means it will not get better by itself; stop retrying.
            "StartLimitIntervalSec=60",
            "StartLimitBurst=4",
            "",
            "[Service]",
            "Type=simple",
            f"ExecStart={exec_start}",
            "Restart=on-failure",
            "RestartSec=5",
            # A model load can take a while on first start; do not count it as a hang.
            "TimeoutStartSec=300",
            # Stop signals the daemon only: it lets the current job finish within its grace, then ends
            # its worker itself. Whatever is left after TimeoutStopSec is SIGKILLed (KillMode=mixed).
            "KillMode=mixed",
            f"TimeoutStopSec={math.ceil(grace + STOP_TEARDOWN_SECONDS)}",
            "Environment=PYTHONUNBUFFERED=1",
            "",
            "[Install]",
            "WantedBy=default.target",
            "",
        ]
    )


_DESKTOP_RESERVED = set(" \t\n\"'\\><~|&;$*?#()`")


def desktop_exec_quote(arg: str) -> str:
    if arg and not (_DESKTOP_RESERVED & set(arg)) and "%" not in arg:
        return arg
    inner = "".join("\\" + ch if ch in '"`$\\' else ch for ch in arg)
    quoted = f'"{inner}"'
    # The general string escape is applied on top: every backslash is written as two.
    return quoted.replace("\\", "\\\\").replace("%", "%%")


def tray_desktop_entry(argv: Sequence[str]) -> str:
    exec_line = " ".join(desktop_exec_quote(a) for a in [*argv, "tray"])
    return "\n".join(
        [
            "[Desktop Entry]",
            "Type=Application",
            "Name=naiup tray",
            "Comment=Tray icon for the naiup NovelAI refiner",
            f"Exec={exec_line}",
            "Icon=image-x-generic",
            "Terminal=false",
            "Categories=Graphics;",
            "X-GNOME-Autostart-enabled=true",
            # Give the panel time to come up, or the icon may find no tray host.
            "X-GNOME-Autostart-Delay=5",
            "",
        ]
    )
