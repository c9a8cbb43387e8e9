import ast
import re
from pathlib import Path

import pytest

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


def _imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at its top or inside a function (a lazy import counts too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from naiup import daemon` imports naiup.daemon: name the submodules too
            found.update([node.module, *(f"{node.module}.{alias.name}" for alias in node.names)])
    return found


# `naiup run` makes the CLI's process the daemon: it is not a client, and the only way in.
CLIENT_EXCEPTIONS = {PKG / "cli" / "run.py"}


@pytest.mark.parametrize("folder", ["tray", "cli", "control"])
def test_clients_and_the_protocol_never_import_the_daemon(folder: str):
    """The tray and the CLI are clients of the daemon (another process): they reach it only through
    naiup.control. control/ is what both sides share, so it imports neither side."""
    files = sorted(set((PKG / folder).rglob("*.py")) - CLIENT_EXCEPTIONS)
    assert files
    forbidden = ("naiup.daemon", "naiup.tray", "naiup.cli") if folder == "control" else ("naiup.daemon",)
    offenders = {
        f"{path.relative_to(PKG)}: {name}"
        for path in files
        for name in _imported_modules(path)
        if any(name == f or name.startswith(f"{f}.") for f in forbidden)
    }
    assert offenders == set()


def test_the_boundary_check_sees_a_lazy_daemon_import():
    # The check above would pass on anything if it missed the lazy import `naiup run` does.
    assert "naiup.daemon.daemon" in _imported_modules(PKG / "cli" / "run.py")
