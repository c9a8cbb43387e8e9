"""Whatever a downloads folder holds, the real daemon neither hangs nor dies, and says what it did.

Names that are not UTF-8 (a zip made on a Windows machine in Japan), 255-byte names, names with
newlines, FIFOs and folders named like images, symbolic links in a loop or out of the folder; files
deleted or renamed while queued; the watch folder itself moved away and recreated.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import nai_writer
import pytest
from daemon_harness import REPO, DaemonRun, wait_for

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX names, FIFOs and symlinks")


def _state(daemon: DaemonRun, path: Path) -> str | None:
    row = daemon.row(path)
    return row["state"] if row else None


def test_a_folder_of_hostile_names_and_objects_is_survived_and_its_images_processed(daemon: DaemonRun):
    daemon.write_config(watch="quiet_seconds = 0.2\ngive_up_seconds = 3.0")
    w = daemon.watch
    undecodable = Path(os.fsdecode(bytes(w) + b"/img\xfe\x82\xa0.png"))  # Shift-JIS bytes, not UTF-8
    longest = w / ("n" * 251 + ".png")  # 255 bytes: the longest name there is; its output must shrink
    newline = w / "new\nline.png"
    broken = Path(os.fsdecode(bytes(w) + b"/bad\xff.png"))  # not an image: listed failed, escaped
    for i, path in enumerate((undecodable, longest, newline)):
        nai_writer.write_nai_png(path, (16, 16), seed=i)  # distinct bytes: not skipped as duplicates
    broken.write_text("not an image")
    os.mkfifo(w / "fifo.png")  # reading it would block forever
    (w / "folder.png").mkdir()
    os.symlink("loop.png", w / "loop.png")  # a link to itself
    os.symlink(".", w / "here")  # a folder loop, for a recursive walk
    outside = nai_writer.write_nai_png(daemon.root / "outside.png", (16, 16), seed=9)
    os.symlink(outside, w / "outside.png")  # leads out of the watched folder
    # Files there at the first start are baselined by the start-up scan (the daemon loop): listed, not
    # opened, and the FIFO, the folder and the links not even recorded. The sorter then reads the
    # listed ones (only_novelai): the file that is no image is no older image to offer. A backfill
    # sends the others through the full check; later files come from the watcher.
    daemon.start()
    wait_for(lambda: _state(daemon, broken) == "existing", 20, "the baseline of the hostile folder")
    wait_for(lambda: daemon.status()["existing"] == 3, 20, "the sorter to read the hostile folder")
    late = Path(os.fsdecode(bytes(w) + b"/late\xe9.png"))  # Latin-1 bytes
    nai_writer.write_nai_png(late, (16, 16), seed=5)
    dry = daemon.cli("backfill", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "img\\xfe\\x82\\xa0.png" in dry.stdout and "new\\nline.png" in dry.stdout  # escaped
    backfill = daemon.request("backfill")
    assert backfill["count"] == 3
    assert sorted(backfill["paths"]) == sorted(str(p) for p in (undecodable, longest, newline))

    for path in (undecodable, longest, newline, late):
        wait_for(lambda p=path: _state(daemon, p) == "done", 30, f"{path.name!r} to be processed")
    assert _state(daemon, broken) == "existing"  # never offered
    broken.write_text("downloaded again, still not an image")  # a new arrival: checked, and failed
    wait_for(lambda: _state(daemon, broken) == "failed", 30, "the broken file to fail")
    assert daemon.proc is not None and daemon.proc.poll() is None
    outputs = {r["path"]: Path(r["output"]) for r in daemon.rows() if r["state"] == "done"}
    assert outputs[str(undecodable)].name == os.fsdecode(b"img\xfe\x82\xa0.naiup-upscale-2x.png")
    assert outputs[str(undecodable)].is_file() and outputs[str(newline)].is_file()
    long_out = outputs[str(longest)]
    assert long_out.is_file() and len(os.fsencode(long_out.name)) == 255
    assert long_out.name.endswith("n.naiup-upscale-2x.png")
    # Nothing else was taken: no row for the FIFO, the folder, the links; nothing written outside.
    sources = {r["path"] for r in daemon.rows() if r["error"] != "a naiup output"}
    assert sources == {str(p) for p in (undecodable, longest, newline, late, broken)}
    assert sorted(p.name for p in daemon.root.glob("outside*")) == ["outside.png"]
    assert daemon.temps() == []

    # Shown escaped: undecodable bytes as \xNN, a newline as \n, one line per file.
    listed = daemon.cli("queue", "--failed")
    assert listed.returncode == 0, listed.stderr
    assert "bad\\xff.png" in listed.stdout and "not an image" in listed.stdout
    status = daemon.cli("status")
    assert status.returncode == 0, status.stderr
    # --json: valid Unicode for strict readers (no lone surrogates), the name as the text shows it and
    # its exact bytes beside it.
    raw = subprocess.run(
        [sys.executable, "-m", "naiup", "queue", "--failed", "--json"],
        env=daemon.env,
        cwd=REPO,
        capture_output=True,
        timeout=30,
    ).stdout
    as_json = json.loads(raw.decode("utf-8", "strict"))
    json.dumps(as_json, ensure_ascii=False).encode(
        "utf-8"
    )  # strict: a lone surrogate left in would raise here
    (failed,) = [i for i in as_json["items"] if i["state"] == "failed"]
    assert failed["path"] == str(w / "bad\\xff.png")
    assert bytes.fromhex(failed["path_hex"]) == os.fsencode(broken)  # lossless
    log = (daemon.root / "log" / "daemon.log").read_text(encoding="utf-8")
    assert "img\\xfe\\x82\\xa0.png" in log and "new\\nline.png" in log
    assert "Traceback" not in log
    assert daemon.stop() == 0


def test_a_watch_folder_moved_away_and_recreated_is_watched_again_within_seconds(daemon: DaemonRun):
    # No periodic rescan during the test: only the re-armed watch can find the new file.
    daemon.write_config(watch="quiet_seconds = 0.2\nrescan_seconds = 3600.0")
    daemon.start()
    w = daemon.watch
    first = nai_writer.write_nai_png(w / "first.png", (16, 16), seed=1)
    wait_for(lambda: _state(daemon, first) == "done", 20, "a file in the folder as it was")

    w.rename(daemon.root / "watch-old")
    wait_for(lambda: daemon.status()["missing_folders"] == [str(w)], 10, "the folder to show as missing")
    shown = daemon.cli("status")
    assert f"missing folder: {w}" in shown.stdout, shown.stdout
    w.mkdir()
    wait_for(lambda: daemon.status()["missing_folders"] == [], 10, "the folder to be watched again")
    time.sleep(0.5)  # the re-armed watch is in place once the daemon stops listing the folder missing
    second = nai_writer.write_nai_png(w / "second.png", (16, 16), seed=2)
    wait_for(lambda: _state(daemon, second) == "done", 10, "a new file in the recreated folder")
    assert daemon.stop() == 0


def test_a_file_deleted_or_renamed_while_queued_is_dropped_or_followed_not_failed(daemon: DaemonRun):
    daemon.write_config(watch="quiet_seconds = 0.2")
    daemon.start()
    assert daemon.cli("pause").returncode == 0  # files are recorded, and wait in the queue
    w = daemon.watch
    doomed = nai_writer.write_nai_png(w / "doomed.png", (16, 16), seed=1)
    moving = nai_writer.write_nai_png(w / "moving.png", (16, 16), seed=2)
    for path in (doomed, moving):
        wait_for(lambda p=path: _state(daemon, p) == "queued", 20, f"{path.name} to be queued")
    queued_id = daemon.row(moving)["id"]
    doomed.unlink()
    renamed = moving.rename(w / "renamed.png")
    wait_for(lambda: _state(daemon, renamed) == "queued", 20, "the renamed file to be followed")
    assert daemon.row(renamed)["id"] == queued_id  # the same row: it keeps its place in the queue
    assert daemon.cli("resume").returncode == 0

    wait_for(lambda: _state(daemon, renamed) == "done", 20, "the renamed file to be processed")
    wait_for(lambda: daemon.row(doomed) is None, 20, "the deleted file to be dropped")
    assert daemon.row(moving) is None
    assert daemon.status()["counts"] == {"done": 1} and daemon.status()["last_error"] is None
    assert daemon.stop() == 0
