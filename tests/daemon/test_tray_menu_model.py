"""The tray's menu model, tooltip and action mapping: pure functions, no pystray, no display."""

from __future__ import annotations

import pytest
from tray_standin import default_status

from naiup.control.protocol import Status
from naiup.tray.menu import Action, IconState, TrayState, build_menu, command_for, icon_state, tooltip


def status(**changes):
    return TrayState(Status.from_json({**default_status(), **changes}))


def entry(menu, text):
    exact = [e for e in menu if e.text == text]
    return exact[0] if exact else next(e for e in menu if e.text.startswith(text))


def test_offline_menu_offers_to_start_the_service():
    menu = build_menu(TrayState(None))
    assert entry(menu, "Start service").action is Action.START_SERVICE
    assert entry(menu, "Quit tray").action is Action.QUIT
    assert icon_state(TrayState(None)) is IconState.OFFLINE
    assert "not running" in tooltip(TrayState(None))


def test_offline_open_log_opens_the_daemons_log(tmp_path, monkeypatch):
    # "Open log" is offered while no daemon answers (that is when the log matters): it must open it.
    monkeypatch.setenv("NAIUP_LOG_DIR", str(tmp_path))
    assert entry(build_menu(TrayState(None)), "Open log").enabled
    assert command_for(Action.OPEN_LOG, TrayState(None)).open_path == str(tmp_path / "daemon.log")


def test_menu_has_every_entry_the_issue_asks_for():
    texts = [e.text for e in build_menu(status())]
    for wanted in (
        "Pause",
        "Pause for 15 min",
        "Pause for 1 h",
        "Pause and free GPU",
        "Presets",
        "Open last result",
        "Open watched folder",
        "Retry failed (0)",
        "Open config",
        "Open log",
        "Quit tray",
        "Stop service",
    ):
        assert wanted in texts


def test_pause_item_is_checked_only_when_paused_and_toggles():
    running, paused = status(), status(state="paused", pause_reason="on battery")
    assert entry(build_menu(running), "Pause").checked is False
    assert entry(build_menu(paused), "Pause").checked is True
    assert command_for(Action.TOGGLE_PAUSE, running).verb == "pause"
    assert command_for(Action.TOGGLE_PAUSE, paused).verb == "resume"


def test_presets_are_a_radio_group_with_the_active_one_checked():
    presets = entry(build_menu(status(active_preset="refine-4x")), "Presets").submenu
    assert [(p.text, p.checked, p.radio) for p in presets] == [
        ("refine-2x", False, True),
        ("refine-4x", True, True),
        ("upscale-2x", False, True),
    ]
    cmd = command_for(Action.PRESET, status(), "upscale-2x")
    assert (cmd.verb, cmd.args) == ("preset", {"name": "upscale-2x"})


def test_a_preset_the_config_cannot_run_yet_says_what_it_needs_and_cannot_be_chosen():
    names = ["refine-2x", "refine-2x-strong", "xl-refine-2x"]
    missing = {"xl-refine-2x": "[models.xl]", "refine-2x-strong": "[model] controlnet"}
    presets = entry(build_menu(status(presets=names, presets_without_model=missing)), "Presets").submenu
    assert [(p.text, p.enabled, p.arg) for p in presets] == [
        ("refine-2x", True, "refine-2x"),
        ("refine-2x-strong (needs [model] controlnet)", False, "refine-2x-strong"),
        ("xl-refine-2x (needs [models.xl])", False, "xl-refine-2x"),
    ]


def test_retry_failed_shows_the_count_and_is_disabled_at_zero():
    assert entry(build_menu(status()), "Retry failed").enabled is False
    item = entry(build_menu(status(counts={"failed": 3, "done": 9})), "Retry failed")
    assert (item.text, item.enabled) == ("Retry failed (3)", True)
    assert command_for(Action.RETRY_FAILED, status()).args == {"id": "all"}


def test_process_older_images_is_offered_only_while_there_are_some():
    assert not any("older image" in e.text for e in build_menu(status(existing=0)))
    item = entry(build_menu(status(existing=1234)), "Process")
    assert (item.text, item.action, item.enabled) == ("Process 1234 older images", Action.BACKFILL, True)
    assert entry(build_menu(status(existing=1)), "Process").text == "Process 1 older image"
    assert (command_for(Action.BACKFILL, status()).verb, command_for(Action.BACKFILL, status()).args) == (
        "backfill",
        {},
    )


@pytest.mark.parametrize(
    ("action", "verb", "args"),
    [
        (Action.PAUSE_15M, "pause", {"free_gpu": False, "for_seconds": 900.0}),
        (Action.PAUSE_1H, "pause", {"free_gpu": False, "for_seconds": 3600.0}),
        (Action.PAUSE_FREE_GPU, "pause", {"free_gpu": True}),
        (Action.STOP_SERVICE, "stop", {}),
    ],
)
def test_pause_variants_map_to_control_requests(action, verb, args):
    cmd = command_for(action, status())
    assert (cmd.verb, cmd.args) == (verb, args)


def test_open_items_use_paths_from_the_status_and_are_disabled_without_one():
    s = status(last_output="/x/a.naiup-refine-2x.png", watch_folders=["/x"], log_path="/l/naiup.log")
    assert command_for(Action.OPEN_LAST, s).open_path == "/x/a.naiup-refine-2x.png"
    assert command_for(Action.OPEN_FOLDER, s).open_path == "/x"
    assert command_for(Action.OPEN_LOG, s).open_path == "/l/naiup.log"
    assert command_for(Action.OPEN_CONFIG, s, config_path="/c/config.toml").open_path == "/c/config.toml"
    bare = build_menu(status())
    assert entry(bare, "Open last result").enabled is False
    assert entry(bare, "Open watched folder").enabled is False


def test_tooltip_shows_queue_preset_and_progress_while_working():
    s = status(state="working", queue_length=2, current={"path": "/x/a.png", "progress": 0.6})
    assert tooltip(s) == "naiup: 2 queued · refine-2x · 60%"
    assert icon_state(s) is IconState.WORKING


def test_tooltip_shows_the_pause_reason_and_error():
    assert (
        tooltip(status(state="paused", pause_reason="on battery")) == "naiup: paused (on battery) · refine-2x"
    )
    err = status(state="error", engine_error="CUDA out of memory")
    assert icon_state(err) is IconState.ERROR
    assert "CUDA out of memory" in tooltip(err)


def test_a_rejected_config_edit_is_a_warning_with_the_daemons_words_not_an_error():
    # The daemon keeps the previous config and goes on working: the red error icon would be a lie.
    s = status(
        state="idle",
        config_path="/c/config.toml",
        config_error="/c/config.toml: [watch.quiet_seconds] must be > 0, got -1",
    )
    assert icon_state(s) is IconState.WARNING
    assert tooltip(s) == (
        "naiup: config edit not applied (previous config in use): [watch.quiet_seconds] must be > 0, got -1"
    )
    assert build_menu(s)[0].text.startswith("Config edit not applied")
    # An engine that cannot load is still the error state, in the daemon's own words.
    both = status(state="error", engine_error="tiny.safetensors: file not found", config_error="x")
    assert icon_state(both) is IconState.ERROR
    assert tooltip(both) == "naiup: error: tiny.safetensors: file not found"


def test_tooltip_fits_the_windows_limit():
    assert len(tooltip(status(state="error", engine_error="x" * 500))) <= 127


def test_every_action_has_a_command():
    for action in Action:
        command_for(action, status(), "refine-2x")


def test_recent_results_submenu_lists_the_last_ten_and_opens_compare_pages():
    outputs = tuple(f"/d/img{i}.naiup-refine-2x.png" for i in range(12))
    menu = build_menu(TrayState(status().status, recent=outputs))
    recent = entry(menu, "Recent results")
    assert recent.enabled and len(recent.submenu) == 10
    assert [e.text for e in recent.submenu[:2]] == ["img0.naiup-refine-2x.png", "img1.naiup-refine-2x.png"]
    assert all(e.action is Action.OPEN_COMPARE for e in recent.submenu)
    cmd = command_for(Action.OPEN_COMPARE, status(), recent.submenu[3].arg)
    assert (cmd.local, cmd.args) == ("compare", {"image": "/d/img3.naiup-refine-2x.png"})
    assert command_for(Action.OPEN_GALLERY, status()).local == "gallery"


def test_recent_results_is_disabled_when_empty_and_gallery_is_always_offered():
    for state in (status(), TrayState(None)):
        menu = build_menu(state)
        assert entry(menu, "Recent results").enabled is False
        assert entry(menu, "Open gallery").action is Action.OPEN_GALLERY
    offline = build_menu(TrayState(None, recent=("/d/a.naiup-refine-2x.png",)))
    assert entry(offline, "Recent results").enabled  # the ledger is readable without the service


def test_long_result_names_keep_their_start_and_end():
    name = "x" * 100 + ".naiup-refine-2x.png"
    text = (
        entry(build_menu(TrayState(status().status, recent=(f"/d/{name}",))), "Recent results")
        .submenu[0]
        .text
    )
    assert len(text) == 60 and text.startswith("xxx") and text.endswith(".naiup-refine-2x.png")


def test_a_missing_watch_folder_shows_in_the_tooltip_and_the_menu():
    missing = status(state="idle", missing_folders=["/home/me/Downloads"])
    assert tooltip(missing) == "naiup: idle · folder missing · refine-2x"
    assert entry(build_menu(missing), "Folder missing: /home/me/Downloads").enabled is False
    working = status(state="working", queue_length=1, missing_folders=["/x"], current={"path": "/y/a.png"})
    assert tooltip(working).startswith("naiup: 1 queued · folder missing")
    assert not any(e.text.startswith("Folder missing") for e in build_menu(status(state="idle")))


def test_names_that_are_not_utf8_are_shown_escaped():
    # A surrogate-escaped name (undecodable bytes) would make GTK or the Windows shell refuse the text.
    err = status(state="error", engine_error=None, last_error="img\udcfe.png: not an image")
    assert tooltip(err) == "naiup: error: img\\xfe.png: not an image"
    # A rejected config edit quotes the daemon too: a folder named in it is escaped the same way.
    warn = status(
        state="idle", config_path="/c.toml", config_error="/c.toml: [watch] folder /mnt/\udcfe: not a folder"
    )
    assert (
        tooltip(warn)
        == "naiup: config edit not applied (previous config in use): [watch] folder /mnt/\\xfe: not a folder"
    )
    menu = build_menu(status(missing_folders=["/mnt/\udcfe"]))
    assert entry(menu, "Folder missing:").text == "Folder missing: /mnt/\\xfe"
