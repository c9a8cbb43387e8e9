"""Autostart at login per OS (`naiup service`). Imports nothing from the engine or the daemon."""

from naiup.service.autostart import (
    Entry,
    Plan,
    Report,
    ServiceError,
    install,
    plan_autostart,
    status,
    uninstall,
)
from naiup.service.command import naiup_command

__all__ = [
    "Entry",
    "Plan",
    "Report",
    "ServiceError",
    "install",
    "naiup_command",
    "plan_autostart",
    "status",
    "uninstall",
]
