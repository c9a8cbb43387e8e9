"""When a file arrived in a folder, as far as the OS can tell: the clock that catch-up and baseline use."""

from __future__ import annotations

import os
import sys

WINDOWS = sys.platform == "win32"

# Kernel file times come from a coarse clock that can trail time.time() by a tick (up to ~10 ms):
# a file made just after we read the clock may carry an earlier time. Comparisons allow this much.
CLOCK_SLACK = 0.05


def arrival_time(st: os.stat_result, windows: bool = WINDOWS) -> float:
    """The later of a file's modification time and the time it was put where it is.

    POSIX: st_ctime is the status-change time, which a rename into the folder sets to now even when
    the mtime is old (a move, `cp -p` and unpacking an archive all keep the mtime).
    Windows has no status-change time in os.stat: st_ctime is the creation time there (Python < 3.12;
    3.12+ reports it as st_birthtime and deprecates that meaning of st_ctime). A download or a copy is
    created now, so it counts as arrived now; a move within one volume keeps both times, so a file
    moved in while naiup was stopped looks as old as it is. We use max(mtime, creation time) anyway:
    such a file is recorded as existing and offered by `naiup backfill`, never processed unasked.
    """
    if windows:
        born = getattr(st, "st_birthtime", None)
        return max(st.st_mtime, st.st_ctime if born is None else born)
    return max(st.st_mtime, st.st_ctime)
