"""What every command module of the CLI shares: the handler type and how it adds its subcommands."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

from naiup.errors import NaiupError

if TYPE_CHECKING:
    from naiup.config import Config, Preset

# A command: parsed arguments in, exit status out. Errors are raised, never turned into a status here:
# main() maps them (NaiupError 1, DaemonNotRunning 3) in one place.
Handler = Callable[[argparse.Namespace], int]

# add(name, handler, help) -> the subcommand's parser, for the module to add its own arguments to.
AddCommand = Callable[[str, Handler, str], argparse.ArgumentParser]


def chosen_preset(config: Config, name: str | None) -> Preset:
    """The preset a command's --preset names, else the active one. An unknown --preset is the option's
    mistake, not the config file's: the message names the option, not the file."""
    if name is not None and name not in config.presets:
        known = ", ".join(sorted(config.presets))
        raise NaiupError(f"--preset {name!r}: unknown preset (known: {known})")
    return config.preset(name or config.daemon.active_preset)
