"""The installation: `naiup service install | uninstall | status` (autostart at login) and `naiup doctor`."""

from __future__ import annotations

import argparse
import sys

from naiup.cli.command import AddCommand
from naiup.errors import ConfigError


def register(add: AddCommand) -> None:
    p = add("service", _cmd_service, "install | uninstall | status of autostart at login")
    p.add_argument("action", choices=("install", "uninstall", "status"))
    p.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")
    add("doctor", _cmd_doctor, "check the installation and print fixes")


def _cmd_service(args: argparse.Namespace) -> int:
    from naiup.config import load_config
    from naiup.service import autostart

    try:
        grace: float | None = load_config(args.config, model_files_must_exist=False).daemon.stop_grace_seconds
    except ConfigError:
        # A service installed with a config it cannot read would fail at every login and be restarted
        # in a loop: refuse (a dry run shows why too). Removing or inspecting it must still work.
        if args.action == "install":
            print(
                "not installing: the service would read this config at every start and refuse it; "
                "fix it and install again (`naiup config check` lists its problems)",
                file=sys.stderr,
            )
            raise
        grace = None  # the unit allows the default grace
    # The entries start `naiup --config FILE ...` when given one, so the service reads the same file.
    plan = autostart.plan_autostart(
        config_path=args.config.absolute() if args.config else None, stop_grace_seconds=grace
    )
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
    blocked = [c.name for c in checks if c.status is doctor.Status.FAIL]  # a note or warn never blocks
    if blocked:
        print(f"\nblocking: {', '.join(blocked)}", file=sys.stderr)
        return 1
    return 0
