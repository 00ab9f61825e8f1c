"""What a user installs: one import package, every kernel source inside it, and imports
that point one way. The suite itself runs on the installed package, not the checkout."""
import ast
import functools
import importlib
import importlib.metadata
import pathlib

import pytest
from support import ROOT, editable_install, python

import dnn

PACKAGE = pathlib.Path(dnn.__file__).resolve().parent
# The import packages the distribution installs (pyproject.toml's [tool.setuptools]).
PACKAGES = ("dnn", "dnn.cli", "dnn.data", "dnn.distributed", "dnn.layers", "dnn.optimizers",
            "dnn.saving", "dnn.sklearn", "dnn.training", "dnn.utils", "dnn.backends",
            "dnn.kernels", "dnn.bench")


def package_dir(name):
    return pathlib.Path(importlib.import_module(name).__file__).resolve().parent


needs_wheel_install = pytest.mark.skipif(
    editable_install(), reason="an editable install lists no package files; CI installs the wheel "
    "(pip install '.[test]')")


def test_the_suite_imports_the_installed_package():
    if not editable_install():
        assert PACKAGE != ROOT / "dnn", "the tests imported the checkout's dnn/"
    out = python("-c", "import dnn, dnn.backends, dnn.kernels; print(dnn.__file__)")
    assert out.returncode == 0, out.stderr
    assert pathlib.Path(out.stdout.strip()).resolve().parent == PACKAGE


@needs_wheel_install
def test_the_distribution_ships_every_kernel_source_and_one_top_level_name():
    dist = importlib.metadata.distribution("dnn")
    files = {str(f) for f in dist.files}
    sources = sorted(p.name for p in (ROOT / "kernels").iterdir() if p.suffix in (".cu", ".h"))
    assert sources, "no kernel sources found in the checkout"
    missing = [s for s in sources if f"dnn/kernels/{s}" not in files]
    assert not missing, f"kernel sources missing from the installed distribution: {missing}"
    assert dist.read_text("top_level.txt").split() == ["dnn"]
    for name in ("backends", "kernels", "bench"):
        assert not any(f.startswith(f"{name}/") for f in files), f"top-level {name}/ installed"


# ------------------------------------------------------------------------- layering
# dnn.kernels knows nothing above it; dnn.backends only the kernels. Inside dnn, each room
# may import the rooms listed before it and never one after: small services, then the
# building blocks (losses, metrics, optimizers, callbacks...), the layers, the training
# loop, data-parallel training (which plugs into the loop's replica interface), saving,
# the model (which saving rebuilds through its registry, not an import), plots, the
# facade, and the applications on top: the benchmarks and the command line.
LAYERS = [("dnn.kernels",), ("dnn.backends",),
          ("dnn.version", "dnn.utils", "dnn.backend_scope", "dnn.data"),
          ("dnn.initializers", "dnn.regularizers", "dnn.activations", "dnn.losses",
           "dnn.metrics", "dnn.optimizers", "dnn.callbacks"),
          ("dnn.layers",), ("dnn.training",), ("dnn.distributed",), ("dnn.saving",),
          ("dnn.model",), ("dnn.plot",), ("dnn",), ("dnn.bench", "dnn.sklearn"),
          ("dnn.cli", "dnn.__main__")]
FACADE = LAYERS.index(("dnn",))


@functools.lru_cache(maxsize=None)
def _modules():
    """``{module name: source path}`` of every installed module."""
    out = {}
    for package in PACKAGES:
        root = package_dir(package)
        for path in root.glob("*.py"):
            out[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
        nested = {f"{package}.{p.parent.name}" for p in root.glob("*/__init__.py")}
        assert nested <= set(PACKAGES), f"a package is missing from PACKAGES: {nested}"
    return out


def _imports(name, path):
    """Absolute names of the modules (or packages) that module ``name`` imports, at module
    level or inside functions, relative imports resolved."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:  # "from . import losses" names a module
                candidate = f"{base}.{alias.name}"
                yield candidate if candidate in _modules() else base


def _layer(module):
    """The index in LAYERS of the longest name that ``module`` is, or lies under."""
    matches = [(len(name), i) for i, names in enumerate(LAYERS) for name in names
               if module == name or module.startswith(name + ".")]
    return max(matches)[1]


def _graph():
    """``{module: the dnn and cupy modules it imports}``."""
    return {name: {m for m in _imports(name, path) if m.split(".")[0] in ("dnn", "cupy")}
            for name, path in _modules().items()}


def test_dependencies_point_one_way():
    for module, targets in _graph().items():
        for target in targets:
            if target.startswith("cupy"):
                assert _layer(module) <= 1, f"{module} imports cupy: only backends/kernels may"
                continue
            if target == "dnn":  # the facade, imported only by applications and tests
                assert _layer(module) >= FACADE, f"{module} imports the dnn facade"
                continue
            assert _layer(target) <= _layer(module), f"{module} imports {target} (upward)"


def test_no_import_cycles():
    # Package __init__ modules re-export their contents; an edge into one is an edge
    # into a facade, which the layering test already confines.
    graph = {m: {t for t in ts if t in _modules() and t not in PACKAGES}
             for m, ts in _graph().items() if m not in PACKAGES}
    state = {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
