"""The `naiup` command line. Thin: parses arguments, then calls job.py (refine) or the control client."""

from naiup.cli.main import main

__all__ = ["main"]
