"""The architecture as docs/architecture.md states it: the paths it names exist, imports run
one way, and there are no import cycles."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "buttress"
DOC = ROOT / "docs" / "architecture.md"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def runtime_imports(path: Path) -> set[str]:
    """The buttress modules ``path`` imports when it is imported (not the ones imported only
    for type checking or inside a function)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        for child in [node] if not isinstance(node, ast.Try) else node.body:
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                found.add(child.module)
    return {name for name in found if name == "buttress" or name.startswith("buttress.")}


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH = {name: runtime_imports(path) for name, path in MODULES.items()}


def test_every_path_the_architecture_page_names_exists() -> None:
    text = DOC.read_text()
    names = set(re.findall(r"(?<![\w/.])((?:\w+/)*\w+\.py)\b", text))
    names |= set(re.findall(r"`((?:\w+/)+)`", text))
    names |= set(re.findall(r"^\s+(?:\S+\s+)*?(\w+/)\s", text, re.M))
    files = [p.relative_to(ROOT).as_posix() for p in ROOT.glob("src/buttress/**/*")]
    missing = [n for n in sorted(names)
               if not (ROOT / n).exists() and not any(f.endswith("/" + n.rstrip("/"))
                                                       for f in files)]
    assert missing == []
    assert len(names) > 40  # the page does name the layout


@pytest.mark.parametrize(("layer", "forbidden"), [
    ("buttress.backends", ("buttress.cache", "buttress.guardrails", "buttress.features",
                           "buttress.pipeline", "buttress.http", "buttress.interface")),
    ("buttress.resilience", ("buttress.pipeline", "buttress.http", "buttress.backends",
                             "buttress.interface", "buttress.cache", "buttress.batching")),
    ("buttress.interface", ("buttress.pipeline", "buttress.http", "buttress.backends",
                            "buttress.resilience", "buttress.cache", "buttress.features")),
    ("buttress.pipeline", ("buttress.http", "buttress.cli", "buttress.dashboard")),
    ("buttress.dashboard", ("buttress.http", "buttress.cli")),
    ("buttress.observability", ("buttress.dashboard", "buttress.http", "buttress.pipeline")),
    ("buttress.cache", ("buttress.pipeline", "buttress.http")),
    ("buttress.guardrails", ("buttress.pipeline", "buttress.http")),
    ("buttress.features", ("buttress.pipeline", "buttress.http")),
    ("buttress.batching", ("buttress.pipeline", "buttress.http")),
    ("buttress.runners", ("buttress.pipeline", "buttress.http")),
    ("buttress.oip", ("buttress.pipeline", "buttress.http")),
    ("buttress.registry", ("buttress.pipeline", "buttress.http")),
])
def test_imports_run_one_way(layer: str, forbidden: tuple[str, ...]) -> None:
    wrong = sorted(f"{module} imports {target}" for module, targets in GRAPH.items()
                   if module == layer or module.startswith(layer + ".")
                   for target in targets if target.startswith(forbidden))
    assert wrong == []


def test_no_import_cycles() -> None:
    """Between modules, as Python resolves them at import time (a package's ``__init__``
    importing its own submodules is how a package exposes them, not a cycle)."""
    def edges(module: str) -> set[str]:
        return {t for t in GRAPH.get(module, set())
                if t in GRAPH and not module.startswith(t + ".") and t != module}

    cycles: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        stack.append(module)
        for target in edges(module):
            if state.get(target) == 1:
                cycles.append([*stack[stack.index(target):], target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[module] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module)
    assert cycles == []


def test_no_module_is_over_400_lines() -> None:
    long = {name: n for name, path in MODULES.items()
            if (n := len(path.read_text().splitlines())) > 400}
    assert long == {}
