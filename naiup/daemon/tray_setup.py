"""Entry point behind `naiup tray`: logging, config, backend and client choice, then TrayApp.run()."""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from naiup import paths
from naiup.config import default_config_path, load_config
from naiup.daemon.tray import TrayApp
from naiup.daemon.tray_backend import load_pystray, spawn_daemon
from naiup.errors import NaiupError

log = logging.getLogger(__name__)


def run_tray(
    config_path: Path | None = None,
    backend: str | None = None,
    state_file: Path | None = None,
    actions_file: Path | None = None,
    exit_after: float | None = None,
    client_factory: str | None = None,
) -> int:
    _configure_logging()
    # Models are the daemon's business (it runs without them and says why in status, shown here).
    config = load_config(config_path, model_files_must_exist=False)
    # The backend first: "no display" is the likeliest failure and must be one clear line.
    pystray = load_pystray(backend)
    factory = _resolve_factory(client_factory)
    log.info("tray starting backend=%s", pystray.Icon.__module__)
    app = TrayApp(
        client_factory=factory,
        pystray_module=pystray,
        config_path=str(config.source or config_path or default_config_path()),
        notifications=config.daemon.notifications,
        # "Start service" must start a daemon on the file this tray was given, not the default one.
        start_daemon=lambda: spawn_daemon(str(Path(config_path).absolute()) if config_path else None),
        state_file=state_file,
        actions_file=actions_file,
        exit_after=exit_after,
    )
    return app.run()


def _resolve_factory(spec: str | None) -> Callable[[], Any]:
    """`module:function` (tests pass a stand-in daemon), else the real control client."""
    if spec:
        module, _, attr = spec.partition(":")
        try:
            return getattr(importlib.import_module(module), attr or "connect")
        except (ImportError, AttributeError) as exc:
            raise NaiupError(f"tray: cannot load client factory {spec!r} ({exc})") from exc
    from naiup.daemon.control import ControlClient

    return ControlClient.connect


def _configure_logging() -> None:
    # Under pythonw (Windows autostart) there is no stderr at all.
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)] if sys.stderr else []
    try:
        log_dir = paths.log_dir()
        log_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_dir / "tray.log", encoding="utf-8"))
    except OSError as exc:
        log.warning("tray log file unavailable err=%s", exc)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", handlers=handlers
    )
