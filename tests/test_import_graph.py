"""The package's import graph, read with `ast` from every module under naiup/: no import cycles, and
the packages that the daemon's light side, the tray and the CLI's config commands use never load torch.

Which imports count as edges:
- Module-level imports, including those inside a module-level `if`/`try`: they run while the module
  is being imported, so a cycle among them can hand a module to another half-initialised (an
  ImportError or AttributeError that depends on which module happened to be imported first).
- Not `if TYPE_CHECKING:` imports: they never run.
- Function-local imports run at call time, when every module involved has finished importing, so they
  cannot break an import. They are how a heavy dependency is deferred, and also how a cycle gets
  hidden: cycles through them are allowed only where KNOWN_LOCAL_CYCLES lists them with a reason, so
  a new one is a decision someone made, not an accident.
An import names a module (`from naiup.a import b` is an edge to naiup.a.b when that is a module, else
to naiup.a, whose __init__ then runs).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import naiup

PKG = Path(naiup.__file__).parent
LIGHT_PACKAGES = ("naiup.metadata", "naiup.config", "naiup.control", "naiup.tray")
# Function-local cycles that exist on purpose, with why; keep this list short.
KNOWN_LOCAL_CYCLES: dict[frozenset[str], str] = {
    frozenset({"naiup.engine.models.load", "naiup.engine.models.sdxl_single_file"}): (
        "load dispatches SDXL single files to sdxl_single_file, which builds load's SDModels and reuses "
        "its unet_and_vae; moving those two into their own module would remove it"
    ),
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PKG.rglob("*.py"):
        parts = path.relative_to(PKG.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: from the module's package upwards
        package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]


def _imports(module: str, *, local: bool) -> set[str]:
    """The naiup modules `module` imports: at module level, and with `local` inside functions too."""
    found: set[str] = set()

    def visit(body: list[ast.stmt], in_function: bool) -> None:
        for node in body:
            if isinstance(node, ast.Import | ast.ImportFrom) and (local or not in_function):
                found.update(t for t in _targets(module, node) if t in MODULES and t != module)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            inner = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            for block in ("body", "orelse", "finalbody", "handlers"):
                stmts = getattr(node, block, None)
                if isinstance(stmts, list):
                    visit(stmts, inner)

    visit(ast.parse(MODULES[module].read_text(encoding="utf-8")).body, False)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def test_the_cycle_finder_finds_cycles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e", "d"}}
    assert _cycles(graph) == [frozenset({"a", "b", "c"})]


def test_module_level_imports_have_no_cycle():
    graph = {m: _imports(m, local=False) for m in MODULES}
    assert len(graph) > 50 and sum(map(len, graph.values())) > 100  # the walk found the package
    assert _cycles(graph) == [], "import cycle among naiup modules (module-level imports)"


def test_function_local_imports_add_only_the_known_cycles():
    cycles = _cycles({m: _imports(m, local=True) for m in MODULES})
    assert [c for c in cycles if c not in KNOWN_LOCAL_CYCLES] == []
    gone = [sorted(c) for c in KNOWN_LOCAL_CYCLES if c not in cycles]
    assert gone == [], f"no longer a cycle: remove it from KNOWN_LOCAL_CYCLES: {gone}"


def test_light_packages_never_import_torch():
    # Every module of these packages, in a fresh interpreter: the tray, the control channel and the
    # daemon's metadata reading start in well under a second only while torch stays out. naiup.testing
    # is imported by tests and bench, which must be able to use it before choosing to load torch.
    names = [m for m in MODULES if m.startswith(LIGHT_PACKAGES)] + ["naiup.testing"]
    assert {"naiup.metadata.read", "naiup.config.load", "naiup.control.client", "naiup.tray.app"} <= set(
        names
    )
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(PKG.parent)}
    env.pop("DISPLAY", None)  # the tray modules must import without a display too
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]", f"loaded by importing {LIGHT_PACKAGES}: {run.stdout}"
