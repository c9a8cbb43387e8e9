"""Files that appear whole or not at all, and never replace anything already there.

    write_new(final, data) -> Path                 # FileExistsError if `final` exists
    write_first_free(candidates, data) -> Path     # the first name in `candidates` that is free
    replace_file(path, data)                       # our own files only: state, autostart entries

The data goes to a hidden temp file in the same folder (`.<name>.<rand>.naiup-tmp`: the watcher skips
it), is fsynced, then hard-linked to the final name: link() fails when the target exists, so a
file that appeared meanwhile is never clobbered (rename/replace would silently overwrite it on
POSIX). File systems without hard links (FAT/exFAT, some network shares) fall back to rename after
an existence check. The temp file is removed on every path out.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import secrets
from collections.abc import Iterable
from pathlib import Path

from naiup.errors import OutputError

log = logging.getLogger(__name__)

TEMP_SUFFIX = ".naiup-tmp"
# errnos meaning "this file system cannot hard-link", not "the target exists".
_NO_LINK = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOSYS, errno.EMLINK}


def is_temp_name(path: Path) -> bool:
    """True for our own in-progress files, so scanners can ignore them."""
    return path.name.startswith(".") and path.name.endswith(TEMP_SUFFIX)


def write_new(final: Path, data: bytes) -> Path:
    """Write `data` to `final`, which must not exist (FileExistsError otherwise)."""
    return write_first_free([final], data, raise_if_taken=True)


def write_first_free(candidates: Iterable[Path], data: bytes, *, raise_if_taken: bool = False) -> Path:
    """Publish `data` under the first candidate name that does not exist yet; returns that name.

    All candidates must be in one folder (the temp file is made there, once).
    """
    it = iter(candidates)
    first = next(it)
    folder = first.parent
    tmp = folder / f".{first.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
    try:
        _write_synced(tmp, data)
        for final in itertools.chain([first], it):  # lazily: callers offer thousands
            if final.parent != folder:
                raise ValueError(f"candidates must share one folder: {final}")
            if _publish(tmp, final):
                _fsync_dir(folder)
                return final
            if raise_if_taken:
                raise FileExistsError(errno.EEXIST, "file exists", str(final))
        raise OutputError(f"{first}: every candidate output name is taken")
    except OSError as exc:
        if isinstance(exc, FileExistsError):
            raise
        raise OutputError(f"{first}: cannot write output ({exc.strerror or exc})") from exc
    finally:
        tmp.unlink(missing_ok=True)


def replace_file(path: Path, data: bytes) -> None:
    """Replace a file of our own whole (runtime state, autostart entries): readers see the old bytes or
    the new ones, never half. Unlike write_new this overwrites: use it only for files naiup owns."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    try:
        _write_synced(tmp, data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


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
