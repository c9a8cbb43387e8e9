"""A one-line progress bar for the terminal (`naiup refine`). Draws only on a TTY."""

from __future__ import annotations

import time
from typing import TextIO


class ProgressBar:
    """Callable as an engine progress callback: bar(fraction, label)."""

    def __init__(self, stream: TextIO, name: str, *, width: int = 28, min_interval: float = 0.1) -> None:
        self._stream, self._name, self._width = stream, name, width
        self._min_interval, self._last = min_interval, 0.0
        self._enabled = bool(getattr(stream, "isatty", lambda: False)())
        self._t0 = time.monotonic()

    def __call__(self, fraction: float, label: str) -> None:
        if not self._enabled:
            return
        now = time.monotonic()
        # Redraw at most every min_interval: tile callbacks can fire hundreds of times a second.
        if fraction < 1.0 and now - self._last < self._min_interval:
            return
        self._last = now
        fraction = min(1.0, max(0.0, fraction))
        filled = round(fraction * self._width)
        bar = "#" * filled + "-" * (self._width - filled)
        line = f"\r{self._name} [{bar}] {fraction * 100:3.0f}% {label} {now - self._t0:5.1f}s"
        self._stream.write(line[:200] + "\x1b[K")
        self._stream.flush()

    def close(self) -> None:
        if self._enabled:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
