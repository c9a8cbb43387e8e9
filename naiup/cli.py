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


def _cmd_tray(args: argparse.Namespace) -> int:
    from naiup.daemon import tray_setup

    return tray_setup.run_tray(
        config_path=args.config,
        backend=args.backend,
        state_file=args.state_file,
        actions_file=args.actions_file,
        exit_after=args.exit_after,
        client_factory=args.client_factory,
    )


def _cmd_service(args: argparse.Namespace) -> int:
    from naiup.service import autostart

    plan = autostart.plan_autostart()
    if args.action == "install":
        report = autostart.install(plan, dry_run=args.dry_run)
    elif args.action == "uninstall":
        report = autostart.uninstall(plan, dry_run=args.dry_run)
    else:
        report = autostart.status(plan)
    print("\n".join(report.lines))
    return 0 if report.ok else 1


def _cmd_doctor(args: argparse.Namespace) -> int:
    from naiup import doctor

    checks = doctor.run_checks(args.config)
    print("\n".join(doctor.format_checks(checks)))
    blocked = [c.name for c in checks if c.status is doctor.Status.FAIL]
    if blocked:
        print(f"\nblocking: {', '.join(blocked)}", file=sys.stderr)
        return 1
    return 0


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
    add("info", _not_yet, "show the generation metadata of images")
    add("config", _not_yet, "config path | show | check")
    # engine core
    add("refine", _not_yet, "refine images now, in the foreground")
    # daemon
    add("run", _not_yet, "run the background service (watch folders, refine new NovelAI images)")
    for verb in ("status", "pause", "resume", "preset", "queue", "retry", "rescan", "stop"):
        add(verb, _not_yet, f"daemon control: {verb}")
    # desktop
    p = add("tray", _cmd_tray, "show the tray icon")
    p.add_argument("--backend", choices=("appindicator", "gtk", "xorg", "darwin", "win32"), default=None,
                   help="pystray backend (default: the best one that imports)")
    # Automation hooks for end-to-end tests; hidden from --help.
    p.add_argument("--state-file", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--actions-file", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--exit-after", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--client-factory", default=None, help=argparse.SUPPRESS)
    p = add("service", _cmd_service, "install | uninstall | status of autostart at login")
    p.add_argument("action", choices=("install", "uninstall", "status"))
    p.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")
    add("doctor", _cmd_doctor, "check the installation and print fixes")
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


if __name__ == "__main__":
    sys.exit(main())
