"""Per-user folders (platformdirs): config, state (ledger, token, runtime choices), logs, runtime socket.

Each can be redirected with an environment variable (NAIUP_CONFIG_DIR, NAIUP_STATE_DIR, NAIUP_LOG_DIR,
NAIUP_RUNTIME_DIR) so tests and second instances never touch the user's real folders.
"""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

APP = "naiup"


def _dir(env: str, default: str) -> Path:
    return Path(os.environ.get(env) or default)


def config_dir() -> Path:
    return _dir("NAIUP_CONFIG_DIR", platformdirs.user_config_dir(APP))


def state_dir() -> Path:
    return _dir("NAIUP_STATE_DIR", platformdirs.user_state_dir(APP))


def log_dir() -> Path:
    return _dir("NAIUP_LOG_DIR", platformdirs.user_log_dir(APP))


def runtime_dir() -> Path:
    # macOS and Windows have no per-user runtime dir; platformdirs falls back to a cache/temp path.
    return _dir("NAIUP_RUNTIME_DIR", platformdirs.user_runtime_dir(APP))
