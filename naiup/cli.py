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


def _cmd_config(args: argparse.Namespace) -> int:
    from naiup.config import default_config_path, load_config

    path = args.config if args.config is not None else default_config_path()
    exists = path.exists()
    if args.action == "path":
        print(path)
        return 0
    config = load_config(path)
    if not exists:
        print(f"note: no config file at {path}; using built-in defaults", file=sys.stderr)
    if args.action == "show":
        from naiup.config_toml import dump_config

        print(dump_config(config), end="")
        return 0
    from naiup.config_check import Severity, find_problems

    problems = find_problems(config)
    where = path if exists else "built-in defaults"
    for problem in problems:
        print(f"{problem.severity}: {where}: [{problem.key}] {problem.message}", file=sys.stderr)
    if any(p.severity is Severity.ERROR for p in problems):
        return 1
    print(f"ok: {where} ({len(config.presets)} presets, active {config.daemon.active_preset!r})")
    return 0
def _cmd_refine(args: argparse.Namespace) -> int:
    """One job per file, in order. Exit 0 if all succeeded, 1 if any failed."""
    import logging

    from naiup.config import load_config
    from naiup.progress_bar import ProgressBar

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    config = load_config(args.config)
    preset = config.preset(args.preset or config.daemon.active_preset)
    # torch loads here, after the cheap checks, so a typo in --preset answers at once.
    from naiup.engine import Engine
    from naiup.job import run_job

    engine = Engine(config.model)
    failed = 0
    for src in args.files:
        bar = ProgressBar(sys.stderr, src.name)
        try:
            result = run_job(src, preset, engine, config, progress=bar)
        except NaiupError as exc:
            bar.close()
            failed += 1
            message = str(exc)
            # Errors about the input already start with its path; others get it prepended.
            where = "" if message.startswith(str(src)) else f"{src}: "
            print(f"error: {where}{message}", file=sys.stderr)
            continue
        bar.close()
        print(result.output)
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
    add("info", _not_yet, "show the generation metadata of images")
    p = add("config", _cmd_config, "config path | show | check")
    p.add_argument(
        "action",
        choices=("path", "show", "check"),
        help="path: where the file is read from; show: the effective config as TOML; check: validate",
    )
    # Also accepted after the command (`naiup config check --config FILE`); SUPPRESS keeps the global one.
    p.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    # engine core
    refine = add("refine", _cmd_refine, "refine images now, in the foreground")
    refine.add_argument("files", nargs="+", type=Path, metavar="FILE", help="images to refine")
    refine.add_argument("--preset", default=None, help="preset name (default: daemon.active_preset)")
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


if __name__ == "__main__":
    sys.exit(main())
