"""The commands that talk to a running daemon: status, pause, resume, preset, queue, retry, backfill,
rescan, stop. Each is one request over the control socket (stop: and a wait for the process to end);
`--json` prints the daemon's reply as it came, its strings made valid Unicode (pathnames.json_safe)."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from naiup.cli.command import AddCommand, Handler
from naiup.cli.durations import duration, since
from naiup.control.client import ControlClient
from naiup.control.protocol import CurrentJob, PauseSource, Status
from naiup.errors import NaiupError
from naiup.pathnames import json_safe, plain_text, shown


def register(add: AddCommand) -> None:
    for name, handler, help in _COMMANDS:
        p = add(name, handler, help)
        p.add_argument("--json", action="store_true", help="print the daemon's reply as JSON")
        if name == "pause":
            p.add_argument("--free-gpu", action="store_true", help="also stop the worker (frees VRAM)")
            p.add_argument("--for", dest="duration", type=duration, help="resume after e.g. 90s, 15m, 1h")
            p.add_argument("--reason", default=None)
        elif name == "preset":
            p.add_argument("name", nargs="?", help="preset to use from the next job on (none: list them)")
        elif name == "queue":
            p.add_argument("--failed", action="store_true", help="list failed and skipped files with reasons")
        elif name == "retry":
            p.add_argument("id", type=_retry_id, help="ledger id from `naiup queue --failed`, or `all`")
        elif name == "backfill":
            p.add_argument(
                "--since",
                type=since,
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


def _retry_id(text: str) -> int | str:
    if text == "all":
        return text
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected an id or `all`, got {text!r}")
    return int(text)


def _control(args: argparse.Namespace, verb: str, **request: object) -> dict[str, Any]:
    """Send one request and return the reply (printed as JSON with --json).

    DaemonNotRunning (exit 3) and a refused request (ControlError, exit 1) go up to main, which prints
    them, as a JSON error object with --json.
    """
    with ControlClient.connect() as client:
        reply = client.request(verb, **request)
    if args.json:
        print(json.dumps(json_safe(reply), indent=2))
    return reply


def _show_status(args: argparse.Namespace, verb: str, **request: object) -> int:
    """For the verbs whose reply is the daemon's status: print it (unless --json printed the reply)."""
    reply = _control(args, verb, **request)
    if not args.json:
        print_status(Status.from_json(reply))
    return 0


def print_status(s: Status) -> None:
    # `queue` counts the files still waiting; the one being refined now has a line of its own.
    print(f"{s.state}  preset={s.active_preset}  queue={s.queue_length}")
    if s.model:
        print(f"  model set {s.model_set}: {shown(s.model)}")
    for folder in s.missing_folders:
        print(f"  missing folder: {shown(folder)} (not watched; watched again as soon as it is back)")
    if s.current is not None:
        with_preset = f" with {s.current.preset}" if s.current.preset else ""
        done = f" ({s.current.progress:.0%})" if s.current.progress is not None else ""
        print(f"  working on {shown(Path(s.current.path).name)}{with_preset}{done}")
    if s.download is not None:
        from naiup.engine.models.hub import download_text

        print(f"  downloading model {s.download.name}: {download_text(s.download.done, s.download.total)}")
    if s.pause_source is PauseSource.RULE:
        print(f"  paused: {s.pause_reason} (pause rule; `naiup resume` overrides it until it clears)")
    elif s.pause_reason:
        print(f"  paused: {s.pause_reason}{_until(s.paused_until)}")
    if s.pause_source is PauseSource.USER and s.pause_rule:
        print(f"  pause rule also holds: {s.pause_rule}")
    if s.pause_rule_overridden:
        print(f"  pause rule overridden by resume until it clears: {s.pause_rule_overridden}")
    for text, label in (
        (s.engine_error, "engine"),
        (s.config_error, "config edit not applied (the previous config is in use)"),
        (s.last_error, f"last error{_at(s.last_error_at)}"),
        (s.last_output, "last output"),
    ):
        if text:
            print(f"  {label}: {plain_text(text)}")
    counts = ", ".join(f"{_COUNT_LABELS.get(k, k)} {v}" for k, v in sorted(s.counts.items()))
    print(f"  files: {counts or 'none yet'}")
    if s.existing:
        print(f"  older images not processed: {s.existing} (`naiup backfill` queues them)")


# Count keys a plain state name would not explain (the daemon counts its own outputs apart).
_COUNT_LABELS = {"naiup_output": "naiup outputs (ignored)"}


def _at(when: float | None, now: float | None = None) -> str:
    """' (14:05)' today, ' (Mon 14:05)' this week, ' (2024-05-01)' before: a failure of last week
    must not read as news."""
    if not when:
        return ""
    now = time.time() if now is None else now
    then, today = time.localtime(when), time.localtime(now)
    if then[:3] == today[:3]:
        shown_at = time.strftime("%H:%M", then)
    elif now - when < 6 * 86400:
        shown_at = time.strftime("%a %H:%M", then)
    else:
        shown_at = time.strftime("%Y-%m-%d", then)
    return f" ({shown_at})"


def _until(when: float | None) -> str:
    """' (until 14:05, 12 min left)' for a timed pause, '' for one without an end."""
    if not when:
        return ""
    left = max(0.0, when - time.time())
    clock = time.strftime("%H:%M" if left < 20 * 3600 else "%a %H:%M", time.localtime(when))
    return f" (until {clock}, {math.ceil(left / 60)} min left)"


def _cmd_status(args: argparse.Namespace) -> int:
    return _show_status(args, "status")


def _cmd_pause(args: argparse.Namespace) -> int:
    return _show_status(args, "pause", free_gpu=args.free_gpu, for_seconds=args.duration, reason=args.reason)


def _cmd_resume(args: argparse.Namespace) -> int:
    return _show_status(args, "resume")


def _cmd_preset(args: argparse.Namespace) -> int:
    reply = _control(args, "preset", name=args.name) if args.name else _control(args, "status")
    if not args.json:
        status = Status.from_json(reply)
        for name in status.presets:
            missing = status.presets_without_model.get(name)
            needs = f"  (needs {missing})" if missing else ""
            print(f"{'*' if name == status.active_preset else ' '} {name}{needs}")
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
    reply = _control(args, "retry", id=args.id)
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

    from naiup.service.linux import STOP_TEARDOWN_SECONDS  # the systemd unit allows the same

    with ControlClient.connect() as client:
        pid = client.request("ping")["pid"]
        try:
            proc = psutil.Process(pid)  # taken before it exits: is_running() then also sees pid reuse
        except psutil.Error:
            proc = None
        reply = client.request("stop")
    if args.no_wait or proc is None:
        print(json.dumps(json_safe(reply), indent=2) if args.json else "daemon stopping")
        return 0
    current = CurrentJob.from_json(reply["current"]) if reply.get("current") else None
    grace = float(reply.get("grace_seconds") or 10.0)
    if current is not None:
        name = shown(Path(current.path).name)
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


def _wait_for_exit(proc: Any, timeout: float) -> bool:
    import psutil

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            # A zombie has exited: only its parent (the tray, a test) has yet to reap it.
            if not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


_COMMANDS: list[tuple[str, Handler, str]] = [
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
