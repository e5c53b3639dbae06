"""The package's floors: imports point one way, with no loops.

The model code (`keras_vgg/*.py`) is backend-agnostic and imports neither
TensorFlow nor the floors above it (the one exception: a function named
`*_tensorflow`, which runs only on that backend, as `keras_vgg.explain`'s
gradients do, may import it); `keras_vgg.recipes` never imports
`keras_vgg.export`; and no two modules import each other, directly or
round a loop, at module level or inside functions.
"""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "keras_vgg"


def module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path, skip_functions=None):
    """Every module this file imports, anywhere in it (absolute names):
    `from a import b` counts as `a.b` when that is a module, else as `a`.
    Functions for which `skip_functions(name)` is true are left out."""
    names = set()
    tree = ast.parse(path.read_text())
    if skip_functions:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and skip_functions(node.name):
                node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                names.add(sub if sub in MODULES else node.module)
    return names


@pytest.fixture(scope="module")
def graph():
    return {name: {m for m in imports_of(path) if m in MODULES and m != name}
            for name, path in MODULES.items()}


def test_imports_form_no_loop(graph):
    def visit(node, trail):
        if node in trail:
            loop = trail[trail.index(node):] + [node]
            pytest.fail("import loop: " + " -> ".join(loop))
        for nxt in graph[node]:
            if not nxt.startswith(node + "."):  # a package importing its own modules
                visit(nxt, trail + [node])

    for node in graph:
        visit(node, [])


def test_floors_point_down(graph):
    for name, path in MODULES.items():
        imported = imports_of(path)
        if name.count(".") <= 1 and not name.startswith(("keras_vgg.recipes",
                                                         "keras_vgg.export")):
            assert not any(m.startswith(("keras_vgg.recipes", "keras_vgg.export"))
                           for m in imported), name
            backend_free = imports_of(path, lambda f: f.endswith("_tensorflow"))
            assert not any(m.startswith("tensorflow") for m in backend_free), name
        if name.startswith("keras_vgg.recipes"):
            assert not any(m.startswith("keras_vgg.export") for m in imported), name
