"""`naiup service install|uninstall|status`: plan the autostart entries for this OS, then apply them.

    plan = plan_autostart()                 # what would be written, nothing touched yet
    report = install(plan, dry_run=True)    # report.lines: what was (or would be) done

Files are written atomically; OS commands (systemctl, launchctl) go through a `runner` seam so tests
can record them instead of touching the machine's service manager.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from naiup.errors import NaiupError
from naiup.output.atomic import replace_file
from naiup.paths import FOLDER_VARIABLES
from naiup.service import linux, macos, windows
from naiup.service.command import naiup_command

Runner = Callable[[Sequence[str]], tuple[int, str]]  # argv -> (returncode, combined output)


class ServiceError(NaiupError):
    """Autostart could not be installed or removed."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One autostart entry: a file (Linux/macOS) or an HKCU Run value (Windows)."""

    what: str  # "daemon" | "tray"
    location: str  # file path, or "HKCU\\...\\Run\\<value>"
    content: bytes
    registry_value: str | None = None

    @property
    def text(self) -> str:
        return self.content.decode("utf-8")


@dataclass(frozen=True, slots=True)
class Plan:
    platform: str
    entries: tuple[Entry, ...]
    enable: tuple[tuple[str, ...], ...] = ()  # commands that start it now (after writing)
    disable: tuple[tuple[str, ...], ...] = ()  # commands that stop it (before removing)
    notes: tuple[str, ...] = ()
    # launchctl bootstrap refuses a label that is already loaded: unload first so install is idempotent.
    disable_before_enable: bool = False


@dataclass(slots=True)
class Report:
    lines: list[str] = field(default_factory=list)
    ok: bool = True


def plan_autostart(
    platform: str = sys.platform,
    home: Path | None = None,
    argv: Sequence[str] | None = None,
    env: dict[str, str] | None = None,
    config_path: Path | None = None,
    stop_grace_seconds: float | None = None,
) -> Plan:
    """`config_path` (absolute): the file both entries start naiup with (`naiup --config FILE run`).
    `stop_grace_seconds`: that config's grace, which the systemd unit's stop timeout must exceed.
    The NAIUP_*_DIR folder variables set in `env` are carried as `--env NAME=VALUE` (see folder_options)."""
    home = home or Path.home()
    env = dict(os.environ) if env is None else env
    argv = list(argv) if argv is not None else naiup_command(windowed=platform == "win32")
    argv += folder_options(env)
    if config_path is not None:
        argv += ["--config", str(config_path)]
    if platform.startswith("linux"):
        config_home = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
        unit = config_home / "systemd" / "user" / linux.UNIT_NAME
        desktop = config_home / "autostart" / linux.DESKTOP_NAME
        return Plan(
            platform="linux",
            entries=(
                Entry("daemon", str(unit), linux.daemon_unit(argv, stop_grace_seconds).encode()),
                Entry("tray", str(desktop), linux.tray_desktop_entry(argv).encode()),
            ),
            enable=(
                ("systemctl", "--user", "daemon-reload"),
                ("systemctl", "--user", "enable", "--now", linux.UNIT_NAME),
            ),
            disable=(("systemctl", "--user", "disable", "--now", linux.UNIT_NAME),),
            notes=(
                "headless box (no desktop login)? run `loginctl enable-linger $USER` so the user "
                "service starts at boot and survives logout",
                "the tray entry starts with your next desktop login; run `naiup tray` to show it now",
            ),
        )
    if platform == "darwin":
        agents = home / "Library" / "LaunchAgents"
        logs = home / "Library" / "Logs" / "naiup"
        uid = str(os.getuid()) if hasattr(os, "getuid") else "501"
        daemon_path = agents / f"{macos.DAEMON_LABEL}.plist"
        tray_path = agents / f"{macos.TRAY_LABEL}.plist"
        return Plan(
            platform="darwin",
            entries=(
                Entry("daemon", str(daemon_path), macos.dump(macos.daemon_plist(argv, logs))),
                Entry("tray", str(tray_path), macos.dump(macos.tray_plist(argv, logs))),
            ),
            enable=tuple(("launchctl", "bootstrap", f"gui/{uid}", str(p)) for p in (daemon_path, tray_path)),
            disable=tuple(
                ("launchctl", "bootout", f"gui/{uid}/{label}")
                for label in (macos.DAEMON_LABEL, macos.TRAY_LABEL)
            ),
            notes=(macos.PRIVACY_WARNING.format(program=argv[0]),),
            disable_before_enable=True,
        )
    if platform == "win32":
        return Plan(
            platform="win32",
            entries=tuple(
                Entry(
                    what, f"HKCU\\{windows.RUN_KEY}\\{value}", windows.run_command(argv, verb).encode(), value
                )
                for what, value, verb in (
                    ("daemon", windows.DAEMON_VALUE, "run"),
                    ("tray", windows.TRAY_VALUE, "tray"),
                )
            ),
            notes=("both start at your next logon; run `naiup run` and `naiup tray` to start them now",),
        )
    raise ServiceError(f"autostart is not supported on {platform!r} (Linux, macOS and Windows are)")


def folder_options(env: dict[str, str]) -> list[str]:
    """`--env NAME=VALUE` for each folder variable set in `env`, its value made absolute.

    One mechanism for all four entries: a systemd unit and a plist could set environment variables,
    but an XDG autostart Exec= and a Windows Run value cannot without a wrapper (env, cmd /c) that
    opens a console or depends on PATH. A relative folder would resolve against the service's working
    directory, not the one install ran in.
    """
    options: list[str] = []
    for name in FOLDER_VARIABLES:
        if env.get(name):
            options += ["--env", f"{name}={Path(env[name]).expanduser().absolute()}"]
    return options


def install(plan: Plan, dry_run: bool = False, runner: Runner | None = None) -> Report:
    report = Report()
    for entry in plan.entries:
        if dry_run:
            report.lines += [f"--- {entry.what}: {entry.location}", entry.text.rstrip("\n"), ""]
            continue
        _write_entry(entry)
        report.lines.append(f"wrote {entry.what}: {entry.location}")
    if not dry_run:
        if plan.disable_before_enable:
            _run_all(plan.disable, runner or _run, report, fail_ok=True)
        _run_all(plan.enable, runner or _run, report, fail_ok=False)
    else:
        report.lines += [f"would run: {' '.join(cmd)}" for cmd in plan.enable]
    report.lines += [f"note: {n}" for n in plan.notes]
    return report


def uninstall(plan: Plan, dry_run: bool = False, runner: Runner | None = None) -> Report:
    report = Report()
    if dry_run:
        report.lines += [f"would run: {' '.join(cmd)}" for cmd in plan.disable]
        report.lines += [f"would remove {e.what}: {e.location}" for e in plan.entries]
        return report
    # Stopping first: a unit file removed under a running service leaves systemd confused.
    _run_all(plan.disable, runner or _run, report, fail_ok=True)
    for entry in plan.entries:
        if _remove_entry(entry):
            report.lines.append(f"removed {entry.what}: {entry.location}")
        else:
            report.lines.append(f"not installed {entry.what}: {entry.location}")
    return report


def entry_state(entry: Entry) -> str:
    """ "installed", "outdated" (present, different command) or "missing". Never raises."""
    try:
        if entry.registry_value is not None:
            current = windows.read_value(entry.registry_value)
            data = None if current is None else current.encode()
        else:
            path = Path(entry.location)
            data = path.read_bytes() if path.exists() else None
    except (OSError, ImportError):
        return "missing"
    if data is None:
        return "missing"
    return "installed" if data == entry.content else "outdated"


def status(plan: Plan) -> Report:
    report = Report()
    for entry in plan.entries:
        state = entry_state(entry)
        hint = {
            "outdated": " (differs from what install writes now: rerun `naiup service install`)",
            "missing": "",
        }.get(state, "")
        report.lines.append(f"{entry.what}: {state} — {entry.location}{hint}")
        report.ok = report.ok and state == "installed"
    return report


def _write_entry(entry: Entry) -> None:
    if entry.registry_value is not None:
        windows.write_value(entry.registry_value, entry.text)
        return
    path = Path(entry.location)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        replace_file(path, entry.content)
    except OSError as exc:
        raise ServiceError(f"{path}: cannot write the {entry.what} autostart entry ({exc.strerror})") from exc


def _remove_entry(entry: Entry) -> bool:
    if entry.registry_value is not None:
        present = windows.read_value(entry.registry_value) is not None
        windows.delete_value(entry.registry_value)
        return present
    path = Path(entry.location)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ServiceError(f"{path}: cannot remove ({exc.strerror})") from exc
    return True


def _run_all(commands: Sequence[Sequence[str]], runner: Runner, report: Report, fail_ok: bool) -> None:
    for cmd in commands:
        if shutil.which(cmd[0]) is None and runner is _run:
            report.lines.append(f"skipped (no {cmd[0]} here): {' '.join(cmd)}")
            continue
        code, out = runner(cmd)
        if code == 0:
            report.lines.append(f"ran: {' '.join(cmd)}")
        elif fail_ok:
            report.lines.append(f"ignored failure of {' '.join(cmd)}: {out.strip()}")
        else:
            report.ok = False
            report.lines.append(f"failed: {' '.join(cmd)} (exit {code}): {out.strip()}")


def _run(cmd: Sequence[str]) -> tuple[int, str]:
    # A hung systemctl/launchctl or a missing binary is a failed step in the report, not a traceback.
    try:
        proc = subprocess.run(list(cmd), capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        return 124, f"{cmd[0]} did not answer within 60 s"
    except OSError as exc:
        return 127, f"cannot run {cmd[0]}: {exc.strerror or exc}"
    return proc.returncode, proc.stdout + proc.stderr
