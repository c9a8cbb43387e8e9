"""Run a Python script in a fresh interpreter with the Hugging Face hub offline and an empty HF home,
so a test can prove a model loads from bundled files alone (an import cached in this process, or a
model already in the developer's HF cache, would hide a download)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_offline(script: str, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    """(the finished process, the HF home it used), for the test to assert on both."""
    hf_home = tmp_path / "empty-hf-home"
    hf_home.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home), "PYTHONPATH": str(REPO)}
    env.pop("HF_HUB_CACHE", None)
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=240
    )
    return proc, hf_home
