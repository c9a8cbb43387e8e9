"""The desktop side: `naiup tray`, and the before/after pages `naiup compare` and `naiup gallery`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from naiup.cli.command import AddCommand
from naiup.cli.durations import duration


def register(add: AddCommand) -> None:
    p = add("tray", _cmd_tray, "show the tray icon")
    p.add_argument(
        "--backend",
        choices=("appindicator", "gtk", "xorg", "darwin", "win32"),
        default=None,
        help="pystray backend (default: the best one that imports)",
    )
    p = add("compare", _cmd_compare, "open a before/after page for a result (or its original)")
    p.add_argument("image", type=Path, metavar="IMAGE", help="a naiup output, or the image it was made from")
    p.add_argument("--no-open", action="store_true", help="only write the page and print its path")
    p = add("gallery", _cmd_gallery, "open a page of recent results (failed files with their reason)")
    p.add_argument("--since", type=duration, default=None, help="only the last e.g. 1h, 7d (default: all)")
    p.add_argument(
        "--folder", type=Path, default=None, help="only files in DIR (adds outputs of naiup refine)"
    )
    p.add_argument(
        "--limit",
        type=_at_least_one,
        default=200,
        help="at most this many results (default 200; failed files are listed apart, at most 50)",
    )
    p.add_argument("--no-open", action="store_true", help="only write the page and print its path")


def _at_least_one(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return n


def _cmd_tray(args: argparse.Namespace) -> int:
    from naiup.tray import setup as tray_setup

    return tray_setup.run_tray(config_path=args.config, backend=args.backend)


def _cmd_compare(args: argparse.Namespace) -> int:
    from naiup.review import open_compare

    return _show_page(open_compare(args.image, open_browser=False), args.no_open)


def _cmd_gallery(args: argparse.Namespace) -> int:
    from naiup.review import open_gallery

    since = time.time() - args.since if args.since is not None else None
    return _show_page(
        open_gallery(since=since, folder=args.folder, limit=args.limit, open_browser=False), args.no_open
    )


def _show_page(page: Path, no_open: bool) -> int:
    """Print the page's path (always: headless users open it themselves), then open it."""
    from naiup.review import show

    print(page, flush=True)
    if not no_open and not show(page):
        print("note: no web browser could be started; open the file above yourself", file=sys.stderr)
    return 0
