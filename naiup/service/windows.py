"""Windows autostart: per-user HKCU Run values for the daemon and the tray.

Not a Windows Service: services live in session 0, which cannot show a tray icon or see the user's
Downloads as the user (Microsoft, "Interactive Services"). The Run key needs no admin rights.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

RUN_KEY = r"Software\Microsoft\Windows\CurrentVersion\Run"
DAEMON_VALUE = "naiup"
TRAY_VALUE = "naiup-tray"


def run_command(argv: Sequence[str], verb: str) -> str:
    """The command line stored in the Run value, quoted by the MS C runtime rules."""
    return subprocess.list2cmdline([*argv, verb])


def read_value(name: str) -> str | None:
    import winreg  # Windows only

    try:
        with winreg.OpenKey(winreg.HKEY_CURRENT_USER, RUN_KEY) as key:
            value, _kind = winreg.QueryValueEx(key, name)
            return str(value)
    except FileNotFoundError:
        return None


def write_value(name: str, command: str) -> None:
    import winreg

    with winreg.CreateKeyEx(winreg.HKEY_CURRENT_USER, RUN_KEY, 0, winreg.KEY_SET_VALUE) as key:
        winreg.SetValueEx(key, name, 0, winreg.REG_SZ, command)


def delete_value(name: str) -> None:
    import winreg

    try:
        with winreg.OpenKey(winreg.HKEY_CURRENT_USER, RUN_KEY, 0, winreg.KEY_SET_VALUE) as key:
            winreg.DeleteValue(key, name)
    except FileNotFoundError:
        pass
