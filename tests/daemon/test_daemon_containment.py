"""One bad file never stops the service: ledger paths as bytes, per-file containment, a crash in the log."""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path
from typing import Any

import nai_writer
import pytest
from daemon_harness import wait_for
from legacy_ledger import write_original_ledger

from naiup.config import Config, WatchConfig
from naiup.daemon import scheduler as scheduler_module
from naiup.daemon import stabiliser as stabiliser_module
from naiup.daemon.catchup import Scanner
from naiup.daemon.ledger import Ledger, State
from naiup.daemon.scheduler import Scheduler
from naiup.daemon.stabiliser import Stabiliser
from naiup.daemon.worker import Outcome
from naiup.runtime_state import RuntimeState

UNDECODABLE = os.fsdecode(b"img\xfe\x82\xa0.png")  # Shift-JIS bytes from a zip: not UTF-8


def test_an_old_ledger_is_migrated_and_takes_names_that_are_not_utf8(tmp_path: Path):
    path = tmp_path / "ledger.sqlite3"  # as it was before paths were stored as bytes (user_version 0)
    old_row = {"path": str(tmp_path / "日本.png"), "output": str(tmp_path / "日本.out.png")}
    write_original_ledger(path, [{**old_row, "state": "done", "hash": "h", "preset": "p", "model": "m"}])

    ledger = Ledger(path)
    old = ledger.by_path(tmp_path / "日本.png")
    assert old is not None and old.output == str(tmp_path / "日本.out.png")
    odd = tmp_path / UNDECODABLE
    item = ledger.upsert(odd, State.FAILED, error=f"{odd}: not an image")
    ledger.finish(item.id, str(tmp_path / f"{UNDECODABLE}.out.png"))
    again = ledger.by_path(odd)
    assert again.id == item.id and again.path == str(odd)  # lossless round trip
    assert again.output == str(tmp_path / f"{UNDECODABLE}.out.png")
    ledger.fail(item.id, f"{odd}: still bad")
    assert ledger.get(item.id).error.endswith("img\\xfe\\x82\\xa0.png: still bad")  # readable text
    ledger.close()
    assert Ledger(path).by_path(odd).id == item.id  # reopening runs no migration twice
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] >= 1


def _stabiliser(tmp_path: Path, **scanner: Any) -> tuple[Path, Ledger, Stabiliser, Scanner]:
    folder = tmp_path / "watch"
    folder.mkdir()
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    # process_existing: the files made before the first scan are taken, not baselined as existing
    config = Config(watch=WatchConfig(folders=(folder,), quiet_seconds=0.05, process_existing=True))
    stabiliser = Stabiliser(ledger, lambda: config, lambda: None)
    return folder, ledger, stabiliser, Scanner(ledger, lambda: config, stabiliser, **scanner)


def test_a_crash_checking_one_file_fails_that_file_and_the_others_go_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    real = stabiliser_module.read_metadata

    def read_metadata(path: Path, **kw: object):  # a bug that only this one file triggers
        if path.name == "boom.png":
            raise RuntimeError("a bug in the metadata reader")
        return real(path, **kw)

    monkeypatch.setattr(stabiliser_module, "read_metadata", read_metadata)
    folder, ledger, stabiliser, scanner = _stabiliser(tmp_path)
    boom = nai_writer.write_nai_png(folder / "boom.png", (16, 16), seed=1)
    fine = nai_writer.write_nai_png(folder / "fine.png", (16, 16), seed=2)
    stabiliser.start()
    try:
        assert scanner.scan((folder,), recursive=False) == 2
        wait_for(lambda: (r := ledger.by_path(boom)) and r.state is State.FAILED, 10, "boom.png to fail")
        wait_for(lambda: (r := ledger.by_path(fine)) and r.state is State.QUEUED, 10, "fine.png to queue")
        assert "RuntimeError: a bug in the metadata reader" in ledger.by_path(boom).error
        assert "Traceback" in caplog.text and "a bug in the metadata reader" in caplog.text
        wait_for(lambda: stabiliser.pending() == 0, 10, "the stabiliser to settle")
        assert scanner.scan((folder,), recursive=False) == 0  # decided: not crashed on again
    finally:
        stabiliser.stop()
        ledger.close()


def test_a_rescan_goes_past_a_file_whose_lookup_crashes(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    # The scan runs on the daemon's main loop: an exception there ended the daemon (issue: a name that
    # SQLite refused). Now it costs that one file, and the others are still found.
    def lstat(path: Path) -> os.stat_result:
        if path.name == "boom.png":
            raise UnicodeEncodeError("utf-8", "x", 0, 1, "surrogates not allowed")
        return path.lstat()

    folder, ledger, stabiliser, scanner = _stabiliser(tmp_path, stat=lstat)
    for name in ("a.png", "boom.png", "z.png"):
        (folder / name).write_bytes(b"x")
    try:
        assert scanner.scan((folder,), recursive=False) == 2
        assert stabiliser.pending() == 2 and "surrogates not allowed" in caplog.text
    finally:
        ledger.close()


def test_a_crash_scanning_one_folder_leaves_the_others_scanned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    folder, ledger, _, scanner = _stabiliser(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.png").write_bytes(b"x")
    real = ledger.folder_last_ran

    def folder_last_ran(where: Path) -> tuple[bool, float | None]:
        if where == folder:
            raise RuntimeError("a bug for this one folder")
        return real(where)

    monkeypatch.setattr(ledger, "folder_last_ran", folder_last_ran)
    try:
        assert scanner.scan((folder, other), recursive=False) == 1
        assert "a bug for this one folder" in caplog.text
    finally:
        ledger.close()


class _FakeWorker:
    """The scheduler's side of a worker, in-process: 'publishes' by writing a file; boom.png breaks it."""

    pid = 4242

    def __init__(self, config: Config, preset: object = None, on_download: object = None) -> None:
        self.model_set = config.model  # loaded for the active preset, as a real worker's SetLoaded says

    def start(self, cancelled: object) -> None:
        return None

    def alive(self) -> bool:
        return True

    def model_id(self, preset: object) -> str:
        return "m"

    def run(self, src: Path, *args: object) -> Outcome:
        if src.name == "boom.png":
            raise RuntimeError("a bug while handling this one job")
        out = src.with_name(src.stem + ".out.png")
        out.write_bytes(b"out")
        return Outcome(output=str(out), model_id="m")

    def stop(self) -> None:
        pass

    def kill(self) -> None:
        pass


def test_a_crash_handling_one_job_fails_that_job_and_the_queue_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    monkeypatch.setattr(scheduler_module, "Worker", _FakeWorker)
    ledger = Ledger(tmp_path / "ledger.sqlite3")
    boom, fine = tmp_path / "boom.png", tmp_path / "fine.png"
    for i, path in enumerate((boom, fine)):
        path.write_bytes(b"x")
        ledger.upsert(path, State.QUEUED, hash=f"h{i}")
    events: list[dict] = []
    scheduler = Scheduler(ledger, Config, RuntimeState, events.append)
    scheduler.start()
    try:
        wait_for(lambda: ledger.by_path(fine).state is State.DONE, 10, "the next file to be done")
        row = ledger.by_path(boom)
        assert row.state is State.FAILED and "a bug while handling this one job" in row.error
        assert "Traceback" in caplog.text
        assert [e["event"] for e in events] == ["job_failed", "job_done"]
    finally:
        scheduler.stop()
        ledger.close()


def _run_to_its_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config_text: str, error: type) -> str:
    """Daemon.run() in this process, in tmp_path's folders, ending in `error`; returns daemon.log."""
    from naiup.daemon.daemon import Daemon

    for key in ("STATE", "LOG", "RUNTIME", "CONFIG"):
        monkeypatch.setenv(f"NAIUP_{key}_DIR", str(tmp_path / key.lower()))
    config = tmp_path / "config.toml"
    config.write_text(config_text)
    root = logging.getLogger()
    level = root.level  # run() sets up the daemon's logging
    try:
        with pytest.raises(error):
            Daemon(config).run()
    finally:
        root.setLevel(level)
    return (tmp_path / "log" / "daemon.log").read_text(encoding="utf-8")


def test_a_crash_that_ends_the_daemon_is_written_to_its_log_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from naiup.daemon.daemon import Daemon

    def start(self: Daemon) -> None:
        raise RuntimeError("a bug in the daemon loop")

    monkeypatch.setattr(Daemon, "start", start)
    text = _run_to_its_end(
        tmp_path, monkeypatch, f'[watch]\nfolders = ["{tmp_path.as_posix()}"]\n', RuntimeError
    )
    assert "the daemon crashed" in text and "Traceback" in text and "a bug in the daemon loop" in text


def test_a_bad_config_at_start_is_called_invalid_not_a_failed_reload(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    from naiup.daemon.daemon import Daemon
    from naiup.errors import ConfigError

    text = _run_to_its_end(tmp_path, monkeypatch, "[watch]\nquiet_seconds = -1\n", ConfigError)
    # At start there is no previous config to keep: the log (and stderr) must not claim one.
    assert "config invalid, not starting" in text and "quiet_seconds" in text
    assert "reload" not in text and "previous config" not in text
    # A later edit that breaks the config is a reload that keeps the config already running.
    running = Daemon(tmp_path / "config.toml")
    with caplog.at_level(logging.ERROR), pytest.raises(ConfigError):
        running._load_config()
    assert "config reload failed, keeping the previous config" in caplog.text
