"""The package is layered: a lower layer never imports a higher one (checked on every import statement)."""
import ast
from pathlib import Path

import pytest

from conftest import REPO

# lower number = lower layer; a module may import its own layer or lower ones
LAYERS = {"cascade.core": 0, "cascade.kernels": 0, "cascade.encoders": 1, "cascade.index": 2,
          "cascade.stages": 3, "cascade.saved": 4, "cascade.app": 4, "cascade.testing": 4}
SOURCES = {"cascade": REPO / "cascade", "cascade.stages": REPO / "stages"}


def _modules():
    for package, root in SOURCES.items():
        for path in sorted(root.rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            yield ".".join((package, *parts)).removesuffix(".__init__"), path


def layer_of(module: str) -> int | None:
    best = None
    for prefix, rank in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            if best is None or len(prefix) > len(best[0]):
                best = (prefix, rank)
    return best[1] if best else None


def imports_of(path: Path, module: str) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                base = ".".join(module.split(".")[: -node.level] + ([base] if base else []))
            names += [base] + [f"{base}.{a.name}" for a in node.names]
    return names


@pytest.mark.parametrize("module, path", list(_modules()), ids=lambda x: str(x) if isinstance(x, str) else "")
def test_no_module_imports_a_higher_layer(module, path):
    own = layer_of(module)
    if own is None:
        return  # cascade/__init__.py, the facade over every layer
    for name in imports_of(path, module):
        if (name == "cascade" or (name.startswith("cascade.") and layer_of(name) is None)) and own < 4:
            pytest.fail(f"{module} imports the top-level facade ({name}); import from the layer's module")
        other = layer_of(name)
        assert other is None or other <= own, f"{module} (layer {own}) imports {name} (layer {other})"


def test_the_check_catches_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from cascade.app.runner import run\n")
    assert any(layer_of(n) == 4 for n in imports_of(bad, "cascade.core.bad"))
    assert layer_of("cascade.core.bad") == 0


def test_every_package_is_in_a_layer():
    packages = {m for m, p in _modules() if p.name == "__init__.py"} - {"cascade"}
    assert all(layer_of(p) is not None for p in packages), packages


def _internal_imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``module`` imports anywhere in its file (module level and inside functions
    alike; only ``if TYPE_CHECKING:`` blocks, which never run, are left out)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    type_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                 and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING"
                 for child in node.body for n in ast.walk(child)}
    names = []
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(module.split(".")[: -node.level] + ([base] if base else []))
            names += [base] + [f"{base}.{a.name}" for a in node.names]
    out = set()
    for name in names:
        while name and name not in known:  # "cascade.core.stage.Stage" -> "cascade.core.stage"
            name = name.rpartition(".")[0]
        # importing a submodule runs its parent packages anyway: an edge to one's own package is no circle
        if name and name != module and not module.startswith(name + "."):
            out.add(name)
    return out


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), each as a sorted list."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _graph() -> dict[str, set[str]]:
    modules = dict(_modules())
    known = set(modules)
    # the facade (cascade/__init__.py) imports every layer by design and nothing imports it back
    return {m: _internal_imports(m, p, known) for m, p in modules.items() if m != "cascade"}


def test_no_import_circles():
    cycles = import_cycles(_graph())
    assert not cycles, "modules that import each other (directly or around a circle, in functions too): " + \
        "; ".join(" <-> ".join(c) for c in cycles)


def test_the_circle_check_catches_a_function_level_circle(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("from cascade.core.b import g\n")
    b.write_text("def g():\n    from cascade.core.a import f\n")
    c = tmp_path / "c.py"
    c.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from cascade.core.a import f\n")
    known = {"cascade.core.a", "cascade.core.b", "cascade.core.c"}
    graph = {m: _internal_imports(m, p, known) for m, p in
             [("cascade.core.a", a), ("cascade.core.b", b), ("cascade.core.c", c)]}
    assert graph["cascade.core.c"] == set()  # a type-only import never runs
    assert import_cycles(graph) == [["cascade.core.a", "cascade.core.b"]]
