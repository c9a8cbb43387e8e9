"""Logging for `naiup run`: a rotating file in the per-user log dir, plus stderr when there is one."""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(log_dir: Path, level: int = logging.INFO) -> tuple[Path, list[logging.Handler]]:
    """Returns the log file and the handlers added, so the caller can remove them on exit."""
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / "daemon.log"  # only the daemon writes this file; the tray has its own
    handlers: list[logging.Handler] = [
        logging.handlers.RotatingFileHandler(path, maxBytes=2_000_000, backupCount=3, encoding="utf-8")
    ]
    if sys.stderr is not None:  # pythonw / some autostart launchers give us no stderr
        handlers.append(logging.StreamHandler(sys.stderr))
    root = logging.getLogger()
    for h in handlers:
        h.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(h)
    root.setLevel(level)
    logging.getLogger("watchdog").setLevel(logging.WARNING)
    return path, handlers
