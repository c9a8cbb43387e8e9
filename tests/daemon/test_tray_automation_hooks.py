"""The tray's automation hooks: the actions file is read in whole lines, the state file is whole JSON."""

from __future__ import annotations

import json

from tray_standin import default_status

from naiup.control.protocol import Status
from naiup.tray.automation import ActionsReader, write_state
from naiup.tray.menu import TrayState


def test_actions_are_read_once_and_only_in_whole_lines(tmp_path):
    path = tmp_path / "actions.txt"
    reader = ActionsReader(path)
    assert reader.read() == []  # no file yet
    path.write_text("toggle-pause\npreset refine-4x\nqu")
    assert reader.read() == [("toggle-pause", None), ("preset", "refine-4x")]
    assert reader.read() == []
    with open(path, "a") as f:
        f.write("it\n\n")
    assert reader.read() == [("quit", None)]


def test_state_file_describes_what_the_tray_shows(tmp_path):
    path = tmp_path / "tray.json"
    write_state(
        path,
        TrayState(Status.from_json({**default_status(), "state": "paused", "pause_reason": "on battery"})),
        "x",
    )
    data = json.loads(path.read_text())
    assert (data["connected"], data["icon"], data["paused"]) == (True, "paused", True)
    assert data["tooltip"] == "naiup: paused (on battery) · refine-2x"
    pause = next(item for item in data["menu"] if item["text"] == "Pause")
    assert pause["checked"] is True
    assert [p["text"] for p in next(i for i in data["menu"] if i["text"] == "Presets")["submenu"]] == [
        "refine-2x",
        "refine-4x",
        "upscale-2x",
    ]
    assert not list(tmp_path.glob(".*naiup-tmp"))
