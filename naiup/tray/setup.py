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
from naiup.errors import NaiupError
from naiup.tray import host as tray_host
from naiup.tray.app import TrayApp
from naiup.tray.backend import TrayUnavailableError, load_pystray, spawn_daemon

log = logging.getLogger(__name__)


def run_tray(
    config_path: Path | None = None,
    backend: str | None = None,
    state_file: Path | None = None,
    actions_file: Path | None = None,
    exit_after: float | None = None,
    client_factory: str | None = None,
    host_wait: float | None = None,
) -> int:
    _configure_logging()
    # Models are the daemon's business (it runs without them and says why in status, shown here).
    config = load_config(config_path, model_files_must_exist=False)
    # The backend first: "no display" is the likeliest failure and must be one clear line.
    pystray = load_pystray(backend)
    host_wait = tray_host.WAIT_SECONDS if host_wait is None else host_wait
    host = tray_host.HostWatch.for_backend(pystray.Icon.__module__.rsplit("._", 1)[-1])
    if host is not None and host.present() is False:
        log.info("no tray host yet; waiting up to %.0f s for one", host_wait)
    if host is not None and not tray_host.wait_for_host(host, host_wait):
        host.close()
        raise TrayUnavailableError(
            "tray: no tray host on this desktop: nothing shows tray icons here (GNOME needs the "
            "AppIndicator extension; elsewhere, a panel with a notification area). "
            "The service itself does not need the tray."
        )
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
        host=host,
        host_wait=host_wait,
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
    from naiup.control.channel import ControlClient

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
