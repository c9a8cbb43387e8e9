"""The gallery page: recent results from the ledger, newest first, each linked to its compare page.

    write_gallery(ledger, folder, since=None, under=None, limit=200) -> Path

Done rows get a card (thumbnail, name, preset, sizes, time), at most `limit` of them; failed rows are
listed with their reason, at most FAILED_LIMIT of them.
With `under` (a folder), only files in it count, and naiup outputs found in that folder that the ledger
does not know (made by `naiup refine`) are added, dated by their modification time.
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from naiup.daemon.ledger import Item, Ledger, State
from naiup.pathnames import shown
from naiup.review.compare import render, write_compare_page, write_text
from naiup.review.links import Pair, read_provenance
from naiup.review.thumbnails import THUMB_MAX, thumbnails
from naiup.review.urls import file_url

GALLERY_NAME = "gallery.html"
# Failed files are listed below the results with their own cap, so `--limit` counts results only.
FAILED_LIMIT = 50
_PRUNE_AFTER = 30 * 86400  # cached compare pages and thumbnails nobody listed for this long


@dataclass(frozen=True, slots=True)
class Entry:
    when: float
    source: Path | None
    output: Path | None
    item: Item | None
    error: str | None = None  # set for failed files
    provenance: dict[str, Any] | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None


def collect(
    ledger: Ledger | None, since: float | None = None, under: Path | None = None, limit: int = 200
) -> list[Entry]:
    """At most `limit` results and at most FAILED_LIMIT failed files, newest first.

    Each has its own cap so that a burst of failures never pushes the results out of the page.
    """
    results: list[Entry] = []
    failed: list[Entry] = []
    known: set[Path] = set()
    if ledger is not None:
        for state, cap in ((State.DONE, limit), (State.FAILED, FAILED_LIMIT)):
            # Ask for more than the cap when filtering by folder: the filter runs after the query.
            for item in ledger.recent((state,), since, cap if under is None else cap * 20):
                source = Path(item.path)
                if under is not None and not _inside(source, under):
                    continue
                if item.state is State.FAILED:
                    failed.append(
                        Entry(item.finished or 0.0, source, None, item, item.error or "unknown error")
                    )
                elif item.output:
                    known.add(Path(item.output))
                    results.append(Entry(item.finished or 0.0, source, Path(item.output), item))
    if under is not None:
        results += _outputs_in(under, known, since)
    entries = _newest(results, limit) + _newest(failed, FAILED_LIMIT)
    entries.sort(key=lambda e: e.when, reverse=True)
    return entries


def _newest(entries: list[Entry], limit: int) -> list[Entry]:
    return sorted(entries, key=lambda e: e.when, reverse=True)[:limit]


def _inside(path: Path, folder: Path) -> bool:
    try:
        return path.is_relative_to(folder)
    except ValueError:
        return False


def _outputs_in(folder: Path, known: set[Path], since: float | None) -> list[Entry]:
    """naiup outputs in `folder` (not recursive) that the ledger does not list."""
    found = []
    try:
        candidates = [p for p in folder.iterdir() if p.suffix.lower() == ".png" and p not in known]
    except OSError:
        return []
    for p in candidates:
        try:
            mtime = p.stat().st_mtime
        except OSError:
            continue
        if since is not None and mtime < since:
            continue
        record = read_provenance(p)
        if record is None:
            continue
        name = record.get("source_name")
        source = p.parent / Path(name).name if isinstance(name, str) and name else None
        found.append(Entry(mtime, source, p, None, provenance=record))
    return found


def write_gallery(
    ledger: Ledger | None,
    folder: Path,
    since: float | None = None,
    under: Path | None = None,
    limit: int = 200,
    now: float | None = None,
) -> Path:
    """Write the gallery page, its thumbnails and one compare page per result; return the page."""
    now = time.time() if now is None else now
    entries = collect(ledger, since, under, limit)
    page = folder / GALLERY_NAME
    thumbs = thumbnails([e.output for e in entries if e.output is not None], folder / "thumbs")
    cards, failed = [], []
    used: set[Path] = set()
    for e in entries:
        if e.failed:
            failed.append(_failed_row(e, now))
            continue
        assert e.output is not None
        provenance = e.provenance if e.provenance is not None else read_provenance(e.output)
        compare = write_compare_page(Pair(e.source, e.output, e.item, provenance), folder / "compare", page)
        thumb = thumbs.get(e.output)
        used.update(p for p in (compare, thumb) if p is not None)
        cards.append(_card(e, provenance, compare, thumb, now))
    _prune(folder, used, now)
    done = len(cards)
    scope = f" in {shown(under)}" if under is not None else ""
    span = f" since {_when(since)}" if since is not None else ""
    summary = (
        f"{done} result{'s' if done != 1 else ''}, {len(failed)} failed{scope}{span} · made {_when(now)}"
    )
    if ledger is None and under is None:
        summary += " · no ledger yet: the service (naiup run) has not run; try --folder DIR"
    body_cards = "\n".join(cards) or '<p class="empty">No results yet.</p>'
    body_failed = (
        '<h2>Failed</h2>\n<table class="failed"><tr><th>file</th><th>reason</th><th>when</th></tr>\n'
        + "\n".join(failed)
        + "\n</table>"
        if failed
        else ""
    )
    text = render(
        "gallery.html",
        "naiup: results",
        {"count": done, "failed": len(failed)},
        summary=html.escape(summary),
        cards=body_cards,
        failed=body_failed,
    )
    write_text(page, text)
    return page


def _card(e: Entry, provenance: dict[str, Any] | None, compare: Path, thumb: Path | None, now: float) -> str:
    assert e.output is not None
    preset = ((provenance or {}).get("preset") or {}).get("name") or (e.item.preset if e.item else "") or ""
    if thumb is not None:
        try:
            from PIL import Image

            with Image.open(thumb) as im:
                w, h = im.size
        except OSError:
            w = h = THUMB_MAX
        picture = f'<img src="{html.escape(file_url(thumb))}" width="{w}" height="{h}" alt="">'
    else:
        picture = '<span class="gone">result file missing</span>'
    meta = " · ".join(x for x in (preset, _ago(e.when, now)) if x)
    return (
        f'<a class="card" href="{html.escape(file_url(compare))}" title="{html.escape(shown(e.output))}">'
        f'<span class="thumb">{picture}</span>'
        f'<span class="name">{html.escape(shown(e.output.name))}</span>'
        f'<span class="meta">{html.escape(meta)}</span></a>'
    )


def _failed_row(e: Entry, now: float) -> str:
    path = shown(e.source) if e.source else "?"
    name = shown(e.source.name) if e.source else "?"
    return (
        f'<tr><td title="{html.escape(path)}">{html.escape(name)}</td>'
        f"<td>{html.escape(e.error or '')}</td><td>{html.escape(_ago(e.when, now))}</td></tr>"
    )


def _prune(folder: Path, used: set[Path], now: float) -> None:
    for sub, pattern in (("compare", "*.html"), ("thumbs", "*.jpg")):
        for p in (folder / sub).glob(pattern):
            try:
                if p not in used and now - p.stat().st_mtime > _PRUNE_AFTER:
                    p.unlink()
            except OSError:
                continue


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def _ago(t: float, now: float) -> str:
    secs = max(0.0, now - t)
    if secs < 90:
        return "just now"
    if secs < 90 * 60:
        return f"{secs / 60:.0f} min ago"
    if secs < 36 * 3600:
        return f"{secs / 3600:.0f} h ago"
    return _when(t)
