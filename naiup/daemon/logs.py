"""Logging for `naiup run`: a rotating file in the per-user log dir, plus stderr when there is one.

The worker child (spawned: no handlers of ours) sends its records up the pipe; the daemon writes them,
so model loads and job timings land in the same log and only one process ever rotates the file.
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import sys
from collections.abc import Callable
from pathlib import Path, PurePath
from typing import Any

from naiup.daemon.worker_messages import Log
from naiup.pathnames import plain_text
from naiup.paths import daemon_log_path

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class PlainArgs(logging.Filter):
    """A file name in a log line is shown escaped: undecodable bytes as \\xNN, and a newline in a name
    as \\n, so one record stays one line. Only the arguments: a traceback keeps its own lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(_plain(a) for a in record.args)
        return True


def _plain(arg: object) -> object:
    if isinstance(arg, _Verbatim):
        return arg
    if isinstance(arg, PurePath):
        return plain_text(str(arg))
    return plain_text(arg) if isinstance(arg, str) else arg


def setup_logging(log_dir: Path, level: int = logging.INFO) -> tuple[Path, list[logging.Handler]]:
    """Returns the log file and the handlers added, so the caller can remove them on exit."""
    log_dir.mkdir(parents=True, exist_ok=True)
    path = daemon_log_path(log_dir)
    handlers: list[logging.Handler] = [
        # backslashreplace: a stray surrogate in some library's message costs a \\udcxx, never the record
        logging.handlers.RotatingFileHandler(
            path, maxBytes=2_000_000, backupCount=3, encoding="utf-8", errors="backslashreplace"
        )
    ]
    if sys.stderr is not None:  # pythonw / some autostart launchers give us no stderr
        handlers.append(logging.StreamHandler(sys.stderr))
    root = logging.getLogger()
    for h in handlers:
        h.setFormatter(logging.Formatter(FORMAT))
        h.addFilter(PlainArgs())
        root.addHandler(h)
    root.setLevel(level)
    logging.getLogger("watchdog").setLevel(logging.WARNING)
    return path, handlers


class PipeLogHandler(logging.Handler):
    """In the worker child: each record becomes a Log message to the daemon."""

    def __init__(self, send: Callable[[Any], None]) -> None:
        super().__init__(logging.INFO)
        self._send = send
        self.setFormatter(logging.Formatter("%(message)s"))  # the daemon adds time, level and name
        self.addFilter(PlainArgs())  # the daemon logs the text as one argument: escape names here

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):  # the pipe is gone: the daemon is going away
            self._send(Log(record.levelno, record.name, self.format(record)))


def child_logging(send: Callable[[Any], None]) -> None:
    root = logging.getLogger()
    root.addHandler(PipeLogHandler(send))
    root.setLevel(logging.WARNING)  # libraries: warnings only; ours: info too, as in the daemon
    logging.getLogger("naiup").setLevel(logging.INFO)


def forward(record: Log) -> None:
    """In the daemon: write a record the worker sent."""
    logging.getLogger(record.logger).log(record.level, "%s", _Verbatim(record.text))


class _Verbatim(str):
    """A worker's record, escaped already in the worker: a traceback in it keeps its lines."""

    __slots__ = ()
