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

import os
import re
from collections.abc import Sequence
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
# diffusers' DiffusionPipeline.download when the Hub cannot be reached (or HF_HUB_OFFLINE is set) and
# the repo is not cached: it quotes huggingface_hub's advice about `local_files_only`, an argument the
# user never sees. The whole sentence becomes ours, with the repo id it names.
_DIFFUSERS_NOT_CACHED = re.compile(
    r"Cannot load model (?P<repo>\S+?): the model is not fully cached locally \(.*?\) and an error"
    r" occurred while trying to fetch metadata from the Hub\.?",
    re.I | re.S,
)
# huggingface_hub's LocalEntryNotFoundError texts: the same `local_files_only` talk, without a repo id.
_HUB_LOCAL_ONLY = re.compile(
    r"Cannot find (?:an appropriate cached snapshot folder for the specified revision on the local disk"
    r"|the requested files in the disk cache) and outgoing traffic has been disabled\. To enable"
    r" (?:repo|hf\.co) look-ups and downloads online, (?:pass|set) '[^']*'"
    r"(?: as input| as environment variable| to False)?\.?",
    re.I,
)


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (else TRANSFORMERS_OFFLINE) as huggingface_hub reads it: no download will happen."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_model_unavailable(repo_id: str, offline: bool) -> str:
    """The one message for a hub model that is neither in the local cache nor downloadable now, from
    our own hub fetch and from a library's error alike: why, then each way out."""
    if offline:
        why = "HF_HUB_OFFLINE is set, so it cannot be downloaded"
        online = "unset HF_HUB_OFFLINE and refine once"
    else:
        why = "the Hub could not be reached (no internet?), so it cannot be downloaded"
        online = "refine once while online"
    return (
        f"hub model not in the local Hugging Face cache, and {why}. Fix: {online} (naiup downloads only "
        f"the files it loads) or run `hf download {repo_id}` while online (the whole repo); or point the "
        "config key at a local .safetensors file or diffusers folder; or use an upscale-only preset "
        # The same text reaches the service's status and `naiup refine`'s error, whose ways to choose
        # a preset differ: name both.
        "(`naiup preset upscale-2x` for the service, `--preset upscale-2x` for `naiup refine`)"
    )


def plain_message(text: str) -> str:
    """A third-party error message without the noise above, on one line: what the user needs to read."""
    text = _DIFFUSERS_NOT_CACHED.sub(
        lambda m: f"{m['repo']}: {hub_model_unavailable(m['repo'], hub_offline())}", text
    )
    text = _HUB_BOILERPLATE.sub(
        "not in the local Hugging Face cache, and the Hub could not be reached.", text
    )
    text = _HUB_LOCAL_ONLY.sub("not in the local Hugging Face cache, and downloading is switched off.", text)
    for pattern in _NOISE:
        text = pattern.sub("", text)
    return " ".join(text.split()).strip()


class NaiupError(Exception):
    """A problem the user can fix. str(exc) is the whole message."""


class ConfigError(NaiupError):
    """One problem (`key`, `reason`, `path`), or several of one file (`ConfigError.of`): then `problems`
    holds each, `key`/`reason`/`path` are the first's and the message has a line per problem."""

    def __init__(self, key: str, reason: str, path: Path | str | None = None) -> None:
        where = f"{path}: [{key}]" if path else f"[{key}]"
        super().__init__(f"{where} {reason}")
        self.path, self.key, self.reason = path, key, reason
        self.problems: tuple[ConfigError, ...] = (self,)

    @classmethod
    def of(cls, errors: Sequence[ConfigError]) -> ConfigError:
        """One error for all of `errors` (each may itself hold several); `errors` must not be empty."""
        problems = tuple(p for e in errors for p in e.problems)
        if len(problems) == 1:
            return problems[0]
        first = problems[0]
        combined = cls(first.key, first.reason, first.path)
        combined.args = ("\n".join(str(p) for p in problems),)
        combined.problems = problems
        return combined


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
