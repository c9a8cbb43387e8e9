"""macOS autostart: LaunchAgent plists for the daemon and the tray (launchd.plist(5))."""

from __future__ import annotations

import plistlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DAEMON_LABEL = "org.naiup.daemon"
TRAY_LABEL = "org.naiup.tray"

PRIVACY_WARNING = (
    "macOS protects ~/Downloads: a login item started by launchd gets no permission prompt, its reads "
    "just fail. Grant access once in System Settings > Privacy & Security > Files and Folders (or Full "
    "Disk Access) to the program the plist runs: {program}. The grant follows that binary, so repeat "
    "it after upgrading Python or moving the environment. `naiup doctor` checks the watch folders."
)


def daemon_plist(argv: Sequence[str], log_dir: Path) -> dict[str, Any]:
    return {
        "Label": DAEMON_LABEL,
        "ProgramArguments": [*argv, "run"],
        "RunAtLoad": True,
        # Restart after a crash, not after `naiup stop` or "Stop service" in the tray.
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": 10,
        "StandardOutPath": str(log_dir / "daemon.out.log"),
        "StandardErrorPath": str(log_dir / "daemon.err.log"),
        "EnvironmentVariables": {"PYTHONUNBUFFERED": "1"},
    }


def tray_plist(argv: Sequence[str], log_dir: Path) -> dict[str, Any]:
    return {
        "Label": TRAY_LABEL,
        "ProgramArguments": [*argv, "tray"],
        "RunAtLoad": True,
        # "Quit tray" must stay quit: launchd respawning it would make the menu item a lie.
        "KeepAlive": False,
        "ProcessType": "Interactive",
        "LimitLoadToSessionType": "Aqua",  # GUI logins only; an SSH session has no menu bar
        "StandardOutPath": str(log_dir / "tray.out.log"),
        "StandardErrorPath": str(log_dir / "tray.err.log"),
    }


def dump(plist: dict[str, Any]) -> bytes:
    return plistlib.dumps(plist, fmt=plistlib.FMT_XML, sort_keys=False)
