"""The package's structure as a contract: stages import downwards only, no module cycles, and the
API and the Spark workers stay free of what they do not need."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[3] / "include" / "propensity"
# Which sub-packages a sub-package may import (directly or lazily, inside functions).
ALLOWED = {
    "core": set(),
    "ingest": {"core"},
    "features": {"core", "ingest"},
    # The training DAG's steps deploy (serving) and leave the champion's drift reference (monitoring).
    "training": {"core", "ingest", "features", "serving", "monitoring"},
    "serving": {"core", "features"},
    "batch": {"core", "features", "serving"},
    "monitoring": {"core", "features"},
}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("propensity"):
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("propensity"))
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {i for i in _imports(path) if i in modules and i != name} for name, path in modules.items()}


def test_every_stage_imports_only_the_stages_below_it(graph):
    wrong = []
    for module, imported in graph.items():
        parts = module.split(".")
        if len(parts) < 3 or parts[1] not in ALLOWED:
            continue  # cli.py and demo.py sit above every stage
        for target in imported:
            stage = target.split(".")[1] if target.count(".") >= 1 else ""
            if stage in ALLOWED and stage != parts[1] and stage not in ALLOWED[parts[1]]:
                wrong.append(f"{module} imports {target}")
    assert wrong == []


def test_there_is_no_import_cycle(graph):
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


@pytest.mark.parametrize(
    ("module", "absent"),
    [
        ("propensity.serving.app", "pyspark"),  # the API never needs Spark
        ("propensity.features.spec", "pyspark"),  # the feature contract is Spark-free
        ("propensity.core.stats", "sklearn"),  # the drift venv measures with the same code
        ("propensity.batch.worker", "pyspark.sql"),  # Spark's Python workers load only what they use
    ],
)
def test_importing_a_module_does_not_pull_in(module, absent):
    code = f"import sys, {module}; print({absent!r} in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_no_module_is_over_500_lines_without_a_reason():
    long = []
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        if text.count("\n") > 500 and "Over 500 lines" not in text[:1000]:
            long.append(f"{path.relative_to(PACKAGE)}: {text.count(chr(10))} lines")
    assert long == []
