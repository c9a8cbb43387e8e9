"""Which command starts naiup: what autostart files and the tray's "Start service" run.

Absolute paths only: systemd, launchd and the Windows Run key do not search the user's PATH.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path


def naiup_command(windowed: bool = False) -> list[str]:
    """argv prefix that runs `naiup`: frozen exe, else the console script beside this interpreter,
    else the one on PATH, else `<python> -m naiup`.

    `windowed` (Windows): prefer pythonw.exe / naiupw so a login start opens no console window.
    """
    if getattr(sys, "frozen", False):
        return [str(Path(sys.executable).resolve())]
    bindir = Path(sys.executable).parent
    names = ["naiup"]
    if sys.platform == "win32":
        names = ["naiupw.exe", "naiup.exe"] if windowed else ["naiup.exe"]
    for name in names:
        # The script of *this* interpreter's environment first: PATH may hold another install.
        candidate = bindir / name
        if candidate.is_file():
            return [str(candidate.absolute())]
    found = shutil.which("naiup")
    if found:
        return [str(Path(found).absolute())]
    python = Path(sys.executable).absolute()
    if windowed and sys.platform == "win32" and (python.parent / "pythonw.exe").is_file():
        python = python.parent / "pythonw.exe"
    return [str(python), "-m", "naiup"]
