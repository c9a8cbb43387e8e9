"""Daemon test harness: a real `naiup run` subprocess in temp folders, and a deadline poll."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from naiup import seams
from naiup.control.client import ControlClient
from naiup.control.protocol import DaemonNotRunning

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll until predicate() is truthy; fail with `what` after the deadline (never sleep-then-assert)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class DaemonRun:
    """One `naiup run` process with its own folders; `request` talks to it over the real socket."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root, self.env = root, env
        self.watch = root / "watch"
        self.watch.mkdir(exist_ok=True)
        self.config_path = root / "config.toml"
        self.proc: subprocess.Popen | None = None
        self.log = root / "daemon-stderr.log"
        self.worker_pids: set[int] = set()  # a worker orphaned by kill -9 is no longer our child

    def write_config(
        self,
        watch: str = "",
        daemon: str = "",
        model: str = "",
        pause: str = "on_battery = false",  # a laptop on battery must not pause every daemon test
    ) -> None:
        self.config_path.write_text(
            f'[watch]\nfolders = ["{self.watch.as_posix()}"]\n{watch}\n'
            f'[daemon]\nactive_preset = "upscale-2x"\n{daemon}\n'
            f"[model]\n{model}\n[pause]\n{pause}\n"
        )

    def use_real_engine(self) -> None:
        """The worker builds naiup's own engine, not the stand-in (stub_engine.py) the fixture sets."""
        self.env.pop(seams.ENGINE, None)

    def start(
        self, extra_env: dict[str, str] | None = None, wait_worker: bool = True, own_group: bool = False
    ) -> None:
        """`own_group`: the daemon leads its own process group, so a test can signal it like systemd does."""
        env = {**self.env, **(extra_env or {})}
        with open(self.log, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "naiup", "--config", str(self.config_path), "run"],
                cwd=REPO,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=own_group,
            )
        wait_for(self._pingable, 20, "the daemon to answer ping")
        if wait_worker:
            # The pid shows as soon as the child is spawned; "loading" ends when the engine is ready.
            wait_for(
                lambda: (s := self.status())["worker_pid"] and s["state"] != "loading",
                60,
                "the worker to load",
            )

    def _pingable(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited rc={self.proc.returncode}: {self.log.read_text()[-3000:]}")
        try:
            self.request("ping")
            return True
        except DaemonNotRunning:
            return False

    def request(self, verb: str, **args: Any) -> dict:
        with ControlClient.connect() as client:
            return client.request(verb, **args)

    def status(self) -> dict:
        status = self.request("status")
        if status.get("worker_pid"):
            self.worker_pids.add(status["worker_pid"])
        return status

    def rows(self) -> list[dict[str, Any]]:
        """The ledger's rows as dicts; `path` and `output` (stored as the file system's bytes) as str."""
        db = sqlite3.connect(f"file:{self.root / 'state' / 'ledger.sqlite3'}?mode=ro", uri=True)
        db.row_factory = sqlite3.Row
        try:
            rows = [dict(r) for r in db.execute("SELECT * FROM items ORDER BY id").fetchall()]
        finally:
            db.close()
        for r in rows:
            for key in ("path", "output"):
                r[key] = r[key] if r[key] is None else os.fsdecode(r[key])
        return rows

    def row(self, path: Path) -> dict[str, Any] | None:
        return next((r for r in self.rows() if r["path"] == str(path)), None)

    def outputs(self) -> list[Path]:
        return sorted(p for p in self.watch.iterdir() if ".naiup-" in p.name and not p.name.startswith("."))

    def arrive(self, src: Path, name: str) -> Path:
        """`src` as a finished download named `name`: copied beside the watched folder, then renamed
        into it, so the daemon never sees it half written."""
        staging = self.root / "staging"
        staging.mkdir(exist_ok=True)
        shutil.copy(src, staging / name)
        os.replace(staging / name, self.watch / name)
        return self.watch / name

    def temps(self) -> list[Path]:
        return sorted(self.watch.glob(".*naiup-tmp"))

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "naiup", *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
        )

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        rc = self.proc.wait(timeout)
        self.proc = None
        return rc
