"""What `naiup config check` reports beyond load-time validation: things that may change after loading.

load_config already refuses bad keys, values and missing model files. A watch folder may legitimately
appear later (a USB drive), and a hub id may not be downloaded yet, so those are reported here instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from naiup.config.model import BUILTIN_PRESETS, Config, set_key
from naiup.config.paths import HUB_ID
from naiup.errors import ConfigError, hub_offline
from naiup.upscaler_names import missing_weights, not_shipped


class Severity(StrEnum):
    ERROR = "error"  # the service cannot do its job as configured
    NOTE = "note"  # works, but something the user may want to know


@dataclass(frozen=True, slots=True)
class Problem:
    severity: Severity
    key: str
    message: str


def find_problems(config: Config) -> list[Problem]:
    problems = [
        Problem(Severity.ERROR, f"watch.folders[{i}]", f"folder not found: {folder}")
        for i, folder in enumerate(config.watch.folders)
        if not folder.is_dir()
    ]
    active = config.presets.get(config.daemon.active_preset)
    for name, users in config.model_set_users().items():
        try:
            model = config.model_set(name)
        except ConfigError:  # a built-in set not filled in: only its presets cannot refine
            problems.append(Problem(Severity.NOTE, f"models.{name}", config.unfilled_note(name, users)))
            continue
        key = set_key(name)
        # Offline, a missing model is an error for the set the active preset uses; for the others a note.
        offline = hub_offline()
        needed = active is not None and active.refine and active.model == name
        for field in ("checkpoint", "lcm_lora"):
            value = getattr(model, field)
            # load_config made every local path absolute, so an 'owner/name' left here is a hub id.
            if HUB_ID.fullmatch(value) and not _is_cached(value):
                problems.append(
                    Problem(
                        Severity.ERROR,
                        f"{key}.{field}",
                        f"hub model {value!r} is not downloaded and HF_HUB_OFFLINE is set, so refining"
                        f" cannot download it: unset HF_HUB_OFFLINE once, or run `hf download {value}`",
                    )
                    if offline and needed
                    else Problem(
                        Severity.NOTE,
                        f"{key}.{field}",
                        # Offline nothing is fetched, so "the first refine downloads it" would be untrue.
                        f"hub model {value!r} is not downloaded and cannot be while HF_HUB_OFFLINE is set"
                        f" (the active preset does not need it): run `hf download {value}` once online",
                    )
                    if offline
                    else Problem(
                        Severity.NOTE,
                        f"{key}.{field}",
                        f"hub model {value!r} is not downloaded yet; the first refine downloads it",
                    )
                )
        lcm = [p for p in users if config.presets[p].sampler == "lcm"]
        if lcm and not model.lcm_lora:
            problems.append(
                Problem(
                    Severity.NOTE,
                    f"{key}.lcm_lora",
                    f"is empty but preset(s) {', '.join(lcm)} use the lcm sampler: "
                    "that only works with an LCM-distilled checkpoint",
                )
            )
    problems += _control_without_controlnet(config)
    problems += _upscalers_not_in_place(config)
    return problems


def _upscalers_not_in_place(config: Config) -> list[Problem]:
    """Presets whose built-in upscaler is not shipped and not put in place fail every job: an error
    for the active preset, one note per upscaler for the others (they work once the file is there)."""
    users: dict[str, list[str]] = {}
    for name, preset in sorted(config.presets.items()):
        users.setdefault(preset.upscaler, []).append(name)
    out = []
    for spec, names in users.items():
        weights = missing_weights(spec)
        if weights is None:
            continue
        active = config.daemon.active_preset
        if active in names:
            out.append(Problem(Severity.ERROR, f"presets.{active}.upscaler", not_shipped(spec, weights)))
            names = [n for n in names if n != active]
        if names:
            out.append(
                Problem(
                    Severity.NOTE,
                    f"presets.{names[0]}.upscaler",
                    f"preset(s) {', '.join(names)} cannot run yet: {not_shipped(spec, weights)}",
                )
            )
    return out


def _control_without_controlnet(config: Config) -> list[Problem]:
    """Presets that run a ControlNet when their model set has none fail every job: an error for the
    active preset; a note for another one the user wrote (an unchanged built-in one is not news)."""
    out = []
    for name, preset in sorted(config.presets.items()):
        if not (preset.refine and preset.control_strength > 0):
            continue
        try:
            if config.model_set(preset.model).controlnet:
                continue
        except ConfigError:  # a built-in set not filled in: find_problems notes that already
            continue
        key = set_key(preset.model)
        active = name == config.daemon.active_preset
        if not active and BUILTIN_PRESETS.get(name) == preset:
            continue
        out.append(
            Problem(
                Severity.ERROR if active else Severity.NOTE,
                f"presets.{name}.control_strength",
                f"is {preset.control_strength} but {key}.controlnet is empty, so its jobs fail: set "
                f"{key}.controlnet to a tile ControlNet of the checkpoint's family, or control_strength = 0",
            )
        )
    return out


def _is_cached(repo_id: str) -> bool:
    """True when the hub cache holds a snapshot of repo_id; never touches the network."""
    # Imported late: only `config check` needs it, and it is slow to import.
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        return any(repo.repo_id == repo_id for repo in scan_cache_dir().repos)
    except (CacheNotFound, OSError):  # no cache folder yet, or one we cannot read: not downloaded
        return False
