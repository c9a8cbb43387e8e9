"""Paths in the config: `~` expanded, relative ones taken from the config file's folder, existence checked.

A value that looks like a path must exist when the config is loaded; a checkpoint or LCM-LoRA may
instead be a hub id ("owner/name"), which is downloaded on first use.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable
from pathlib import Path

import platformdirs

from naiup.config.model import ModelConfig
from naiup.errors import ConfigError

MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pth", ".pt", ".bin")
# "owner/name" as the Hugging Face hub spells repo ids (engine/models.py uses it too).
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def resolve(p: Path, base: Path) -> Path:
    """`~` expanded; a relative path is taken from base (the config file's folder), not the cwd."""
    p = p.expanduser()
    return p if p.is_absolute() else base / p


def watch_folders(folders: Iterable[Path]) -> tuple[Path, ...]:
    """Each watch folder by its real path, once. The OS watcher does not follow a symbolic link at
    the root (watchdog watches with IN_DONT_FOLLOW), so a Downloads folder that is a link to another
    disk would get no live events, only the periodic rescan; and one folder written two ways
    (`~/../me/Downloads`, a link) would be baselined and watched twice, every file recorded twice."""
    seen: dict[Path, None] = {}
    for folder in folders:
        seen.setdefault(Path(os.path.realpath(folder)), None)
    return tuple(seen)


def looks_like_path(value: str) -> bool:
    """A value with a separator, a leading ~ or . or a model-file suffix names a file, not a built-in."""
    return (
        "/" in value
        or "\\" in value
        or value.startswith(("~", "."))
        or value.lower().endswith(MODEL_SUFFIXES)
    )


def existing_file(value: str, key: str, base: Path, path: Path, must_exist: bool = True) -> str:
    """The absolute path of an existing file, or ConfigError naming key and the path looked at."""
    resolved = resolve(Path(value), base)
    if must_exist and not resolved.is_file():
        raise ConfigError(key, f"file not found: {resolved}", path)
    return str(resolved)


def _file_or_hub_id(value: str, key: str, base: Path, path: Path, what: str, must_exist: bool) -> str:
    """A local file/folder (made absolute) or an 'owner/name' hub id, which may be downloaded later."""
    resolved = resolve(Path(value), base)
    if resolved.exists():
        return str(resolved)
    if HUB_ID.fullmatch(value) and not value.lower().endswith(MODEL_SUFFIXES):
        return value
    if not must_exist:
        return str(resolved)
    raise ConfigError(
        key, f"{value!r} is neither an existing {what} ({resolved}) nor a hub id like 'owner/name'", path
    )


def existing_file_or_folder(value: str, key: str, base: Path, path: Path, must_exist: bool = True) -> str:
    """The absolute path of an existing file or folder. Nothing here is downloaded: an 'owner/name'
    that is not a local path is refused with the command that fetches it."""
    resolved = resolve(Path(value), base)
    if resolved.exists() or not must_exist:
        return str(resolved)
    if HUB_ID.fullmatch(value) and not value.lower().endswith(MODEL_SUFFIXES):
        raise ConfigError(
            key,
            f"{value!r} is not a local file or folder and is not downloaded for you: fetch it once with "
            f"`hf download {value} --local-dir DIR` and set the key to DIR",
            path,
        )
    raise ConfigError(key, f"file or folder not found: {resolved}", path)


def check_model(
    model: ModelConfig, base: Path, path: Path, must_exist: bool = True, key: str = "model"
) -> ModelConfig:
    """[model] (or the [models.NAME] table `key` names) with every local path made absolute; refuses the
    first one that does not exist.

    With must_exist=False (the daemon) a missing model file is left to the engine load to report: the
    daemon keeps running, shows the reason in status and keeps files queued until the file appears.
    """
    for i, folder in enumerate(model.lora_dirs):
        if must_exist and not resolve(folder, base).is_dir():
            raise ConfigError(f"{key}.lora_dirs[{i}]", f"folder not found: {resolve(folder, base)}", path)
    return dataclasses.replace(
        model,
        checkpoint=_file_or_hub_id(
            model.checkpoint, f"{key}.checkpoint", base, path, "file or folder", must_exist
        ),
        vae=existing_file(model.vae, f"{key}.vae", base, path, must_exist) if model.vae else "",
        lcm_lora=_file_or_hub_id(model.lcm_lora, f"{key}.lcm_lora", base, path, "file", must_exist)
        if model.lcm_lora
        else "",
        controlnet=existing_file_or_folder(model.controlnet, f"{key}.controlnet", base, path, must_exist)
        if model.controlnet
        else "",
        lora_dirs=tuple(resolve(d, base) for d in model.lora_dirs),
        loras=tuple(
            dataclasses.replace(
                lora, path=existing_file(lora.path, f"{key}.loras[{i}].path", base, path, must_exist)
            )
            for i, lora in enumerate(model.loras)
        ),
    )


def default_watch_folder() -> Path:
    # platformdirs follows XDG_DOWNLOAD_DIR (localised names) and Windows' Known Folder API.
    return Path(platformdirs.user_downloads_dir())
