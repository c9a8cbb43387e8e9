"""`naiup run`: this process becomes the daemon.

The one CLI module that imports naiup.daemon: every other command is a client of the daemon and talks
to it over the control socket (naiup.control.client), like the tray does."""

from __future__ import annotations

import argparse

from naiup.cli.command import AddCommand


def register(add: AddCommand) -> None:
    add("run", _cmd_run, "run the background service (watch folders, refine new NovelAI images)")


def _cmd_run(args: argparse.Namespace) -> int:
    from naiup.daemon.daemon import Daemon

    return Daemon(args.config).run()
