"""`naiup` command line: assembles the parser from the command modules, runs the command, and maps what
it raises to the exit status, here only.

Exit codes: 0 ok, 1 a NaiupError (message on stderr), 2 usage (argparse), 3 daemon not running,
130 interrupted. A command module per group (info, config_cmds, refine, run, daemon_cmds,
desktop_cmds, service_cmds) adds its subcommands in `register(add)`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from naiup import __version__
from naiup.cli import config_cmds, daemon_cmds, desktop_cmds, info, refine, run, service_cmds
from naiup.cli.command import Handler
from naiup.control.protocol import DaemonNotRunning
from naiup.errors import ConfigError, NaiupError
from naiup.pathnames import json_safe
from naiup.paths import FOLDER_VARIABLES

# In --help order.
COMMAND_GROUPS = (info, config_cmds, refine, run, daemon_cmds, desktop_cmds, service_cmds)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="naiup", description="Refine NovelAI images in the background.")
    parser.add_argument("--version", action="version", version=f"naiup {__version__}")
    parser.add_argument("--config", type=Path, default=None, help="config file (default: per-user config)")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a folder variable (NAIUP_STATE_DIR, ...) for this run; autostart entries carry them so",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.set_defaults(handler=handler)
        # Also accepted after the command (`naiup run --config FILE`); SUPPRESS keeps the global one.
        p.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        return p

    for group in COMMAND_GROUPS:
        group.register(add)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _apply_env_options(args.env)
        _check_config_option(args)
        return args.handler(args)
    except DaemonNotRunning as exc:  # before NaiupError: it is one, with its own status
        _print_error(args, exc, f"naiup: {exc}")
        return 3
    except NaiupError as exc:
        # A config file's problems come together (ConfigError.of): one `error:` line each.
        problems = exc.problems if isinstance(exc, ConfigError) else (exc,)
        _print_error(args, exc, "\n".join(f"error: {p}" for p in problems))
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `naiup info ... | head`: the reader left, nothing to report
        sys.stderr.close()
        return 1


def _apply_env_options(options: Sequence[str]) -> None:
    """`--env NAME=VALUE` as `naiup service install` writes them: only the folder variables, so an entry
    cannot be made to set anything else."""
    for option in options:
        name, sep, value = option.partition("=")
        if not sep or name not in FOLDER_VARIABLES:
            raise NaiupError(
                f"--env {option}: expected NAME=VALUE with NAME one of {', '.join(FOLDER_VARIABLES)}"
            )
        os.environ[name] = value


def _check_config_option(args: argparse.Namespace) -> None:
    """A file named with --config must exist: silently running on built-in defaults because of a typo
    (watching ~/Downloads with the default preset) is worse than refusing, and `config check` calling a
    typo "ok" is worse still. Only `config path` accepts a missing one: it says where it would be.
    Without --config, a missing default file means built-in defaults (load_config)."""
    path = args.config
    if path is None or path.is_file() or (args.command == "config" and args.action == "path"):
        return
    what = "is a folder, not a file" if path.is_dir() else "does not exist"
    raise NaiupError(f"--config {path}: {what} (`naiup config path` shows the default config file)")


def _print_error(args: argparse.Namespace, exc: NaiupError, line: str) -> None:
    """The message on stderr; with --json also an error object on stdout, for scripts reading it."""
    if getattr(args, "json", False):
        print(json.dumps(json_safe({"ok": False, "error": str(exc)})))
    print(line, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
