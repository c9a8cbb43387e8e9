"""TrayApp end to end in-process: pystray's dummy backend (its no-display test seam) with recording
hooks, and the stand-in daemon. Covers menu callbacks, radio presets, state refresh from events,
notifications."""

from __future__ import annotations

import functools
import os
import sys
import threading
import types

import pytest

# pystray picks its backend when first imported; restore the variable so subprocess tests don't inherit it.
_saved = os.environ.get("PYSTRAY_BACKEND")
os.environ["PYSTRAY_BACKEND"] = "dummy"
import pystray  # noqa: E402

if _saved is None:
    del os.environ["PYSTRAY_BACKEND"]
else:
    os.environ["PYSTRAY_BACKEND"] = _saved
import daemon_harness  # noqa: E402
from tray_standin import StandinDaemon  # noqa: E402

from naiup.tray import app as tray_module  # noqa: E402
from naiup.tray.app import TrayApp  # noqa: E402


class RecordingIcon(pystray.Icon):
    """The base Icon with its platform hooks as recorders; `_run` blocks until `_stop`."""

    def __init__(self, *args, **kwargs):
        self.notes: list[tuple[str | None, str]] = []
        self.menu_updates = 0
        self._halt = threading.Event()
        super().__init__(*args, **kwargs)

    def _show(self):
        pass

    def _hide(self):
        pass

    def _update_icon(self):
        pass

    def _update_title(self):
        pass

    def _update_menu(self):
        self.menu_updates += 1

    def _notify(self, message, title=None):
        self.notes.append((title, message))

    def _remove_notification(self):
        pass

    def _stop(self):
        self._halt.set()

    def _run(self):
        self._mark_ready()
        self._halt.wait()


BACKEND = types.SimpleNamespace(Icon=RecordingIcon, Menu=pystray.Menu, MenuItem=pystray.MenuItem)


# The in-process tray answers within milliseconds: a tighter default than the daemon tests'.
wait_for = functools.partial(daemon_harness.wait_for, timeout=5.0)


@pytest.fixture
def daemon(tmp_path):
    return StandinDaemon(tmp_path / "daemon.json").start()


@pytest.fixture
def tray(tmp_path, daemon):
    yield from _run_tray(tmp_path, daemon)


def _run_tray(tmp_path, daemon):
    opened: list[str] = []
    started: list[bool] = []
    compared: list[str] = []
    galleries: list[bool] = []
    recent: list[str] = []  # what the ledger would list; tests fill it
    app = TrayApp(
        client_factory=daemon.connect,
        pystray_module=BACKEND,
        opener=opened.append,
        start_daemon=lambda: started.append(True),
        state_file=tmp_path / "tray.json",
        open_compare=compared.append,
        open_gallery=lambda: galleries.append(True),
        recent_results=lambda: list(recent),
    )
    app.opened, app.started = opened, started
    app.compared, app.galleries, app.recent = compared, galleries, recent
    runner = threading.Thread(target=app.run, name="test-tray-main")
    runner.start()
    wait_for(lambda: app.icon is not None and app.state.connected)
    yield app
    app.stop()
    runner.join(10)
    assert not runner.is_alive()
    assert not app._threads, "tray threads still running after stop"


def find(icon, text):
    return next((it for it in icon.menu.items if it.text == text), None)


def item(icon, text):
    found = find(icon, text)
    if found is None:
        raise KeyError(text)
    return found


def test_menu_pause_click_pauses_the_daemon_and_checks_the_item(tray, daemon):
    pause = item(tray.icon, "Pause")
    assert pause.checked is False
    pause(tray.icon)
    assert daemon.read()["status"]["state"] == "paused"
    wait_for(lambda: item(tray.icon, "Pause").checked)
    item(tray.icon, "Pause")(tray.icon)
    wait_for(lambda: daemon.read()["status"]["state"] == "idle")
    assert [r[0] for r in daemon.read()["requests"]] == ["pause", "resume"]


def test_default_action_is_pause(tray, daemon):
    tray.icon()  # a left click where the backend has one
    assert daemon.read()["status"]["state"] == "paused"


def test_external_pause_is_reflected_in_icon_tooltip_and_menu(tray, daemon):
    updates = tray.icon.menu_updates
    daemon.set_status(state="paused", pause_reason="on battery")  # as `naiup pause` would
    wait_for(lambda: tray.icon.title == "naiup: paused (on battery) · refine-2x", timeout=2.0)
    assert item(tray.icon, "Pause").checked is True
    assert tray.icon.menu_updates > updates


def test_preset_radio_click_switches_the_active_preset(tray, daemon):
    presets = item(tray.icon, "Presets").submenu
    target = next(p for p in presets.items if p.text == "refine-4x")
    assert target.radio and not target.checked
    target(tray.icon)
    assert daemon.read()["status"]["active_preset"] == "refine-4x"
    presets = item(tray.icon, "Presets").submenu
    assert [p.text for p in presets.items if p.checked] == ["refine-4x"]


def test_open_items_and_retry(tray, daemon):
    daemon.set_status(last_output="/out/a.png", watch_folders=["/in"], counts={"failed": 2})
    wait_for(
        lambda: (find(tray.icon, "Retry failed (2)") or False) and item(tray.icon, "Retry failed (2)").enabled
    )
    item(tray.icon, "Open last result")(tray.icon)
    item(tray.icon, "Open watched folder")(tray.icon)
    item(tray.icon, "Retry failed (2)")(tray.icon)
    assert tray.opened == ["/out/a.png", "/in"]
    assert ["retry", {"id": "all"}] in daemon.read()["requests"]


def test_failure_event_becomes_a_notification(tray, daemon):
    daemon.emit({"event": "job_failed", "path": "/in/bad.png", "error": "PNG is truncated"})
    wait_for(lambda: tray.icon.notes)
    assert tray.icon.notes == [("naiup: refine failed", "bad.png: PNG is truncated")]


def test_stop_service_shows_not_running_and_offers_start(tray, daemon):
    item(tray.icon, "Stop service")(tray.icon)
    wait_for(lambda: not tray.state.connected)
    assert tray.icon.title == "naiup: service not running"
    item(tray.icon, "Start service")(tray.icon)
    assert tray.started == [True]
    daemon.start()  # the spawned daemon comes up: the tray reconnects by itself
    wait_for(lambda: tray.state.connected)


def test_quit_stops_the_loop(tmp_path, daemon):
    app = TrayApp(client_factory=daemon.connect, pystray_module=BACKEND)
    runner = threading.Thread(target=app.run)
    runner.start()
    wait_for(lambda: app.icon is not None and app.state.connected)
    item(app.icon, "Quit tray")(app.icon)
    runner.join(10)
    assert not runner.is_alive()
    assert daemon.read()["running"]  # quitting the tray leaves the service alone


def test_recent_results_refresh_after_a_job_and_open_the_compare_page(tray, daemon):
    assert item(tray.icon, "Recent results").enabled is False  # nothing done yet
    tray.recent[:] = ["/out/b.naiup-upscale-2x.png", "/out/a.naiup-upscale-2x.png"]
    daemon.emit({"event": "job_done", "path": "/in/b.png", "output": tray.recent[0]})
    wait_for(lambda: item(tray.icon, "Recent results").enabled)
    entries = item(tray.icon, "Recent results").submenu.items
    assert [e.text for e in entries] == ["b.naiup-upscale-2x.png", "a.naiup-upscale-2x.png"]
    entries[1](tray.icon)
    wait_for(lambda: tray.compared == ["/out/a.naiup-upscale-2x.png"])
    item(tray.icon, "Open gallery")(tray.icon)
    wait_for(lambda: tray.galleries == [True])


FAKE_NOTIFY_SEND = """#!/bin/sh
# libnotify's notify-send as far as naiup uses it: --help lists --action/--wait; a "click" on the body
# is the action name "default" on stdout, which the real one prints when the user clicks.
for a in "$@"; do
    if [ "$a" = "--help" ]; then
        echo "  -A, --action=[NAME=]Text...  Specifies the actions to display to the user."
        echo "  -w, --wait                   Wait for the notification to be closed before exiting."
        exit 0
    fi
done
printf '%s\\n' "$*" >> "$(dirname "$0")/sent.log"
echo default
"""


@pytest.mark.skipif(sys.platform in ("win32", "darwin"), reason="notify-send actions: Linux and BSD only")
def test_a_clicked_done_notification_opens_the_compare_page(tmp_path, daemon, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "notify-send"
    exe.write_text(FAKE_NOTIFY_SEND)
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    for tray in _run_tray(tmp_path, daemon):
        tray.notifier.batch_seconds = 0.0  # no 5 s batching window in a test
        daemon.emit({"event": "job_done", "path": "/in/one.png", "output": "/out/one.naiup-refine-2x.png"})
        wait_for(lambda: tray.compared == ["/out/one.naiup-refine-2x.png"])  # noqa: B023
        sent = (bin_dir / "sent.log").read_text()
        assert "--action=default=Compare" in sent and "one.naiup-refine-2x.png refined" in sent
        assert tray.icon.notes == []  # sent once, through the clickable path


def test_without_notification_actions_done_is_a_plain_notification(tmp_path, daemon, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no notify-send: pystray's notify only
    for tray in _run_tray(tmp_path, daemon):
        tray.notifier.batch_seconds = 0.0
        daemon.emit({"event": "job_done", "path": "/in/one.png", "output": "/out/one.naiup-refine-2x.png"})
        wait_for(lambda: tray.icon.notes)  # noqa: B023
        assert tray.icon.notes == [("naiup", "one.naiup-refine-2x.png refined")]
        assert tray.compared == []


class VanishingIcon(RecordingIcon):
    """Its first loop ends by itself once set up, as pystray's xorg loop does when the panel that
    embedded the icon window goes away; later ones run until stopped."""

    loops = 0

    def _run(self):
        type(self).loops += 1
        if type(self).loops > 1:
            return super()._run()
        self._mark_ready()
        self._setup_thread.join(5)


class FakeHost:
    def __init__(self, present: bool | None) -> None:
        self.present_now, self.closed = present, False

    def present(self) -> bool | None:
        return self.present_now

    def close(self) -> None:
        self.closed = True


def _vanishing_tray(daemon, host):
    VanishingIcon.loops = 0
    backend = types.SimpleNamespace(Icon=VanishingIcon, Menu=pystray.Menu, MenuItem=pystray.MenuItem)
    return TrayApp(client_factory=daemon.connect, pystray_module=backend, host=host, host_wait=0.5)


def test_a_loop_that_ends_by_itself_without_a_host_is_exit_1_not_a_silent_0(daemon):
    host = FakeHost(present=False)
    assert _vanishing_tray(daemon, host).run() == 1
    assert VanishingIcon.loops == 1 and host.closed


def test_a_loop_that_ends_by_itself_shows_a_new_icon_when_a_host_is_there(daemon):
    app = _vanishing_tray(daemon, FakeHost(present=True))
    result: list[int] = []
    runner = threading.Thread(target=lambda: result.append(app.run()))
    runner.start()
    wait_for(lambda: VanishingIcon.loops == 2 and app.icon._running)
    assert len(app._threads) == 2  # the same events and ticks threads serve the new icon
    item(app.icon, "Quit tray")(app.icon)
    runner.join(10)
    assert result == [0]


class ClickSender:
    def __init__(self) -> None:
        self.closed = False

    def __call__(self, title, message, label, on_click) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def test_a_re_shown_icon_keeps_the_notifications_that_wait_for_a_click(daemon, monkeypatch):
    # Withdrawing them (or leaking their notify-send processes) on a panel restart would lose the click.
    picked: list[ClickSender] = []
    monkeypatch.setattr(tray_module, "pick_click_sender", lambda: picked.append(ClickSender()) or picked[-1])
    app = _vanishing_tray(daemon, FakeHost(present=True))
    runner = threading.Thread(target=app.run)
    runner.start()
    try:
        wait_for(lambda: VanishingIcon.loops == 2 and app.icon._running)
        assert len(picked) == 1 and app.notifier._click_send is picked[0]
    finally:
        item(app.icon, "Quit tray")(app.icon)
        runner.join(10)
    assert picked[0].closed  # closed once, when the tray quits
