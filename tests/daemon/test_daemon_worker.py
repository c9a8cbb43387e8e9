"""The worker child: crashes, hangs, engines that cannot load, kill -9 and SIGTERM of the daemon."""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path

import nai_writer
import psutil
import pytest
import stub_engine
from daemon_harness import DaemonRun, wait_for

from naiup.daemon.ledger import Ledger, State


def _state(daemon: DaemonRun, path: Path) -> str | None:
    row = daemon.row(path)
    return row["state"] if row else None


def _gone(pid: int) -> bool:
    return not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_kill_9_mid_job_leaves_nothing_partial_and_the_job_is_redone(daemon: DaemonRun):
    daemon.write_config(watch="quiet_seconds = 0.2", daemon="stop_grace_seconds = 0.3")
    daemon.start(extra_env={"NAIUP_STUB_DELAY": "30"})
    src = nai_writer.write_nai_png(daemon.watch / "a.png", (64, 64))
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    wait_for(lambda: daemon.status()["current"], 20, "the job to start")
    worker = daemon.status()["worker_pid"]

    assert daemon.stop(signal.SIGKILL) == -signal.SIGKILL
    wait_for(lambda: _gone(worker), 10, "the orphaned worker to exit with its parent")
    assert daemon.outputs() == [] and daemon.temps() == []

    # SIGTERM mid-job with a short grace: the job is abandoned cleanly, the daemon exits 0.
    daemon.start(extra_env={"NAIUP_STUB_DELAY": "30"})
    wait_for(lambda: daemon.status()["current"], 20, "the requeued job to start again")
    assert daemon.stop(signal.SIGTERM) == 0
    assert daemon.outputs() == [] and daemon.temps() == []
    assert _state(daemon, src) == "queued"

    daemon.start()
    wait_for(lambda: _state(daemon, src) == "done", 20, "the job to be redone")
    assert len(daemon.outputs()) == 1 and daemon.temps() == []
    assert daemon.row(src)["attempts"] == 2  # the kill -9 attempt counts; the clean abandon does not
    assert hashlib.sha256(src.read_bytes()).hexdigest() == digest
    assert daemon.stop() == 0


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="process groups are POSIX")
def test_sigterm_to_the_process_group_lets_the_current_job_finish_within_the_grace(daemon: DaemonRun):
    # `systemctl --user stop` with KillMode=control-group signals every process of the unit at once; the
    # worker must leave its lifetime to the daemon, which lets the job finish within stop_grace_seconds.
    daemon.write_config(watch="quiet_seconds = 0.2", daemon="stop_grace_seconds = 20")
    daemon.start(extra_env={"NAIUP_STUB_DELAY": "2"}, own_group=True)
    src = nai_writer.write_nai_png(daemon.watch / "a.png", (64, 64))
    wait_for(lambda: daemon.status()["current"], 20, "the job to start")
    assert daemon.proc is not None
    os.killpg(daemon.proc.pid, signal.SIGTERM)
    assert daemon.stop(timeout=40) == 0
    assert len(daemon.outputs()) == 1 and daemon.temps() == []
    assert _state(daemon, src) == "done"


def test_crashed_and_hung_workers_are_restarted_and_poison_files_fail_after_3_attempts(daemon: DaemonRun):
    daemon.write_config(watch="quiet_seconds = 0.2", daemon="job_timeout_seconds = 1.5")
    daemon.start()
    w = daemon.watch
    nai_writer.write_nai_png(w / "hang.png", (16, 16), prompt="hang")
    wait_for(lambda: _state(daemon, w / "hang.png") == "done", 30, "the hung job to be retried and done")
    assert daemon.row(w / "hang.png")["attempts"] == 2

    nai_writer.write_nai_png(w / "crash.png", (16, 16), prompt="crash")
    wait_for(lambda: _state(daemon, w / "crash.png") == "failed", 40, "the crashing job to fail")
    row = daemon.row(w / "crash.png")
    assert row["attempts"] == 3 and "3 times" in row["error"]
    assert "worker crashed (exit code 7)" in row["error"]  # the stand-in's os._exit(7)

    nai_writer.write_nai_png(w / "fine.png", (16, 16))  # the queue goes on
    wait_for(lambda: _state(daemon, w / "fine.png") == "done", 20, "the next file")
    retried = daemon.cli("retry", "all")
    assert retried.returncode == 0 and "requeued 1" in retried.stdout
    assert daemon.stop() == 0


def test_a_job_that_keeps_reporting_progress_is_still_timed_out(daemon: DaemonRun):
    # One deadline for the whole wait: the progress the job reports all along does not extend it.
    daemon.write_config(watch="quiet_seconds = 0.2", daemon="job_timeout_seconds = 1\nmax_attempts = 1")
    daemon.start()
    src = nai_writer.write_nai_png(daemon.watch / "chatty.png", (16, 16), prompt="chatty")
    wait_for(lambda: _state(daemon, src) == "failed", 30, "the chatty job to time out")
    assert "job timed out after 1 s" in daemon.row(src)["error"]
    assert daemon.stop() == 0


def test_an_engine_that_cannot_load_keeps_files_queued_until_the_config_is_fixed(daemon: DaemonRun):
    daemon.write_config(watch="quiet_seconds = 0.2", model=f'checkpoint = "{stub_engine.BROKEN}"')
    daemon.start(wait_worker=False)
    status = wait_for(lambda: (s := daemon.status())["engine_error"] and s, 20, "the engine error")
    assert status["state"] == "error" and "stub-model.safetensors" in status["engine_error"]
    src = nai_writer.write_nai_png(daemon.watch / "a.png", (16, 16))
    wait_for(lambda: _state(daemon, src) == "queued", 20, "the file to be queued")

    # An invalid edit keeps the old config and says why; a valid one is picked up without a restart.
    daemon.config_path.write_text("[watch\nbroken = ")
    wait_for(lambda: daemon.status()["config_error"], 20, "the config error in status")
    assert "not valid TOML" in daemon.status()["config_error"]
    assert _state(daemon, src) == "queued"
    daemon.write_config(watch="quiet_seconds = 0.2")
    wait_for(lambda: _state(daemon, src) == "done", 30, "the file after the config fix")
    status = daemon.status()
    assert status["engine_error"] is None and status["config_error"] is None
    assert daemon.stop() == 0


def test_an_active_preset_removed_from_the_config_keeps_files_queued_and_says_why(daemon: DaemonRun):
    mine = '[presets.mine]\nscale = 2.0\nupscaler = "lanczos"\nrefine = false\n'
    daemon.write_config(watch="quiet_seconds = 0.2")
    daemon.config_path.write_text(daemon.config_path.read_text() + mine)
    daemon.start()
    daemon.request("preset", name="mine")
    daemon.write_config(watch="quiet_seconds = 0.2")  # the edit drops the preset the user picked
    status = wait_for(lambda: (s := daemon.status())["engine_error"] and s, 20, "the preset error")
    assert status["state"] == "error" and "'mine'" in status["engine_error"]
    src = nai_writer.write_nai_png(daemon.watch / "a.png", (16, 16))
    wait_for(lambda: _state(daemon, src) == "queued", 20, "the file to be queued")

    daemon.request("preset", name="upscale-2x")  # choosing a preset that exists takes the file
    wait_for(lambda: _state(daemon, src) == "done", 20, "the file after the preset switch")
    assert daemon.status()["engine_error"] is None
    assert "Traceback" not in daemon.log.read_text()  # a config problem, not a crash of the loop
    assert daemon.stop() == 0


def test_a_reloaded_output_setting_reaches_the_warm_worker(daemon: DaemonRun):
    daemon.write_config(watch="quiet_seconds = 0.2")
    daemon.start()
    worker = daemon.status()["worker_pid"]
    first = nai_writer.write_nai_png(daemon.watch / "a.png", (16, 16))
    wait_for(lambda: _state(daemon, first) == "done", 20, "the first file")

    # Not a model change, so the worker stays warm; the next job must still use the new [output].
    daemon.config_path.write_text(daemon.config_path.read_text() + '[output]\nname = "big-{stem}.png"\n')
    assert daemon.request("reload")["ok"]  # at once, not at the next poll of the file
    second = nai_writer.write_nai_png(daemon.watch / "b.png", (24, 24))  # not a duplicate of a
    wait_for(lambda: _state(daemon, second) == "done", 20, "the second file")
    assert Path(daemon.row(second)["output"]).name == "big-b.png"
    assert daemon.status()["worker_pid"] == worker
    assert daemon.stop() == 0


def test_a_watch_folder_added_by_a_config_edit_is_watched_without_a_restart(daemon: DaemonRun):
    daemon.write_config(watch="quiet_seconds = 0.2")
    other = daemon.root / "other"
    other.mkdir()
    waiting = nai_writer.write_nai_png(other / "already-there.png", (16, 16))  # there well before the edit
    daemon.start()
    pid = daemon.proc.pid
    text = daemon.config_path.read_text()
    old_line = f'folders = ["{daemon.watch.as_posix()}"]'
    new_line = f'folders = ["{daemon.watch.as_posix()}", "{other.as_posix()}"]'
    daemon.config_path.write_text(text.replace(old_line, new_line))
    assert daemon.request("reload")["ok"]
    # Baselined like a first start: what was already there is recorded, not processed.
    wait_for(lambda: _state(daemon, waiting) == "existing", 20, "the file already in the new folder")
    fresh = nai_writer.write_nai_png(other / "new.png", (24, 24))  # seen by the watcher, not a rescan
    wait_for(lambda: _state(daemon, fresh) == "done", 20, "a new file in the new folder")
    assert _state(daemon, waiting) == "existing" and not list(other.glob("already-there.naiup-*"))
    assert daemon.request("backfill", folder=str(other))["count"] == 1  # and it is one request away
    wait_for(lambda: _state(daemon, waiting) == "done", 20, "the backfilled file")

    daemon.config_path.write_text(text)  # and dropped again
    assert daemon.request("reload")["ok"]
    ignored = nai_writer.write_nai_png(other / "after.png", (20, 20))
    kept = nai_writer.write_nai_png(daemon.watch / "kept.png", (20, 20))
    wait_for(lambda: _state(daemon, kept) == "done", 20, "the file in the folder still watched")
    assert daemon.row(ignored) is None
    assert daemon.proc.pid == pid and daemon.stop() == 0


def test_out_of_gpu_memory_is_retried_but_a_broken_result_is_not(daemon: DaemonRun):
    daemon.write_config(watch="quiet_seconds = 0.2", daemon="max_attempts = 3")
    daemon.start()
    w = daemon.watch
    worker = daemon.status()["worker_pid"]
    oom = nai_writer.write_nai_png(w / "oom.png", (16, 16), prompt="oom")
    nan = nai_writer.write_nai_png(w / "nan.png", (20, 20), prompt="nan")
    big = nai_writer.write_nai_png(w / "big.png", (24, 24), prompt="too-big")
    fine = nai_writer.write_nai_png(w / "fine.png", (16, 16))
    done = {oom: "failed", nan: "failed", big: "failed", fine: "done"}
    wait_for(lambda: all(_state(daemon, f) == s for f, s in done.items()), 30, "each file's end")
    assert daemon.row(oom)["attempts"] == 3  # another program's memory may be free next time
    assert daemon.row(nan)["attempts"] == 1  # the same input gives the same garbage
    assert "out of CUDA memory" in daemon.row(oom)["error"]
    # A preset too large for the card fails its job, saying which preset; the set that loaded stays
    # loaded (no reload-and-retry loop: a model that cannot load would keep the file queued).
    assert daemon.row(big)["attempts"] == 1
    assert daemon.row(big)["error"].startswith("preset upscale-2x: its SDXL model needs about")
    assert daemon.status()["worker_pid"] == worker
    assert daemon.stop() == 0


def test_the_engine_hears_when_the_queue_goes_idle(daemon: DaemonRun):
    # The real Engine empties the CUDA cache then: a warm worker must not keep its peak memory.
    daemon.write_config(watch="quiet_seconds = 0.2")
    daemon.start()
    calls = daemon.root / "state" / "idle-calls"
    src = nai_writer.write_nai_png(daemon.watch / "a.png", (16, 16))
    wait_for(lambda: _state(daemon, src) == "done", 20, "the job to be done")
    wait_for(calls.exists, 20, "the engine's idle hook")
    assert calls.read_text() == "idle\n"  # once per idle spell, not on every poll
    assert daemon.stop() == 0


def test_a_job_failed_by_the_recovery_at_start_is_the_last_error(daemon: DaemonRun):
    # Left `processing` by a daemon killed mid-job for the third time: failed at the next start.
    (daemon.root / "state").mkdir(exist_ok=True)
    ledger = Ledger(daemon.root / "state" / "ledger.sqlite3")
    row = ledger.upsert(daemon.watch / "poison.png", State.QUEUED, size=1, mtime_ns=1, hash="h")
    for _ in range(3):
        ledger.start(row.id, "upscale-2x", "m")
    ledger.close()
    daemon.write_config(watch="quiet_seconds = 0.2")
    daemon.start()
    assert _state(daemon, daemon.watch / "poison.png") == "failed"
    assert "poison.png" in daemon.status()["last_error"] and "3 times" in daemon.status()["last_error"]
    assert daemon.stop() == 0


def test_an_edited_active_preset_replaces_an_earlier_preset_command(daemon: DaemonRun):
    # A user who once ran `naiup preset refine-2x` and later edits active_preset in the file means the
    # edit; it used to be overridden silently by the older runtime choice.
    daemon.write_config(watch="quiet_seconds = 0.2")
    daemon.start()
    daemon.request("preset", name="refine-2x")
    assert daemon.status()["active_preset"] == "refine-2x"
    text = daemon.config_path.read_text()
    daemon.config_path.write_text(text.replace('active_preset = "upscale-2x"', 'active_preset = "refine-4x"'))
    assert daemon.request("reload")["ok"]
    assert daemon.status()["active_preset"] == "refine-4x"
    daemon.config_path.write_text(daemon.config_path.read_text() + '[output]\nname = "x-{stem}.png"\n')
    daemon.request("preset", name="upscale-2x")
    assert daemon.request("reload")["ok"]  # an edit elsewhere keeps the runtime choice
    assert daemon.status()["active_preset"] == "upscale-2x"
    assert daemon.stop() == 0
