"""File names as the file system has them (bytes, lossless) and as a person can read them (escaped).

A POSIX file name is bytes, not text: a zip made on a Windows machine in Japan leaves Shift-JIS bytes
that are not UTF-8, and Python hands such a name over as a str with "surrogate escapes" (`\\udcfe`).
That str opens the file, but SQLite, UTF-8 files and GUI toolkits refuse it. So:

    path_key(path) -> bytes        # what the ledger stores and compares (os.fsencode: lossless)
    path_from_key(key) -> str      # back to the str the os module accepts
    shown(path) -> str             # for status, logs, notifications: undecodable bytes as \\xNN,
                                   # control characters (a newline in a name) as \\n, \\x1b...
    plain_text(text) -> str        # any message that may embed such a name, made safe the same way
    json_safe(reply) -> reply      # a control reply made valid Unicode for printing as JSON
"""

from __future__ import annotations

import os
from typing import Any

_CONTROL = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F)} | {
    ord("\n"): "\\n",
    ord("\r"): "\\r",
    ord("\t"): "\\t",
}


def path_key(path: str | os.PathLike[str]) -> bytes:
    return os.fsencode(path)


def path_from_key(key: bytes | str) -> str:
    # str: a row written before paths were stored as bytes (the ledger migrates them, this is a guard)
    return key if isinstance(key, str) else os.fsdecode(key)


def plain_text(text: str) -> str:
    """`text` with surrogate escapes turned into readable \\xNN and control characters escaped."""
    if text.isprintable():
        return text
    try:
        raw = text.encode("utf-8", "surrogateescape")  # the bytes the name really has
    except UnicodeEncodeError:  # a surrogate no file name decodes to (e.g. from hand-made JSON)
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace").translate(_CONTROL)


def shown(path: str | os.PathLike[str]) -> str:
    return plain_text(os.fspath(path))


def json_safe(value: Any) -> Any:
    """`value` (a control reply) with every string made valid Unicode, for `--json` output.

    The control protocol carries a name that is not UTF-8 with surrogate escapes (JSON "\\udcfe"): exact
    for naiup itself, but a lone surrogate is no character, and strict JSON readers (jq, serde, ...)
    refuse it or turn it into U+FFFD. So a script sees such a string as the text output and the log
    show it (\\xNN, via `shown`) and, where it is a value in an object, the exact bytes as hex beside
    it under "<key>_hex", to open the file by. Valid strings are left exactly as they are.
    """
    if isinstance(value, str):
        return value if _is_unicode(value) else shown(value)
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    if isinstance(value, dict):
        out: dict[Any, Any] = {}
        for key, v in value.items():
            out[json_safe(key)] = json_safe(v)
            if isinstance(v, str) and not _is_unicode(v):
                out[f"{key}_hex"] = os.fsencode(v).hex() if _is_name(v) else None
        return out
    return value


def _is_name(text: str) -> bool:
    """True for a str os.fsdecode can give (only \\udc80-\\udcff escapes): it has exact bytes."""
    try:
        text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return False
    return True


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
