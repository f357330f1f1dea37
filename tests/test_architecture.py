"""The package's shape, checked from its source: no import cycle, the core imports no data
kind, and no branch on a kind's name outside the kind modules and their registry."""

from __future__ import annotations

import ast
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "meap_data")


def _modules() -> dict[str, str]:
    """Module name -> file path, for every module of the package."""
    out = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, name), ROOT)[:-3].replace(os.sep, ".")
                out[rel[: -len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(folder, name)
    return out


def _imports(module: str, path: str, known: set[str]) -> set[str]:
    """Package modules ``module`` imports anywhere in its file (function bodies too)."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parts = parts[: len(parts) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n for n in names if n in known and n != module}
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(m, p, set(modules)) for m, p in modules.items()}


def test_no_import_cycle(graph):
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = stack[stack.index(n):] + [n]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_the_core_imports_no_kind(graph):
    from meap_data.kinds import KINDS

    kind_modules = {spec.split(":")[0] for spec in KINDS.values()}
    assert kind_modules == {"meap_data.kinds.text", "meap_data.kinds.rust"}
    for module, imported in graph.items():
        if module.startswith("meap_data.kinds"):
            continue
        assert not imported & kind_modules, f"{module} imports a kind module: {sorted(imported & kind_modules)}"


def test_no_branch_on_a_kind_name_outside_the_kinds():
    pattern = re.compile(r"\bkind\s*[!=]=|[!=]=\s*[\"'](text|rust)[\"']|\btask\s*[!=]=")
    offenders = []
    for module, path in _modules().items():
        if module.startswith("meap_data.kinds"):
            continue
        for number, line in enumerate(open(path, encoding="utf-8"), 1):
            if pattern.search(line):
                offenders.append(f"{os.path.relpath(path, ROOT)}:{number}: {line.strip()}")
    assert offenders == []
