"""The package's shape: no import circles, and data flows one way through the layers."""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "mgc"

# files → audio → features → cache → loader → model → metrics → results; a module may import
# its own layer and the ones before it, never one after it. Layer 0 holds what every layer uses.
LAYERS = {
    0: ["schema", "config", "search_space", "fsio", "net", "device", "cluster"],
    1: [
        "audio",
        "data.datasets",
        "data.gtzan",
        "data.download",
        "data.scan",
        "data.splits",
        "data.__main__",
        "cli",
    ],
    2: ["features", "frontend"],
    3: ["data.cache", "prepare"],
    4: ["data.loader", "data"],
    5: ["models", "bundle", "inference"],
    6: ["metrics", "artifacts", "evaluate", "stats", "rows"],
    7: [
        "train",
        "sweep",
        "table",
        "predict",
        "export",
        "publish",
        "web",
        "bot",
        "budget",
        "figures",
        "tabular",
    ],
}
LAYER_OF = {f"mgc.{m}": layer for layer, mods in LAYERS.items() for m in mods}
LAYER_OF["mgc"] = 0


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(name: str) -> int:
    while name not in LAYER_OF:
        name = name.rpartition(".")[0]
    return LAYER_OF[name]


def imports() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mgc"):
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("mgc")]
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def test_every_module_has_a_layer():
    assert [m for m in imports() if m != "mgc" and layer(m) is None] == []


@pytest.mark.parametrize("name", sorted(imports()))
def test_no_module_imports_a_later_layer(name):
    later = [t for t in imports()[name] if layer(t) > layer(name)]
    assert not later, f"{name} (layer {layer(name)}) imports {later}"


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
