"""Config -> TOML text, for `naiup config show`. Reading it back with load_config gives an equal Config.

tomllib only reads; this writer covers exactly the value types our dataclasses hold (bool, int, float,
str, Path, tuples of those, LoraSpec tables), so we need no tomli-w dependency.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from naiup.config.model import Config, LoraSpec

_SECTIONS = ("watch", "output", "model", "daemon", "pause")


def dump_config(config: Config) -> str:
    """The effective config as a TOML document: every key of every section, built-in presets included."""
    origin = str(config.source) if config.source else "built-in defaults (no config file)"
    lines = [f"# effective naiup config from {origin}"]
    for name in _SECTIONS:
        lines += ["", f"[{name}]", *_pairs(getattr(config, name), skip=())]
        if name == "model":  # all keys: read back, each set is the same whatever [model] holds
            for set_name, model in sorted(config.models.items()):
                lines += ["", f"[models.{_key(set_name)}]", *_pairs(model, skip=())]
    for preset in config.presets.values():
        lines += ["", f"[presets.{_key(preset.name)}]", *_pairs(preset, skip=("name",))]
    return "\n".join(lines) + "\n"


def _pairs(obj: Any, skip: tuple[str, ...]) -> list[str]:
    return [
        f"{f.name} = {format_value(getattr(obj, f.name))}"
        for f in dataclasses.fields(obj)
        if f.name not in skip
    ]


def _key(name: str) -> str:
    # Preset and model set names are validated to letters, digits, '.', '_', '-'; a dot would split the key.
    return name if "." not in name else format_value(name)


def format_value(value: Any) -> str:
    """One TOML value. Floats keep a '.', so an int-typed key never reads back as a float or vice versa."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Path):
        return format_value(str(value))
    if isinstance(value, str):
        # JSON string escapes are a subset of TOML basic-string escapes, except DEL, which TOML
        # forbids raw and JSON leaves as is.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, LoraSpec):
        return f"{{ path = {format_value(value.path)}, weight = {format_value(value.weight)} }}"
    if isinstance(value, tuple | list):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")  # a new field type: teach this writer
