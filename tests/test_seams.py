"""Test seams are environment variables read by naiup.seams only: never config keys, never CLI options."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from naiup import seams
from naiup.cli.main import main
from naiup.config import load_config
from naiup.errors import ConfigError
from naiup.tray import setup as tray_setup


def test_a_factory_is_named_by_its_variable_else_the_default(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("NAIUP_TEST_SEAM", raising=False)
    assert seams.factory("NAIUP_TEST_SEAM", "pathlib:Path") is Path
    assert seams.optional_factory("NAIUP_TEST_SEAM") is None
    monkeypatch.setenv("NAIUP_TEST_SEAM", "json:loads")
    assert seams.factory("NAIUP_TEST_SEAM", "pathlib:Path").__name__ == "loads"


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("json", "must be 'module:callable'"),
        ("no_such_module_xyz:make", "cannot load 'no_such_module_xyz:make'"),
        ("json:no_such_name", "cannot load 'json:no_such_name'"),
        ("json:__doc__", "'json:__doc__' is not callable"),
    ],
)
def test_an_unusable_factory_names_the_variable(monkeypatch: pytest.MonkeyPatch, value: str, reason: str):
    monkeypatch.setenv("NAIUP_TEST_SEAM", value)
    with pytest.raises(ConfigError, match=re.escape(f"[NAIUP_TEST_SEAM] {reason}")):
        seams.optional_factory("NAIUP_TEST_SEAM")


def test_seconds_and_paths(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.delenv("NAIUP_TEST_SEAM", raising=False)
    assert seams.seconds("NAIUP_TEST_SEAM") is None and seams.path("NAIUP_TEST_SEAM") is None
    monkeypatch.setenv("NAIUP_TEST_SEAM", "2.5")
    assert seams.seconds("NAIUP_TEST_SEAM") == 2.5
    monkeypatch.setenv("NAIUP_TEST_SEAM", str(tmp_path))
    assert seams.path("NAIUP_TEST_SEAM") == tmp_path
    for bad in ("soon", "-1", "nan", "inf"):
        monkeypatch.setenv("NAIUP_TEST_SEAM", bad)
        with pytest.raises(ConfigError, match=r"NAIUP_TEST_SEAM.*number of seconds"):
            seams.seconds("NAIUP_TEST_SEAM")


def test_the_tray_takes_its_automation_hooks_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    made: dict[str, Any] = {}

    class Icon:  # a backend whose tray is always there (as on macOS and Windows): no host to wait for
        __module__ = "pystray._darwin"

    class RecordingApp:
        def __init__(self, **kwargs: Any) -> None:
            made.update(kwargs)

        def run(self) -> int:
            return 0

    monkeypatch.setattr(tray_setup, "_configure_logging", lambda: None)
    monkeypatch.setattr(tray_setup, "load_pystray", lambda backend: type("pystray", (), {"Icon": Icon}))
    monkeypatch.setattr(tray_setup, "TrayApp", RecordingApp)
    monkeypatch.setenv("NAIUP_CONFIG_DIR", str(tmp_path))
    monkeypatch.setenv(seams.TRAY_STATE_FILE, str(tmp_path / "tray.json"))
    monkeypatch.setenv(seams.TRAY_ACTIONS_FILE, str(tmp_path / "actions.txt"))
    monkeypatch.setenv(seams.TRAY_EXIT_AFTER, "60")
    monkeypatch.setenv(seams.TRAY_HOST_WAIT, "3")
    monkeypatch.setenv(seams.TRAY_CLIENT, "json:loads")
    assert tray_setup.run_tray() == 0
    assert made["state_file"] == tmp_path / "tray.json" and made["actions_file"] == tmp_path / "actions.txt"
    assert made["exit_after"] == 60 and made["host_wait"] == 3
    assert made["client_factory"].__name__ == "loads"


@pytest.mark.parametrize("option", ["--state-file", "--actions-file", "--exit-after", "--client-factory"])
def test_the_tray_command_has_no_test_options(option: str, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as info:
        main(["tray", option, "x"])
    assert info.value.code == 2 and "unrecognized arguments" in capsys.readouterr().err


def test_daemon_engine_is_no_config_key(tmp_path: Path):
    path = tmp_path / "config.toml"
    # Written by every copy of an older config.example.toml: still loads, and means nothing.
    path.write_text('[daemon]\nengine = "naiup.engine:Engine"\nmax_attempts = 2\n')
    config = load_config(path)
    assert config.daemon.max_attempts == 2 and not hasattr(config.daemon, "engine")
    # Another engine would silently stop being used: refused, with where the seam went.
    path.write_text('[daemon]\nengine = "mine:Engine"\n')
    with pytest.raises(ConfigError, match=r"\[daemon\.engine\] is no longer a config key.*NAIUP_ENGINE"):
        load_config(path)
