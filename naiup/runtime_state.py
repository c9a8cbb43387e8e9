"""Runtime choices (active preset, pause) in a small JSON file, so the user's TOML is never rewritten.

The daemon writes it (`naiup preset`, the tray, pause/resume); the CLI reads it too (`doctor` and
`info` must judge the preset the service runs, not only the config's), with or without a daemon
running, so it lives here, outside naiup.daemon, which the clients never import.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from naiup import paths
from naiup.output.atomic import replace_file

if TYPE_CHECKING:
    from naiup.config import Config

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RuntimeState:
    active_preset: str | None = None  # None: the config's daemon.active_preset
    paused: bool = False
    pause_reason: str | None = None
    paused_until: float | None = None  # wall-clock time a timed pause ends
    free_gpu: bool = False

    def but(self, **changes: object) -> RuntimeState:
        return replace(self, **changes)  # type: ignore[arg-type]


_NONE = type(None)
_TYPES: dict[str, tuple[type, ...]] = {
    "active_preset": (str, _NONE),
    "paused": (bool,),
    "pause_reason": (str, _NONE),
    "paused_until": (int, float, _NONE),
    "free_gpu": (bool,),
}


def load_state(path: Path) -> RuntimeState:
    """A missing or damaged file means defaults: runtime choices are a convenience, never fatal."""
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        fields = RuntimeState.__slots__  # type: ignore[attr-defined]
        state = RuntimeState(**{k: v for k, v in data.items() if k in fields})
        for name, types in _TYPES.items():  # a hand edit: the daemon loop must not trip over it later
            if not isinstance(getattr(state, name), types):
                raise ValueError(f"{name} is {getattr(state, name)!r}")
        return state
    except FileNotFoundError:
        return RuntimeState()
    except (OSError, ValueError, TypeError) as exc:
        log.warning("runtime state unreadable, using defaults path=%s error=%s", path, exc)
        return RuntimeState()


def save_state(path: Path, state: RuntimeState) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_file(path, json.dumps(asdict(state)).encode())  # a file we own: replacing it is the point


def state_path() -> Path:
    """The runtime choices' file, in the per-user state folder (beside the ledger)."""
    return paths.state_dir() / "runtime.json"


def active_preset(config: Config, state: RuntimeState) -> str:
    """The preset the service runs: the one chosen with `naiup preset` or the tray, else the config's.
    (The daemon drops the runtime choice when the config's daemon.active_preset is edited later.)"""
    return state.active_preset or config.daemon.active_preset


def effective_preset(config: Config) -> tuple[str, str]:
    """(the active preset, where that choice comes from) as the runtime file says now, for the CLI."""
    state = load_state(state_path())
    name = active_preset(config, state)
    if state.active_preset in (None, config.daemon.active_preset):
        return name, "daemon.active_preset in the config"
    return name, f"chosen with `naiup preset` or the tray; the config says {config.daemon.active_preset!r}"
