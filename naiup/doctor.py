"""`naiup doctor`: check the installation, say what is wrong and how to fix it.

    checks = run_checks(config_path)
    blocked = any(c.status is Status.FAIL for c in checks)   # FAIL: the main job cannot run

Each check is a small function returning `Check`s; none raises for a problem it finds (that is the
finding), only bugs escape.
"""

from __future__ import annotations

import enum
import os
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from naiup.config import Config, ModelConfig, load_config
from naiup.config.check import set_key
from naiup.errors import ConfigError, NaiupError
from naiup.runtime_state import effective_preset

MIN_GPU_GIB = 4.0  # SD1.5 fp16 + tiled VAE fits; below this even small tiles may not
SD15_MIN_VRAM_GIB = 3.0  # ~2.2 GB of fp16/bf16 weights, plus one UNet tile batch and the VAE's least


class Status(enum.StrEnum):
    OK = "ok"
    NOTE = "note"  # a problem only for a choice not in use now (a preset you may switch to)
    WARN = "warn"  # works, but worse than it could (CPU only, no tray, no autostart)
    FAIL = "FAIL"  # the main job cannot run until fixed


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


def run_checks(
    config_path: Path | None = None,
    connect: Callable[[], Any] | None = None,
    tray_backend: Callable[[], str | None] | None = None,
) -> list[Check]:
    checks = [check_python()]
    checks += check_torch()
    try:
        config = load_config(config_path)
        where = config.source or "built-in defaults (no config file)"
        checks.append(Check("config", Status.OK, f"valid: {where}"))
    except (NaiupError, tomllib.TOMLDecodeError, OSError) as exc:
        checks.append(Check("config", Status.FAIL, str(exc), "fix the file, then run `naiup config check`"))
        return [*checks, check_tray(tray_backend), check_autostart(), check_daemon(connect)]
    # The preset the service runs: a choice made with `naiup preset` or the tray outlives the config's.
    active, source = effective_preset(config)
    checks.append(check_active_preset(config, active, source))
    checks += check_models(config, active)
    checks += check_upscalers(config, active)
    for key, model in [("model", config.model), *((f"models.{n}", m) for n, m in config.models.items())]:
        if key == "model" or model.device != config.model.device:  # a set's own device, once
            device = check_device(model.device, key)
            checks += [device] if device else []
    checks += check_watch_folders(config)
    checks += check_pause_rules(config)
    return [*checks, check_tray(tray_backend), check_autostart(), check_daemon(connect)]


def check_python() -> Check:
    v = sys.version_info
    ok = v >= (3, 11)
    return Check(
        "python",
        Status.OK if ok else Status.FAIL,
        f"{v.major}.{v.minor}.{v.micro} at {sys.executable}",
        "" if ok else "install Python 3.11 or newer",
    )


def check_torch() -> list[Check]:
    try:
        import torch
    except ImportError as exc:
        return [
            Check("torch", Status.FAIL, f"cannot import torch ({exc})", "pip install torch (see pytorch.org)")
        ]
    out = [Check("torch", Status.OK, f"torch {torch.__version__}")]
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        gib = props.total_memory / 2**30
        out.append(Check("gpu", Status.OK, f"CUDA {torch.version.cuda}: {props.name}"))
        low = gib < MIN_GPU_GIB
        out.append(
            Check(
                "gpu memory",
                Status.WARN if low else Status.OK,
                f"{gib:.1f} GiB",
                'use a smaller tile_batch_size and vae_tiling = "low-memory" in your preset' if low else "",
            )
        )
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        out.append(Check("gpu", Status.OK, "Apple MPS"))
    else:
        fix = "install a CUDA build of torch (pytorch.org 'Get started') if you have an NVIDIA GPU"
        if torch.version.cuda:
            fix = (
                f"torch is built for CUDA {torch.version.cuda} but sees no GPU: check the driver (nvidia-smi)"
            )
        out.append(Check("gpu", Status.WARN, "no CUDA or MPS device: refining runs on the CPU (slow)", fix))
    return out


def _looks_like_path(ref: str) -> bool:
    return (
        ref.startswith((".", "/", "~"))
        or "\\" in ref
        or Path(ref).suffix in (".safetensors", ".ckpt", ".pt", ".pth", ".bin")
    )


def check_model_ref(name: str, ref: str, cache_dir: Path | None = None) -> Check:
    """A model given as a path (a file, or a diffusers folder) must exist; a hub id must already be in
    the HF cache (offline)."""
    if _looks_like_path(ref):
        path = Path(ref).expanduser()
        if path.exists() and os.access(path, os.R_OK):
            return Check(name, Status.OK, f"{'folder' if path.is_dir() else 'file'} {path}")
        return Check(name, Status.FAIL, f"not found or unreadable: {path}", "fix the path in your config")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HFValidationError
    except ImportError:
        return Check(name, Status.FAIL, "huggingface_hub is not installed", "pip install huggingface_hub")
    try:
        local = snapshot_download(ref, local_files_only=True, cache_dir=cache_dir)
    except HFValidationError as exc:  # its message already says what shape a repo id takes
        return Check(
            name, Status.FAIL, f"{ref!r} is not a valid hub id: {exc}", "fix the model name in your config"
        )
    except Exception:  # LocalEntryNotFoundError and kin: nothing usable offline; a class name helps no user
        return Check(
            name,
            Status.FAIL,
            f"hub id {ref!r} is not in the local Hugging Face cache",
            f"download it once while online: hf download {ref}",
        )
    return Check(name, Status.OK, f"hub id {ref} cached at {local}")


def check_active_preset(config: Config, name: str, source: str) -> Check:
    """The preset the service runs (`source`: where that choice comes from) exists and can run."""
    change = "choose another with `naiup preset NAME` (or the tray)"
    preset = config.presets.get(name)
    if preset is None:
        known = ", ".join(sorted(config.presets))
        return Check(
            "active preset", Status.FAIL, f"{name!r}, {source}, is not in the config (known: {known})", change
        )
    missing = config.missing_for(preset)
    if missing:
        return Check(
            "active preset",
            Status.FAIL,
            f"{name} ({source}) cannot run: it needs {missing}",
            f"add it, or {change}",
        )
    return Check("active preset", Status.OK, f"{name} ({source})")


def check_models(config: Config, active_name: str | None = None) -> list[Check]:
    """`active_name`: the preset the service runs (default: the config's daemon.active_preset)."""
    users = config.model_set_users()
    if not users:
        return [Check("models", Status.OK, "no preset refines: the SD models are not needed")]
    active = config.presets.get(active_name or config.daemon.active_preset)
    out: list[Check] = []
    for name, presets in users.items():
        try:
            model = config.model_set(name)
        except ConfigError:  # a built-in set not filled in: its presets wait for it
            out.append(Check(f"model set {name}", Status.NOTE, config.unfilled_note(name, presets)))
            continue
        checks = _check_model_set(model, name, config.model)
        if active is not None and (not active.refine or active.model != name):
            # Models only presets other than the active one use matter after switching to one of them.
            unused = f"used by {', '.join(presets)}, not by the active preset {active.name!r}"
            checks = [
                replace(c, status=Status.NOTE, detail=f"{c.detail} ({unused})")
                if c.status is Status.FAIL
                else c
                for c in checks
            ]
        out += checks
    return out


def _check_model_set(m: ModelConfig, name: str, default: ModelConfig) -> list[Check]:
    """The files and hub ids of set `name`, named "<name> checkpoint" and so on ("checkpoint" for
    [model]). The machine keys a set took from [model] are checked once, with [model]."""
    prefix = "" if m is default else f"{name} "
    table = set_key(name)
    out = [check_model_ref(f"{prefix}checkpoint", m.checkpoint)]
    if m.lcm_lora:
        out.append(check_model_ref(f"{prefix}lcm-lora", m.lcm_lora))
    if m.vae:
        out.append(check_model_ref(f"{prefix}vae", m.vae))
    if m.controlnet:
        out.append(check_model_ref(f"{prefix}controlnet", m.controlnet))
    out += [check_model_ref(f"{prefix}lora {lora.path}", lora.path) for lora in m.loras]
    own = m is default
    if 0 < m.max_vram_gb < SD15_MIN_VRAM_GIB and (own or m.max_vram_gb != default.max_vram_gb):
        out.append(
            Check(
                f"{prefix}gpu memory cap",
                Status.WARN,
                f"{table}.max_vram_gb = {m.max_vram_gb:g}: SD1.5's weights alone take ~2.2 GB, so refining "
                "presets will run out of memory",
                f"raise {table}.max_vram_gb to at least {SD15_MIN_VRAM_GIB:g}"
                " (4 keeps 4x within a 6 GB card)",
            )
        )
    for d in m.lora_dirs if own else sorted(set(m.lora_dirs) - set(default.lora_dirs)):
        ok = Path(d).expanduser().is_dir()
        out.append(
            Check(
                f"{prefix}lora dir {d}",
                Status.OK if ok else Status.WARN,
                "found" if ok else "not a folder",
                "" if ok else f"fix {table}.lora_dirs in your config",
            )
        )
    return out


def check_upscalers(config: Config, active_name: str | None = None) -> list[Check]:
    """Every preset's upscaler must be findable; a missing one blocks only if the active preset uses it
    (the built-in 4x weights are not shipped, so `refine-4x` needs a download the user may not know of).
    `active_name`: the preset the service runs (default: the config's daemon.active_preset)."""
    from naiup.engine.upscale.upscaler import find_upscaler
    from naiup.errors import ModelLoadError

    users: dict[str, list[str]] = {}
    for name, preset in sorted(config.presets.items()):
        users.setdefault(preset.upscaler, []).append(name)
    out = []
    for spec, presets in users.items():
        try:
            where = find_upscaler(spec)
        except ModelLoadError as exc:
            active = (active_name or config.daemon.active_preset) in presets
            detail = f"{exc} (used by {', '.join(presets)})"
            out.append(Check(f"upscaler {spec}", Status.FAIL if active else Status.NOTE, detail))
            continue
        found = "no weights needed" if where is None else f"found {where}"
        out.append(Check(f"upscaler {spec}", Status.OK, found))
    return out


def check_device(device: str, key: str = "model") -> Check | None:
    """A device the config names explicitly ([model], or the [models.NAME] table `key` names) must
    exist; "auto" falls back to the CPU by design."""
    kind, _, index = device.partition(":")
    if kind in ("auto", "cpu"):
        return None
    import torch

    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        wanted = int(index) if index.isdigit() else 0
        if wanted < count:
            return Check("device", Status.OK, f"{device}: {torch.cuda.get_device_name(wanted)}")
        seen = f"torch sees {count} CUDA device(s)" if count else "torch sees no CUDA device"
        fix = f'set {key}.device = "auto" (falls back to the CPU) or install a CUDA build of torch'
        return Check("device", Status.FAIL, f"{key}.device = {device!r} but {seen}", fix)
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return Check("device", Status.OK, "mps")
        return Check(
            "device",
            Status.FAIL,
            f"{key}.device = 'mps' but MPS is not available",
            f'set {key}.device = "auto"',
        )
    return None


def check_watch_folders(config: Config) -> list[Check]:
    if not config.watch.folders:
        return [Check("watch folders", Status.FAIL, "none configured", "add watch.folders to your config")]
    out = []
    for folder in config.watch.folders:
        try:
            os.listdir(folder)  # the real test: macOS privacy (TCC) lets stat pass and listing fail
        except FileNotFoundError:
            out.append(
                Check(f"watch {folder}", Status.FAIL, "does not exist", "create it or fix watch.folders")
            )
        except PermissionError:
            fix = "grant naiup access to it"
            if sys.platform == "darwin":
                fix = "System Settings > Privacy & Security > Files and Folders: allow the naiup interpreter"
            out.append(Check(f"watch {folder}", Status.FAIL, "not readable (permission denied)", fix))
        except OSError as exc:
            out.append(
                Check(f"watch {folder}", Status.FAIL, f"not readable ({exc.strerror})", "check the folder")
            )
        else:
            out.append(Check(f"watch {folder}", Status.OK, "readable"))
    return out


def check_pause_rules(config: Config) -> list[Check]:
    """Only the GPU rule needs something installed; battery and process rules use psutil."""
    if config.pause.gpu_busy_percent <= 0:
        return []
    from naiup.daemon.pause_rules import SystemSensors

    if SystemSensors().gpu_busy_percent() is None:
        return [
            Check(
                "pause rule gpu",
                Status.WARN,
                "pause.gpu_busy_percent is set but the GPU use of other programs cannot be read",
                "pip install nvidia-ml-py (NVIDIA GPUs only), or set pause.gpu_busy_percent = 0",
            )
        ]
    return [Check("pause rule gpu", Status.OK, "GPU use of other programs is readable (NVML)")]


def check_tray(tray_backend: Callable[[], str | None] | None = None) -> Check:
    if tray_backend is None:
        from naiup.tray.backend import backend_name

        tray_backend = backend_name
    name = tray_backend()
    if name is None:
        return Check(
            "tray",
            Status.WARN,
            "no tray backend or display here (the service works without it)",
            "see README 'Desktop' for what to install per OS",
        )
    if name == "xorg":
        return Check(
            "tray",
            Status.WARN,
            "xorg fallback: icon only, no menu, no notifications",
            "install PyGObject + AppIndicator (README 'Desktop')",
        )
    return Check("tray", Status.OK, f"pystray backend {name}")


def check_autostart() -> Check:
    from naiup.service.autostart import entry_state, plan_autostart

    try:
        plan = plan_autostart()
    except NaiupError as exc:
        return Check("autostart", Status.WARN, str(exc))
    states = {e.what: entry_state(e) for e in plan.entries}
    detail = ", ".join(f"{what} {state}" for what, state in states.items())
    if all(s == "installed" for s in states.values()):
        return Check("autostart", Status.OK, detail)
    return Check("autostart", Status.WARN, detail, "naiup service install")


def check_daemon(connect: Callable[[], Any] | None = None) -> Check:
    from naiup.control.protocol import Status as DaemonStatus  # doctor's own Status is a check's

    if connect is None:
        from naiup.control.client import ControlClient

        connect = ControlClient.connect
    try:
        client = connect()
    except NaiupError as exc:
        return Check("daemon", Status.WARN, f"not running ({exc})", "naiup run  (or: naiup service install)")
    try:
        reply = client.request("ping")
        status = DaemonStatus.from_json(client.request("status"))
    except (NaiupError, OSError, EOFError) as exc:
        return Check("daemon", Status.WARN, f"not answering ({exc})", "naiup stop; naiup run")
    finally:
        client.close()
    detail = f"running, pid {reply.get('pid')} version {reply.get('version')}, {status.state}"
    if status.pause_reason:
        detail += f" ({status.pause_reason})"
    problem = status.engine_error or status.config_error
    if problem:
        return Check("daemon", Status.WARN, f"{detail}: {problem}", "see `naiup status` and the daemon log")
    return Check("daemon", Status.OK, detail)


def format_checks(checks: list[Check]) -> list[str]:
    lines = []
    for c in checks:
        lines.append(f"[{c.status.value:>4}] {c.name}: {c.detail}")
        if c.fix and c.status is not Status.OK:
            lines.append(f"       fix: {c.fix}")
    return lines
