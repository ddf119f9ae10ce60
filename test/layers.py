"""The layer table of the code, its import graph read with ``ast``, and the kinds of lazy import.

``LAYERS`` lists the layers from the bottom up; a module may import modules of its own layer and
of layers below it, never above. Every import counts: at module level, inside functions, under
``if TYPE_CHECKING``, relative (``from .x import y``), and the scripts of ``benchmarks/``
importing each other by bare name (their folder is on ``sys.path``). ``LAZY_KINDS`` lists the
only reasons an import may sit inside a function. ``test/test_layers.py`` checks the code
against both tables and checks that ``docs/architecture.md`` shows them as they are; this file
rewrites those sections::

    .venv/bin/python test/layers.py docs/architecture.md
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pebal_core", "pebal_ros")
SCRIPTS = "benchmarks"
"""Folder of scripts (not a package) that sit on top of both packages."""
BEGIN, END = "<!-- layers:begin -->", "<!-- layers:end -->"
LAZY_BEGIN, LAZY_END = "<!-- lazy-imports:begin -->", "<!-- lazy-imports:end -->"

LAYERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (
        "foundation",
        "label conventions, file and image I/O, image sources, normalisation, resize protocols, the ONNX file "
        "contract, what model metadata may hold, geometry, camera intrinsics, calibration, denormal numbers, "
        "torch devices by name, the name registry",
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
            "pebal_core.devices",
            "pebal_core.registry",
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
    ("data", "datasets (training, evaluation, synthetic world)", ("pebal_core.data",)),
    (
        "alarms",
        "score map -> drivable region, operating points, persistence, obstacles, the per-frame context",
        ("pebal_core.alarms",),
    ),
    (
        "pictures",
        "images people look at: score heat maps, alarm overlays, the ego-mask estimate written with its "
        "picture, the synthetic world's contact sheet",
        ("pebal_core.visualize", "pebal_core.ego_mask_files", "pebal_core.world_preview"),
    ),
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
        "configuration, PEBAL loss terms, training modes, the trainer",
        ("pebal_core.config", "pebal_core.losses", "pebal_core.training_modes", "pebal_core.train"),
    ),
    ("cli", "the `pebal` command", ("pebal_core.cli",)),
    ("ros", "the ROS 2 node, camera, bag tools and demo", ("pebal_ros",)),
    ("benchmarks", "scripts that measure the code and build the shipped models", (SCRIPTS,)),
)


LAZY_EXPORTS = {"pebal_core": {"pebal_core.runtime"}}
"""Imports allowed upwards because they are a package's lazy attributes (module ``__getattr__``, run on
first use, never at import): ``from pebal_core import Predictor``. They are not edges of the layer graph."""


@dataclass(frozen=True)
class Import:
    """One import statement's target as read from the source."""

    module: str
    """The importing module (dotted name)."""
    target: str
    """A project module (dotted name), or the top-level name of a third-party package."""
    line: int
    function: str | None
    """The enclosing function, ``None`` for an import that runs when the module is loaded."""

    @property
    def project(self) -> bool:
        return self.target.split(".")[0] in (*PACKAGES, SCRIPTS)

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.target} inside {self.function}()"


# ----------------------------------------------------------------------------- lazy imports
OPTIONAL_TOOLKITS = frozenset(
    {"matplotlib", "PIL", "sklearn", "pycocotools", "onnx", "onnx_ir", "onnxruntime", "openvino", "nncf"}
    | {"tensorrt", "pycuda", "cv_bridge"}
)
"""Third-party packages outside ``setup.py``'s ``install_requires`` (extras, GPU toolkits, ROS's
cv_bridge)."""
ENTRY_POINTS = ("pebal_core.cli", "pebal_ros.bag", "pebal_ros.demo")
"""Modules whose functions run one command of ``pebal``, ``pebal_bag`` or ``pebal_demo``."""
ROS_FREE_TOOLS = ("pebal_ros.bag",)
"""``pebal_bag``: convert, score and recover run on machines without ROS."""
ROS_PACKAGES = frozenset({"rclpy", "sensor_msgs", "std_msgs", "nav_msgs", "diagnostic_msgs", "visualization_msgs"})


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


LAZY_KINDS: tuple[tuple[str, str, Callable[[Import], bool]], ...] = (
    (
        "optional toolkit",
        "matplotlib, Pillow, scikit-learn, pycocotools, onnx, onnxruntime, OpenVINO/NNCF, TensorRT/pycuda "
        "and cv_bridge are extras: a module imports one where it uses it, so the packages import and run "
        "without it, and the function that needs it says what to install",
        lambda i: not i.project and i.target in OPTIONAL_TOOLKITS,
    ),
    (
        "ROS in a tool that runs without ROS",
        "`pebal_bag` imports rclpy only in `play` and `record`; `convert`, `score` and `recover` read and "
        "write bag files with rosbags alone",
        lambda i: not i.project and i.target in ROS_PACKAGES and _under(i.module, ROS_FREE_TOOLS),
    ),
    (
        "the exporter, when a model must be exported",
        "backend `auto` imports the ONNX exporter only to export a checkpoint it has not measured yet; "
        "running an ONNX file never loads the exporter",
        lambda i: (i.module, i.target) == ("pebal_core.backends.auto", "pebal_core.export.onnx"),
    ),
    (
        "a probe's environment first",
        "the probes (`benchmarks/probe_*.py`) set up what they probe before importing it: the ROS "
        "variables of their own domain, the test's table of cases on the import path",
        lambda i: i.module.startswith(SCRIPTS + ".probe_"),
    ),
    (
        "a package's lazy attribute",
        "`from pebal_core import Predictor` works without importing torch with the package: the package "
        "imports the runtime on first use of the name (:data:`LAZY_EXPORTS`)",
        lambda i: i.target in LAZY_EXPORTS.get(i.module, ()),
    ),
    (
        "a command's work",
        "the entry points (`pebal_core.cli`, `pebal_ros.bag`, `pebal_ros.demo`) import what a command "
        "runs inside that command's function, so a command loads only what it runs: `pebal_bag record`, "
        "`play`, `recover` and `convert` never load torch, whose import takes seconds",
        lambda i: _under(i.module, ENTRY_POINTS),
    ),
)
"""(kind, why, which imports): the only reasons an import may sit inside a function (the first
kind that allows an import is the one it counts for)."""


def lazy_kind(imp: Import) -> str | None:
    """The :data:`LAZY_KINDS` entry that allows ``imp`` inside a function, or None."""
    return next((kind for kind, _, allows in LAZY_KINDS if allows(imp)), None)


# ----------------------------------------------------------------------------- the graph
def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    """Every module of the packages and every script of ``benchmarks/``: dotted name -> file."""
    files = [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]
    files += sorted((ROOT / SCRIPTS).glob("*.py"))
    return {module_name(p): p for p in files}


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


def _absolute(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The dotted module a ``from ... import`` names, relative imports resolved against ``module``."""
    if node.level == 0:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _target(name: str, importer: str, known: set[str]) -> str:
    """A project module for a dotted name (the longest known prefix), a sibling script of a
    ``benchmarks`` script, or else the third-party top-level package."""
    if importer.startswith(SCRIPTS + ".") and f"{SCRIPTS}.{name.split('.')[0]}" in known:
        return f"{SCRIPTS}.{name.split('.')[0]}"
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        if ".".join(parts[:cut]) in known:
            return ".".join(parts[:cut])
    return parts[0]


def import_statements(module: str, path: Path, known: set[str]) -> list[Import]:
    """Every import of ``path`` (module level and inside functions), one :class:`Import` per name."""
    found: list[Import] = []

    def visit(node: ast.AST, function: str | None) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                visit(child, function or child.name)
                continue
            if isinstance(child, ast.Import):
                targets = [_target(alias.name, module, known) for alias in child.names]
                found.extend(Import(module, target, child.lineno, function) for target in targets)
            elif isinstance(child, ast.ImportFrom):
                source = _absolute(module, path, child)
                for alias in child.names:
                    sub = f"{source}.{alias.name}"
                    target = sub if sub in known else _target(source, module, known)
                    found.append(Import(module, target, child.lineno, function))
            visit(child, function)

    visit(ast.parse(path.read_text(), str(path)), None)
    return found


def all_imports() -> list[Import]:
    mods = modules()
    known = set(mods)
    return [imp for name, path in mods.items() for imp in import_statements(name, path, known)]


def graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports (anywhere in the file; lazy exports,
    :data:`LAZY_EXPORTS`, left out)."""
    g: dict[str, set[str]] = {name: set() for name in modules()}
    for imp in all_imports():
        if imp.project and imp.target != imp.module and imp.target not in LAZY_EXPORTS.get(imp.module, ()):
            g[imp.module].add(imp.target)
    return g


def upward_edges() -> list[str]:
    """``"a (layer) imports b (higher layer)"`` for every import against the table."""
    bad = []
    for module, deps in graph().items():
        for dep in sorted(deps):
            if layer_of(dep) > layer_of(module):
                bad.append(f"{module} ({LAYERS[layer_of(module)][0]}) imports {dep} ({LAYERS[layer_of(dep)][0]})")
    return bad


def cycles() -> list[list[str]]:
    """The import cycles: strongly connected groups of more than one module (Tarjan), sorted."""
    g = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in g.get(v, ()):
            if w not in index:
                connect(w)
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
                groups.append(sorted(group))

    for v in sorted(g):
        if v not in index:
            connect(v)
    return sorted(groups)


def lazy_imports() -> list[Import]:
    """The imports inside functions, one per statement and target."""
    return sorted({i for i in all_imports() if i.function is not None}, key=lambda i: (i.module, i.line, i.target))


def unexplained_lazy_imports() -> list[str]:
    """Imports inside functions that no :data:`LAZY_KINDS` entry allows."""
    return [str(i) for i in lazy_imports() if lazy_kind(i) is None]


def layer_uses() -> dict[int, set[int]]:
    """Layer index -> the lower layers its modules import."""
    uses = defaultdict(set)
    for module, deps in graph().items():
        for dep in deps:
            if layer_of(dep) != layer_of(module):
                uses[layer_of(module)].add(layer_of(dep))
    return uses


def markdown() -> str:
    """The generated layer section of ``docs/architecture.md``: a Mermaid diagram and a table."""
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


def lazy_markdown() -> str:
    """The generated lazy-import section of ``docs/architecture.md``: each kind, why, how many."""
    counts: dict[str, int] = defaultdict(int)
    for imp in lazy_imports():
        if (kind := lazy_kind(imp)) is not None:
            counts[kind] += 1
    lines = ["| kind | why | imports |", "|---|---|---|"]
    lines += [f"| {kind} | {why} | {counts[kind]} |" for kind, why, _ in LAZY_KINDS]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(ROOT))
    from pebal_core.fileio import replace_between_markers

    doc = Path(argv[0])
    replace_between_markers(doc, BEGIN, END, markdown().splitlines())
    replace_between_markers(doc, LAZY_BEGIN, LAZY_END, lazy_markdown().splitlines())
    print(f"wrote the layer and lazy-import sections of {doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
