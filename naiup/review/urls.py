"""`file://` URLs for local paths, correct for spaces, `#`, `%`, `?`, non-ASCII names and Windows drives.

    file_url("/home/me/Downloads/a b #1.png")      -> "file:///home/me/Downloads/a%20b%20%231.png"
    file_url(PureWindowsPath(r"C:\\Users\\Zoë\\x.png")) -> "file:///C:/Users/Zo%C3%AB/x.png"

Every byte outside the unreserved set is percent-encoded, so a name can never end the path early (`#`
starts a fragment, `?` a query) or be read as an escape (`%41`). Windows names are UTF-8 encoded, as
browsers expect; POSIX names are their file-system bytes (UTF-8 on any current desktop; a name that is
not valid UTF-8 keeps its exact bytes, which is what the browser hands back to the OS).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath, PureWindowsPath
from urllib.parse import quote

__all__ = ["file_url"]


def file_url(path: str | os.PathLike[str]) -> str:
    """The `file://` URL of an absolute path (a relative one is taken from the current folder)."""
    p = path if isinstance(path, PurePath) else Path(path)
    if isinstance(p, PureWindowsPath):
        return _windows_url(p)
    if not p.is_absolute():
        p = Path(p).absolute()
    raw = os.fsencode(str(p)) if os.name != "nt" else str(p).encode("utf-8", "surrogatepass")
    return "file://" + quote(raw, safe="/")


def _windows_url(p: PureWindowsPath) -> str:
    text = str(p)
    # Extended-length forms: \\?\C:\x is C:\x, \\?\UNC\server\share\x is \\server\share\x.
    if text.startswith("\\\\?\\UNC\\"):
        p = PureWindowsPath("\\\\" + text[8:])
    elif text.startswith("\\\\?\\"):
        p = PureWindowsPath(text[4:])
    if not p.is_absolute():
        if os.name != "nt":
            raise ValueError(f"not an absolute Windows path: {text!r}")
        p = PureWindowsPath(Path(p).absolute())
    drive = p.drive
    rest = p.as_posix()[len(drive) :]
    encoded = quote(rest.encode("utf-8", "surrogatepass"), safe="/")
    if len(drive) == 2 and drive[1] == ":":
        return f"file:///{drive[0]}:{encoded}"  # the drive's colon stays as browsers write it
    # UNC: \\server\share\dir -> file://server/share/dir
    server_share = drive.replace("\\", "/").lstrip("/")
    return "file://" + quote(server_share.encode("utf-8", "surrogatepass"), safe="/") + encoded
