"""Test seams: where a test (or a script driving naiup) swaps a stand-in for a real part.

All of them are environment variables, read here and nowhere else. None is a config key or a visible
command-line option: a user never needs them, and a config file that named a stand-in engine would be
one typo away from a service that does nothing useful.

    NAIUP_ENGINE             "module:callable" the worker child builds its engine with, called with
                             the [model] table (default: the real one, naiup.engine:Engine)
    NAIUP_PAUSE_SENSORS      "module:callable" called with the daemon's own-pids callable, returning
                             the pause rules' Sensors (default: the system's)
    NAIUP_TRAY_CLIENT        "module:callable" the tray connects with (default: the control client)
    NAIUP_TRAY_STATE_FILE    the tray writes its state there as JSON after every change
    NAIUP_TRAY_ACTIONS_FILE  the tray reads lines appended there ("toggle-pause", "preset NAME",
                             "quit") as menu clicks
    NAIUP_TRAY_EXIT_AFTER    the tray quits after this many seconds (a test's safety net)
    NAIUP_TRAY_HOST_WAIT     seconds the tray waits for a tray host (a panel) before it gives up

A value that cannot be used is a ConfigError naming the variable.
"""

from __future__ import annotations

import importlib
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from naiup.errors import ConfigError

ENGINE = "NAIUP_ENGINE"
PAUSE_SENSORS = "NAIUP_PAUSE_SENSORS"
TRAY_CLIENT = "NAIUP_TRAY_CLIENT"
TRAY_STATE_FILE = "NAIUP_TRAY_STATE_FILE"
TRAY_ACTIONS_FILE = "NAIUP_TRAY_ACTIONS_FILE"
TRAY_EXIT_AFTER = "NAIUP_TRAY_EXIT_AFTER"
TRAY_HOST_WAIT = "NAIUP_TRAY_HOST_WAIT"

DEFAULT_ENGINE = "naiup.engine:Engine"


def factory(var: str, default: str) -> Callable[..., Any]:
    """The callable `var` names as "module:callable", else the one `default` names."""
    return _load(var, os.environ.get(var) or default)


def optional_factory(var: str) -> Callable[..., Any] | None:
    """The callable `var` names as "module:callable"; None when it is not set."""
    spec = os.environ.get(var)
    return _load(var, spec) if spec else None


def _load(var: str, spec: str) -> Callable[..., Any]:
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ConfigError(var, f"must be 'module:callable', got {spec!r}")
    try:
        found = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(var, f"cannot load {spec!r} ({exc})") from exc
    if not callable(found):
        raise ConfigError(var, f"{spec!r} is not callable")
    return found


def path(var: str) -> Path | None:
    value = os.environ.get(var)
    return Path(value) if value else None


def seconds(var: str) -> float | None:
    value = os.environ.get(var)
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 0:
        raise ConfigError(var, f"must be a number of seconds, got {value!r}")
    return number
