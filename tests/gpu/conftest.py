"""tests/gpu: what only a real CUDA GPU can show. Every test here is marked `gpu` and skipped, with
its reason, where torch sees no CUDA GPU (CI, a laptop without NVIDIA): nothing is stubbed, so on a
GPU these run the very torch calls the CPU tests cannot. bench/gpu/run.sh runs them first.

    python -m pytest tests/gpu -q -rs        # on a GPU: under 3 minutes
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent
sys.path.insert(0, str(TESTS / "daemon"))  # daemon_harness: the real `naiup run` in temp folders

from daemon_harness import REPO, DaemonRun  # noqa: E402

NO_CUDA = "needs a CUDA GPU: torch.cuda.is_available() is False here"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    cuda = torch.cuda.is_available()
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.gpu)
            if not cuda:
                item.add_marker(pytest.mark.skip(reason=NO_CUDA))


@pytest.fixture(scope="session")
def cuda() -> torch.device:
    from naiup.engine.device import pick_device

    return pick_device("cuda")


@pytest.fixture
def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DaemonRun]:
    """A real daemon in temp folders (as tests/daemon's fixture), keeping this interpreter's path so
    the spawned worker finds the same torch and diffusers."""
    dirs = {f"NAIUP_{k}_DIR": str(tmp_path / k.lower()) for k in ("STATE", "LOG", "RUNTIME", "CONFIG")}
    for key, value in dirs.items():
        monkeypatch.setenv(key, value)
    paths = [str(REPO), str(TESTS / "daemon"), str(TESTS), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, **dirs, "HF_HUB_OFFLINE": "1", "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    run = DaemonRun(tmp_path, env)
    yield run
    if run.proc is not None and run.proc.poll() is None:
        run.stop()
