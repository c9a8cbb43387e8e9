"""Hooks that let a script or an end-to-end test drive `naiup tray` without clicking.

Set by environment (naiup.seams), never on the command line:
NAIUP_TRAY_STATE_FILE    the tray writes its state as JSON (atomically) after every change
NAIUP_TRAY_ACTIONS_FILE  the tray reads appended lines ("toggle-pause", "preset refine-4x") as clicks
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from naiup.output.atomic import replace_file
from naiup.tray import menu as tray_menu
from naiup.tray.menu import MenuEntry, TrayState


def write_state(path: Path, st: TrayState, backend: str | None) -> None:
    data = {
        "connected": st.connected,
        "icon": tray_menu.icon_state(st).value,
        "tooltip": tray_menu.tooltip(st),
        "paused": st.paused,
        "active_preset": st.active_preset,
        "menu": [describe(e) for e in tray_menu.build_menu(st)],
        "backend": backend,
        "written_at": time.time(),
    }
    replace_file(path, json.dumps(data, indent=1).encode("utf-8"))  # readers never see half a file


def describe(e: MenuEntry) -> dict[str, Any]:
    d: dict[str, Any] = {"text": e.text, "enabled": e.enabled}
    if e.checked is not None:
        d["checked"] = e.checked
    if e.submenu:
        d["submenu"] = [describe(s) for s in e.submenu]
    return d


class ActionsReader:
    """Follows an append-only file and returns the whole lines added since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0

    def read(self) -> list[tuple[str, str | None]]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        # Only whole lines: a writer may be half-way through the next one.
        done = data[: data.rfind(b"\n") + 1]
        self._offset += len(done)
        out = []
        for line in done.decode("utf-8", "replace").splitlines():
            verb, _, arg = line.strip().partition(" ")
            if verb:
                out.append((verb, arg or None))
        return out
