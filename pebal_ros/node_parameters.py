"""The parameters of ``pebal_node``: their specs and descriptors, validation, and the settings built from them.

:data:`PARAMETERS` declares every parameter with a default, a description and the constraints its
``ParameterDescriptor`` advertises (ranges enforced by rclpy, closed choices by :func:`check_value`).
:func:`check_value` judges one value, :func:`check_combination` a full set; the node refuses any
set for which either gives a reason. :func:`settings_from` turns the values into the
run-time-changeable :class:`Settings` the worker reads.

The alarm parameters (:data:`POINT_PARAMETERS`: ``score_threshold``, ``alarms.*`` but the policy,
``persistence.*`` but the grid's radius) are declared without a value: unset, the node runs the
model's stored operating point (``alarms.policy`` picks one, empty = its default); each one set
overrides that part of the point (:func:`resolve_point`), and the node says so.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType

from pebal_core.alarms.ego_mask import SPEC_HELP as EGO_SPEC_HELP
from pebal_core.alarms.ego_mask import EgoMask, cached_ego_mask
from pebal_core.alarms.operating_point import POLICIES_HELP, ResolvedPoint, parse_policy, resolve_operating_point
from pebal_core.alarms.persistence import PersistenceConfig
from pebal_core.alarms.region import REGIONS
from pebal_core.backends import BACKENDS as BACKEND_REGISTRY
from pebal_core.calibration import DEFAULT_PROBABILITY_SCALE
from pebal_core.ground import CameraMount, GroundGrid
from pebal_core.model_store import UnknownModelError, is_model_name, model_names, resolve_model
from pebal_core.models import list_models
from pebal_core.onnx_contract import MAX_SIDE
from pebal_core.protocols import MAX_NETWORK_PIXELS
from pebal_core.runtime import Predictor
from pebal_core.visualize import OVERLAY_ALPHA
from pebal_ros.conversions import CONVERSION_METHODS, DEFAULT_MAX_PIXELS
from pebal_ros.obstacle_msgs import DETECTIONS_AVAILABLE
from pebal_ros.qos import INPUT_RELIABILITY, OUTPUT_RELIABILITY, RELIABILITY

IMAGE_OUTPUTS = ("semantic", "semantic_color", "anomaly_score", "anomaly_mask", "anomaly_overlay")
ALL_OUTPUTS = (*IMAGE_OUTPUTS, "anomaly_grid", "obstacles", "obstacle_detections")
"""Every output the node can publish; each has an ``outputs.<name>`` parameter."""
OUTPUTS = ALL_OUTPUTS if DETECTIONS_AVAILABLE else ALL_OUTPUTS[:-1]
"""Output topics of this install, in publishing order (``obstacle_detections`` needs vision_msgs)."""
BACKENDS = tuple(BACKEND_REGISTRY)
"""Names the ``backend`` parameter takes: those of :data:`pebal_core.backends.BACKENDS`."""
_DEVICE = re.compile(r"^(cpu|(cuda|tensorrt)(:\d+)?)$")
_TYPES = {bool: ParameterType.PARAMETER_BOOL, int: ParameterType.PARAMETER_INTEGER}
_TYPES |= {float: ParameterType.PARAMETER_DOUBLE, str: ParameterType.PARAMETER_STRING}


@dataclass(frozen=True)
class ParamSpec:
    """One ROS parameter: default, description, and the constraints its descriptor advertises.

    ``bounds`` is an inclusive ``(min, max)`` range (an IntegerRange / FloatingPointRange in the
    descriptor, enforced by rclpy); ``choices`` is a closed set of strings (enforced by the node).
    A parameter whose ``default`` is None is declared unset, of type ``kind``.
    """

    name: str
    default: object
    description: str
    read_only: bool = False
    bounds: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None
    kind: type | None = None

    @property
    def value_type(self) -> type:
        return type(self.default) if self.default is not None else self.kind

    def descriptor(self) -> ParameterDescriptor:
        d = ParameterDescriptor(name=self.name, description=self.description, read_only=self.read_only)
        d.type = _TYPES[self.value_type]
        if self.choices:
            d.additional_constraints = f"one of: {', '.join(self.choices)}"
        if self.bounds is not None:
            lo, hi = self.bounds
            if self.value_type is bool:
                raise TypeError(f"{self.name}: bounds on a bool")
            if self.value_type is int:
                d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=0)]
            else:
                d.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
        return d


PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "model",
        "",
        "checkpoint/engine path for the backend, or a shipped model's name (default, synthetic; `pebal models`); "
        "empty = the shipped default model",
        True,
    ),
    ParamSpec(
        "arch",
        "",
        "architecture of a model file without metadata (a bare state_dict, e.g. espnet_p2q8; `pebal models`); "
        "empty = the file's own",
        True,
    ),
    ParamSpec(
        "backend",
        "auto",
        "inference backend; auto = the fastest CPU backend installed, measured on this machine for this model at the "
        "first start and cached (never tensorrt: name it)",
        True,
        choices=BACKENDS,
    ),
    ParamSpec("device", "cpu", "cpu, cuda or cuda:N (onnxruntime also tensorrt[:N]); auto and openvino: cpu", True),
    ParamSpec(
        "precision",
        "",
        "openvino: fp32 or bf16 (a CPU with bf16 arithmetic); tensorrt: fp16, fp32 or int8; empty = the backend's "
        "default (fp32; tensorrt fp16)",
        True,
    ),
    ParamSpec(
        "engine_auto_build", True, "tensorrt only: build the engine from the ONNX file when missing or stale", True
    ),
    ParamSpec(
        "input_height",
        0,
        "network input height (px); 0 with input_width 0 = the model's input size, else each image's size "
        "scaled down to at most max_network_pixels",
        True,
        (0, MAX_SIDE),
    ),
    ParamSpec(
        "input_width", 0, "network input width (px); 0 with input_height 0: see input_height", True, (0, MAX_SIDE)
    ),
    ParamSpec(
        "max_network_pixels",
        MAX_NETWORK_PIXELS,
        "input_height/width 0 and a model without an input size: larger frames run at a scaled-down size "
        "(aspect kept) of at most this many pixels",
        True,
        (1024, MAX_SIDE**2),
    ),
    ParamSpec("smoothing", True, "7x7 sigma-1 Gaussian smoothing of the energy score (the reference score)", True),
    ParamSpec(
        "score_threshold",
        None,
        "anomaly threshold, an energy value (score >= threshold is anomalous); unset = the operating point's",
        kind=float,
    ),
    *(ParamSpec(f"outputs.{name}", True, f"publish {name}") for name in ALL_OUTPUTS),
    ParamSpec("compute_only_subscribed", True, "compute an enabled output only while it has subscribers"),
    ParamSpec(
        "overlay_alpha", OVERLAY_ALPHA, "tint strength of anomalous pixels in anomaly_overlay", bounds=(0.0, 1.0)
    ),
    ParamSpec(
        "max_image_pixels",
        DEFAULT_MAX_PIXELS,
        "larger input images are refused (default 4096 x 3072, a 12 MP camera)",
        bounds=(1, 1 << 28),
    ),
    ParamSpec("subscribe_compressed", False, "also subscribe to image/compressed (JPEG/PNG)", True),
    ParamSpec(
        "input_reliability",
        INPUT_RELIABILITY,
        "deprecated alias: default QoS reliability of all inputs; use qos_overrides.<topic>.subscription.reliability",
        True,
        choices=RELIABILITY,
    ),
    ParamSpec(
        "output_reliability",
        OUTPUT_RELIABILITY,
        "deprecated alias: default QoS reliability of all outputs; use qos_overrides.<topic>.publisher.reliability",
        True,
        choices=RELIABILITY,
    ),
    ParamSpec(
        "image_conversion", "auto", "auto = cv_bridge when importable, else numpy", True, choices=CONVERSION_METHODS
    ),
    ParamSpec("diagnostics_period", 1.0, "seconds between /diagnostics messages", True, (0.05, 3600.0)),
    ParamSpec("warning_throttle", 5.0, "seconds between repeated warnings of one kind", bounds=(0.0, 3600.0)),
    ParamSpec(
        "input_timeout",
        5.0,
        "warn (log and diagnostics) when no frame arrived for this many seconds while image has a publisher; 0 = never",
        bounds=(0.0, 3600.0),
    ),
    ParamSpec(
        "watchdog_timeout",
        10.0,
        "diagnostics ERROR when one frame has been in processing for longer than this (s)",
        bounds=(0.1, 3600.0),
    ),
    ParamSpec(
        "requirements.min_rate",
        0.0,
        "output frames/s the application needs; diagnostics WARN below min_rate x (1 - tolerance) over the "
        "window, ERROR below half of that (0 = not judged)",
        bounds=(0.0, 1000.0),
    ),
    ParamSpec(
        "requirements.max_latency",
        0.0,
        "seconds from a frame's header stamp to its outputs the application accepts; diagnostics WARN when a "
        "frame of the window took longer than max_latency x (1 + tolerance), ERROR when the median did "
        "(0 = not judged)",
        bounds=(0.0, 3600.0),
    ),
    ParamSpec(
        "requirements.tolerance",
        0.1,
        "fraction by which the output rate may fall below min_rate and the latency exceed max_latency",
        bounds=(0.0, 0.99),
    ),
    ParamSpec(
        "requirements.window",
        5.0,
        "seconds of outputs over which rate and latency are judged (rate once frames arrived for this long)",
        bounds=(0.1, 600.0),
    ),
    ParamSpec("grid.frame_id", "base_footprint", "ground frame of anomaly_grid (x forward, y left, z up)"),
    ParamSpec("grid.resolution", 0.2, "cell size (m)", bounds=(0.01, 10.0)),
    ParamSpec("grid.size_x", 40.0, "grid extent along x, forward (m)", bounds=(0.1, 1000.0)),
    ParamSpec("grid.size_y", 20.0, "grid extent along y, left (m)", bounds=(0.1, 1000.0)),
    ParamSpec("grid.origin_x", 0.0, "x of the grid corner at cell (0, 0) (m)", bounds=(-1000.0, 1000.0)),
    ParamSpec("grid.origin_y", -10.0, "y of the grid corner at cell (0, 0) (m)", bounds=(-1000.0, 1000.0)),
    ParamSpec("grid.camera_height", 1.5, "optical centre above the ground (m)", bounds=(0.01, 100.0)),
    ParamSpec("grid.camera_pitch", 0.05, "downward tilt of the optical axis (rad)", bounds=(-1.5, 1.5)),
    ParamSpec("grid.camera_x", 0.0, "optical centre x in the ground frame (m)", bounds=(-100.0, 100.0)),
    ParamSpec("grid.camera_y", 0.0, "optical centre y in the ground frame (m)", bounds=(-100.0, 100.0)),
    ParamSpec(
        "alarms.policy",
        "",
        f"operating point stored in the model to run ({POLICIES_HELP}); empty = the model's default",
    ),
    ParamSpec(
        "alarms.region",
        None,
        "where alarms are raised: drivable area or every pixel; unset = the operating point's",
        choices=REGIONS,
        kind=str,
    ),
    ParamSpec("alarms.include_sidewalk", None, "the drivable area includes sidewalk; unset = the point's", kind=bool),
    ParamSpec(
        "alarms.ego_mask",
        None,
        f"ego-vehicle mask, pixels that never alarm ({EGO_SPEC_HELP}); 'none' = no mask; unset = the operating "
        "point's",
        kind=str,
    ),
    ParamSpec(
        "alarms.min_pixels",
        None,
        "smallest obstacle (pixels of the camera image, 8-connected); unset = the operating point's, scaled "
        "from the image size it was chosen at",
        bounds=(1, 1 << 24),
        kind=int,
    ),
    ParamSpec(
        "persistence.k", None, "frames of the newest n that must alarm; unset = the point's", bounds=(1, 100), kind=int
    ),
    ParamSpec(
        "persistence.n",
        None,
        "window (received frames), k = n = 1 turns the filter off; unset = the point's",
        bounds=(1, 100),
        kind=int,
    ),
    ParamSpec(
        "persistence.k_off",
        None,
        "an alarm that is on stays on while k_off of n frames alarm; unset = the point's",
        bounds=(1, 100),
        kind=int,
    ),
    ParamSpec(
        "persistence.radius",
        None,
        "image motion tolerated between frames (px); unset = the point's",
        bounds=(0, 100),
        kind=int,
    ),
    ParamSpec(
        "persistence.max_gap",
        None,
        "seconds between frames after which the filters start over; unset = the point's",
        bounds=(0.0, 3600.0),
        kind=float,
    ),
    ParamSpec("persistence.grid_radius", 3, "ground-grid motion tolerated between frames (cells)", bounds=(0, 100)),
    ParamSpec(
        "grid.probability_scale",
        DEFAULT_PROBABILITY_SCALE,
        "energy units per logit of the anomaly probability 1/(1+exp(-(score-threshold)/scale))",
        bounds=(0.001, 100.0),
    ),
)
_SPECS = {spec.name: spec for spec in PARAMETERS}
POINT_PARAMETERS = {
    "score_threshold": "threshold",
    "alarms.region": "region",
    "alarms.include_sidewalk": "include_sidewalk",
    "alarms.min_pixels": "min_pixels",
    "alarms.ego_mask": "ego_mask",
    **{f"persistence.{name}": f"persistence.{name}" for name in ("k", "n", "k_off", "radius", "max_gap")},
}
"""Parameter -> the part of the operating point (:class:`~pebal_core.alarms.operating_point.OperatingPoint`
field, ``persistence.<field>``) it overrides when set."""


@dataclass(frozen=True)
class Requirements:
    """What the application needs from the node (the ``requirements.*`` parameters): ``min_rate``
    (frames/s, 0 = not judged), ``max_latency`` (s, 0 = not judged), ``tolerance`` (fraction) and
    ``window`` (s); judged by :func:`pebal_ros.node_diagnostics.requirement_findings`."""

    min_rate: float = 0.0
    max_latency: float = 0.0
    tolerance: float = 0.1
    window: float = 5.0


@dataclass(frozen=True)
class Settings:
    """The run-time-changeable configuration, swapped atomically when parameters change."""

    outputs: frozenset[str]
    compute_only_subscribed: bool
    point: ResolvedPoint
    ego: EgoMask | None
    overlay_alpha: float
    max_image_pixels: int
    warning_throttle: float
    input_timeout: float
    watchdog_timeout: float
    grid: GroundGrid
    mount: CameraMount
    grid_frame: str
    probability_scale: float
    grid_persistence: PersistenceConfig
    requirements: Requirements


def grid_from(values: dict) -> GroundGrid:
    return GroundGrid.from_extent(
        values["grid.resolution"],
        values["grid.size_x"],
        values["grid.size_y"],
        values["grid.origin_x"],
        values["grid.origin_y"],
    )


def mount_from(values: dict) -> CameraMount:
    return CameraMount(
        values["grid.camera_height"], values["grid.camera_pitch"], values["grid.camera_x"], values["grid.camera_y"]
    )


def resolve_point(values: Mapping, metadata: Mapping) -> ResolvedPoint:
    """The operating point the node runs: the model's (``metadata``) stored point of ``alarms.policy``
    with the parts set by :data:`POINT_PARAMETERS` overridden
    (:func:`pebal_core.alarms.operating_point.resolve_operating_point`). Raises ``ValueError`` for
    a policy the model does not store or a combination the point refuses (e.g. ``k > n``)."""
    overrides: dict = {"persistence": {}}
    for name, part in POINT_PARAMETERS.items():
        if values.get(name) is None:
            continue
        if part.startswith("persistence."):
            overrides["persistence"][part.split(".", 1)[1]] = values[name]
        else:
            overrides[part] = values[name]
    return resolve_operating_point(metadata, str(values["alarms.policy"]), overrides)


def load_predictor(values: Mapping) -> Predictor:
    """The Predictor the parameters ask for: ``model`` (a file or a shipped model's name) with
    ``backend``, ``device``, ``precision``, ``smoothing``, ``input_height`` x ``input_width`` (0: the
    model's size) and ``max_network_pixels``."""
    options: dict[str, object] = {"max_network_pixels": values["max_network_pixels"]}
    if values["backend"] == "tensorrt":
        options["engine_auto_build"] = bool(values["engine_auto_build"])
    if values["precision"]:
        options["precision"] = values["precision"]
    size = (values["input_height"], values["input_width"]) if values["input_height"] else None
    return Predictor.from_checkpoint(
        resolve_model(values["model"]),
        backend=values["backend"],
        device=values["device"],
        input_size=size,
        smoothing=values["smoothing"],
        arch=values["arch"] or None,
        **options,
    )


def check_value(name: str, value: object) -> str | None:
    """Why ``value`` is not acceptable for parameter ``name`` (None if it is; None = unset is)."""
    spec = _SPECS.get(name)
    if spec is None or value is None:
        return None
    if spec.choices and value not in spec.choices:
        return f"{name} must be one of {', '.join(spec.choices)}, got {value!r}"
    if name == "device" and not _DEVICE.match(str(value)):
        return f"device must be cpu, cuda, cuda:N (or tensorrt[:N] for onnxruntime), got {value!r}"
    if name == "model" and value and not is_model_name(value):
        try:
            resolve_model(str(value))
        except UnknownModelError as e:
            return str(e)
    if name == "model" and value and not is_model_name(value) and not Path(str(value)).expanduser().exists():
        return (
            f"model file {value} does not exist (leave model empty for the shipped default model, or name a shipped "
            f"model: {', '.join(model_names())})"
        )
    if name == "arch" and value and value not in list_models():
        return f"arch must be empty or one of {', '.join(list_models())}, got {value!r}"
    if name == "score_threshold" and not math.isfinite(float(value)):
        return "score_threshold must be a finite energy value; leave it unset for the operating point's threshold"
    if name == "grid.frame_id" and not str(value).strip():
        return "grid.frame_id must name a frame (e.g. base_footprint)"
    if name == "alarms.policy" and value:
        try:
            parse_policy(str(value))
        except ValueError as e:
            return str(e)
    if name == "alarms.ego_mask":
        try:
            cached_ego_mask(str(value))
        except ValueError as e:
            return f"alarms.ego_mask: {e}"
    return None


PRECISIONS = {"openvino": ("fp32", "bf16"), "tensorrt": ("fp32", "fp16", "int8")}
"""The ``precision`` values each backend takes (the others take none)."""


def check_combination(values: dict, metadata: Mapping | None = None) -> str | None:
    """Why a full set of parameter values does not work together (None if it does); with the
    model's ``metadata``, the operating point they resolve to is checked too."""
    backend, precision = values["backend"], values["precision"]
    if precision and precision not in PRECISIONS.get(backend, ()):
        allowed = "; ".join(f"{name}: {', '.join(p)}" for name, p in PRECISIONS.items())
        return f"precision {precision!r} does not apply to backend {backend} (precision applies to {allowed})"
    if backend in ("auto", "openvino") and values["device"] != "cpu":
        return f"backend {backend} runs on the CPU: set device cpu, or name a GPU backend (tensorrt, torch)"
    if (values["input_height"] == 0) != (values["input_width"] == 0):
        return (
            "input_height and input_width must both be 0 (native size) or both positive, "
            f"got {values['input_height']} x {values['input_width']}"
        )
    try:
        grid_from(values)
        mount_from(values)
        if metadata is not None:
            spec = resolve_point(values, metadata).point.ego_mask
            try:
                cached_ego_mask(spec)
            except ValueError as e:
                return f"the operating point's ego mask: {e} (set alarms.ego_mask to another mask, or to none)"
    except ValueError as e:
        return str(e)
    return None


def settings_from(values: dict, metadata: Mapping) -> Settings:
    """The :class:`Settings` for a full set of parameter values; ``metadata`` is the model's
    (:attr:`pebal_core.runtime.Predictor.metadata`), which holds its operating points."""
    point = resolve_point(values, metadata)
    return Settings(
        outputs=frozenset(name for name in OUTPUTS if values[f"outputs.{name}"]),
        compute_only_subscribed=bool(values["compute_only_subscribed"]),
        point=point,
        ego=cached_ego_mask(point.point.ego_mask),
        overlay_alpha=float(values["overlay_alpha"]),
        max_image_pixels=int(values["max_image_pixels"]),
        warning_throttle=float(values["warning_throttle"]),
        input_timeout=float(values["input_timeout"]),
        watchdog_timeout=float(values["watchdog_timeout"]),
        grid=grid_from(values),
        mount=mount_from(values),
        grid_frame=str(values["grid.frame_id"]),
        probability_scale=float(values["grid.probability_scale"]),
        grid_persistence=replace(point.point.persistence, radius=values["persistence.grid_radius"]),
        requirements=Requirements(
            float(values["requirements.min_rate"]),
            float(values["requirements.max_latency"]),
            float(values["requirements.tolerance"]),
            float(values["requirements.window"]),
        ),
    )


def parameters_help() -> str:
    """Every parameter with its default, range or choices, and description (for ``--help``)."""
    width = max(len(s.name) for s in PARAMETERS)
    rows = []
    for s in PARAMETERS:
        if s.choices:
            extra = f" [{', '.join(s.choices)}]"
        elif s.bounds:
            extra = f" [{s.bounds[0]}..{s.bounds[1]}]"
        else:
            extra = ""
        flag = " (read-only)" if s.read_only else ""
        default = "unset" if s.default is None else f"default {s.default!r}"
        rows.append(f"  {s.name:<{width}}  {default}{extra}{flag}\n  {'':<{width}}  {s.description}")
    return "\n".join(rows)
