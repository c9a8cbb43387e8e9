"""The repository stays ruff-clean: the README's test command (which installs [dev]) checks it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


NO_RUFF = importlib.util.find_spec("ruff") is None


@pytest.mark.skipif(NO_RUFF, reason="ruff not installed (pip install -e '.[dev]')")
def test_ruff_finds_nothing_to_fix():
    run = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", str(REPO)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stdout + run.stderr
