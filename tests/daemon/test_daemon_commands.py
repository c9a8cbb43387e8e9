"""The control commands as a user types them, against a real `naiup run`: stop then run, what status
says, and errors that name what the user typed."""

from __future__ import annotations

import json
import time

import nai_writer
from daemon_harness import DaemonRun, wait_for

KNOWN = (
    "known: refine-2x, refine-2x-strong, refine-4x, upscale-2x, "
    "xl-refine-2x, xl-refine-2x-strong, xl-refine-4x"
)


def test_stop_returns_once_the_daemon_has_exited_so_run_starts_again_at_once(daemon: DaemonRun):
    daemon.write_config(watch="quiet_seconds = 0.2")
    daemon.start(extra_env={"NAIUP_STUB_DELAY": "3"})
    src = nai_writer.write_nai_png(daemon.watch / "slow.png", (16, 16))
    wait_for(lambda: daemon.status()["current"], 20, "the job to start")

    stopped = daemon.cli("stop")
    assert stopped.returncode == 0, stopped.stderr
    assert "waiting for the current job to finish: slow.png" in stopped.stderr
    assert stopped.stdout.strip() == "daemon stopped"
    assert daemon.proc.poll() == 0, "`naiup stop` returned while the daemon was still running"
    assert daemon.row(src)["state"] == "done"  # the job finished within the grace time
    daemon.proc = None

    daemon.start()  # `naiup stop; naiup run`: the instance lock is free already
    assert daemon.cli("stop", "--no-wait").stdout.strip() == "daemon stopping"
    assert daemon.proc.wait(30) == 0
    daemon.proc = None


def test_status_shows_the_running_job_and_its_preset_apart_from_the_queue_and_a_pause_end(daemon: DaemonRun):
    daemon.write_config(watch="quiet_seconds = 0.2")
    daemon.start(extra_env={"NAIUP_STUB_DELAY": "4"})
    for name in ("first.png", "second.png"):
        nai_writer.write_nai_png(daemon.watch / name, (16, 16), seed=len(name))
    wait_for(
        lambda: (s := daemon.status())["current"] and s["queue_length"] == 1, 20, "one running, one queued"
    )
    text = daemon.cli("status").stdout
    assert "queue=1" in text, text
    assert "  working on first.png with upscale-2x (" in text, text

    daemon.request("pause", for_seconds=15 * 60.0)
    paused = daemon.cli("status").stdout
    until = time.strftime("%H:%M", time.localtime(daemon.status()["paused_until"]))
    assert f"  paused: by you (until {until}, 15 min left)" in paused, paused
    assert daemon.stop() == 0


def test_last_error_clears_when_that_file_succeeds_and_own_outputs_stay_out_of_failed(daemon: DaemonRun):
    daemon.write_config(watch="quiet_seconds = 0.2")
    daemon.start()
    bad = nai_writer.write_nai_png(daemon.watch / "pic.png", (16, 16), prompt="nan")
    failed = wait_for(lambda: (s := daemon.status())["last_error"] and s, 20, "the job to fail")
    assert abs(failed["last_error_at"] - time.time()) < 60
    at = time.strftime("%H:%M", time.localtime(failed["last_error_at"]))
    assert f"last error ({at}): pic.png: latent contains NaN" in daemon.cli("status").stdout
    assert daemon.stop() == 0
    daemon.start()  # the file is still failed: a restart keeps the news, and its time
    again = daemon.status()
    assert again["last_error"] == failed["last_error"]
    assert abs(again["last_error_at"] - failed["last_error_at"]) < 1

    nai_writer.write_nai_png(bad, (16, 16), prompt="fine now")  # downloaded again, a good copy
    wait_for(lambda: (r := daemon.row(bad)) and r["state"] == "done", 20, "the new copy to be done")
    wait_for(lambda: daemon.status()["counts"].get("naiup_output") == 1, 20, "the output to be recorded")
    status = daemon.status()
    assert status["last_error"] is None
    assert "skipped" not in status["counts"]
    text = daemon.cli("status").stdout
    assert "last error" not in text and "naiup outputs (ignored) 1" in text, text

    plain = daemon.watch / "plain.png"
    nai_writer.Image.new("RGB", (8, 8)).save(plain)  # no NovelAI metadata: skipped, and listed
    wait_for(lambda: daemon.row(plain), 20, "the plain image to be recorded")
    failed = json.loads(daemon.cli("queue", "--failed", "--json").stdout)["items"]
    assert [i["path"] for i in failed] == [str(plain)]  # not our output
    assert daemon.stop() == 0


def test_errors_name_what_was_typed_and_json_gets_an_error_object(daemon: DaemonRun):
    down = daemon.cli("status", "--json")
    assert down.returncode == 3 and json.loads(down.stdout)["ok"] is False
    daemon.write_config(watch="quiet_seconds = 0.2")
    daemon.start()

    nope = daemon.cli("preset", "nope")
    assert nope.returncode == 1
    assert nope.stderr.strip() == f"error: unknown preset 'nope' ({KNOWN})"
    as_json = daemon.cli("preset", "nope", "--json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout) == {"ok": False, "error": f"unknown preset 'nope' ({KNOWN})"}

    unknown = daemon.cli("retry", "999")
    assert unknown.returncode == 1 and "no file with id 999" in unknown.stderr
    src = nai_writer.write_nai_png(daemon.watch / "a.png", (16, 16))
    wait_for(lambda: (r := daemon.row(src)) and r["state"] == "done", 20, "the job")
    finished = daemon.cli("retry", str(daemon.row(src)["id"]))
    assert finished.returncode == 1 and "is done, not failed: nothing to retry" in finished.stderr

    refine = daemon.cli("refine", "--preset", "nope", str(src), "--config", str(daemon.config_path))
    assert refine.returncode == 1
    assert refine.stderr.strip() == f"error: --preset 'nope': unknown preset ({KNOWN})"
    assert daemon.stop() == 0


def test_a_rejected_config_edit_is_not_an_error_state_while_the_previous_config_works(daemon: DaemonRun):
    daemon.write_config(watch="quiet_seconds = 0.2")
    daemon.start()
    daemon.config_path.write_text("[watch\nbroken = ")
    status = wait_for(lambda: (s := daemon.status())["config_error"] and s, 20, "the config error")
    assert status["state"] == "idle" and status["engine_error"] is None
    text = daemon.cli("status").stdout
    assert text.startswith("idle") and "config edit not applied (the previous config is in use): " in text
    src = nai_writer.write_nai_png(daemon.watch / "still.png", (16, 16))
    wait_for(lambda: (r := daemon.row(src)) and r["state"] == "done", 20, "a job on the previous config")
    assert daemon.stop() == 0


def test_files_skipped_as_not_novelai_can_be_retried_by_id_and_are_offered_once_only_novelai_is_off(
    daemon: DaemonRun,
):
    daemon.write_config(watch="quiet_seconds = 0.2")  # only_novelai is on by default
    daemon.start()
    first, second = daemon.watch / "first.png", daemon.watch / "second.png"
    for i, plain in enumerate((first, second)):
        nai_writer.Image.new("RGB", (8, 8), (i, 0, 0)).save(plain)  # no NovelAI metadata
    wait_for(
        lambda: all((r := daemon.row(p)) and r["state"] == "skipped" for p in (first, second)), 20, "skips"
    )
    assert daemon.cli("retry", "all").stdout.strip() == "requeued 0 file(s)"  # all: failed ones only
    by_id = daemon.cli("retry", str(daemon.row(first)["id"]))  # the user names that file: refined
    assert by_id.returncode == 0 and by_id.stdout.strip() == "requeued 1 file(s)", by_id.stderr
    wait_for(lambda: daemon.row(first)["state"] == "done", 20, "the retried file")
    assert daemon.row(second)["state"] == "skipped"

    # Turning only_novelai off offers what it skipped to backfill (counted in status), not queued unasked.
    daemon.write_config(watch="quiet_seconds = 0.2\nonly_novelai = false")
    daemon.request("reload")
    assert daemon.row(second)["state"] == "existing" and daemon.status()["existing"] == 1
    assert daemon.request("backfill")["count"] == 1
    wait_for(lambda: daemon.row(second)["state"] == "done", 20, "the backfilled file")
    assert daemon.stop() == 0
