"""Errors a user can act on. Anything that is not a NaiupError is a bug and keeps its traceback.

NaiupError                 str(exc) is the whole user-facing message
├── ConfigError            bad config file / key / value (names file and key)
├── InputError             one input image is unusable (names the file)
│   ├── MetadataError      its metadata is malformed (bombs, bad lengths, bad JSON)
│   └── UnsafeInputError   a decompression bomb (pixels or text): waiting will not fix it
├── ModelLoadError         a model file or hub id cannot be loaded (names the file)
├── EngineError            refine was handed unusable input, or produced NaN/Inf
│   └── OutOfMemoryError   out of GPU memory even at the least it can do: may pass once others free it
├── OutputError            an output cannot be written (no space, permission, would clobber)
└── FatalError             the service cannot go on (lost lock, bad state dir)
"""

from __future__ import annotations

import re
from pathlib import Path

# Sentences third-party libraries (diffusers, transformers, huggingface_hub) put in their errors that
# mean nothing to someone reading `naiup status` or the tray: a traceback they never see, doc links, and
# the Hub connection boilerplate (we say offline/cache ourselves, in plain words, where it matters).
_NOISE = (
    re.compile(r"\s*Please check out the root cause in the stacktrace above\.?", re.I),
    re.compile(
        r"\s*Check(?:out)? your internet connection or see how to run the library in offline mode"
        r" at\s*'[^']*'\.?",
        re.I,
    ),
    re.compile(r"\s*You should try again after checking your internet connection\.?", re.I),
    re.compile(r"Couldn't connect to the Hub: .*?(?:Will try to load from local cache\.|$)", re.I | re.S),
)
_HUB_BOILERPLATE = re.compile(
    r"We couldn't connect to '[^']*' to load (?:this model|the files|[^,.]+)"
    r"(?:, (?:and )?couldn't find (?:it|them) in the cached files.*?\.(?=\s|\)|$))?\.?",
    re.I | re.S,
)


def plain_message(text: str) -> str:
    """A third-party error message without the noise above, on one line: what the user needs to read."""
    text = _HUB_BOILERPLATE.sub(
        "not in the local Hugging Face cache, and the Hub could not be reached.", text
    )
    for pattern in _NOISE:
        text = pattern.sub("", text)
    return " ".join(text.split()).strip()


class NaiupError(Exception):
    """A problem the user can fix. str(exc) is the whole message."""


class ConfigError(NaiupError):
    def __init__(self, key: str, reason: str, path: Path | str | None = None) -> None:
        where = f"{path}: [{key}]" if path else f"[{key}]"
        super().__init__(f"{where} {reason}")
        self.path, self.key, self.reason = path, key, reason


class InputError(NaiupError):
    def __init__(self, path: Path | str, reason: str, key: str | None = None) -> None:
        where = f"{path} [{key}]" if key else str(path)
        super().__init__(f"{where}: {reason}")
        self.path, self.key, self.reason = path, key, reason


class MetadataError(InputError):
    pass


class NotAnImageError(InputError):
    """The file's first bytes are in no image format at all (a text file or a web page named .png).
    Unlike a truncated image, whose format is known, more bytes arriving would not make it one."""


class UnsafeInputError(InputError):
    """Refused for safety (pixel or text bomb); unlike a truncated file, it will not heal."""


class ModelLoadError(NaiupError):
    def __init__(self, what: Path | str, reason: str) -> None:
        reason = plain_message(reason)  # it often quotes a diffusers/hub exception
        super().__init__(f"{what}: {reason}")
        self.what, self.reason = what, reason


class EngineError(NaiupError):
    pass


class OutOfMemoryError(EngineError):
    """Not the image's fault: the daemon retries it (up to daemon.max_attempts) instead of failing it."""


class OutputError(NaiupError):
    """transient: the disk was full or busy; the same job may well succeed later."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class FatalError(NaiupError):
    pass
