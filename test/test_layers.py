"""No module imports a layer above its own (the table is ``test/layers.py`` ``LAYERS``), no two
modules import each other, every import inside a function has one of the reasons of
``LAZY_KINDS``, and ``docs/architecture.md`` shows the tables and the import graph as they are."""

import ast
from pathlib import Path

from layers import (
    BEGIN,
    END,
    LAYERS,
    LAZY_BEGIN,
    LAZY_END,
    ROOT,
    cycles,
    graph,
    import_statements,
    layer_of,
    lazy_imports,
    lazy_markdown,
    markdown,
    modules,
    unexplained_lazy_imports,
    upward_edges,
)


def test_every_module_has_a_layer():
    for module in modules():
        layer_of(module)  # KeyError names a module missing from the table


def test_no_module_imports_a_layer_above_its_own():
    assert upward_edges() == []


def test_no_import_cycles():
    assert cycles() == []


def test_every_import_inside_a_function_has_a_reason():
    assert unexplained_lazy_imports() == []


def test_the_check_sees_imports_inside_functions_and_from_package_imports():
    """The graph is read from the source: imports inside functions count, and ``from pebal_core
    import cli`` is an edge to ``pebal_core.cli``, so hiding an upward import there fails too."""
    g = graph()
    assert "pebal_core.export.openvino" in g["pebal_core.backends.openvino_backend"]
    assert "pebal_core.export.onnx" in g["pebal_core.backends.auto"]  # imported inside a function
    assert layer_of("pebal_core.backends.tensorrt_backend") > layer_of("pebal_core.export.tensorrt")
    assert [name for name, _, _ in LAYERS][layer_of("pebal_ros.node")] == "ros"
    assert [name for name, _, _ in LAYERS][layer_of("benchmarks.bench_cpu")] == "benchmarks"


def test_the_check_resolves_relative_imports_and_benchmark_scripts(tmp_path):
    """Relative imports and a benchmark importing a sibling script by bare name are edges, and an
    import inside a function is recorded with that function (read from a file written here)."""
    known = {"pebal_core.alarms", "pebal_core.alarms.region", "pebal_core.runtime", "benchmarks.bench_cpu"}
    pkg = tmp_path / "pebal_core" / "alarms"
    pkg.mkdir(parents=True)
    source = pkg / "frame.py"
    source.write_text("from .region import x\nfrom .. import runtime\ndef f():\n    from ..runtime import P\n")
    found = import_statements("pebal_core.alarms.frame", source, known)
    assert [(i.target, i.function) for i in found] == [
        ("pebal_core.alarms.region", None),
        ("pebal_core.runtime", None),
        ("pebal_core.runtime", "f"),
    ]
    init = pkg / "__init__.py"
    init.write_text("from .region import x\n")
    assert [i.target for i in import_statements("pebal_core.alarms", init, known)] == ["pebal_core.alarms.region"]
    script = tmp_path / "bench.py"
    script.write_text("import bench_cpu\nimport numpy\n")
    found = import_statements("benchmarks.bench", script, known)
    assert [(i.target, i.project) for i in found] == [("benchmarks.bench_cpu", True), ("numpy", False)]


def test_lazy_imports_match_an_independent_ast_count():
    """:func:`lazy_imports` finds every import statement nested in a function (compared with a
    plain ``ast.walk`` over each function body; a statement naming several modules counts once
    per target in both)."""
    expected = 0
    for path in modules().values():
        tree = ast.parse(Path(path).read_text())
        seen = set()
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in seen:
                        seen.add(id(node))
        expected += len(seen)
    statements = {(i.module, i.line) for i in lazy_imports()}
    assert len(statements) == expected


def test_architecture_doc_shows_the_current_layers():
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split(BEGIN, 1)[1].split(END, 1)[0].strip()
    assert section == markdown(), "regenerate with: .venv/bin/python test/layers.py docs/architecture.md"
    section = text.split(LAZY_BEGIN, 1)[1].split(LAZY_END, 1)[0].strip()
    assert section == lazy_markdown(), "regenerate with: .venv/bin/python test/layers.py docs/architecture.md"


def test_lazy_exports_are_only_in_module_getattr():
    """The one allowed upward import, ``pebal_core`` -> ``pebal_core.runtime``, sits in the package's
    ``__getattr__`` (run on first use), and ``import pebal_core`` does not load it."""
    import ast
    import subprocess
    import sys

    from layers import LAZY_EXPORTS

    for package, targets in LAZY_EXPORTS.items():
        path = modules()[package]
        tree = ast.parse(path.read_text())
        getattr_fn = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "__getattr__")
        inside = {n.module for n in ast.walk(getattr_fn) if isinstance(n, ast.ImportFrom)}
        found = {i.target for i in import_statements(package, path, set(modules())) if i.function == "__getattr__"}
        assert targets <= found and targets <= inside
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
