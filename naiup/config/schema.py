"""Raw TOML table -> validated Config. Every refusal names the file, the key path and the problem.

This is the one place the config's rules live. Types come from the dataclass annotations in
naiup/config/model.py, so a new field is validated for type the moment it is added; ranges and enums
live in RULES below; cross-field rules in `_preset_problems` and `_check_config`. Paths: `~` is expanded
and relative paths are taken from the config file's folder (the daemon's working directory is not
something the user chose).

A file's problems are gathered, not refused one at a time: every unknown key and bad value of every
table comes back in one ConfigError (`problems` holds each, its message a line per problem), so three
typos cost one `naiup config check`, not three. A table with a refused key still keeps its good values,
and every rule across keys (`_preset_problems`) or tables (`_check_config`) runs whenever the values it
reads passed: judged on a refused value (or the default standing in for it) it would only echo that
problem, so such a rule waits until it is fixed.

check_values(obj, key) applies the same value rules to a dataclass built in code (the engine used as
a library checks its Preset and ModelConfig with it), so a rule is written, and tested, once.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import string
import types
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from naiup.config.model import (
    BUILTIN_MODEL_SETS,
    BUILTIN_PRESETS,
    DEFAULT_MODEL_SET,
    MACHINE_KEYS,
    Config,
    DaemonConfig,
    LoraSpec,
    ModelConfig,
    OutputConfig,
    PauseConfig,
    Preset,
    WatchConfig,
)
from naiup.config.paths import (
    check_model,
    default_watch_folder,
    existing_file,
    looks_like_path,
    resolve,
    watch_folders,
)
from naiup.errors import ConfigError
from naiup.upscaler_names import BUILTIN_UPSCALERS, is_lanczos, upscaler_names

SECTIONS: dict[str, type] = {
    "watch": WatchConfig,
    "output": OutputConfig,
    "model": ModelConfig,
    "daemon": DaemonConfig,
    "pause": PauseConfig,
}
OUTPUT_FIELDS = ("stem", "preset", "ext")
_PRESET_NAME = re.compile(r"[A-Za-z0-9][\w.-]*")
_SEED_MAX = 2**32 - 1  # NovelAI seeds are 32-bit

Check = Callable[[Any], str | None]  # returns the reason a value is refused, or None


def _positive(v: float) -> str | None:
    return None if v > 0 else f"must be greater than 0, got {v}"


def _between(lo: float, hi: float) -> Check:
    return lambda v: None if lo <= v <= hi else f"must be between {lo} and {hi}, got {v}"


def _one_of(*choices: str) -> Check:
    return lambda v: None if v in choices else f"must be one of {', '.join(choices)}; got {v!r}"


def _one_tag_each(tags: tuple[str, ...]) -> str | None:
    bad = next((t for t in tags if not t.strip() or "," in t), None)
    return None if bad is None else f"holds {bad!r}: each entry is one tag, not empty and without commas"


def _seed(v: str | int) -> str | None:
    if isinstance(v, int) and not isinstance(v, bool):
        return None if 0 <= v <= _SEED_MAX else f"must be between 0 and {_SEED_MAX}, got {v}"
    if v in ("image", "random"):
        return None
    return f'must be "image", "random" or an integer (without quotes), got {v!r}'


def _upscaler(v: str) -> str | None:
    """A built-in name or a path (whose file load_config then checks); anything else is a typo, which
    would otherwise only surface when the first image fails."""
    if not v.strip():
        return 'must not be empty (use "lanczos" for no model)'
    if is_lanczos(v) or v in BUILTIN_UPSCALERS or looks_like_path(v):
        return None
    names = upscaler_names()
    close = difflib.get_close_matches(v, names, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return (
        f"{v!r} is not a built-in upscaler{hint} (built-in: {', '.join(names)}; "
        "a model file is given by its path, e.g. ~/models/4x-model.safetensors)"
    )


# Per-field rules, keyed "<dataclass>.<field>"; cross-field rules are in the functions below.
RULES: dict[str, Check] = {
    "WatchConfig.quiet_seconds": _positive,
    "WatchConfig.rescan_seconds": _positive,
    "WatchConfig.give_up_seconds": _positive,
    "OutputConfig.max_output_megapixels": _positive,
    "OutputConfig.png_compress_level": _between(0, 9),
    "OutputConfig.name": lambda v: output_name_problem(v),  # defined below, with its fields
    "ModelConfig.device": _one_of("auto", "cuda", "mps", "cpu"),
    "ModelConfig.clip_skip": _between(1, 12),  # A1111 convention: 1 = last CLIP layer, 12 layers in all
    "ModelConfig.prediction": _one_of("auto", "epsilon", "v"),
    "ModelConfig.max_vram_gb": lambda v: (
        None if v == 0 or v >= 1 else f"must be 0 (no limit) or at least 1 (GiB), got {v}"
    ),
    "ModelConfig.unet_graphs": _one_of("auto", "on", "off"),
    "ModelConfig.checkpoint": lambda v: None if v.strip() else "must not be empty",
    "DaemonConfig.job_timeout_seconds": _positive,
    "DaemonConfig.max_attempts": _between(1, 100),
    "DaemonConfig.stop_grace_seconds": _positive,
    "PauseConfig.gpu_busy_percent": _between(0, 100),
    "PauseConfig.check_seconds": _positive,
    "Preset.scale": lambda v: None if 1 < v <= 8 else f"must be in (1, 8], got {v}",
    "Preset.denoise": lambda v: None if 0 < v <= 1 else f"must be in (0, 1], got {v}",
    "Preset.steps": _between(1, 1000),
    "Preset.cfg": lambda v: None if v >= 1 else f"must be at least 1 (below 1 has no meaning), got {v}",
    "Preset.sampler": _one_of("lcm", "dmd2", "euler"),
    "Preset.tile_size": lambda v: (
        None if v >= 8 and v % 8 == 0 else f"must be a multiple of 8, >= 8; got {v}"
    ),
    "Preset.overlap": lambda v: None if v >= 0 else f"must not be negative, got {v}",
    "Preset.tile_batch_size": _between(1, 256),
    "Preset.tile_method": _one_of("mixture", "multidiffusion"),
    "Preset.vae_tiling": _one_of("auto", "exact", "low-memory", "off"),
    "Preset.vae_attention_window": lambda v: (
        None if v == 0 or v >= 16 else f"must be 0 (whole attention) or at least 16 latent px, got {v}"
    ),
    "Preset.control_strength": _between(0, 2),
    "Preset.control_start": _between(0, 1),
    "Preset.control_end": _between(0, 1),
    "Preset.upscaler": _upscaler,
    "Preset.regions": _one_of("auto", "off"),
    "Preset.region_size": lambda v: (
        None if 0 < v <= 1 else f"must be in (0, 1] (a fraction of the image), got {v}"
    ),
    "Preset.background_drop_tags": _one_tag_each,
    "Preset.seed": _seed,
}


class _Problems:
    """The problems found so far in one file, to be refused together."""

    def __init__(self) -> None:
        self.found: list[ConfigError] = []

    @contextmanager
    def gather(self) -> Iterator[None]:
        """Run a block; a ConfigError it raises is kept (every problem it holds) and the file goes on
        being checked. Whatever the block would have built is then missing (or a default): judged()
        and clean() tell the rules across tables which values they may still read."""
        try:
            yield
        except ConfigError as exc:
            self.found.append(exc)

    def judged(self, key: str) -> bool:
        """Whether the value at `key` stands as the file wrote it: neither it nor a table holding it
        was refused."""
        return not any(_within(key, p.key) for e in self.found for p in e.problems)

    def clean(self, key: str) -> bool:
        """judged(key), and nothing under it refused either: the whole preset or set the file gave."""
        return self.judged(key) and not any(_within(p.key, key) for e in self.found for p in e.problems)

    def refuse(self) -> None:
        if self.found:
            raise ConfigError.of(self.found)


def _within(key: str, table: str) -> bool:
    """`key` is `table` or a key inside it (`table.x`, `table[0]`)."""
    return key == table or key.startswith((f"{table}.", f"{table}["))


def build_config(raw: dict[str, Any], path: Path, model_files_must_exist: bool = True) -> Config:
    """Turn a parsed TOML document into a Config, refusing every problem found in one ConfigError."""
    base = path.parent
    problems = _Problems()
    with problems.gather():
        _refuse_retired(raw, path)
    raw = _without_retired(raw)
    with problems.gather():
        _refuse_unknown(raw, [*SECTIONS, "models", "presets"], "", path)
    # Each table from its good values (a refused one keeps its default): the Config below is built
    # even from a file with problems, for the rules across tables to judge what did pass.
    sections = {}
    for name, cls in SECTIONS.items():
        values: dict[str, Any] = {}
        with problems.gather():
            values, errors = _fields(cls, _table(raw.get(name, {}), name, path), name, path)
            problems.found.extend(errors)
        sections[name] = cls(**values)
    presets = dict(BUILTIN_PRESETS)
    for name, table in _tables(raw, "presets", path, problems).items():
        with problems.gather():
            presets[name], errors = _preset(name, table, presets.get(name), base, path)
            problems.found.extend(errors)
    model = sections["model"]
    with problems.gather():
        model = check_model(model, base, path, model_files_must_exist)
    models = _model_sets(
        _tables(raw, "models", path, problems), model, base, path, model_files_must_exist, problems
    )
    watch = sections["watch"]
    given = raw.get("watch", {})
    if not isinstance(given, dict) or "folders" not in given:
        watch = dataclasses.replace(watch, folders=(default_watch_folder(),))
    watch = dataclasses.replace(watch, folders=watch_folders(resolve(p, base) for p in watch.folders))
    config = Config(
        watch=watch,
        output=sections["output"],
        model=model,
        daemon=sections["daemon"],
        pause=sections["pause"],
        presets=presets,
        source=path,
        models=models,
    )
    problems.found.extend(_check_config(config, path, problems))
    problems.refuse()
    return config


def _tables(raw: dict[str, Any], key: str, path: Path, problems: _Problems) -> dict[str, Any]:
    """[presets] or [models]: NAME -> its table; {} when it is not a table (that problem kept)."""
    with problems.gather():
        return _table(raw.get(key, {}), key, path)
    return {}


def _preset(
    name: str, table: Any, start: Preset | None, base: Path, path: Path
) -> tuple[Preset, list[ConfigError]]:
    """One [presets.NAME] table and its problems. Over a built-in preset it overrides only the keys it
    sets; a new one starts from the defaults. Built from the keys that passed, so the rules across
    them judge those even beside an unknown or refused key; the preset is usable only without
    problems. Raises for a table it cannot read at all (a bad name, not a table)."""
    key = f"presets.{name}"
    if not _PRESET_NAME.fullmatch(name):
        raise ConfigError(key, "preset names may use only letters, digits, '.', '_' and '-'", path)
    table = _table(table, key, path)
    changes, errors = _fields(Preset, table, key, path, skip=("name",))
    preset = dataclasses.replace(start or Preset(name=name), **changes)
    errors.extend(_preset_problems(preset, key, path, refused=set(table) - set(changes)))
    try:
        preset = _resolve_upscaler(preset, key, base, path)
    except ConfigError as exc:
        errors.append(exc)
    return preset, errors


def _model_sets(
    tables: dict[str, Any],
    default: ModelConfig,
    base: Path,
    path: Path,
    must_exist: bool,
    problems: _Problems,
) -> dict[str, ModelConfig]:
    """The [models.NAME] tables: the keys of [model], each a complete set of its own."""
    sets = {}
    for name, table in tables.items():
        with problems.gather():
            sets[name] = _model_set(name, table, default, base, path, must_exist)
    return sets


def _model_set(
    name: str, table: Any, default: ModelConfig, base: Path, path: Path, must_exist: bool
) -> ModelConfig:
    key = f"models.{name}"
    if not _PRESET_NAME.fullmatch(name):
        raise ConfigError(key, "model set names may use only letters, digits, '.', '_' and '-'", path)
    if name == DEFAULT_MODEL_SET:
        raise ConfigError(key, f"{name!r} is the [model] table's name; give this set another", path)
    table = _table(table, key, path)
    changes, errors = _fields(ModelConfig, table, key, path)
    if errors:
        raise ConfigError.of(errors)
    if "checkpoint" not in changes:  # a set is its checkpoint: no default could be the right one
        raise ConfigError(f"{key}.checkpoint", "is required in a model set", path)
    # Machine keys from [model]; model keys from this name's built-in defaults (see MACHINE_KEYS).
    start = BUILTIN_MODEL_SETS.get(name, ModelConfig())
    start = dataclasses.replace(start, **{k: getattr(default, k) for k in MACHINE_KEYS})
    return check_model(dataclasses.replace(start, **changes), base, path, must_exist, key)


# [daemon] engine named the engine the worker builds; config.example.toml wrote the default into every
# copy of it. That default is dropped (the file keeps loading); another engine is refused, since it
# would silently no longer be used.
_RETIRED_ENGINE = "naiup.engine:Engine"


def _refuse_retired(raw: dict[str, Any], path: Path) -> None:
    daemon = raw.get("daemon")
    if isinstance(daemon, dict) and daemon.get("engine", _RETIRED_ENGINE) != _RETIRED_ENGINE:
        raise ConfigError(
            "daemon.engine",
            "is no longer a config key: remove it (a stand-in engine for tests is named by the "
            "NAIUP_ENGINE environment variable)",
            path,
        )


def _without_retired(raw: dict[str, Any]) -> dict[str, Any]:
    """`raw` less the keys older versions read and this one ignores (refused or not, they are not
    unknown keys)."""
    daemon = raw.get("daemon")
    if not isinstance(daemon, dict) or "engine" not in daemon:
        return raw
    return {**raw, "daemon": {k: v for k, v in daemon.items() if k != "engine"}}


def _table(value: Any, key: str, path: Path) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(key, f"must be a table ([{key}]), got {_kind(value)}", path)
    return value


def _unknown(table: dict[str, Any], known: list[str], prefix: str, path: Path) -> list[ConfigError]:
    out = []
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f" (known: {', '.join(known)})"
            out.append(ConfigError(f"{prefix}{key}", f"is not a known key{hint}", path))
    return out


def _refuse_unknown(table: dict[str, Any], known: list[str], prefix: str, path: Path) -> None:
    errors = _unknown(table, known, prefix, path)
    if errors:
        raise ConfigError.of(errors)


def _build(cls: type, table: dict[str, Any], key: str, path: Path) -> Any:
    values, errors = _fields(cls, table, key, path)
    if errors:
        raise ConfigError.of(errors)
    return cls(**values)


def _fields(
    cls: type, table: dict[str, Any], key: str, path: Path, skip: tuple[str, ...] = ()
) -> tuple[dict[str, Any], list[ConfigError]]:
    """The table's good values by field name, and a problem for each unknown key and refused value:
    the caller goes on with the good ones, so their own rules are still judged."""
    names = [f.name for f in dataclasses.fields(cls) if f.name not in skip]
    errors = _unknown(table, names, f"{key}.", path)
    hints = typing.get_type_hints(cls)
    out = {}
    for name, value in table.items():
        if name not in names:
            continue
        full = f"{key}.{name}"
        try:
            out[name] = _convert(value, hints[name], full, path)
        except ConfigError as exc:
            errors.append(exc)
            continue
        reason = _rule_reason(cls, name, out[name])
        if reason:
            errors.append(ConfigError(full, reason, path))
            del out[name]
    return out, errors


def _rule_reason(cls: type, name: str, value: Any) -> str | None:
    rule = RULES.get(f"{cls.__name__}.{name}")
    return rule(value) if rule else None


def check_values(obj: Any, key: str, path: Path | None = None) -> None:
    """Refuse, as load_config would, the first value of a config dataclass built in code: the rules
    of each of its keys (RULES), then those across a preset's keys. ConfigError names `key`.<field>.
    Not the file checks (paths exist, relative paths): those belong to reading a file. Types are
    the caller's to get right (the annotations); a value a rule cannot compare is refused too."""
    cls = type(obj)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        try:
            reason = _rule_reason(cls, f.name, value)
        except (TypeError, AttributeError):  # e.g. "1.5" where a number belongs
            hint = hints[f.name]
            reason = f"must be {getattr(hint, '__name__', hint)}, got {_kind(value)} ({value!r})"
        if reason:
            raise ConfigError(f"{key}.{f.name}", reason, path)
    if isinstance(obj, Preset):
        for problem in _preset_problems(obj, key, path):
            raise problem


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array"}
    return names.get(type(value), "a table" if isinstance(value, dict) else type(value).__name__)


def _convert(value: Any, hint: Any, key: str, path: Path) -> Any:
    """Check one value against its annotation; TOML already gave us the Python type."""

    def refuse(expected: str) -> ConfigError:
        return ConfigError(key, f"must be {expected}, got {_kind(value)} ({value!r})", path)

    origin = typing.get_origin(hint)
    if origin is tuple:  # tuple[X, ...] is a TOML array
        if not isinstance(value, list):
            raise refuse("an array")
        item = typing.get_args(hint)[0]
        return tuple(_convert(v, item, f"{key}[{i}]", path) for i, v in enumerate(value))
    if origin in (types.UnionType, typing.Union):  # only `seed: str | int`; its values: RULES
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise refuse('"image", "random" or an integer')
        return value
    if hint is bool:
        # TOML's true/false only: 0/1 or "yes" in a bool field is a typo we refuse, not guess.
        if not isinstance(value, bool):
            raise refuse("true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise refuse("an integer")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise refuse("a number")
        if not math.isfinite(value):
            raise refuse("a finite number")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise refuse("a string")
        return value
    if hint is Path:
        if not isinstance(value, str) or not value.strip():
            raise refuse("a non-empty path string")
        return Path(value).expanduser()
    if hint is LoraSpec:
        if not isinstance(value, dict):
            raise refuse('a table like { path = "style.safetensors", weight = 0.8 }')
        if "path" not in value:
            raise ConfigError(f"{key}.path", "is required", path)
        return _build(LoraSpec, value, key, path)
    raise TypeError(f"config schema has no rule for {hint!r} ({key})")  # a bug in this module, not user input


def _preset_problems(
    preset: Preset, key: str, path: Path | None, refused: set[str] | None = None
) -> Iterator[ConfigError]:
    """Rules that involve more than one key of a preset: each one it breaks. A rule reading a key in
    `refused` is skipped: that key holds a default, not what the file wrote."""
    refused = refused or set()

    def judged(*names: str) -> bool:
        return refused.isdisjoint(names)

    unet = ("refine", "steps", "denoise")  # what unet_steps is made of
    if judged("overlap", "tile_size") and preset.overlap >= preset.tile_size:
        yield ConfigError(
            f"{key}.overlap",
            f"must be smaller than tile_size ({preset.tile_size}), got {preset.overlap}",
            path,
        )
    if judged("sampler", "cfg") and preset.sampler in ("lcm", "dmd2") and preset.cfg >= 2:
        yield ConfigError(
            f"{key}.cfg",
            f"is {preset.cfg} with the {preset.sampler} sampler: LCM burns above CFG 2 (use 1-1.8)",
            path,
        )
    if judged(*unet) and preset.refine and preset.unet_steps < 1:
        yield ConfigError(
            f"{key}.steps",
            f"steps x denoise = {preset.steps} x {preset.denoise} gives no UNet step; raise steps or denoise",
            path,
        )
    if not judged("control_start", "control_end"):
        pass  # neither rule below can be judged without both ends
    elif preset.control_start >= preset.control_end:
        yield ConfigError(
            f"{key}.control_start",
            f"must be below control_end ({preset.control_end}), got {preset.control_start}",
            path,
        )
    elif (
        judged("control_strength", *unet)
        and preset.refine
        and preset.control_strength > 0
        and not any(preset.control_scales)
    ):
        yield ConfigError(
            f"{key}.control_start",
            f"control_start..control_end = {preset.control_start}..{preset.control_end} covers none of "
            f"the {preset.unet_steps} UNet steps (step i of n runs the ControlNet when i/n >= "
            "control_start and (i+1)/n <= control_end); widen it or set control_strength = 0",
            path,
        )


def _resolve_upscaler(preset: Preset, key: str, base: Path, path: Path) -> Preset:
    """An upscaler given as a path must exist; relative to the config file's folder."""
    if looks_like_path(preset.upscaler):
        return dataclasses.replace(
            preset, upscaler=existing_file(preset.upscaler, f"{key}.upscaler", base, path)
        )
    return preset


def _check_config(config: Config, path: Path, problems: _Problems) -> list[ConfigError]:
    """The rules across tables: each one broken, judged whenever the values it reads passed. A value
    that was refused (or a preset or set that failed) is not judged again: that would only echo it."""
    errors = []
    if problems.judged("watch.folders") and not config.watch.folders:
        errors.append(ConfigError("watch.folders", "must name at least one folder", path))
    if (
        problems.judged("watch.give_up_seconds")
        and problems.judged("watch.quiet_seconds")
        and config.watch.give_up_seconds <= config.watch.quiet_seconds
    ):
        errors.append(ConfigError("watch.give_up_seconds", "must be longer than watch.quiet_seconds", path))
    known_sets = config.model_set_names()
    for preset in config.presets.values():
        # A set that failed is missing from known_sets; naming it is not a second problem.
        if (
            problems.judged(f"presets.{preset.name}.model")
            and preset.model not in known_sets
            and problems.clean(f"models.{preset.model}")
        ):
            errors.append(
                ConfigError(
                    f"presets.{preset.name}.model",
                    f"names no model set: {preset.model!r} (known: {', '.join(known_sets)})",
                    path,
                )
            )
    name = config.daemon.active_preset
    if not problems.judged("daemon.active_preset") or not problems.clean(f"presets.{name}"):
        return errors  # a preset that failed is reported as itself, not as missing or unloadable
    active = config.presets.get(name)
    if active is None:
        known = ", ".join(sorted(config.presets))
        errors.append(
            ConfigError("daemon.active_preset", f"names no preset: {name!r} (known: {known})", path)
        )
    elif active.refine and active.model in known_sets:
        try:  # the preset new images get must be able to load; a built-in set may still be empty
            config.model_for(active)
        except ConfigError as exc:
            errors.append(
                ConfigError(
                    "daemon.active_preset",
                    f"is {active.name!r}, whose model set [models.{active.model}] {exc.reason}",
                    path,
                )
            )
    return errors


def output_name_problem(template: str) -> str | None:
    """Why an output name template is refused, or None; the name lands beside the source image."""
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        return f"is not a valid template ({exc}): {template!r}"
    unknown = [f for f in fields if f not in OUTPUT_FIELDS]
    if unknown:
        return (
            f"uses unknown field {{{unknown[0]}}}; known: {', '.join('{' + f + '}' for f in OUTPUT_FIELDS)}"
        )
    if "stem" not in fields:
        return f"must contain {{stem}} so each output is named after its source: {template!r}"
    if "/" in template or "\\" in template:
        return f"must be a file name, not a path (outputs go beside the source): {template!r}"
    if not template.lower().endswith(".png"):
        return f"must end in .png (outputs are PNG): {template!r}"
    return None
