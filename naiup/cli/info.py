"""`naiup info`: the generation metadata of images, as text or JSON lines."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from naiup.cli.command import AddCommand, chosen_preset
from naiup.pathnames import plain_text

if TYPE_CHECKING:
    from naiup.config import Preset


def register(add: AddCommand) -> None:
    p = add("info", _cmd_info, "show the generation metadata of images")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument(
        "--preset", default=None, help="show character regions as this preset runs them (default: active)"
    )


def _cmd_info(args: argparse.Namespace) -> int:
    from naiup.info import describe, format_human

    # Prompts hold any script; a legacy console encoding must not crash the summary.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
    preset = _preset(args)
    failed = False
    for i, path in enumerate(args.files):
        record = describe(path, preset)
        failed = failed or record["error"] is not None
        if args.json:
            print(json.dumps(record), flush=True)
        elif record["error"]:
            print(f"error: {record['error']}", file=sys.stderr, flush=True)
        else:
            print(("\n" if i else "") + format_human(record), flush=True)
    return 1 if failed else 0


def _preset(args: argparse.Namespace) -> Preset | None:
    """The preset whose character regions `info` shows: --preset, else the one the service runs (the
    choice made with `naiup preset` or the tray, else the config's). info reads images, not the
    config: a config that does not load, or an active preset it lacks, only costs the regions, with
    a note why."""
    from naiup.config import load_config
    from naiup.errors import ConfigError
    from naiup.runtime_state import effective_preset

    try:
        config = load_config(args.config, model_files_must_exist=False)
    except ConfigError as exc:
        if args.preset is not None:
            raise
        more = len(exc.problems) - 1  # a file's problems come together: the first says enough here
        also = f" (and {more} more: `naiup config check` lists them)" if more else ""
        print(f"note: character regions not shown: {plain_text(str(exc.problems[0]))}{also}", file=sys.stderr)
        return None
    if args.preset is not None:
        return chosen_preset(config, args.preset)
    name, source = effective_preset(config)
    if name not in config.presets:
        why = f"the active preset {name!r}, {source}, is not in the config"
        print(f"note: character regions not shown: {why}", file=sys.stderr)
        return None
    return config.presets[name]
