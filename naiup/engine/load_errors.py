"""Which errors of a model load become advice for the user, and which stay bugs.

    with explain_load_errors(path, "not a supported upscaler model ({kind}: {exc})"):
        descriptor = spandrel.ModelLoader().load_from_state_dict(state)

Libraries raise many types for a file they cannot use (a truncated safetensors, weights whose shapes do
not fit, a repo not on the Hub or not in the cache) and each deserves a sentence that names the file:
a ModelLoadError. Our own code raises a NaiupError when it means the user; anything else it raises is a
bug, and a bug dressed up as "cannot load this model" sends the user after a file that is fine and
hides the traceback we need. So only errors that come from outside naiup are explained:

- OSError (files, the network, most of the Hub's errors) and the types only libraries define
  (safetensors', huggingface_hub's, spandrel's, pickle's), wherever they are raised;
- ValueError, KeyError, IndexError, RuntimeError, EOFError (diffusers' converters, torch's shape
  mismatches and truncated files, out of memory) only when the innermost frame of the traceback is
  not naiup's: the same types raised by our own code are bugs.

TypeError, AttributeError, AssertionError and the rest are never explained: raised inside a library
they mean we called it wrong.
"""

from __future__ import annotations

import functools
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from naiup.errors import ModelLoadError, NaiupError

_NAIUP = Path(__file__).resolve().parents[1]  # the naiup package folder
# Types both libraries and our own code raise: the file's fault only when a library raised them.
_BUILTIN_FAULTS: tuple[type[BaseException], ...] = (ValueError, KeyError, IndexError, RuntimeError, EOFError)


@functools.cache
def _library_errors() -> tuple[type[BaseException], ...]:
    """OSError, and the error types of the libraries that load models (those that are installed)."""
    found: list[type[BaseException]] = [OSError, pickle.UnpicklingError]
    try:
        from safetensors import SafetensorError

        found.append(SafetensorError)
    except ImportError:
        pass
    try:
        from huggingface_hub import errors as hub

        # Most hub errors are OSErrors; these two are not (HTTPError: its HTTP client's own errors).
        found += [t for t in (getattr(hub, "EntryNotFoundError", None), getattr(hub, "HTTPError", None)) if t]
    except ImportError:
        pass
    try:
        import spandrel

        found += [spandrel.UnsupportedModelError, spandrel.UnsupportedDtypeError]
    except ImportError:
        pass
    return tuple(found)


def is_foreign(exc: BaseException) -> bool:
    """Whether `exc` is a library's (or the system's) complaint about a model, not a bug of ours."""
    if isinstance(exc, NaiupError):
        return False
    if isinstance(exc, _library_errors()):
        return True
    return isinstance(exc, _BUILTIN_FAULTS) and not _raised_in_naiup(exc)


def _raised_in_naiup(exc: BaseException) -> bool:
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(_NAIUP)


@contextmanager
def explain_load_errors(what: Path | str, reason: str) -> Iterator[None]:
    """Re-raise a foreign error (see the module's docstring) of the block as ModelLoadError(what,
    reason); `reason` may use {exc} (the error's text) and {kind} (its type's name). Everything
    else, our NaiupErrors and our bugs, passes through untouched."""
    try:
        yield
    except Exception as exc:
        if not is_foreign(exc):
            raise
        raise ModelLoadError(what, reason.format(exc=exc, kind=type(exc).__name__)) from exc
