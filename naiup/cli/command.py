"""What every command module of the CLI shares: the handler type and how it adds its subcommands."""

from __future__ import annotations

import argparse
from collections.abc import Callable

# A command: parsed arguments in, exit status out. Errors are raised, never turned into a status here:
# main() maps them (NaiupError 1, DaemonNotRunning 3) in one place.
Handler = Callable[[argparse.Namespace], int]

# add(name, handler, help) -> the subcommand's parser, for the module to add its own arguments to.
AddCommand = Callable[[str, Handler, str], argparse.ArgumentParser]
