"""`naiup info`: the generation metadata of images, as text or JSON lines."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from naiup.cli.command import AddCommand


def register(add: AddCommand) -> None:
    p = add("info", _cmd_info, "show the generation metadata of images")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE")
    p.add_argument("--json", action="store_true", help="one JSON object per line")


def _cmd_info(args: argparse.Namespace) -> int:
    from naiup.info import describe, format_human

    # Prompts hold any script; a legacy console encoding must not crash the summary.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
    failed = False
    for i, path in enumerate(args.files):
        record = describe(path)
        failed = failed or record["error"] is not None
        if args.json:
            print(json.dumps(record), flush=True)
        elif record["error"]:
            print(f"error: {record['error']}", file=sys.stderr, flush=True)
        else:
            print(("\n" if i else "") + format_human(record), flush=True)
    return 1 if failed else 0
