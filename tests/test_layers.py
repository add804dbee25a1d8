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
