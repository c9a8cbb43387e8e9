"""The control protocol between the daemon and its clients (CLI, tray): transport, framing, the
status reply as a type, and the errors a client sees. Both sides import this; neither imports the other.

    Transport: multiprocessing.connection over AF_UNIX in user_runtime_dir (dir 0700, socket 0600), a
    named pipe on Windows; authkey from a 0600 token file in the state dir; JSON via send_bytes /
    recv_bytes only (never pickle). The daemon side is naiup/daemon/server.py, the client side
    naiup/control/client.py.

    Verbs and replies (all replies carry "ok": bool, and "error": str when not ok):
        ping -> {"ok", "version", "pid"}
        status -> {"ok", **Status.to_json()}     (the fields: `Status` below)
        queue {failed: bool} -> {"ok", "items": [{"id", "path", "state", "attempts", "error", "output"}]}
                   (failed: failed and skipped rows, never our own outputs)
        pause {free_gpu: bool, for_seconds: float | null, reason: str | null} -> status
        resume -> status
        preset {name} -> status
        retry {id: int | "all"} -> {"ok", "requeued": n}   (an id that is unknown, or neither
            failed nor skipped as no NovelAI image: error; "all" takes failed rows only)
        backfill {since: float | null (epoch s), folder: str | null, dry_run: bool}
            -> {"ok", "count": n, "dry_run": bool, "paths": [str] (the first 1000)}
        rescan -> {"ok"}   reload -> {"ok"}
        stop -> {"ok", "pid", "current": CurrentJob | null, "grace_seconds": float}
    Events on subscribe: {"event": "status", "status": {...}} whenever status changes,
        {"event": "job_done", "path", "output"}, {"event": "job_failed", "path", "error"}.
    Paths are exact: a name that is not UTF-8 arrives as a str with surrogate escapes (JSON "\\udcXX"), as
    os.fsdecode gives it; show it with naiup.pathnames.shown (`--json` output: naiup.pathnames.json_safe).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import secrets
import stat
import sys
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, ClassVar, Self

from naiup import paths
from naiup.errors import NaiupError

MAX_MESSAGE = 1 << 20  # a reply with a long queue listing stays well under this

# The verbs whose reply is a whole status (a client shows it at once instead of asking again).
STATUS_REPLIES = frozenset({"status", "pause", "resume", "preset"})


class DaemonNotRunning(NaiupError):
    """No daemon answers: none started, or it stopped (the CLI exits 3 on this, never on its text)."""


# The README quotes this line word for word.
NOT_RUNNING = "the naiup daemon is not running (start it with naiup run)"


class ControlError(NaiupError):
    """The daemon answered, but refused the request (its reason is the message), or cannot be talked to."""


# --- address and token ------------------------------------------------------------------------------


def address() -> str:
    if sys.platform == "win32":
        return rf"\\.\pipe\naiup-{os.getlogin()}"
    return str(paths.runtime_dir() / "control.sock")


def token_path() -> Path:
    return paths.state_dir() / "control.token"


def ensure_private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def create_token() -> bytes:
    """The authkey: 32 random bytes in a 0600 file, reused across restarts, replaced if others can read
    it or it is empty (a crash between creating and writing it)."""
    path = token_path()
    ensure_private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        exposed = sys.platform != "win32" and stat.S_IMODE(path.stat().st_mode) & 0o077
        if exposed or not path.read_bytes().strip():
            os.chmod(path, 0o600)  # a token others could read is compromised: replace it
            path.write_text(secrets.token_hex(32))
        return path.read_bytes().strip()
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return path.read_bytes().strip()


# --- framing ----------------------------------------------------------------------------------------


def send(conn: Connection, msg: dict) -> None:
    conn.send_bytes(json.dumps(msg).encode())


def recv(conn: Connection) -> dict:
    data = conn.recv_bytes(MAX_MESSAGE)  # recv_bytes never unpickles
    msg = json.loads(data)
    if not isinstance(msg, dict):
        raise ValueError("message is not a JSON object")
    return msg


# --- typed replies ----------------------------------------------------------------------------------


class DaemonState(enum.StrEnum):
    IDLE = "idle"
    WORKING = "working"
    PAUSED = "paused"
    LOADING = "loading"  # the worker is loading the models
    ERROR = "error"  # the engine cannot load: files wait until it can
    # Never sent: what a client reads for a state a newer daemon has and it does not know yet.
    UNKNOWN = "unknown"

    @classmethod
    def _missing_(cls, value: object) -> DaemonState:
        return cls.UNKNOWN


class PauseSource(enum.StrEnum):
    USER = "user"  # `naiup pause` or the tray
    RULE = "rule"  # a pause rule holds now (on battery, a game running, ...)


class Message:
    """JSON in and out for the frozen dataclasses below, driven by their field types.

    from_json tolerates keys it does not know and fills the ones it misses with defaults: the CLI and
    the tray of one install talk to a daemon of another whenever an upgrade lands while one of them
    runs (a tray started before the upgrade, a daemon not yet restarted after it). Refusing a reply
    over a field the reader has no use for would show "not running" for a daemon that works. So a new
    field is one line in its class, with a default, and nothing else.
    """

    __slots__ = ()
    _decoders: ClassVar[dict[str, Callable[[Any], Any]]]

    def to_json(self) -> dict[str, Any]:
        fields = dataclasses.fields(self)  # type: ignore[arg-type]
        return {f.name: _to_json(getattr(self, f.name)) for f in fields}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Self:
        if not isinstance(data, Mapping):
            raise ControlError(f"the daemon sent {type(data).__name__} where a {cls.__name__} belongs")
        decoders = cls.__dict__.get("_decoders")
        if decoders is None:  # once per class: resolving the annotations is not free
            decoders = {name: _decoder(tp) for name, tp in typing.get_type_hints(cls).items()}
            decoders.pop("_decoders", None)
            cls._decoders = decoders
        values = {}
        for name, decode in decoders.items():
            if name not in data:
                continue
            try:
                values[name] = decode(data[name])
            except (TypeError, ValueError) as exc:
                raise ControlError(f"the daemon sent a bad {cls.__name__}.{name}: {data[name]!r}") from exc
        return cls(**values)


@dataclass(frozen=True, slots=True, kw_only=True)
class CurrentJob(Message):
    """The file being refined now."""

    id: int | None = None  # its ledger id
    path: str = ""
    preset: str | None = None
    progress: float | None = None  # 0..1
    stage: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelDownload(Message):
    """A hub model downloading now (its first run), in bytes."""

    name: str = ""  # the repo id
    done: int = 0
    total: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Status(Message):
    """The daemon's status reply (and the payload of every "status" event)."""

    state: DaemonState = DaemonState.IDLE
    active_preset: str = ""
    presets: tuple[str, ...] = ()
    model_set: str | None = None  # the active preset's model set: "default" ([model]) or a [models.NAME]
    model: str | None = None  # that set's checkpoint; None when the active preset does not refine
    # Presets that cannot run with what the config holds -> what they need there: "[models.xl]" (a set
    # not filled in), "[model] controlnet" (a ControlNet preset whose set names none).
    presets_without_model: Mapping[str, str] = field(default_factory=dict)
    current: CurrentJob | None = None
    download: ModelDownload | None = None  # while the worker downloads a hub model
    queue_length: int = 0  # queued, not counting `current`
    waiting: int = 0  # seen, not yet stable enough to check
    existing: int = 0  # older images in watched folders: what `backfill` would queue
    # Ledger rows per state; our own outputs under "naiup_output", apart from "skipped".
    counts: Mapping[str, int] = field(default_factory=dict)
    last_error: str | None = None  # the latest file failed, until that file is done
    last_error_at: float | None = None  # when it failed (epoch s): status shows how old the news is
    pause_reason: str | None = None
    paused_until: float | None = None  # epoch s, for a timed pause
    pause_source: PauseSource | None = None
    pause_rule: str | None = None  # a rule holding now
    pause_rule_overridden: str | None = None  # a holding rule the user resumed over
    pause_rules_unavailable: Mapping[str, str] = field(default_factory=dict)  # rule -> why
    last_output: str | None = None
    engine_error: str | None = None
    config_error: str | None = None  # a config edit refused: the previous config runs on
    worker_pid: int | None = None
    watch_folders: tuple[str, ...] = ()
    missing_folders: tuple[str, ...] = ()  # watched folders not there now
    event_overflows: int = 0
    config_path: str | None = None
    log_path: str | None = None
    pid: int | None = None

    @property
    def failed(self) -> int:
        return int(self.counts.get("failed", 0))


def _to_json(value: Any) -> Any:
    if isinstance(value, Message):
        return value.to_json()
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_to_json(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _to_json(v) for k, v in value.items()}
    return value


def _decoder(tp: Any) -> Callable[[Any], Any]:
    """How to turn the JSON of a field of type `tp` back into it."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):  # `X | None`
        inner = [a for a in args if a is not type(None)]
        decode = _decoder(inner[0]) if len(inner) == 1 else _same
        return lambda v: None if v is None else decode(v)
    if origin is tuple:
        return tuple
    if origin in (Mapping, dict):
        return dict
    if isinstance(tp, type) and issubclass(tp, Message):
        return tp.from_json
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return _member(tp)
    return _same


def _member(kind: type[enum.Enum]) -> Callable[[Any], Any]:
    def decode(value: Any) -> Any:
        try:
            return kind(value)  # DaemonState maps a state it does not know to UNKNOWN
        except ValueError:
            return None  # a pause source a newer daemon has: shown as a plain pause with its reason

    return decode


def _same(value: Any) -> Any:
    return value
