"""The package's shape: floors as packages, imports only downwards, no import circles.

    core ← features ← data ← models ← results ← {run, serve, report} ← commands

A module may import its own floor and the floors below it. The three top packages (running the
study, serving a model, reporting the table) never import each other: what two of them need
moves down a floor. The commands (`mgc/<command>.py`, what `python -m mgc.<command>` runs)
compose the floors and are imported by nothing.
"""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "mgc"

FLOORS = {"core": 0, "features": 1, "data": 2, "models": 3, "results": 4}
FLOOR_NAMES = set(FLOORS)
TOP = {"run", "serve", "report"}  # floor 5, side by side, never importing one another
COMMAND = 6  # modules at the package root


def module_name(path: Path, pkg: Path) -> str:
    parts = path.relative_to(pkg.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(name: str) -> str | None:
    """The floor package a module belongs to; None for a root-level command (or mgc itself)."""
    parts = name.split(".")
    return (
        parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in FLOOR_NAMES | TOP) else None
    )


def level(name: str) -> int:
    package = package_of(name)
    if package is None:
        return COMMAND if name.count(".") else -1  # `mgc` itself is empty and imports nothing
    return FLOORS.get(package, 5)


def imports(pkg: Path = PKG) -> dict[str, set[str]]:
    """Every module of `pkg` and the modules of `pkg` it imports (at any depth in its code)."""
    root = pkg.name
    modules = {module_name(p, pkg): p for p in pkg.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(root):
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith(root)]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def wrong_way(graph: dict[str, set[str]]) -> list[str]:
    """Each import that goes up a floor, sideways between top packages, or into a command."""
    found = []
    for name, targets in sorted(graph.items()):
        for target in sorted(targets):
            if level(target) == COMMAND:
                found.append(f"{name} imports the command {target}")
            elif level(target) > level(name):
                found.append(f"{name} imports {target}, a floor above it")
            elif (
                package_of(name) in TOP
                and package_of(target) in TOP
                and package_of(name) != package_of(target)
            ):
                found.append(f"{name} imports {target}, sideways between top packages")
    return found


def test_every_module_lives_in_a_floor_or_is_a_command():
    """A new root-level module is either a command (it has a `main` and runs as
    `python -m mgc.<name>`) or belongs in a floor."""
    stray = []
    for path in PKG.glob("*.py"):
        if path.name == "__init__.py":
            continue
        text = path.read_text()
        if "def main(" not in text or '__name__ == "__main__"' not in text:
            stray.append(path.name)
    assert stray == []
    folders = {p.parent.relative_to(PKG).parts[0] for p in PKG.rglob("*.py") if p.parent != PKG}
    assert folders <= FLOOR_NAMES | TOP


@pytest.mark.parametrize("name", sorted(imports()))
def test_imports_go_down(name):
    assert wrong_way({name: imports()[name]}) == []


def test_the_check_catches_sideways_and_upward_imports(tmp_path):
    """The rule above is live: a fake package with one import of each wrong kind fails it."""
    pkg = tmp_path / "mgc"
    files = {
        "__init__.py": "",
        "sweep.py": "from mgc.run.sweep import main\n",
        "core/__init__.py": "",
        "core/config.py": "",
        "core/errors.py": "from mgc.data.datasets import DatasetError\n",  # up
        "data/__init__.py": "",
        "data/datasets.py": "from mgc.core.config import Config\n",  # down: fine
        "run/__init__.py": "",
        "run/sweep.py": "def main():\n    from mgc.report.table import write_tables\n",
        "report/__init__.py": "",
        "report/table.py": "import mgc.sweep\n",  # into a command
    }
    for rel, text in files.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    assert wrong_way(imports(pkg)) == [
        "mgc.core.errors imports mgc.data.datasets, a floor above it",
        "mgc.report.table imports the command mgc.sweep",
        "mgc.run.sweep imports mgc.report.table, sideways between top packages",
    ]


def test_no_import_circles():
    graph = imports()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join(path + [node, nxt]))
            if nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [])
