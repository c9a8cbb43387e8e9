"""`naiup` command line. Thin: parse arguments, call job.py or the control client, print, exit.

Exit codes: 0 ok, 1 a NaiupError (message on stderr), 2 usage, 3 daemon not running.
Each command lives in one `_cmd_<name>` function; `_build_parser` wires them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from naiup import __version__
from naiup.errors import NaiupError
from naiup.pathnames import plain_text, shown

Handler = Callable[[argparse.Namespace], int]


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


def _cmd_refine(args: argparse.Namespace) -> int:
    """One job per file, in order. Exit 0 if all succeeded, 1 if any failed."""
    import logging

    from naiup.cli.progress_bar import DownloadBar, ProgressBar
    from naiup.config import load_config

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    config = load_config(args.config)
    if args.preset is not None and args.preset not in config.presets:
        raise NaiupError(f"--preset {args.preset!r}: unknown preset ({_known(config.presets)})")
    preset = config.preset(args.preset or config.daemon.active_preset)
    # torch loads here, after the cheap checks, so a typo in --preset answers at once.
    from naiup.engine import Engine
    from naiup.job import run_job

    model = config.model
    if model.unet_graphs == "auto":
        # Compiling the UNet's CUDA graphs costs about a minute per tile-batch shape, once per process,
        # and saves a few seconds per image: the long-running service gains, a one-shot command loses.
        # "on" in the config still forces it here.
        model = dataclasses.replace(model, unet_graphs="off")
    # A hub model's first run downloads it: a bar of its own, bytes of total, before the file's bar.
    engine = Engine(model, on_download=DownloadBar(sys.stderr))
    # The output's name as the file system has it (a script reads it back), undecodable bytes included.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="surrogateescape")
    failed = 0
    for src in args.files:
        bar = ProgressBar(sys.stderr, shown(src.name))
        try:
            result = run_job(src, preset, engine, config, progress=bar)
        except Exception as exc:  # one file's error never stops the next file
            bar.close()
            failed += 1
            if not isinstance(exc, (NaiupError, OSError)):  # a bug: keep its traceback for a report
                logging.getLogger("naiup").debug("refine crashed src=%s", src, exc_info=True)
            print(f"error: {_refine_error(src, exc)}", file=sys.stderr)
            continue
        bar.close()
        print(result.output)
    return 1 if failed else 0


def _refine_error(src: Path, exc: Exception) -> str:
    """One line: `<file>: <reason>`. Errors about the input already start with its path."""
    if isinstance(exc, NaiupError):
        message = str(exc)
    elif isinstance(exc, OSError):
        message = exc.strerror or str(exc)
    else:
        message = f"internal error: {type(exc).__name__}: {exc}"
    where = "" if message.startswith(str(src)) else f"{src}: "
    return plain_text(f"{where}{message}")


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


def _cmd_tray(args: argparse.Namespace) -> int:
    from naiup.tray import setup as tray_setup

    return tray_setup.run_tray(
        config_path=args.config,
        backend=args.backend,
        state_file=args.state_file,
        actions_file=args.actions_file,
        exit_after=args.exit_after,
        client_factory=args.client_factory,
        host_wait=args.host_wait,
    )


def _cmd_compare(args: argparse.Namespace) -> int:
    from naiup.review import open_compare

    return _show_page(open_compare(args.image, open_browser=False), args.no_open)


def _cmd_gallery(args: argparse.Namespace) -> int:
    import time

    from naiup.review import open_gallery

    if args.limit < 1:
        print(f"naiup gallery: --limit must be at least 1, got {args.limit}", file=sys.stderr)
        return 2
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


def _cmd_service(args: argparse.Namespace) -> int:
    from naiup.config import load_config
    from naiup.service import autostart

    try:
        grace: float | None = load_config(args.config, model_files_must_exist=False).daemon.stop_grace_seconds
    except NaiupError:
        grace = None  # a broken config does not block installing; the unit allows the default grace
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


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="naiup", description="Refine NovelAI images in the background.")
    parser.add_argument("--version", action="version", version=f"naiup {__version__}")
    parser.add_argument("--config", type=Path, default=None, help="config file (default: per-user config)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Handler, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help)
        p.set_defaults(handler=handler)
        # Also accepted after the command (`naiup run --config FILE`); SUPPRESS keeps the global one.
        p.add_argument("--config", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        return p

    # foundation
    info = add("info", _cmd_info, "show the generation metadata of images")
    info.add_argument("files", nargs="+", type=Path, metavar="FILE")
    info.add_argument("--json", action="store_true", help="one JSON object per line")
    p = add("config", _cmd_config, "config path | show | check")
    p.add_argument(
        "action",
        choices=("path", "show", "check"),
        help="path: where the file is read from; show: the effective config as TOML; check: validate",
    )
    # engine core
    refine = add("refine", _cmd_refine, "refine images now, in the foreground")
    refine.add_argument("files", nargs="+", type=Path, metavar="FILE", help="images to refine")
    refine.add_argument("--preset", default=None, help="preset name (default: daemon.active_preset)")
    # daemon
    add("run", _cmd_run, "run the background service (watch folders, refine new NovelAI images)")
    for name, handler, help in _CONTROL:
        p = add(name, handler, help)
        p.add_argument("--json", action="store_true", help="print the daemon's reply as JSON")
        if name == "pause":
            p.add_argument("--free-gpu", action="store_true", help="also stop the worker (frees VRAM)")
            p.add_argument("--for", dest="duration", type=_duration, help="resume after e.g. 90s, 15m, 1h")
            p.add_argument("--reason", default=None)
        elif name == "preset":
            p.add_argument("name", nargs="?", help="preset to use from the next job on (none: list them)")
        elif name == "queue":
            p.add_argument("--failed", action="store_true", help="list failed and skipped files with reasons")
        elif name == "retry":
            p.add_argument("id", help="ledger id from `naiup queue --failed`, or `all`")
        elif name == "backfill":
            p.add_argument(
                "--since",
                type=_since,
                default=None,
                metavar="DATE|DURATION",
                help="only images modified since then: 2024-10-01, 2024-10-01T18:00, or 7d, 12h, 30m ago",
            )
            p.add_argument(
                "--folder", type=Path, default=None, metavar="DIR", help="only images in this watched folder"
            )
            p.add_argument("--dry-run", action="store_true", help="print what would be queued, queue nothing")
        elif name == "stop":
            p.add_argument(
                "--no-wait", action="store_true", help="return at once instead of when the daemon has exited"
            )
    # desktop
    p = add("tray", _cmd_tray, "show the tray icon")
    p.add_argument(
        "--backend",
        choices=("appindicator", "gtk", "xorg", "darwin", "win32"),
        default=None,
        help="pystray backend (default: the best one that imports)",
    )
    # Automation hooks for end-to-end tests; hidden from --help.
    p.add_argument("--state-file", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--actions-file", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--exit-after", type=float, default=None, help=argparse.SUPPRESS)
    p.add_argument("--client-factory", default=None, help=argparse.SUPPRESS)
    p.add_argument("--host-wait", type=float, default=None, help=argparse.SUPPRESS)  # s without a panel
    p = add("compare", _cmd_compare, "open a before/after page for a result (or its original)")
    p.add_argument("image", type=Path, metavar="IMAGE", help="a naiup output, or the image it was made from")
    p.add_argument("--no-open", action="store_true", help="only write the page and print its path")
    p = add("gallery", _cmd_gallery, "open a page of recent results (failed files with their reason)")
    p.add_argument("--since", type=_duration, default=None, help="only the last e.g. 1h, 7d (default: all)")
    p.add_argument(
        "--folder", type=Path, default=None, help="only files in DIR (adds outputs of naiup refine)"
    )
    p.add_argument("--limit", type=int, default=200, help="at most this many files (default 200)")
    p.add_argument("--no-open", action="store_true", help="only write the page and print its path")
    p = add("service", _cmd_service, "install | uninstall | status of autostart at login")
    p.add_argument("action", choices=("install", "uninstall", "status"))
    p.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")
    add("doctor", _cmd_doctor, "check the installation and print fixes")
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    from naiup.daemon.daemon import Daemon

    return Daemon(args.config).run()


def _duration(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        unit = units.get(text[-1:].lower())
        seconds = float(text[:-1]) * unit if unit else float(text)
    except ValueError:
        seconds = math.nan
    # 0 would read as "no end" in the daemon; nan and inf never end; a negative one never starts.
    if not (math.isfinite(seconds) and seconds > 0):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 15m, 1h)")
    return seconds


def _since(text: str) -> float:
    """--since: an ISO date or date-time (local time unless it names a zone), or a duration ago."""
    import time
    from datetime import datetime

    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        pass
    try:
        return time.time() - _duration(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"not a date or duration: {text!r} (e.g. 2024-10-01, 2024-10-01T18:00, 7d, 12h)"
        ) from None


def _known(presets: object) -> str:
    return "known: " + ", ".join(sorted(presets))  # type: ignore[call-overload]


def _control(args: argparse.Namespace, verb: str, **request: object) -> dict:
    """Send one request and return the reply (printed as JSON with --json).

    DaemonNotRunning (exit 3) and a refused request (ControlError, exit 1) go up to main, which prints
    them, as a JSON error object with --json.
    """
    from naiup.control.channel import ControlClient

    with ControlClient.connect() as client:
        reply = client.request(verb, **request)
    if args.json:
        print(json.dumps(reply, indent=2))
    return reply


def _print_status(s: dict) -> None:
    # `queue` counts the files still waiting; the one being refined now has a line of its own.
    print(f"{s['state']}  preset={s['active_preset']}  queue={s['queue_length']}")
    for folder in s.get("missing_folders") or ():
        print(f"  missing folder: {shown(folder)} (not watched; watched again as soon as it is back)")
    current = s.get("current")
    if current:
        with_preset = f" with {current['preset']}" if current.get("preset") else ""
        print(f"  working on {shown(Path(current['path']).name)}{with_preset} ({current['progress']:.0%})")
    download = s.get("download")
    if download:
        from naiup.engine.models.hub import download_text

        print(f"  downloading model {download['name']}: {download_text(download['done'], download['total'])}")
    until = _until(s.get("paused_until"))
    if s.get("pause_source") == "rule":
        print(f"  paused: {s['pause_reason']} (pause rule; `naiup resume` overrides it until it clears)")
    elif s.get("pause_reason"):
        print(f"  paused: {s['pause_reason']}{until}")
    if s.get("pause_source") == "user" and s.get("pause_rule"):
        print(f"  pause rule also holds: {s['pause_rule']}")
    if s.get("pause_rule_overridden"):
        print(f"  pause rule overridden by resume until it clears: {s['pause_rule_overridden']}")
    for key, label in (
        ("engine_error", "engine"),
        ("config_error", "config edit not applied (the previous config is in use)"),
        ("last_error", "last error"),
        ("last_output", "last output"),
    ):
        if s.get(key):
            print(f"  {label}: {plain_text(str(s[key]))}")
    counts = ", ".join(f"{_COUNT_LABELS.get(k, k)} {v}" for k, v in sorted(s.get("counts", {}).items()))
    print(f"  files: {counts or 'none yet'}")
    if s.get("existing"):
        print(f"  older images not processed: {s['existing']} (`naiup backfill` queues them)")


# Count keys a plain state name would not explain (the daemon counts its own outputs apart).
_COUNT_LABELS = {"naiup_output": "naiup outputs (ignored)"}


def _until(when: float | None) -> str:
    """' (until 14:05, 12 min left)' for a timed pause, '' for one without an end."""
    import time

    if not when:
        return ""
    left = max(0.0, when - time.time())
    clock = time.strftime("%H:%M" if left < 20 * 3600 else "%a %H:%M", time.localtime(when))
    return f" (until {clock}, {math.ceil(left / 60)} min left)"


def _cmd_status(args: argparse.Namespace) -> int:
    reply = _control(args, "status")
    if not args.json:
        _print_status(reply)
    return 0


def _cmd_pause(args: argparse.Namespace) -> int:
    reply = _control(args, "pause", free_gpu=args.free_gpu, for_seconds=args.duration, reason=args.reason)
    if not args.json:
        _print_status(reply)
    return 0


def _cmd_resume(args: argparse.Namespace) -> int:
    reply = _control(args, "resume")
    if not args.json:
        _print_status(reply)
    return 0


def _cmd_preset(args: argparse.Namespace) -> int:
    reply = _control(args, "preset", name=args.name) if args.name else _control(args, "status")
    if not args.json:
        for name in reply["presets"]:
            print(f"{'*' if name == reply['active_preset'] else ' '} {name}")
    return 0


def _cmd_queue(args: argparse.Namespace) -> int:
    reply = _control(args, "queue", failed=args.failed)
    if not args.json:
        for item in reply["items"]:
            extra = f"  {item['error']}" if item.get("error") else ""
            print(plain_text(f"{item['id']:>6}  {item['state']:<10} {item['path']}{extra}"))
        if not reply["items"]:
            print("no failed or skipped files" if args.failed else "queue is empty")
    return 0


def _cmd_retry(args: argparse.Namespace) -> int:
    if args.id != "all" and not args.id.isdigit():
        print(f"naiup retry: expected an id or `all`, got {args.id!r}", file=sys.stderr)
        return 2
    reply = _control(args, "retry", id=args.id if args.id == "all" else int(args.id))
    if not args.json:
        print(f"requeued {reply['requeued']} file(s)")
    return 0


def _cmd_backfill(args: argparse.Namespace) -> int:
    folder = None if args.folder is None else str(args.folder.expanduser().absolute())
    reply = _control(args, "backfill", since=args.since, folder=folder, dry_run=args.dry_run)
    if not args.json:
        n = reply["count"]
        if args.dry_run:
            print(f"{n} older image(s) would be checked and queued (dry run: nothing queued)")
            for path in reply["paths"]:
                print(f"  {shown(path)}")
            if n > len(reply["paths"]):
                print(f"  ... and {n - len(reply['paths'])} more")
        else:
            print(f"queued {n} older image(s): NovelAI ones are refined, others recorded as skipped")
    return 0


def _cmd_rescan(args: argparse.Namespace) -> int:
    _control(args, "rescan")
    if not args.json:
        print("rescan requested")
    return 0


def _cmd_stop(args: argparse.Namespace) -> int:
    """Ask the daemon to stop, then (unless --no-wait) return once its process has exited, so that
    `naiup stop; naiup run` finds the instance lock free."""
    import psutil

    from naiup.control.channel import ControlClient
    from naiup.service.linux import STOP_TEARDOWN_SECONDS  # the systemd unit allows the same

    with ControlClient.connect() as client:
        pid = client.request("ping")["pid"]
        try:
            proc = psutil.Process(pid)  # taken before it exits: is_running() then also sees pid reuse
        except psutil.Error:
            proc = None
        reply = client.request("stop")
    if args.no_wait or proc is None:
        print(json.dumps(reply, indent=2) if args.json else "daemon stopping")
        return 0
    current = reply.get("current")
    grace = float(reply.get("grace_seconds") or 10.0)
    if current:
        name = shown(Path(current["path"]).name)
        print(
            f"waiting for the current job to finish: {name} (up to {grace:g} s, else it is requeued)",
            file=sys.stderr,
            flush=True,
        )
    if not _wait_for_exit(proc, grace + STOP_TEARDOWN_SECONDS):
        raise NaiupError(
            f"the daemon (pid {pid}) is still running {grace + STOP_TEARDOWN_SECONDS:g} s after"
            " `stop`; see its log (`naiup status` shows where)"
        )
    print(json.dumps({**reply, "stopped": True}, indent=2) if args.json else "daemon stopped")
    return 0


def _wait_for_exit(proc: object, timeout: float) -> bool:
    import time

    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            # A zombie has exited: only its parent (the tray, a test) has yet to reap it.
            if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:  # type: ignore[attr-defined]
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


_CONTROL: list[tuple[str, Handler, str]] = [
    ("status", _cmd_status, "show what the daemon is doing"),
    ("pause", _cmd_pause, "stop taking new jobs (files are still recorded)"),
    ("resume", _cmd_resume, "take jobs again"),
    ("preset", _cmd_preset, "switch the preset used from the next job on"),
    ("queue", _cmd_queue, "list waiting and queued files (--failed: failed and skipped)"),
    ("retry", _cmd_retry, "queue failed files again"),
    ("backfill", _cmd_backfill, "process images that were already there when a folder was first watched"),
    ("rescan", _cmd_rescan, "look for files the watcher missed"),
    ("stop", _cmd_stop, "stop the daemon and wait until it has (the current job finishes or is requeued)"),
]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    from naiup.control.channel import DaemonNotRunning

    try:
        return args.handler(args)
    except DaemonNotRunning as exc:
        _print_error(args, exc, f"naiup: {exc}")
        return 3
    except NaiupError as exc:
        _print_error(args, exc, f"error: {exc}")
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `naiup info ... | head`: the reader left, nothing to report
        sys.stderr.close()
        return 1


def _print_error(args: argparse.Namespace, exc: NaiupError, line: str) -> None:
    """The message on stderr; with --json also an error object on stdout, for scripts reading it."""
    if getattr(args, "json", False):
        print(json.dumps({"ok": False, "error": str(exc)}))
    print(line, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
