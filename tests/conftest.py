"""Shared test fixtures: where the read-only shared folder is, and offline guards."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NAIUP_SHARED", REPO.parent / "shared"))
NAI_FIXTURES = SHARED / "fixtures" / "nai"
OTHER_FIXTURES = SHARED / "fixtures" / "other"
WEIGHTS = SHARED / "weights"

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def nai_fixtures() -> Path:
    """Real NovelAI files; tests that need them skip only when the shared folder is absent."""
    if not NAI_FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not found at {NAI_FIXTURES}")
    return NAI_FIXTURES


@pytest.fixture(scope="session")
def other_fixtures() -> Path:
    if not OTHER_FIXTURES.is_dir():
        pytest.skip(f"shared fixtures not found at {OTHER_FIXTURES}")
    return OTHER_FIXTURES


@pytest.fixture(scope="session")
def shared_weights() -> Path:
    if not WEIGHTS.is_dir():
        pytest.skip(f"shared weights not found at {WEIGHTS}")
    return WEIGHTS
