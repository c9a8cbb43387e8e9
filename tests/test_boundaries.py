import re
from pathlib import Path

import naiup

PKG = Path(naiup.__file__).parent


def _imports_in(folder: str) -> str:
    return "\n".join(p.read_text() for p in (PKG / folder).rglob("*.py"))


def test_engine_imports_nothing_from_the_service_layers():
    assert not re.search(r"^\s*(from|import) naiup\.(daemon|job|cli|service)", _imports_in("engine"), re.M)


def test_service_imports_nothing_from_the_engine():
    assert not re.search(r"^\s*(from|import) naiup\.engine", _imports_in("service"), re.M)


def test_job_never_imports_the_daemon():
    assert not re.search(r"^\s*(from|import) naiup\.(daemon|cli)", (PKG / "job.py").read_text(), re.M)
