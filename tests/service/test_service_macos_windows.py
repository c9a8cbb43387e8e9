"""LaunchAgent plists (plistlib round trip) and the Windows Run-key command line."""

from __future__ import annotations

import plistlib
from pathlib import Path

from naiup.service import macos
from naiup.service.autostart import plan_autostart
from naiup.service.windows import RUN_KEY, run_command

MAC_ARGV = ["/Users/ann smith/Library/naiup venv/bin/naiup"]
WIN_ARGV = [r"C:\Users\Ann Smith\AppData\Local\Programs\Python\Python312\Scripts\naiupw.exe"]


def test_daemon_plist_round_trips_and_restarts_only_after_a_crash(tmp_path):
    plan = plan_autostart("darwin", home=tmp_path, argv=MAC_ARGV)
    daemon = next(e for e in plan.entries if e.what == "daemon")
    assert daemon.location == str(tmp_path / "Library/LaunchAgents/org.naiup.daemon.plist")
    data = plistlib.loads(daemon.content)
    assert data == macos.daemon_plist(MAC_ARGV, tmp_path / "Library/Logs/naiup")
    assert data["ProgramArguments"] == [*MAC_ARGV, "run"]  # a list: no quoting, spaces stay
    assert data["RunAtLoad"] is True
    assert data["KeepAlive"] == {"SuccessfulExit": False}
    assert data["Label"] == "org.naiup.daemon"


def test_tray_plist_is_a_gui_login_item_that_stays_quit(tmp_path):
    plan = plan_autostart("darwin", home=tmp_path, argv=MAC_ARGV)
    tray = plistlib.loads(next(e for e in plan.entries if e.what == "tray").content)
    assert tray["ProgramArguments"] == [*MAC_ARGV, "tray"]
    assert tray["RunAtLoad"] is True and tray["KeepAlive"] is False
    assert tray["LimitLoadToSessionType"] == "Aqua"


def test_macos_plan_warns_about_downloads_privacy(tmp_path):
    plan = plan_autostart("darwin", home=tmp_path, argv=MAC_ARGV)
    note = " ".join(plan.notes)
    assert "Downloads" in note and "Privacy & Security" in note and MAC_ARGV[0] in note
    assert plan.enable[0][:2] == ("launchctl", "bootstrap")


def test_windows_command_quotes_paths_with_spaces():
    assert run_command(WIN_ARGV, "run") == f'"{WIN_ARGV[0]}" run'
    assert run_command(["C:\\naiup.exe"], "tray") == "C:\\naiup.exe tray"
    python_m = [r"C:\Program Files\Python312\pythonw.exe", "-m", "naiup"]
    assert run_command(python_m, "tray") == r'"C:\Program Files\Python312\pythonw.exe" -m naiup tray'


def test_windows_plan_uses_per_user_run_values_not_a_service(tmp_path):
    plan = plan_autostart("win32", home=tmp_path, argv=WIN_ARGV)
    values = {e.registry_value: e.text for e in plan.entries}
    assert values == {"naiup": f'"{WIN_ARGV[0]}" run', "naiup-tray": f'"{WIN_ARGV[0]}" tray'}
    assert all(e.location.startswith("HKCU\\" + RUN_KEY) for e in plan.entries)
    assert not plan.enable  # starts at next logon; nothing to register with a service manager


def test_plan_paths_are_absolute_for_the_current_interpreter():
    plan = plan_autostart("linux", home=Path("/h"), env={})
    exec_start = next(e for e in plan.entries if e.what == "daemon").text
    line = next(li for li in exec_start.splitlines() if li.startswith("ExecStart="))
    first = line.removeprefix('ExecStart="').split('"')[0]
    assert Path(first).is_absolute()


def test_a_config_given_to_install_is_in_both_launch_agents(tmp_path):
    config = Path("/Users/ann smith/naiup.toml")
    plan = plan_autostart("darwin", home=tmp_path, argv=MAC_ARGV, config_path=config)
    args = {e.what: plistlib.loads(e.content)["ProgramArguments"] for e in plan.entries}
    assert args == {
        "daemon": [*MAC_ARGV, "--config", str(config), "run"],
        "tray": [*MAC_ARGV, "--config", str(config), "tray"],
    }


def test_a_config_given_to_install_is_in_both_run_values(tmp_path):
    config = r"C:\Users\Ann Smith\naiup.toml"
    plan = plan_autostart("win32", home=tmp_path, argv=WIN_ARGV, config_path=config)  # type: ignore[arg-type]
    values = {e.registry_value: e.text for e in plan.entries}
    assert values == {
        "naiup": f'"{WIN_ARGV[0]}" --config "{config}" run',
        "naiup-tray": f'"{WIN_ARGV[0]}" --config "{config}" tray',
    }
