"""`naiup` command line. Thin: parse arguments, call job.py or the control client, print, exit.

Exit codes: 0 ok, 1 a NaiupError (message on stderr), 2 usage, 3 daemon not running.
Each command lives in one `_cmd_<name>` function; `_build_parser` wires them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from naiup import __version__
from naiup.errors import NaiupError

Handler = Callable[[argparse.Namespace], int]


def _not_yet(args: argparse.Namespace) -> int:
    print(f"naiup {args.command}: not implemented yet", file=sys.stderr)
    return 2


def _cmd_info(args: argparse.Namespace) -> int:
    import json

    from naiup.info import describe, format_human

    # Prompts hold any script; a legacy console encoding must not crash the summary.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
    failed = False
    for i, path in enumerate(args.files):
        record = describe(path)
        failed = failed or record["error"] is not None
        if args.json:
            print(json.dumps(record), flush=True)
        elif record["error"]:
            print(f"error: {record['error']}", file=sys.stderr, flush=True)
        else:
            print(("\n" if i else "") + format_human(record), flush=True)
    return 1 if failed else 0


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="naiup", description="Refine NovelAI images in the background.")
    parser.add_argument("--version", action="version", version=f"naiup {__version__}")
    parser.add_argument("--config", type=Path, default=None, help="config file (default: per-user config)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.set_defaults(handler=handler)
        return p

    # foundation
    info = add("info", _cmd_info, "show the generation metadata of images")
    info.add_argument("files", nargs="+", type=Path, metavar="FILE")
    info.add_argument("--json", action="store_true", help="one JSON object per line")
    add("config", _not_yet, "config path | show | check")
    # engine core
    add("refine", _not_yet, "refine images now, in the foreground")
    # daemon
    add("run", _not_yet, "run the background service (watch folders, refine new NovelAI images)")
    for verb in ("status", "pause", "resume", "preset", "queue", "retry", "rescan", "stop"):
        add(verb, _not_yet, f"daemon control: {verb}")
    # desktop
    add("tray", _not_yet, "show the tray icon")
    add("service", _not_yet, "install | uninstall | status of autostart at login")
    add("doctor", _not_yet, "check the installation and print fixes")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except NaiupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `naiup info ... | head`: the reader left, nothing to report
        sys.stderr.close()
        return 1


if __name__ == "__main__":
    sys.exit(main())
