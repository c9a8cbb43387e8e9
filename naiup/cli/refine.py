"""`naiup refine FILE...`: refine images now, in the foreground, without the daemon."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path

from naiup.cli.command import AddCommand, chosen_preset
from naiup.errors import InputError, NaiupError
from naiup.pathnames import plain_text, shown


def register(add: AddCommand) -> None:
    p = add("refine", _cmd_refine, "refine images now, in the foreground")
    p.add_argument("files", nargs="+", type=Path, metavar="FILE", help="images to refine")
    p.add_argument("--preset", default=None, help="preset name (default: daemon.active_preset)")


def _cmd_refine(args: argparse.Namespace) -> int:
    """One job per file, in order. Exit 0 if all succeeded, 1 if any failed."""
    from naiup.cli.progress_bar import DownloadBar, ProgressBar
    from naiup.config import load_config

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    config = load_config(args.config)
    preset = chosen_preset(config, args.preset)
    # Its model set: an unfilled [models.xl], or a ControlNet preset whose set names no controlnet, says
    # what to add before any model loads (else a hub error about the checkpoint would hide it).
    model = config.usable_model(preset)
    # torch loads here, after the cheap checks, so a typo in --preset answers at once.
    from naiup.engine import Engine
    from naiup.job import run_job

    if model.unet_graphs == "auto":
        # Compiling the UNet's CUDA graphs costs about a minute per tile-batch shape, once per process,
        # and saves a few seconds per image: the long-running service gains, a one-shot command loses.
        # "on" in the config still forces it here.
        model = dataclasses.replace(model, unet_graphs="off")
    # A hub model's first run downloads it: a bar of its own, bytes of total, before the file's bar.
    engine = Engine(model, on_download=DownloadBar(sys.stderr))
    # The output's name as the file system has it (a script reads it back), undecodable bytes included.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="surrogateescape")
    failed = 0
    for src in args.files:
        bar = ProgressBar(sys.stderr, shown(src.name))
        try:
            result = run_job(src, preset, engine, config, progress=bar)
        except Exception as exc:  # one file's error never stops the next file
            bar.close()
            failed += 1
            if not isinstance(exc, (NaiupError, OSError)):  # a bug: keep its traceback for a report
                logging.getLogger("naiup").debug("refine crashed src=%s", src, exc_info=True)
            print(f"error: {refine_error(src, exc)}", file=sys.stderr)
            continue
        bar.close()
        print(result.output)
    return 1 if failed else 0


def refine_error(src: Path, exc: Exception) -> str:
    """One line: `<file>: <reason>`. An InputError about this file already names it."""
    if isinstance(exc, NaiupError):
        message = str(exc)
    elif isinstance(exc, OSError):
        message = exc.strerror or str(exc)
    else:
        message = f"internal error: {type(exc).__name__}: {exc}"
    names_it = isinstance(exc, InputError) and str(exc.path) == str(src)
    return plain_text(message if names_it else f"{src}: {message}")
