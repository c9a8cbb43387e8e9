"""Time the first-start baseline of one big folder: a directory listing recorded as `existing`.

    python bench/baseline_bench.py               # 20,000 empty placeholder .png files
    python bench/baseline_bench.py --files 100000 --keep

Builds the folder in a temp dir, then times: the listing alone (catchup.list_images), the baseline
(the daemon's first scan of the folder: listing + one ledger transaction) and the rescan that follows
every rescan_seconds (listing + ledger lookups, nothing recorded). Nothing is decoded, so empty files
cost what real images do.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from naiup.config import Config, WatchConfig
from naiup.daemon.catchup import Scanner, list_images
from naiup.daemon.ledger import Ledger
from naiup.daemon.stabiliser import Stabiliser


def _timed(fn: Callable[[], int]) -> tuple[str, int]:
    """Wall and CPU seconds of fn (CPU time says what a busy machine's wall time hides)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return f"{time.perf_counter() - wall:.3f} s wall, {time.process_time() - cpu:.3f} s CPU", result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--keep", action="store_true", help="leave the temp folder for a look")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="naiup-baseline-bench-"))
    folder = root / "Downloads"
    folder.mkdir()
    t = time.perf_counter()
    for i in range(args.files):
        (folder / f"image_{i:06}.png").touch()
    made = time.perf_counter() - t

    ledger = Ledger(root / "state" / "ledger.sqlite3")
    config = Config(watch=WatchConfig(folders=(folder,)))
    stabiliser = Stabiliser(ledger, lambda: config, lambda: None)  # not started: nothing is decided
    scanner = Scanner(ledger, lambda: config, stabiliser)
    listing, listed = _timed(lambda: len(list_images(folder, recursive=False)))
    baseline, hinted = _timed(lambda: scanner.scan((folder,), recursive=False))
    rescan, rehinted = _timed(lambda: scanner.scan((folder,), recursive=False))
    counts = ledger.counts()
    ledger.close()
    assert listed == args.files and hinted == rehinted == 0 and counts == {"existing": args.files}, counts

    print(f"machine: {platform.machine()} {platform.system()} python {platform.python_version()}")
    print(f"files: {args.files} (created in {made:.2f} s)")
    if hasattr(os, "getloadavg"):  # not on Windows
        print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"listing only: {listing}")
    print(f"baseline (first scan, recorded as existing): {baseline}")
    print(f"rescan after it (nothing new): {rescan}")
    if args.keep:
        print(f"kept: {root}")
    else:
        import shutil

        shutil.rmtree(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
