"""`naiup config path | show | check`."""

from __future__ import annotations

import argparse
import sys

from naiup.cli.command import AddCommand


def register(add: AddCommand) -> None:
    p = add("config", _cmd_config, "config path | show | check")
    p.add_argument(
        "action",
        choices=("path", "show", "check"),
        help="path: where the file is read from; show: the effective config as TOML; check: validate",
    )


def _cmd_config(args: argparse.Namespace) -> int:
    from naiup.config import default_config_path, load_config

    path = args.config if args.config is not None else default_config_path()
    exists = path.exists()
    if args.action == "path":
        # Absolute: a path copied into another shell or a service file must not depend on the cwd.
        print(path.absolute())
        return 0
    config = load_config(path)  # a missing --config file was refused before this (cli.main)
    if not exists:
        print(f"note: no config file at {path}; using built-in defaults", file=sys.stderr)
    if args.action == "show":
        from naiup.config.dump import dump_config

        print(dump_config(config), end="")
        return 0
    from naiup.config.check import Severity, find_problems

    problems = find_problems(config)
    where = path if exists else "built-in defaults"
    for problem in problems:
        print(f"{problem.severity}: {where}: [{problem.key}] {problem.message}", file=sys.stderr)
    if any(p.severity is Severity.ERROR for p in problems):
        return 1
    print(f"ok: {where} ({len(config.presets)} presets, active {config.daemon.active_preset!r})")
    return 0
