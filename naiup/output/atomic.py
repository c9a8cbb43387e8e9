"""Files that appear whole or not at all, and never replace anything already there.

    write_new(final, data) -> Path                 # FileExistsError if `final` exists
    write_first_free(candidates, data) -> Path     # the first name in `candidates` that is free
    check_writable(first)                          # OutputError now if that publish could not write
    replace_file(path, data)                       # our own files only: state, autostart entries

The data goes to a hidden temp file in the same folder (`.<12 hex>.<rand>.naiup-tmp`, 32 bytes whatever
the output's name: a temp named after a long output would pass the file system's name limit first; the
hex is a digest of the first output name, so a killed job's temp is still found by that name). The temp
is fsynced, then hard-linked to the final name: link() fails when the target exists, so a
file that appeared meanwhile is never clobbered (rename/replace would silently overwrite it on
POSIX). File systems without hard links (FAT/exFAT, some network shares) fall back to rename after
an existence check. The temp file is removed on every path out (a failing removal is logged, never
raised over the error that matters).

Errors: a full disk and passing I/O trouble are retried with backoff (RETRY_DELAYS), then raised as an
OutputError with transient=True (the daemon tries the job again later). A read-only folder, a denied
permission or a name the file system refuses fail at once, with a plain reason.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import logging
import os
import secrets
import time
from collections.abc import Iterable
from pathlib import Path

from naiup.errors import OutputError

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".naiup-tmp"
# errnos meaning "this file system cannot hard-link", not "the target exists".
_NO_LINK = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS, errno.EMLINK}
# Worth another try: space may be freed, a busy or flaky share may recover. Anything else will not heal.
_TRANSIENT = {
    errno.ENOSPC,
    getattr(errno, "EDQUOT", errno.ENOSPC),
    errno.EAGAIN,
    errno.EBUSY,
    errno.EINTR,
    errno.EIO,
    errno.ETIMEDOUT,
}
RETRY_DELAYS = (0.5, 2.0)  # seconds before the 2nd and 3rd try of one publish
_REASONS = {
    errno.EROFS: "the folder is read-only",
    errno.EACCES: "permission denied (the folder is not writable for this user)",
    errno.EPERM: "permission denied (the folder is not writable for this user)",
    errno.ENAMETOOLONG: "the file name is too long for this file system",
    errno.ENOENT: "the folder is gone",
    errno.ENOSPC: "the disk is full",
    getattr(errno, "EDQUOT", errno.ENOSPC): "the disk is full",
}
_sleep = time.sleep  # tests replace it: the backoff is the behaviour, not the waiting


def write_new(final: Path, data: bytes) -> Path:
    """Write `data` to `final`, which must not exist (FileExistsError otherwise)."""
    return write_first_free([final], data, raise_if_taken=True)


def write_first_free(candidates: Iterable[Path], data: bytes, *, raise_if_taken: bool = False) -> Path:
    """Publish `data` under the first candidate name that does not exist yet; returns that name.

    All candidates must be in one folder (the temp file is made there).
    """
    it = iter(candidates)
    first = next(it)
    folder = first.parent
    names = itertools.chain([first], it)  # lazily: callers offer thousands
    final: Path | None = next(names)
    delays = iter(RETRY_DELAYS)
    while True:
        tmp = folder / f"{temp_prefix(first)}{secrets.token_hex(4)}{TEMP_SUFFIX}"
        try:
            _write_synced(tmp, data)
            while final is not None:
                if final.parent != folder:
                    raise ValueError(f"candidates must share one folder: {final}")
                if _publish(tmp, final):
                    _fsync_dir(folder)
                    return final
                if raise_if_taken:
                    raise FileExistsError(errno.EEXIST, "file exists", str(final))
                final = next(names, None)
            raise OutputError(f"{first}: every candidate output name is taken")
        except FileExistsError:
            raise
        except OSError as exc:
            delay = next(delays, None) if exc.errno in _TRANSIENT else None
            if delay is None:
                raise write_error(exc) from exc
            log.warning("cannot write the output yet, retrying in %.1f s error=%s", delay, exc)
        finally:
            _remove(tmp)
        _sleep(delay)


def check_writable(first: Path) -> None:
    """Raise the OutputError a publish of `first` would end in, now, for a folder that takes no new
    file: a job checks before its engine work (minutes on a CPU), not after it.

    It creates (and removes) an empty temp exactly as the publish does, same folder and same name
    pattern (so a worker killed in between leaves a temp found like a publish's): asking os.access
    instead would be wrong where permissions are not the whole story (root, ACLs, read-only mounts,
    network shares). No retry: a full disk or a flaky share says so as transient, and the daemon
    tries the job again later."""
    tmp = first.parent / f"{temp_prefix(first)}{secrets.token_hex(4)}{TEMP_SUFFIX}"
    try:
        _write_synced(tmp, b"")
    except OSError as exc:
        raise write_error(exc) from exc
    finally:
        _remove(tmp)


def write_error(exc: OSError) -> OutputError:
    """The OutputError a failed write becomes: a plain reason, and whether trying later may help."""
    reason = _REASONS.get(exc.errno or 0) or exc.strerror or str(exc)
    return OutputError(f"cannot write beside the original: {reason}", transient=exc.errno in _TRANSIENT)


def temp_prefix(first: Path) -> str:
    """How the temps of a publish whose first candidate name is `first` begin (short for any name)."""
    return "." + hashlib.sha256(os.fsencode(first.name)).hexdigest()[:12] + "."


def _remove(tmp: Path) -> None:
    # Runs in `finally`: an error here (the read-only folder that failed the write) must not replace
    # the error being raised.
    try:
        tmp.unlink(missing_ok=True)
    except OSError as exc:
        log.debug("cannot remove temp path=%s error=%s", tmp, exc)


def replace_file(path: Path, data: bytes) -> None:
    """Replace a file of our own whole (runtime state, autostart entries): readers see the old bytes or
    the new ones, never half. Unlike write_new this overwrites: use it only for files naiup owns."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    try:
        _write_synced(tmp, data)
        os.replace(tmp, path)
    finally:
        _remove(tmp)


def _write_synced(tmp: Path, data: bytes) -> None:
    # "xb": a fresh name, never someone else's file; fsync so a crash cannot leave a hollow file.
    with open(tmp, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _publish(tmp: Path, final: Path) -> bool:
    """True if `final` now holds the data; False if the name was taken."""
    try:
        os.link(tmp, final)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno not in _NO_LINK and not isinstance(exc, NotImplementedError):
            raise
    # No hard links here. Windows' rename refuses an existing target; on POSIX check first
    # (a narrow race, accepted only on file systems that leave no better choice).
    if final.exists():
        return False
    try:
        os.rename(tmp, final)
    except FileExistsError:
        return False
    return True


def _fsync_dir(folder: Path) -> None:
    # The new directory entry must survive a crash too; Windows cannot open directories.
    # Best effort: the output is already published, so a folder that refuses this (write-only
    # folders, some network shares) must not turn a written output into a failed job that is redone.
    if os.name == "nt":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError as exc:
        log.debug("cannot open folder to fsync folder=%s error=%s", folder, exc)
        return
    try:
        os.fsync(fd)
    except OSError as exc:
        log.debug("folder fsync refused folder=%s error=%s", folder, exc)
    finally:
        os.close(fd)
