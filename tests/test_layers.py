"""The package's shape: no import cycles (not even for types), and no class that holds more
than one idea. Both are read from the source with ``ast``, nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "sanic_feeds"

MAX_CLASS_LINES = 250
"""A class past this holds two ideas (see STYLE.md); split it."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> set[str]:
    """Every package module ``path`` imports, at any depth of the file (TYPE_CHECKING too)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("sanic_feeds"):
                found.add(target)
                for alias in node.names:  # ``from . import protocol`` names a module
                    found.add(f"{target}.{alias.name}")
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("sanic_feeds")}
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: imports_of(path) & set(modules) - {name} for name, path in modules.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path of module names, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        path.append(name)
        for target in sorted(edges.get(name, ())):
            if target == "sanic_feeds":
                continue  # the package's own __init__ re-exports; it imports, nobody imports it
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)) is not None:
                return cycle
        path.pop()
        state[name] = 2
        return None

    for name in sorted(edges):
        if name not in state and (cycle := visit(name)) is not None:
            return cycle
    return None


def test_the_package_has_no_import_cycle() -> None:
    assert find_cycle(graph()) is None, " -> ".join(find_cycle(graph()) or [])


def test_the_cycle_finder_finds_cycles() -> None:
    """The check above can fail: a made-up cycle is reported."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_node_does_not_know_the_session() -> None:
    """Dependencies point one way: the node serves sessions through host.py's Protocols."""
    edges = graph()
    assert "sanic_feeds.session" not in edges["sanic_feeds.node"]
    assert "sanic_feeds.session" not in edges["sanic_feeds.membership"]


def test_the_session_state_machine_is_pure() -> None:
    """No asyncio, sockets or clock in the protocol state machine."""
    source = (PACKAGE / "session_state.py").read_text()
    tree = ast.parse(source)
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and not node.level
    }
    assert not imported & {"asyncio", "socket", "time", "sanic", "redis"}
    assert not any(isinstance(node, ast.AsyncFunctionDef | ast.Await) for node in ast.walk(tree))


def _declared_lines(cls: ast.ClassDef) -> int:
    """Lines of a class's field declarations (``name: type = ...`` and their docstrings): a
    settings table is long without doing anything, so they do not count as code."""
    lines = 0
    previous_was_field = False
    for statement in cls.body:
        end = statement.end_lineno or statement.lineno
        if isinstance(statement, ast.AnnAssign):
            lines += end - statement.lineno + 1
            previous_was_field = True
            continue
        is_doc = isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant)
        if previous_was_field and is_doc:
            lines += end - statement.lineno + 1
        previous_was_field = False
    return lines


def test_no_class_is_over_250_lines() -> None:
    """No class holds more than 250 lines of code (field declarations aside)."""
    big = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.end_lineno is not None:
                size = node.end_lineno - node.lineno + 1 - _declared_lines(node)
                if size > MAX_CLASS_LINES:
                    big.append(f"{module_name(path)}.{node.name}: {size} lines")
    assert not big, big
