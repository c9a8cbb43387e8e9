"""See what naiup did: a before/after compare page per result and a gallery of recent results.

    open_compare(image, open_browser=True) -> Path     # `naiup compare`, the tray's "Recent results"
    open_gallery(since=None, folder=None, ...) -> Path  # `naiup gallery`, the tray's "Open gallery"
    recent_outputs(limit=10) -> list[str]               # the tray's "Recent results" submenu

Pages are static HTML written into the per-user cache (`paths.cache_dir() / "review"`) and opened with
the default browser; nothing is served. The ledger is opened read-only, so all of this works with or
without a running service and never changes its state.
"""

from __future__ import annotations

import contextlib
import webbrowser
from collections.abc import Iterator
from pathlib import Path

from naiup import paths
from naiup.daemon.ledger import Ledger, State, default_path
from naiup.review.urls import file_url

__all__ = ["file_url", "open_compare", "open_gallery", "recent_outputs", "review_dir", "show"]


def review_dir() -> Path:
    return paths.cache_dir() / "review"


@contextlib.contextmanager
def _ledger() -> Iterator[Ledger | None]:
    ledger = Ledger.open_readonly(default_path())
    try:
        yield ledger
    finally:
        if ledger is not None:
            ledger.close()


def open_compare(image: Path, *, open_browser: bool = True) -> Path:
    """Write the compare page for an output or its source and open it; NaiupError when none is known."""
    from naiup.review.compare import write_compare_page
    from naiup.review.gallery import GALLERY_NAME
    from naiup.review.links import find_pair

    with _ledger() as ledger:
        pair = find_pair(image, ledger)
    folder = review_dir()
    gallery = folder / GALLERY_NAME
    page = write_compare_page(pair, folder / "compare", gallery if gallery.is_file() else None)
    if open_browser:
        show(page)
    return page


def open_gallery(
    *, since: float | None = None, folder: Path | None = None, limit: int = 200, open_browser: bool = True
) -> Path:
    """Write the gallery (results finished at or after `since`, epoch seconds) and open it."""
    from naiup.review.gallery import write_gallery

    under = folder.expanduser().absolute() if folder is not None else None
    with _ledger() as ledger:
        page = write_gallery(ledger, review_dir(), since=since, under=under, limit=limit)
    if open_browser:
        show(page)
    return page


def recent_outputs(limit: int = 10) -> list[str]:
    """The newest results whose files still exist, newest first."""
    with _ledger() as ledger:
        if ledger is None:
            return []
        items = ledger.recent((State.DONE,), limit=limit * 3)
    outputs = [i.output for i in items if i.output and Path(i.output).is_file()]
    return list(dict.fromkeys(outputs))[:limit]


def show(page: Path) -> bool:
    """Open a page with the default browser; False when no browser could be started."""
    return webbrowser.open(file_url(page))
