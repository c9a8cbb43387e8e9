"""What the daemon and its worker child say over their private pipe: one frozen dataclass per message.

    daemon -> worker   Job, LoadSet, ModelIdOf, Stop
    worker -> daemon   notices, which inform while the daemon waits on:   Log, Progress, Download,
                                                                          SetLoaded
                       replies, which end the daemon's wait:              Ready, LoadFailed, ModelId,
                                                                          Done, Failed

A message's class says what it is and its fields what it carries, so neither end guesses at string
keys. Fields are plain values (str, float, bool, dicts of them, and the config's own frozen
dataclasses): a pickle of a message holds nothing else.

Adding a message: a dataclass here (subclass Notice when it only informs, Reply when it answers a
wait), the worker's send, and one `case` where the daemon reads it (Worker._notice for a notice, the
waiting method of Worker for a reply; the worker's loop in _child_main for a daemon -> worker message).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from naiup.config import Config, ModelConfig, Preset

# -- daemon -> worker -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Job:
    """Refine one file. `config` is the daemon's current one: a hot reload reaches a warm worker."""

    src: str
    preset: Preset
    config: Config


@dataclass(frozen=True, slots=True)
class LoadSet:
    """Load what `preset` needs now, switching model sets (the old one unloaded first) when it is of
    another one: the active preset changed. Answered like the start: Ready, or LoadFailed."""

    preset: Preset
    config: Config


@dataclass(frozen=True, slots=True)
class ModelIdOf:
    """Which model set `preset` uses (answered with ModelId, or LoadFailed when it cannot load)."""

    preset: Preset


@dataclass(frozen=True, slots=True)
class Stop:
    """Exit after the current job."""


# -- worker -> daemon -------------------------------------------------------------------------------


class Notice:
    """Informs the daemon; whatever it is waiting for, it goes on waiting."""

    __slots__ = ()


class Reply:
    """Ends the daemon's wait: the answer to its Job, ModelIdOf, or to the worker's start."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Log(Notice):
    """One of the worker's log records, formatted (and escaped) in the worker."""

    level: int
    logger: str
    text: str


@dataclass(frozen=True, slots=True)
class Progress(Notice):
    """How far the current job is (0..1) and in which stage."""

    fraction: float
    stage: str


@dataclass(frozen=True, slots=True)
class Download(Notice):
    """A hub model is downloading (at load, or for the job or model id the daemon waits on): bytes
    done of total. Bytes arriving mean the worker is not hung, however long the download takes."""

    name: str  # the repo id
    done: int
    total: int


@dataclass(frozen=True, slots=True)
class SetLoaded(Notice):
    """The worker's engine is now built with this model set (None: it unloaded and holds none)."""

    model_set: ModelConfig | None


@dataclass(frozen=True, slots=True)
class Ready(Reply):
    """The engine is built and has loaded what the start's (or a LoadSet's) preset needs."""


@dataclass(frozen=True, slots=True)
class LoadFailed(Reply):
    """The engine cannot load a model (at start, for a preset, or in a job): not the file's fault, so
    the file stays queued and the daemon shows `error` until the config changes."""

    error: str


@dataclass(frozen=True, slots=True)
class ModelId(Reply):
    model_id: str


@dataclass(frozen=True, slots=True)
class Done(Reply):
    output: str
    model_id: str  # the engine's id of the model set that made the output (the ledger keys on it)
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Failed(Reply):
    """The job failed; `permanent`: the file itself is bad, retrying cannot help."""

    error: str
    permanent: bool
