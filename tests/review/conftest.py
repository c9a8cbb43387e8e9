"""Review fixtures: private cache and state folders, and a NovelAI image with its naiup output."""

from __future__ import annotations

from pathlib import Path

import pytest
from review_helpers import AWKWARD_DIR, Made, make_pair


@pytest.fixture(autouse=True)
def _private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages, thumbnails and the ledger in the test's own folders, never the user's."""
    monkeypatch.setenv("NAIUP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("NAIUP_STATE_DIR", str(tmp_path / "state"))


@pytest.fixture
def made(tmp_path: Path, nai_fixtures: Path) -> Made:
    return make_pair(tmp_path / AWKWARD_DIR, nai_fixtures)
