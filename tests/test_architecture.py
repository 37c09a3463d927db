"""The layers point down only, no module imports itself through others, and downstream code reaches a run's task
only through the Predictor. `make test` runs `lint-imports`; these tests show that its contracts bite."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "dlforge"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(src: Path) -> subprocess.CompletedProcess:
    """`lint-imports` with the project's contracts over the package under `src` (its parent on PYTHONPATH)."""
    return subprocess.run([str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                          capture_output=True, text=True, cwd=src.parent, timeout=300,
                          env={"PYTHONPATH": str(src.parent), "PATH": "/usr/bin:/bin"})


def test_the_layer_contracts_hold_and_one_upward_import_breaks_them(tmp_path: Path) -> None:
    assert lint_imports(SRC).returncode == 0
    copy = Path(shutil.copytree(SRC, tmp_path / "src" / "dlforge", ignore=shutil.ignore_patterns("__pycache__")))
    tasks = copy / "tasks" / "base.py"  # a lazy import inside a function counts as much as one at the top
    tasks.write_text(tasks.read_text() + "\n\ndef _upward() -> None:\n    from dlforge.predictor import Predictor  "
                                         "# noqa: F401\n")
    broken = lint_imports(copy)
    assert broken.returncode == 1
    assert "dlforge.tasks is not allowed to import dlforge.predictor" in broken.stdout


def _cycles(nodes: list[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while (w := stack.pop()) != v:
                component.append(w)
            if component:
                found.append(sorted([v, *component]))

    for v in nodes:
        if v not in index:
            visit(v)
    return found


def test_no_module_or_package_imports_itself_through_others() -> None:
    graph = grimp.build_graph("dlforge", exclude_type_checking_imports=True, cache_dir=None)
    modules = sorted(graph.modules)
    edges = {m: set(graph.find_modules_directly_imported_by(m)) for m in modules}
    assert _cycles(modules, edges) == []

    def package(module: str) -> str:
        return ".".join(module.split(".")[:2])

    packages = sorted({package(m) for m in modules})
    between = {p: set() for p in packages}
    for m in modules:
        between[package(m)] |= {package(d) for d in edges[m]} - {package(m)}
    assert _cycles(packages, between) == []


def test_downstream_code_reaches_the_task_only_through_the_predictor() -> None:
    """Outside the Predictor, the pipeline and the training loop, no code reads `<something>.task.<attribute>` (a
    run's task internals): it uses the Predictor's surface or a declared capability."""
    allowed = {SRC / "predictor.py", SRC / "pipeline.py", SRC / "training" / "trainer.py"}
    reaching = []
    for path in sorted(SRC.rglob("*.py")):
        if path in allowed:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) \
                    and node.value.attr == "task" and _name(node.value.value) != "spec":  # spec.task: a name
                reaching.append(f"{path.relative_to(SRC)}:{node.lineno} .task.{node.attr}")
    assert reaching == []


def _name(node: ast.expr) -> str | None:
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None
