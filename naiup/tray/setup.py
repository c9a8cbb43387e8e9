"""Entry point behind `naiup tray`: logging, config, backend and client choice, then TrayApp.run()."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from naiup import paths, seams
from naiup.config import default_config_path, load_config
from naiup.control.client import ControlClient
from naiup.tray import host as tray_host
from naiup.tray.app import TrayApp
from naiup.tray.backend import TrayUnavailableError, load_pystray, spawn_daemon

log = logging.getLogger(__name__)


def run_tray(config_path: Path | None = None, backend: str | None = None) -> int:
    """Show the tray icon until Quit. Tests and scripts drive it through the NAIUP_TRAY_* seams."""
    _configure_logging()
    # Models are the daemon's business (it runs without them and says why in status, shown here).
    config = load_config(config_path, model_files_must_exist=False)
    # The backend first: "no display" is the likeliest failure and must be one clear line.
    pystray = load_pystray(backend)
    host_wait = seams.seconds(seams.TRAY_HOST_WAIT)
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
    factory = seams.optional_factory(seams.TRAY_CLIENT) or ControlClient.connect
    log.info("tray starting backend=%s", pystray.Icon.__module__)
    app = TrayApp(
        client_factory=factory,
        pystray_module=pystray,
        config_path=str(config.source or config_path or default_config_path()),
        notifications=config.daemon.notifications,
        # "Start service" must start a daemon on the file this tray was given, not the default one.
        start_daemon=lambda: spawn_daemon(str(Path(config_path).absolute()) if config_path else None),
        state_file=seams.path(seams.TRAY_STATE_FILE),
        actions_file=seams.path(seams.TRAY_ACTIONS_FILE),
        exit_after=seams.seconds(seams.TRAY_EXIT_AFTER),
        host=host,
        host_wait=host_wait,
    )
    return app.run()


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
