"""Layers point one way: parse every module's imports (module level and inside functions).

The layers, bottom to top (a module belongs to the longest prefix that names it):

1. ``pair.core``: settings, errors, security. Imports nothing of PAIR but itself.
2. ``pair.db``: engine, sessions, migrations runner. Uses core; core's node uses db (below).
3. ``pair.core.node`` (the node opens the database) and ``pair.dicom`` (codecs).
4. ``pair.audit`` then ``pair.accounts``: who acts, and the record of what they did. Every
   route and page depends on them, so they sit under the web and CLI foundations; their own
   routes, pages and commands (``accounts.api`` ...) are capabilities like any other.
5. ``pair.web`` and ``pair.cli``: app plumbing every capability's routes and commands use.
6. Capabilities (repository, deid, clinical, reporting, ...): may import any foundation and each
   other, but the capability packages form no cycle.

Composition roots sit above everything: they register every capability's routers, pages,
commands and models (``pair.web.app``, ``pair.cli.main``, ``pair.cli.serve``,
``pair.db.models_registry``, ``pair.__main__``, ``pair.demo``). Nothing imports a root except
another root (and the database migrations, which need every model's table).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

FOUNDATIONS: list[tuple[str, ...]] = [
    ("pair.core",),
    ("pair.db",),
    ("pair.core.node", "pair.dicom"),
    ("pair.audit.models", "pair.audit.service"),
    (
        "pair.accounts.models",
        "pair.accounts.passwords",
        "pair.accounts.policy",
        "pair.accounts.service",
        "pair.accounts.throttle",
        "pair.accounts.websessions",
    ),
    ("pair.web", "pair.cli"),
]
ROOTS = (
    "pair.web.app",
    "pair.cli.main",
    "pair.cli.serve",
    "pair.db.models_registry",
    "pair.db.migrations",
    "pair.__main__",
    "pair.demo",
)
CAPABILITY = len(FOUNDATIONS)
ROOT = CAPABILITY + 1


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted((SRC / "pair").rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """PAIR modules ``name`` imports anywhere in its body (``TYPE_CHECKING`` blocks too)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                head = package[: len(package) - node.level + 1]
                base = ".".join([*head, *([node.module] if node.module else [])])
            # ``from pkg import mod`` imports the module; ``from mod import name`` the module
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target.startswith("pair") and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) - {"pair"} for name, path in modules.items()}


def _in(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _layer(module: str) -> tuple[int, str]:
    """(layer, unit): the unit is the matching prefix, or the capability package."""
    if any(_in(module, root) for root in ROOTS):
        return ROOT, module
    best: tuple[int, str] | None = None
    for level, prefixes in enumerate(FOUNDATIONS):
        for prefix in prefixes:
            if _in(module, prefix) and (best is None or len(prefix) > len(best[1])):
                best = (level, prefix)
    if best is not None:
        return best
    return CAPABILITY, ".".join(module.split(".")[:2])


def _package(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_core_imports_no_capability() -> None:
    graph = _graph()
    wrong = sorted(
        f"{m} -> {t}"
        for m, targets in graph.items()
        if _in(m, "pair.core")
        for t in targets
        if not (_in(t, "pair.core") or _in(t, "pair.db")) or t in ROOTS
    )
    assert wrong == []


def test_layers_point_down() -> None:
    graph = _graph()
    wrong: list[str] = []
    for module, targets in graph.items():
        level, _ = _layer(module)
        for target in targets:
            target_level, _ = _layer(target)
            if target_level > level:
                wrong.append(f"{module} ({level}) -> {target} ({target_level})")
    assert sorted(wrong) == []


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component: list[str] = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_no_cycle_between_units() -> None:
    """Units (foundation layers and capability packages) import each other one way only."""
    units: dict[str, set[str]] = defaultdict(set)
    for module, targets in _graph().items():
        level, unit = _layer(module)
        if level == ROOT:
            continue
        for target in targets:
            target_unit = _layer(target)[1]
            if target_unit != unit:
                units[unit].add(target_unit)
    assert _cycles(units) == []


def test_no_module_cycle() -> None:
    """Within a package too: e.g. deid.engine <-> deid.walk, the evaluation report modules."""
    assert _cycles(_graph()) == []
