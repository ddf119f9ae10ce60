"""No module imports a layer above its own (the table is ``test/layers.py`` ``LAYERS``), and
``docs/architecture.md`` shows that table and the import graph as they are."""

from layers import BEGIN, END, LAYERS, ROOT, graph, layer_of, markdown, modules, upward_edges


def test_every_module_has_a_layer():
    for module in modules():
        layer_of(module)  # KeyError names a module missing from the table


def test_no_module_imports_a_layer_above_its_own():
    assert upward_edges() == []


def test_the_check_sees_imports_inside_functions_and_from_package_imports():
    """The graph is read from the source: imports inside functions count, and ``from pebal_core
    import cli`` is an edge to ``pebal_core.cli``, so hiding an upward import there fails too."""
    g = graph()
    assert "pebal_core.export.tensorrt" in g["pebal_core.backends.tensorrt_backend"]  # imported inside TensorRTBackend
    assert "pebal_core.data.anomaly_sets" in g["pebal_core.evaluate"]  # imported inside run_evaluation
    assert layer_of("pebal_core.backends.tensorrt_backend") > layer_of("pebal_core.export.tensorrt")
    assert [name for name, _, _ in LAYERS][layer_of("pebal_ros.node")] == "ros"


def test_architecture_doc_shows_the_current_layers():
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert section == markdown(), "regenerate with: .venv/bin/python test/layers.py docs/architecture.md"


def test_lazy_exports_are_only_in_module_getattr():
    """The one allowed upward import, ``pebal_core`` -> ``pebal_core.runtime``, sits in the package's
    ``__getattr__`` (run on first use), and ``import pebal_core`` does not load it."""
    import ast
    import subprocess
    import sys

    from layers import LAZY_EXPORTS, imports

    for package, targets in LAZY_EXPORTS.items():
        path = modules()[package]
        tree = ast.parse(path.read_text())
        getattr_fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "__getattr__")
        inside = {n.module for n in ast.walk(getattr_fn) if isinstance(n, ast.ImportFrom)}
        assert targets <= imports(path, set(modules())) and targets <= inside
        loaded = f"sorted(t for t in {sorted(targets)!r} if t in sys.modules)"
        code = f"import sys, {package}; print({loaded}, 'torch' in sys.modules)"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
        assert out.stdout.split() == ["[]", "False"], out.stdout
    from pebal_core import Predictor
    from pebal_core.runtime import Predictor as Original

    assert Predictor is Original


def test_architecture_prose_names_only_what_exists():
    """Every ``pebal_core...`` / ``pebal_ros...`` name in the prose of docs/architecture.md (the layer
    section aside) is a module, or an attribute of one, that exists: the prose follows the code."""
    import importlib
    import re

    text = (ROOT / "docs" / "architecture.md").read_text()
    prose = text.split(BEGIN, 1)[0] + text.split(END, 1)[1]
    names = set(re.findall(r"`((?:pebal_core|pebal_ros)(?:\.\w+)+)`", prose))
    assert len(names) > 20
    for name in sorted(names):
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):  # the longest importable prefix, then attributes
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
            except ModuleNotFoundError:
                continue
            for attr in parts[cut:]:
                assert hasattr(obj, attr), f"docs/architecture.md names {name}, which does not exist"
                obj = getattr(obj, attr)
            break
