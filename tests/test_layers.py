"""The layers point one way: a package imports only from the layers below it (type-only imports included).

    core <- observability, models <- runners <- demo, routing, gateway <- pipeline <- jobs <- frontends <- app <- service

`demo` builds the demo models: a tool on top of the importer and the runners (it loads what it built to
check it), which nothing in the server imports.
"""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RANK = {
    "core": 0,
    "observability": 1,
    "models": 1,
    "runners": 2,
    "demo": 2.5,
    "routing": 3,
    "gateway": 3,
    "pipeline": 4,
    "frontends": 5,
    "jobs": 4.5,
    "app": 6,
    "service": 7,
}


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """(top-level project package, line) for every import in the module, wherever it stands."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found.update((name.split(".")[0], node.lineno) for name in names if name.split(".")[0] in RANK)
    return found


def modules() -> list[tuple[str, Path]]:
    out = [("service", ROOT / "service.py")]
    for package in RANK:
        if package != "service" and (ROOT / package).is_dir():
            out.extend((package, path) for path in sorted((ROOT / package).rglob("*.py")))
    return out


def test_every_import_points_down():
    wrong = [
        f"{path.relative_to(ROOT)}:{line} imports {imported} ({RANK[imported]}) from {package} ({RANK[package]})"
        for package, path in modules()
        for imported, line in imported_packages(path)
        if imported != package and RANK[imported] >= RANK[package]
    ]
    assert not wrong, "\n".join(wrong)


def test_every_package_has_a_layer():
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()} - {"tests", "loadtest", "fuzz", "deploy"}
    assert packages <= set(RANK), f"give {sorted(packages - set(RANK))} a place in RANK"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_module_imports_itself_through_others():
    """Within a layer too, no cycle of imports between modules (those in functions and type-only ones counted)."""
    known = {module_name(path) for _, path in modules()}
    graph: dict[str, set[str]] = {}
    for _, path in modules():
        name = module_name(path)
        targets = graph.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                wanted = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                base = node.module if not node.level else ".".join(name.split(".")[: -node.level] + [node.module])
                wanted = [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in wanted:
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    targets.add(target)
    try:
        tuple(TopologicalSorter(graph).static_order())
    except CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None
