"""The tray's menu as plain data: daemon status in, menu entries and tooltip out. No pystray, no display.

tray.py turns `MenuEntry` lists into pystray items and `Command`s into control requests; everything
a user sees or clicks is decided here, so it is tested without a backend.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from naiup import paths
from naiup.control.protocol import DaemonState, Status
from naiup.pathnames import plain_text, shown


class IconState(enum.StrEnum):
    IDLE = "idle"
    WORKING = "working"
    PAUSED = "paused"
    WARNING = "warning"  # works, but something needs a look: a config edit was rejected
    ERROR = "error"  # cannot refine: the engine cannot load
    OFFLINE = "offline"  # no daemon reachable


class Action(enum.StrEnum):
    TOGGLE_PAUSE = "toggle-pause"
    PAUSE_15M = "pause-15m"
    PAUSE_1H = "pause-1h"
    PAUSE_FREE_GPU = "pause-free-gpu"
    PRESET = "preset"  # arg: preset name
    OPEN_LAST = "open-last"
    OPEN_COMPARE = "open-compare"  # arg: an output path; before/after page
    OPEN_GALLERY = "open-gallery"
    OPEN_FOLDER = "open-folder"
    RETRY_FAILED = "retry-failed"
    BACKFILL = "backfill"
    OPEN_CONFIG = "open-config"
    OPEN_LOG = "open-log"
    START_SERVICE = "start-service"
    STOP_SERVICE = "stop-service"
    QUIT = "quit"


@dataclass(frozen=True, slots=True)
class TrayState:
    """What the tray knows: the last status reply, or None while no daemon answers."""

    status: Status | None = None
    recent: tuple[str, ...] = ()  # newest results first, read from the ledger (works offline too)

    @property
    def connected(self) -> bool:
        return self.status is not None

    @property
    def paused(self) -> bool:
        return self.status is not None and self.status.state is DaemonState.PAUSED

    @property
    def failed_count(self) -> int:
        return self.status.failed if self.status is not None else 0

    @property
    def existing_count(self) -> int:
        """Images left alone because they were there before naiup watched their folder."""
        return self.status.existing if self.status is not None else 0

    @property
    def active_preset(self) -> str | None:
        return self.status.active_preset if self.status is not None else None


@dataclass(frozen=True, slots=True)
class MenuEntry:
    text: str
    action: Action | None = None
    arg: str | None = None
    checked: bool | None = None  # None: not a checkable item
    radio: bool = False
    enabled: bool = True
    default: bool = False
    submenu: tuple[MenuEntry, ...] = ()
    separator: bool = False


SEPARATOR = MenuEntry("-", separator=True)


@dataclass(frozen=True, slots=True)
class Command:
    """What a menu action asks of the world: a control request, a file to open, or a local step."""

    verb: str | None = None  # control verb
    args: dict[str, Any] = field(default_factory=dict)
    open_path: str | None = None
    local: str | None = None  # "quit" | "start-service" | "compare" (args: image) | "gallery"


def icon_state(state: TrayState) -> IconState:
    s = state.status
    if s is None:
        return IconState.OFFLINE
    if s.state is DaemonState.ERROR or s.engine_error:
        return IconState.ERROR
    if s.state is DaemonState.PAUSED:
        return IconState.PAUSED
    if s.config_error:  # the daemon runs on with the previous config: not an error state
        return IconState.WARNING
    if s.state in (DaemonState.WORKING, DaemonState.LOADING) or s.current:
        return IconState.WORKING
    return IconState.IDLE


def progress(state: TrayState) -> float | None:
    value = state.status.current.progress if state.status and state.status.current else None
    return None if value is None else max(0.0, min(1.0, float(value)))


def tooltip(state: TrayState) -> str:
    """Short on purpose: the Windows tooltip holds 128 characters."""
    s = state.status
    if s is None:
        return "naiup: service not running"
    kind = icon_state(state)
    preset = s.active_preset or "?"
    if kind is IconState.PAUSED:
        reason = s.pause_reason or "by you"
        return _clip(f"naiup: paused ({reason}) · {preset}")
    if kind is IconState.ERROR:
        return _clip(plain_text(f"naiup: error: {s.engine_error or s.last_error or 'see log'}"))
    if kind is IconState.WARNING:
        # The daemon's own words, less the config path it starts with (Open config shows the file).
        error = str(s.config_error).removeprefix(f"{s.config_path}: ")
        return _clip(plain_text(f"naiup: config edit not applied (previous config in use): {error}"))
    queued = s.queue_length
    # A folder that is not there is watched by nobody: say so before anything that may be clipped.
    missing = [" · folder missing"] if s.missing_folders else []
    if kind is IconState.WORKING and s.download:  # the numbers first: _clip cuts the end
        from naiup.engine.models.hub import download_text

        where = download_text(s.download.done, s.download.total)
        return _clip(f"naiup: downloading model {where} · {s.download.name}")
    if kind is IconState.WORKING:
        pct = progress(state)
        parts = [f"{queued} queued", preset] + ([f"{pct:.0%}"] if pct is not None else [])
        return _clip("naiup: " + " · ".join(parts[:1]) + "".join(missing) + " · " + " · ".join(parts[1:]))
    return _clip(f"naiup: idle{''.join(missing)} · {preset}")


def missing_folders(state: TrayState) -> list[str]:
    """Watch folders that are not there (moved, unmounted): nothing in them is seen until they return."""
    return [shown(f) for f in state.status.missing_folders] if state.status else []


def _clip(text: str, limit: int = 127) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


RECENT_LIMIT = 10


def recent_menu(state: TrayState) -> list[MenuEntry]:
    """ "Recent results" (the last 10, each opening its before/after page) and "Open gallery"."""
    items = tuple(
        MenuEntry(_middle_clip(shown(PurePath(out).name)), Action.OPEN_COMPARE, arg=out)
        for out in state.recent[:RECENT_LIMIT]
    )
    return [
        MenuEntry("Recent results", submenu=items, enabled=bool(items)),
        MenuEntry("Open gallery", Action.OPEN_GALLERY),
    ]


def _middle_clip(name: str, limit: int = 60) -> str:
    """Long names keep their start and their `.naiup-<preset>.png` end."""
    if len(name) <= limit:
        return name
    keep = limit - 1
    return name[: keep - keep // 2] + "…" + name[-(keep // 2) :]


def _preset_entry(name: str, state: TrayState) -> MenuEntry:
    """A preset to switch to; one the config cannot run yet (an SDXL preset before [models.xl] names
    a checkpoint, a ControlNet preset whose set names no controlnet) says what it needs and cannot
    be chosen until the config has it."""
    missing = state.status.presets_without_model.get(name) if state.status else None
    text = f"{name} (needs {missing})" if missing else name
    checked = name == state.active_preset
    return MenuEntry(text, Action.PRESET, arg=name, checked=checked, radio=True, enabled=not missing)


def build_menu(state: TrayState) -> list[MenuEntry]:
    s = state.status
    if s is None:
        return [
            MenuEntry("naiup service is not running", enabled=False),
            MenuEntry("Start service", Action.START_SERVICE, default=True),
            SEPARATOR,
            *recent_menu(state),
            SEPARATOR,
            MenuEntry("Open config", Action.OPEN_CONFIG),
            MenuEntry("Open log", Action.OPEN_LOG),
            SEPARATOR,
            MenuEntry("Quit tray", Action.QUIT),
        ]
    presets = tuple(_preset_entry(name, state) for name in s.presets)
    failed = state.failed_count
    folders = s.watch_folders
    status_line = tooltip(state).removeprefix("naiup: ")
    n = state.existing_count
    older = [MenuEntry(f"Process {n} older image{'s' if n != 1 else ''}", Action.BACKFILL)] if n else []
    return [
        MenuEntry(status_line[:1].upper() + status_line[1:], enabled=False),
        *(MenuEntry(f"Folder missing: {f}", enabled=False) for f in missing_folders(state)),
        MenuEntry("Pause", Action.TOGGLE_PAUSE, checked=state.paused, default=True),
        MenuEntry("Pause for 15 min", Action.PAUSE_15M),
        MenuEntry("Pause for 1 h", Action.PAUSE_1H),
        MenuEntry("Pause and free GPU", Action.PAUSE_FREE_GPU),
        MenuEntry("Presets", submenu=presets, enabled=bool(presets)),
        SEPARATOR,
        MenuEntry("Open last result", Action.OPEN_LAST, enabled=bool(s.last_output)),
        *recent_menu(state),
        MenuEntry("Open watched folder", Action.OPEN_FOLDER, enabled=bool(folders)),
        MenuEntry(f"Retry failed ({failed})", Action.RETRY_FAILED, enabled=failed > 0),
        *older,
        SEPARATOR,
        MenuEntry("Open config", Action.OPEN_CONFIG),
        MenuEntry("Open log", Action.OPEN_LOG, enabled=bool(s.log_path)),
        SEPARATOR,
        MenuEntry("Quit tray", Action.QUIT),
        MenuEntry("Stop service", Action.STOP_SERVICE),
    ]


def command_for(action: Action, state: TrayState, arg: str | None = None, config_path: str = "") -> Command:
    """Translate a click into what to do. `config_path` is the tray's own guess when the daemon is away."""
    s = state.status or Status()  # offline: the empty status, and the tray's own guesses below
    if action is Action.TOGGLE_PAUSE:
        return Command("resume") if state.paused else Command("pause", {"free_gpu": False})
    if action is Action.PAUSE_15M:
        return Command("pause", {"free_gpu": False, "for_seconds": 15 * 60.0})
    if action is Action.PAUSE_1H:
        return Command("pause", {"free_gpu": False, "for_seconds": 3600.0})
    if action is Action.PAUSE_FREE_GPU:
        return Command("pause", {"free_gpu": True})
    if action is Action.PRESET:
        return Command("preset", {"name": arg})
    if action is Action.RETRY_FAILED:
        return Command("retry", {"id": "all"})
    if action is Action.BACKFILL:
        return Command("backfill", {})
    if action is Action.STOP_SERVICE:
        return Command("stop")
    if action is Action.OPEN_LAST:
        return Command(open_path=s.last_output)
    if action is Action.OPEN_COMPARE:
        return Command(local="compare", args={"image": arg})
    if action is Action.OPEN_GALLERY:
        return Command(local="gallery")
    if action is Action.OPEN_FOLDER:
        return Command(open_path=s.watch_folders[0] if s.watch_folders else None)
    if action is Action.OPEN_CONFIG:
        return Command(open_path=s.config_path or config_path)
    if action is Action.OPEN_LOG:  # offered offline too: why the service is not running is in its log
        return Command(open_path=s.log_path or str(paths.daemon_log_path()))
    if action is Action.QUIT:
        return Command(local="quit")
    if action is Action.START_SERVICE:
        return Command(local="start-service")
    raise ValueError(f"unknown tray action {action!r}")  # a bug: every Action is handled above
