"""Argument types for times on the command line: `--for 15m`, `--since 7d`, `--since 2024-10-01`."""

from __future__ import annotations

import argparse
import math
import time
from datetime import datetime


def duration(text: str) -> float:
    """Seconds: 90s, 15m, 1h, 7d, or a bare number of seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        unit = units.get(text[-1:].lower())
        seconds = float(text[:-1]) * unit if unit else float(text)
    except ValueError:
        seconds = math.nan
    # 0 would read as "no end" in the daemon; nan and inf never end; a negative one never starts.
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 15m, 1h)")
    return seconds


def since(text: str) -> float:
    """--since: an ISO date or date-time (local time unless it names a zone), or a duration ago."""
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        pass
    try:
        return time.time() - duration(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"not a date or duration: {text!r} (e.g. 2024-10-01, 2024-10-01T18:00, 7d, 12h)"
        ) from None
