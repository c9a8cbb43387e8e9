"""The status reply as a type: JSON in and out, and a client of one version reading a daemon of another."""

from __future__ import annotations

import json

import pytest

from naiup.control.protocol import ControlError, CurrentJob, DaemonState, PauseSource, Status


def _full() -> Status:
    return Status(
        state=DaemonState.WORKING,
        active_preset="refine-2x",
        presets=("refine-2x", "upscale-2x"),
        model_set="default",
        model="/models/sd15.safetensors",
        presets_without_model={"xl-refine-2x": "[models.xl]"},
        current=CurrentJob(id=7, path="/in/a\udcfe.png", preset="refine-2x", progress=0.25, stage="unet"),
        queue_length=3,
        counts={"done": 4, "failed": 1, "naiup_output": 2},
        pause_source=PauseSource.RULE,
        pause_rules_unavailable={"gpu": "no NVML"},
        watch_folders=("/in",),
        missing_folders=("/gone",),
        log_path="/log/daemon.log",
        pid=42,
    )


def test_a_status_survives_the_wire_as_it_was():
    status = _full()
    wire = json.loads(json.dumps(status.to_json()))  # only JSON types: the socket never pickles
    assert Status.from_json(wire) == status
    assert wire["state"] == "working" and wire["current"]["path"] == "/in/a\udcfe.png"
    assert wire["presets"] == ["refine-2x", "upscale-2x"] and wire["pause_source"] == "rule"
    assert status.failed == 1


def test_a_newer_daemons_fields_and_states_are_tolerated():
    # A tray started before an upgrade keeps talking to the daemon restarted after it.
    newer = {**_full().to_json(), "ok": True, "model_set": "sdxl", "current": {"path": "/a.png", "eta": 3}}
    status = Status.from_json(newer)
    assert status.active_preset == "refine-2x" and status.current == CurrentJob(path="/a.png")
    assert Status.from_json({"state": "downloading"}).state is DaemonState.UNKNOWN
    assert Status.from_json({"state": "paused", "pause_source": "schedule"}).pause_source is None


def test_an_older_daemons_missing_fields_read_as_their_defaults():
    status = Status.from_json({"ok": True, "state": "idle", "active_preset": "refine-2x"})
    assert status == Status(active_preset="refine-2x")
    assert status.current is None and status.counts == {} and status.failed == 0


@pytest.mark.parametrize("reply", [None, [], {"presets": 5}, {"counts": 3}, {"current": "busy"}])
def test_a_reply_that_is_no_status_is_a_control_error_naming_the_field(reply: object):
    with pytest.raises(ControlError, match="the daemon sent"):
        Status.from_json(reply)  # type: ignore[arg-type]
