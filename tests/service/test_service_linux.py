"""systemd user unit and XDG autostart entry: keys, quoting with spaces, systemd-analyze verify."""

from __future__ import annotations

import configparser
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from naiup.config import DaemonConfig
from naiup.service.linux import daemon_unit, desktop_exec_quote, systemd_quote, tray_desktop_entry

SPACEY = ["/home/ann smith/my venv/bin/naiup"]


def parse_ini(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # keys are case-sensitive in both formats
    parser.read_string(text)
    return parser


def split_systemd(line: str) -> list[str]:
    """systemd.service(5) command line splitting for double-quoted words (what we write)."""
    args, i = [], 0
    while i < len(line):
        if line[i] == " ":
            i += 1
            continue
        assert line[i] == '"', line
        i += 1
        word = []
        while line[i] != '"':
            if line[i] == "\\":
                i += 1
            word.append(line[i])
            i += 1
        i += 1
        args.append("".join(word).replace("%%", "%").replace("$$", "$"))
    return args


def split_desktop_exec(value: str) -> list[str]:
    """Desktop Entry spec: undo the string escape, then split on unquoted spaces, unescape in quotes."""
    s = value.replace("\\\\", "\x00").replace("\x00", "\\")
    args, i = [], 0
    while i < len(s):
        if s[i] == " ":
            i += 1
            continue
        word = []
        if s[i] == '"':
            i += 1
            while s[i] != '"':
                if s[i] == "\\":
                    i += 1
                word.append(s[i])
                i += 1
            i += 1
        else:
            while i < len(s) and s[i] != " ":
                word.append(s[i])
                i += 1
        args.append("".join(word).replace("%%", "%"))
    return args


def test_unit_restarts_on_failure_and_starts_with_the_user_session():
    unit = parse_ini(daemon_unit(SPACEY))
    assert unit["Service"]["Restart"] == "on-failure"
    assert unit["Install"]["WantedBy"] == "default.target"
    assert unit["Service"]["Type"] == "simple"


def test_unit_signals_only_the_daemon_and_waits_past_its_grace():
    # KillMode=control-group (the default) would SIGTERM the worker too and abandon the current job.
    unit = parse_ini(daemon_unit(SPACEY, stop_grace_seconds=45))["Service"]
    assert unit["KillMode"] == "mixed"
    assert int(unit["TimeoutStopSec"]) >= 45 + 30
    default = parse_ini(daemon_unit(SPACEY))["Service"]
    assert int(default["TimeoutStopSec"]) > DaemonConfig().stop_grace_seconds


def test_unit_exec_start_keeps_a_path_with_spaces_as_one_argument():
    unit = parse_ini(daemon_unit(SPACEY))
    assert split_systemd(unit["Service"]["ExecStart"]) == [*SPACEY, "run"]


def test_unit_escapes_specifiers_and_variables():
    assert systemd_quote('/opt/100%/$HOME/a"b\\c') == '"/opt/100%%/$$HOME/a\\"b\\\\c"'


def test_desktop_entry_runs_the_tray_and_quotes_spaces():
    entry = parse_ini(tray_desktop_entry(SPACEY))["Desktop Entry"]
    assert entry["Type"] == "Application"
    assert entry["Exec"] == '"/home/ann smith/my venv/bin/naiup" tray'
    assert split_desktop_exec(entry["Exec"]) == [*SPACEY, "tray"]


@given(st.text(alphabet=st.sampled_from(list("ab /\\\"'$%`~#()&;=é")), min_size=1, max_size=20))
def test_desktop_exec_quoting_round_trips(arg):
    assert split_desktop_exec(desktop_exec_quote(arg)) == [arg]


@given(st.text(alphabet=st.sampled_from(list("ab /\\\"'$%`é")), min_size=1, max_size=20))
def test_systemd_quoting_round_trips(arg):
    assert split_systemd(systemd_quote(arg)) == [arg]


@pytest.fixture
def fake_naiup(tmp_path: Path) -> Path:
    exe = tmp_path / "with space" / "bin dir" / "naiup"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return exe


def run_verify(unit_file: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    runtime = tmp_path / "xdg-runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}  # --user needs one, CI boxes may lack it
    return subprocess.run(
        [tool, "--user", "verify", str(unit_file)], capture_output=True, text=True, env=env, timeout=60
    )


def test_systemd_analyze_verify_accepts_the_unit(tmp_path, fake_naiup):
    unit_file = tmp_path / "naiup.service"
    unit_file.write_text(daemon_unit([str(fake_naiup)]))
    proc = run_verify(unit_file, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "naiup.service" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_systemd_analyze_verify_would_catch_a_bad_exec_path(tmp_path):
    # Guards the test above: verify really reads our ExecStart.
    unit_file = tmp_path / "naiup.service"
    unit_file.write_text(daemon_unit([str(tmp_path / "missing dir" / "naiup")]))
    proc = run_verify(unit_file, tmp_path)
    assert proc.returncode != 0
    assert "missing dir/naiup" in proc.stderr


def test_a_config_given_to_install_is_in_the_unit_and_the_desktop_entry(tmp_path):
    from naiup.service.autostart import plan_autostart

    config = Path("/home/ann smith/naiup 100%.toml")
    plan = plan_autostart("linux", home=tmp_path, argv=SPACEY, env={}, config_path=config)
    unit, desktop = (parse_ini(e.text) for e in plan.entries)
    assert split_systemd(unit["Service"]["ExecStart"]) == [*SPACEY, "--config", str(config), "run"]
    exec_line = desktop["Desktop Entry"]["Exec"]
    assert split_desktop_exec(exec_line) == [*SPACEY, "--config", str(config), "tray"]
