"""The layer table of the package and its import graph, read with ``ast``.

``LAYERS`` lists the layers from the bottom up; a module may import modules of its own layer and
of layers below it, never above. ``test/test_layers.py`` checks the code against the table and
checks that ``docs/architecture.md`` shows the table and graph as they are; this file rewrites
that section::

    .venv/bin/python test/layers.py docs/architecture.md
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pebal_core", "pebal_ros")
BEGIN, END = "<!-- layers:begin -->", "<!-- layers:end -->"

LAYERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "foundation",
        "label conventions, file and image I/O, image sources, normalisation, resize protocols, the ONNX file "
        "contract, what model metadata may hold, geometry, camera intrinsics, calibration, denormal numbers",
        (
            "pebal_core",
            "pebal_core.version",
            "pebal_core.console",
            "pebal_core.fileio",
            "pebal_core.images",
            "pebal_core.sources",
            "pebal_core.labels",
            "pebal_core.preprocessing",
            "pebal_core.protocols",
            "pebal_core.onnx_contract",
            "pebal_core.model_metadata",
            "pebal_core.percentiles",
            "pebal_core.calibration",
            "pebal_core.ground",
            "pebal_core.camera_calibration",
            "pebal_core.assets",
            "pebal_core.denormals",
        ),
    ),
    (
        "models",
        "the network zoo, checkpoint files and the shipped models by name",
        ("pebal_core.models", "pebal_core.model_store"),
    ),
    (
        "scoring",
        "logits -> anomaly scores; scores + labels -> metrics",
        ("pebal_core.scoring", "pebal_core.score_counts", "pebal_core.metrics", "pebal_core.component_metrics"),
    ),
    (
        "alarms",
        "score map -> drivable region, operating points, persistence, obstacles, the per-frame context; drawing them",
        ("pebal_core.alarms", "pebal_core.visualize"),
    ),
    ("data", "datasets (training, evaluation, synthetic world)", ("pebal_core.data",)),
    ("export", "ONNX export, OpenVINO int8 models, TensorRT engines", ("pebal_core.export",)),
    (
        "runtime",
        "the Predictor: the one inference path; its backends and the measured choice among them",
        ("pebal_core.runtime", "pebal_core.backends"),
    ),
    (
        "evaluation",
        "model + dataset -> metrics report, operating points chosen on validation data",
        ("pebal_core.evaluate", "pebal_core.operating_point_selection"),
    ),
    (
        "training",
        "configuration, PEBAL losses, the trainer",
        ("pebal_core.config", "pebal_core.losses", "pebal_core.train"),
    ),
    ("cli", "the `pebal` command", ("pebal_core.cli",)),
    ("ros", "the ROS 2 node, camera, bag tools and demo", ("pebal_ros",)),
)


LAZY_EXPORTS = {"pebal_core": {"pebal_core.runtime"}}
"""Imports allowed upwards because they are a package's lazy attributes (module ``__getattr__``, run on
first use, never at import): ``from pebal_core import Predictor``. They are not edges of the layer graph."""


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Every module of the packages: dotted name -> file."""
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def layer_of(module: str) -> int:
    """Index in :data:`LAYERS` of the longest entry that is ``module`` or a package above it."""
    best, index = -1, -1
    for i, (_, _, entries) in enumerate(LAYERS):
        for entry in entries:
            if (module == entry or module.startswith(entry + ".")) and len(entry) > best:
                best, index = len(entry), i
    if index < 0:
        raise KeyError(f"{module} is in no layer of test/layers.py LAYERS; add it to the layer it belongs to")
    return index


def imports(path: Path, known: set[str]) -> set[str]:
    """Project modules ``path`` imports anywhere in the file (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] in PACKAGES)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] not in PACKAGES:
                continue
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                found.add(sub if sub in known else node.module)
    return found


def graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (lazy exports, :data:`LAZY_EXPORTS`, left out)."""
    mods = modules()
    return {name: imports(path, set(mods)) - LAZY_EXPORTS.get(name, set()) for name, path in mods.items()}


def upward_edges() -> list[str]:
    """``"a (layer) imports b (higher layer)"`` for every import against the table."""
    bad = []
    for module, deps in graph().items():
        for dep in sorted(deps):
            if layer_of(dep) > layer_of(module):
                bad.append(f"{module} ({LAYERS[layer_of(module)][0]}) imports {dep} ({LAYERS[layer_of(dep)][0]})")
    return bad


def layer_uses() -> dict[int, set[int]]:
    """Layer index -> the lower layers its modules import."""
    uses = defaultdict(set)
    for module, deps in graph().items():
        for dep in deps:
            if layer_of(dep) != layer_of(module):
                uses[layer_of(module)].add(layer_of(dep))
    return uses


def markdown() -> str:
    """The generated section of ``docs/architecture.md``: a Mermaid diagram and a table."""
    uses = layer_uses()
    lines = ["```mermaid", "flowchart BT"]
    lines += [f'    {name}["{name}"]' for name, _, _ in LAYERS]
    for i in range(len(LAYERS)):
        lines += [f"    {LAYERS[i][0]} --> {LAYERS[j][0]}" for j in sorted(uses.get(i, ()))]
    lines += ["```", "", "| layer | what it holds | modules | imports from |", "|---|---|---|---|"]
    by_layer = defaultdict(list)
    for module in modules():
        by_layer[layer_of(module)].append(module)
    for i in reversed(range(len(LAYERS))):
        name, what, _ = LAYERS[i]
        mods = ", ".join(f"`{m}`" for m in sorted(by_layer[i]))
        below = ", ".join(LAYERS[j][0] for j in sorted(uses.get(i, ()))) or "–"
        lines.append(f"| {name} | {what} | {mods} | {below} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(ROOT))
    from pebal_core.fileio import replace_between_markers

    doc = Path(argv[0])
    replace_between_markers(doc, BEGIN, END, markdown().splitlines())
    print(f"wrote the layer section of {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
