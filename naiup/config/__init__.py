"""Configuration: TOML file -> frozen dataclasses, validated once where they are built.

    load_config(path: Path | None = None) -> Config   # None: default path; missing file: defaults
    default_config_path() -> Path

Modules: model (the dataclasses, a leaf), schema (raw TOML -> validated Config), paths (paths inside
the config), load (reading the file), dump (Config -> TOML for `naiup config show`), check (problems
that may appear after loading: `naiup config check`).
"""

from naiup.config.load import default_config_path, load_config
from naiup.config.model import (
    BUILTIN_MODEL_SETS,
    BUILTIN_PRESETS,
    DEFAULT_MODEL_SET,
    Config,
    DaemonConfig,
    LoraSpec,
    ModelConfig,
    OutputConfig,
    PauseConfig,
    Preset,
    WatchConfig,
)
from naiup.config.paths import default_watch_folder

__all__ = [
    "BUILTIN_MODEL_SETS",
    "BUILTIN_PRESETS",
    "DEFAULT_MODEL_SET",
    "Config",
    "DaemonConfig",
    "LoraSpec",
    "ModelConfig",
    "OutputConfig",
    "PauseConfig",
    "Preset",
    "WatchConfig",
    "default_config_path",
    "default_watch_folder",
    "load_config",
]
