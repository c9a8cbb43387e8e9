"""One-line progress bars for the terminal (`naiup refine`): a job's, and a model download's. Draw only
on a TTY."""

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


class DownloadBar:
    """Callable as the engine's download callback: bar(bytes done, bytes total, repo id). One bar per
    model ("download owner/name [###---] 30% 1.2 of 4.0 GB (30%)"), cleared once it is complete so the
    file's own bar takes the line back."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._bar: ProgressBar | None = None
        self._what = ""

    def __call__(self, done: int, total: int, what: str) -> None:
        from naiup.engine.models.hub import download_text

        if self._bar is None or what != self._what:
            self.close()
            self._bar, self._what = ProgressBar(self._stream, f"download {what}"), what
        self._bar(done / total if total else 1.0, download_text(done, total))
        if done >= total:
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
