"""The house's layering, read from the source: imports point one way. The packages stack
`cli/` over `search/` over `launch/` over the training core (everything else), and no module
imports one from a layer above its own; nothing below the CLI imports `rnnl2.cli` (only the
entry point, `rnnl2/__main__.py`, does); no two modules import each other (directly or round a
longer circle, counting imports inside functions too), and no module grows past 450 lines, so
each stays one job that reads in one sitting."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "rnnl2"
MAX_LINES = 450


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path, source: str | None = None) -> set[str]:
    """Every rnnl2 module `path` imports (its text, or `source` in its place), anywhere in it:
    `from .x import y` is rnnl2…x, or rnnl2…x.y when that is a module."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text() if source is None else source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.add(candidate if candidate in MODULES else target)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
    return {m for m in found if m in MODULES and m != name}


def upward_imports(name: str, modules: set[str]) -> list[str]:
    return [f"{name} → {m}" for m in sorted(modules) if layer(m) < layer(name)]


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


LAYERS = ("rnnl2.__main__", "rnnl2.cli", "rnnl2.search", "rnnl2.launch")
"""From the top; every module outside these is the training core, the bottom layer."""


def layer(name: str) -> int:
    return next((i for i, top in enumerate(LAYERS) if name == top or name.startswith(top + ".")), len(LAYERS))


def test_packages_import_only_downwards():
    """launch/ runs jobs without knowing what a sweep is; the core knows neither."""
    assert [line for name, path in MODULES.items() for line in upward_imports(name, imported(path))] == []


def test_the_layer_reading_catches_an_upward_import():
    """The reading itself: a backend that imported the manifest again (inside a function too),
    or a core module that imported a backend, would be caught."""
    backend = PACKAGE / "launch" / "local.py"
    source = backend.read_text() + "\n\ndef f():\n    from ..search.manifest import Manifest\n"
    assert upward_imports("rnnl2.launch.local", imported(backend, source)) == [
        "rnnl2.launch.local → rnnl2.search.manifest"
    ]
    core = PACKAGE / "runs.py"
    assert upward_imports("rnnl2.runs", imported(core, "from .launch import job\n")) == [
        "rnnl2.runs → rnnl2.launch.job"
    ]


def test_nothing_below_the_cli_imports_it():
    offenders = [
        name
        for name, path in MODULES.items()
        if not (name == "rnnl2.cli" or name.startswith("rnnl2.cli.") or name == "rnnl2.__main__")
        and any(m == "rnnl2.cli" or m.startswith("rnnl2.cli.") for m in imported(path))
    ]
    assert offenders == []


def test_no_import_circle():
    edges = {name: imported(path) for name, path in MODULES.items()}
    circles = []

    def visit(start: str, node: str, path: list[str]) -> None:
        for target in edges[node]:
            if target == start:
                circles.append(" → ".join([*path, start]))
            elif target not in path and target > start:  # each circle once, from its smallest module
                visit(start, target, [*path, target])

    for name in edges:
        visit(name, name, [name])
    assert circles == []


def test_no_module_is_longer_than_450_lines():
    lengths = {name: len(path.read_text().splitlines()) for name, path in MODULES.items()}
    assert {name: n for name, n in lengths.items() if n > MAX_LINES} == {}
