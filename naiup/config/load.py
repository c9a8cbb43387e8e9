"""Reading the config file: TOML -> validated, frozen `Config` (the dataclasses live in config.model)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from naiup import paths
from naiup.config.model import Config, WatchConfig
from naiup.config.paths import default_watch_folder
from naiup.config.schema import build_config
from naiup.errors import ConfigError


def default_config_path() -> Path:
    return paths.config_dir() / "config.toml"


def load_config(path: Path | None = None, *, model_files_must_exist: bool = True) -> Config:
    """Read, validate and freeze the config; ConfigError names the file, the key and the problem.

    A missing file means built-in defaults, so a fresh install runs without writing anything.
    model_files_must_exist=False (the daemon): a missing [model] file is not refused here; the engine
    load reports it, so the daemon keeps running and files stay queued until it is there.
    """
    path = path if path is not None else default_config_path()
    if not path.exists():
        return Config(watch=WatchConfig(folders=(default_watch_folder(),)))
    try:
        with open(path, "rb") as f:  # tomllib insists on a binary handle
            raw = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("toml", f"is not valid TOML: {exc}", path) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("file", f"cannot be read: {exc}", path) from exc
    return build_config(raw, path, model_files_must_exist)
