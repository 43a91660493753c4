"""The package's layering, checked on its source: no import cycles, and the geometry of each
manifold lives with the manifold (few checks on concrete manifold classes elsewhere).

Imports are read from the syntax tree, those inside functions included (a lazy import is still a
dependency). Importing ``heatscore.a.b`` runs ``heatscore/a/__init__.py`` first, so it is also a
dependency on the package ``heatscore.a`` (unless the importing module is inside it).
"""

import ast
import os

import pytest

ROOT = os.path.join(os.path.dirname(__file__), os.pardir, "heatscore")
#: Concrete manifold classes: the protocol (manifolds/_base.py) is what other layers use.
CONCRETE = {"Sphere", "Torus", "SO3", "TriangleMesh", "Euclidean", "ProductManifold"}
#: Most isinstance checks on concrete manifold classes allowed outside heatscore/manifolds/.
MAX_CONCRETE_CHECKS = 5


def _modules():
    """{dotted module name: path} of every heatscore source file."""
    out = {}
    for folder, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                rel = os.path.relpath(path, os.path.join(ROOT, os.pardir))[:-3].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                out[".".join(rel)] = path
    return out


def _imports(name, path, modules):
    """Dotted heatscore modules that module ``name`` imports (anywhere in its body)."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                       for a in node.names]
        else:
            continue
        for t in targets:
            if not t.startswith("heatscore"):
                continue
            while t not in modules:
                t = t.rpartition(".")[0]
            parts = t.split(".")
            for k in range(1, len(parts) + 1):       # the module and its parent packages
                dep = ".".join(parts[:k])
                if dep != name and not (name == dep or name.startswith(dep + ".")):
                    found.add(dep)
    return found


def _cycles(graph):
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert _cycles(graph) == []


def _concrete_checks():
    """(path, line) of isinstance(…, <concrete manifold class>) outside heatscore/manifolds/."""
    hits = []
    for name, path in _modules().items():
        if name.startswith("heatscore.manifolds"):
            continue
        for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "isinstance" \
                    and len(node.args) == 2:
                names = {n.id if isinstance(n, ast.Name) else getattr(n, "attr", None)
                         for n in ast.walk(node.args[1])}
                if names & CONCRETE:
                    hits.append((os.path.relpath(path, ROOT), node.lineno))
    return hits


def test_geometry_lives_with_the_manifold():
    hits = _concrete_checks()
    assert len(hits) <= MAX_CONCRETE_CHECKS, hits


@pytest.mark.parametrize("layer, forbidden", [
    ("heatscore.manifolds", ("heatscore.heat_kernels", "heatscore.estimators", "heatscore.samplers",
                             "heatscore.cli", "heatscore.plotting", "heatscore.bench")),
    ("heatscore.heat_kernels", ("heatscore.estimators", "heatscore.samplers", "heatscore.cli",
                                "heatscore.bench")),
    ("heatscore.samplers", ("heatscore.estimators", "heatscore.cli", "heatscore.bench")),
    ("heatscore.estimators", ("heatscore.cli", "heatscore.plotting", "heatscore.bench")),
])
def test_layers(layer, forbidden):
    """Lower layers never import higher ones (benchmarks are out of the library core)."""
    modules = _modules()
    bad = [(name, dep) for name, path in modules.items() if name.startswith(layer)
           for dep in _imports(name, path, modules) if dep.startswith(forbidden)]
    assert bad == []
