"""Per-user folders (platformdirs): config, state (ledger, token, runtime choices), logs, runtime socket,
cache (compare pages, gallery thumbnails).

Each can be redirected with an environment variable (NAIUP_CONFIG_DIR, NAIUP_STATE_DIR, NAIUP_LOG_DIR,
NAIUP_RUNTIME_DIR, NAIUP_CACHE_DIR) so tests and second instances never touch the user's real folders.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import platformdirs

APP = "naiup"

# Every variable that moves one of naiup's folders (NAIUP_MODELS_DIR: optional built-in upscalers, read
# in naiup.upscaler_names). `naiup service install` carries the ones set into the autostart entries,
# or the login service would use other folders (another ledger, config, socket) than the user's runs.
FOLDER_VARIABLES = (
    "NAIUP_CONFIG_DIR",
    "NAIUP_STATE_DIR",
    "NAIUP_LOG_DIR",
    "NAIUP_RUNTIME_DIR",
    "NAIUP_CACHE_DIR",
    "NAIUP_MODELS_DIR",
)


def _dir(env: str, default: Callable[[str], str]) -> Path:
    # The default is only computed when the variable is unset: platformdirs warns when it has to guess
    # a runtime dir (no XDG_RUNTIME_DIR), and a redirected run should not pay for or print that.
    return Path(os.environ.get(env) or default(APP))


def config_dir() -> Path:
    return _dir("NAIUP_CONFIG_DIR", platformdirs.user_config_dir)


def state_dir() -> Path:
    return _dir("NAIUP_STATE_DIR", platformdirs.user_state_dir)


def log_dir() -> Path:
    return _dir("NAIUP_LOG_DIR", platformdirs.user_log_dir)


def daemon_log_path(folder: Path | None = None) -> Path:
    """The daemon's log in `folder` (default: log_dir()). Only the daemon writes it; the tray, which has
    a log of its own, opens it from its menu, also while no daemon runs to name it in its status."""
    return (folder or log_dir()) / "daemon.log"


def runtime_dir() -> Path:
    # macOS and Windows have no per-user runtime dir; platformdirs falls back to a cache/temp path.
    return _dir("NAIUP_RUNTIME_DIR", platformdirs.user_runtime_dir)


def cache_dir() -> Path:
    """Things naiup can make again: the compare and gallery pages and their thumbnails."""
    return _dir("NAIUP_CACHE_DIR", platformdirs.user_cache_dir)
