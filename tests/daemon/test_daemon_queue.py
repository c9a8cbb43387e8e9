"""Many files at once, restarts, pause/resume/preset: each file processed exactly once, in order."""

from __future__ import annotations

import itertools

import nai_writer
import psutil
from daemon_harness import DaemonRun, wait_for
from PIL import Image

N = 500


def _count(daemon: DaemonRun, state: str) -> int:
    return daemon.status()["counts"].get(state, 0)


def test_500_files_at_once_are_each_processed_once_and_a_restart_redoes_nothing(daemon: DaemonRun):
    daemon.write_config(watch="quiet_seconds = 0.3\nrescan_seconds = 2.0")
    daemon.start()
    staging = daemon.root / "staging"
    staging.mkdir()
    for i in range(N):  # written elsewhere, then moved in: "dropped at once", each file complete
        nai_writer.write_nai_png(staging / f"img{i:03}.png", (16, 16), seed=i, pixel_seed=i)
    for p in staging.iterdir():
        p.rename(daemon.watch / p.name)
    wait_for(lambda: _count(daemon, "done") == N, 90, f"{N} jobs done")
    # every output is recorded as ours and never queued
    wait_for(lambda: _count(daemon, "naiup_output") == N, 30, "outputs recorded as naiup outputs")
    assert _count(daemon, "skipped") == 0  # counted apart: not skipped for a reason to look into
    rows = daemon.rows()
    done = [r for r in rows if r["state"] == "done"]
    assert len({r["path"] for r in done}) == N and all(r["attempts"] == 1 for r in done)
    outputs = daemon.outputs()
    assert len(outputs) == N
    assert {r["output"] for r in done} == {str(p) for p in outputs}
    assert all(r["error"] == "a naiup output" for r in rows if r["state"] == "skipped")
    by_start = sorted(done, key=lambda r: r["started"])  # one at a time, in arrival order
    assert [r["id"] for r in by_start] == sorted(r["id"] for r in done)
    assert all(a["finished"] <= b["started"] for a, b in itertools.pairwise(by_start))
    assert daemon.stop() == 0

    # Restart: the catch-up scan finds nothing new; a file that arrived while down is processed.
    nai_writer.write_nai_png(daemon.watch / "late.png", (16, 16), seed=9999, pixel_seed=9999)
    daemon.start()
    wait_for(
        lambda: (r := daemon.row(daemon.watch / "late.png")) and r["state"] == "done",
        30,
        "the file that arrived while the daemon was down",
    )
    assert _count(daemon, "done") == N + 1
    assert len(daemon.outputs()) == N + 1
    assert max(r["attempts"] for r in daemon.rows()) == 1
    assert daemon.stop() == 0


def test_pause_resume_preset_switch_and_free_gpu(daemon: DaemonRun):
    daemon.write_config(watch="quiet_seconds = 0.2")
    daemon.start()
    w = daemon.watch
    pid = daemon.status()["worker_pid"]

    paused = daemon.cli("pause", "--reason", "testing")
    assert paused.returncode == 0 and "paused" in paused.stdout
    nai_writer.write_nai_png(w / "a.png", (16, 16))
    wait_for(
        lambda: (r := daemon.row(w / "a.png")) and r["state"] == "queued", 20, "a.png recorded as queued"
    )
    status = daemon.status()
    assert status["state"] == "paused" and status["pause_reason"] == "testing" and daemon.outputs() == []

    switched = daemon.cli("preset", "refine-4x")
    assert switched.returncode == 0 and "* refine-4x" in switched.stdout
    bad = daemon.cli("preset", "no-such-preset")
    assert bad.returncode == 1 and "unknown preset" in bad.stderr
    assert daemon.cli("resume").returncode == 0
    wait_for(lambda: daemon.outputs(), 20, "the output after resume")
    (out,) = daemon.outputs()
    assert out.name == "a.naiup-refine-4x.png" and Image.open(out).size == (64, 64)
    assert daemon.status()["worker_pid"] == pid  # same warm worker: no reload for a preset switch

    # pause --free-gpu stops the worker process; resume starts a fresh one
    assert daemon.cli("pause", "--free-gpu").returncode == 0
    wait_for(
        lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE,
        20,
        "the worker to exit",
    )
    assert daemon.status()["worker_pid"] is None
    assert daemon.cli("resume").returncode == 0
    new_pid = wait_for(lambda: daemon.status()["worker_pid"], 20, "a new worker")
    assert new_pid != pid

    # a timed pause ends by itself; runtime choices survive a restart
    daemon.request("pause", for_seconds=0.5)
    wait_for(lambda: daemon.status()["state"] != "paused", 10, "the timed pause to end")
    assert daemon.stop() == 0
    daemon.start()
    assert daemon.status()["active_preset"] == "refine-4x"
    assert daemon.stop() == 0


def test_outputs_are_never_requeued_even_when_the_ledger_is_lost(daemon: DaemonRun):
    daemon.write_config(watch="quiet_seconds = 0.2")
    daemon.start()
    src = nai_writer.write_nai_png(daemon.watch / "a.png", (16, 16))
    wait_for(lambda: (r := daemon.row(src)) and r["state"] == "done", 20, "the first job")
    assert daemon.stop() == 0
    (first,) = daemon.outputs()  # before the restart: the redone job may publish before we look
    for f in (daemon.root / "state").glob("ledger.sqlite3*"):
        f.unlink()

    daemon.start()  # a ledger with no rows: the folder is baselined; our output is no older image
    wait_for(
        lambda: (r := daemon.row(first)) and r["state"] == "skipped", 20, "the old output to be recognised"
    )
    assert daemon.row(first)["error"] == "a naiup output"  # by its provenance chunk, not by the ledger
    assert daemon.status()["existing"] == 1
    assert daemon.request("backfill")["count"] == 1  # the original goes through the full check again
    wait_for(lambda: (r := daemon.row(src)) and r["state"] == "done", 20, "the original to be redone")
    names = sorted(p.name for p in daemon.outputs())
    assert names == ["a.naiup-upscale-2x (2).png", "a.naiup-upscale-2x.png"]  # never overwritten
    assert daemon.stop() == 0
