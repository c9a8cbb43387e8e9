"""The verb table: a client's verb and arguments reach one public Daemon method, nothing else."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from naiup.control.protocol import CurrentJob, Status
from naiup.daemon import verbs
from naiup.errors import NaiupError


class Recorder:
    """Stands in for the Daemon: records which method a verb called, with what."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def status(self) -> Status:
        return Status(active_preset="refine-2x")

    def pause(self, free_gpu: bool, until: float | None, reason: str | None) -> Status:
        self.calls.append(("pause", (free_gpu, until, reason)))
        return self.status()

    def retry(self, item_id: int | None) -> int:
        self.calls.append(("retry", item_id))
        return 2

    def backfill(self, since: float | None, folder: Path | None, dry_run: bool) -> list:
        self.calls.append(("backfill", (since, folder, dry_run)))
        return []

    def use_preset(self, name: str) -> Status:
        raise TypeError("a bug inside the daemon")

    def request_stop(self) -> CurrentJob:
        return CurrentJob(path="/a.png", progress=0.5)

    config = SimpleNamespace(daemon=SimpleNamespace(stop_grace_seconds=7.0))  # what the stop verb reads


def handle(verb: str, **args: Any) -> dict[str, Any]:
    return verbs.handle(Recorder(), verb, args)  # type: ignore[arg-type]


def test_each_verb_calls_its_method_with_the_clients_arguments_typed():
    d = Recorder()
    assert verbs.handle(d, "retry", {"id": "12"}) == {"requeued": 2}  # type: ignore[arg-type]
    verbs.handle(d, "retry", {"id": "all"})  # type: ignore[arg-type]
    verbs.handle(d, "backfill", {"since": 5, "folder": "/in", "dry_run": 1})  # type: ignore[arg-type]
    reply = verbs.handle(d, "pause", {"free_gpu": 1, "reason": "x"})  # type: ignore[arg-type]
    assert d.calls == [
        ("retry", 12),
        ("retry", None),
        ("backfill", (5.0, Path("/in"), True)),
        ("pause", (True, None, "x")),
    ]
    assert reply["active_preset"] == "refine-2x" and "ok" not in reply  # the server adds "ok"


def test_stop_replies_with_the_job_that_may_still_finish_as_json():
    reply = handle("stop")
    assert reply["current"]["path"] == "/a.png" and reply["grace_seconds"] == 7.0


@pytest.mark.parametrize(
    ("verb", "args", "message"),
    [
        ("format_disk", {}, "unknown verb"),
        ("__init__", {}, "unknown verb"),
        ("preset", {"nom": "x"}, "bad arguments for preset"),
        ("preset", {}, "bad arguments for preset"),
        ("status", {"d": None}, "bad arguments for status"),
    ],
)
def test_unknown_verbs_and_arguments_are_the_clients_error(verb: str, args: dict, message: str):
    with pytest.raises(NaiupError, match=message):
        handle(verb, **args)


def test_a_type_error_inside_a_verb_is_a_bug_not_bad_arguments():
    with pytest.raises(TypeError, match="a bug inside the daemon"):
        handle("preset", name="refine-2x")
