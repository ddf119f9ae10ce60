"""The parameters of ``pebal_node``: their specs and descriptors, validation, and the settings built from them.

:data:`PARAMETERS` declares every parameter with a default, a description and the constraints its
``ParameterDescriptor`` advertises (ranges enforced by rclpy, closed choices by :func:`check_value`).
:func:`check_value` judges one value, :func:`check_combination` a full set; the node refuses any
set for which either gives a reason. :func:`settings_from` turns the values into the
run-time-changeable :class:`Settings` the worker reads.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from pebal_core.alarms.operating_point import POLICIES_HELP, parse_policy, policy_threshold
from pebal_core.alarms.persistence import PersistenceConfig
from pebal_core.alarms.pipeline import AlarmConfig
from pebal_core.alarms.region import REGIONS
from pebal_core.calibration import DEFAULT_PROBABILITY_SCALE, resolve_threshold
from pebal_core.ground import CameraMount, GroundGrid
from pebal_core.model_metadata import MAX_NETWORK_SIDE
from pebal_core.model_store import is_model_name, model_names
from pebal_core.models import list_models
from pebal_ros.conversions import CONVERSION_METHODS, DEFAULT_MAX_PIXELS
from pebal_ros.obstacle_msgs import DETECTIONS_AVAILABLE

IMAGE_OUTPUTS = ("semantic", "semantic_color", "anomaly_score", "anomaly_mask", "anomaly_overlay")
ALL_OUTPUTS = (*IMAGE_OUTPUTS, "anomaly_grid", "obstacles", "obstacle_detections")
"""Every output the node can publish; each has an ``outputs.<name>`` parameter."""
OUTPUTS = ALL_OUTPUTS if DETECTIONS_AVAILABLE else ALL_OUTPUTS[:-1]
"""Output topics of this install, in publishing order (``obstacle_detections`` needs vision_msgs)."""
BACKENDS = ("torch", "onnxruntime", "tensorrt")
RELIABILITY = ("best_effort", "reliable")
_DEVICE = re.compile(r"^(cpu|(cuda|tensorrt)(:\d+)?)$")
MAX_NETWORK_PIXELS = 1024 * 2048
"""Default of ``max_network_pixels``: the Cityscapes frame size (1024 x 2048), the largest size the
shipped models are trained and evaluated at; larger network inputs cost memory and time and gain
nothing for them."""


@dataclass(frozen=True)
class ParamSpec:
    """One ROS parameter: default, description, and the constraints its descriptor advertises.

    ``bounds`` is an inclusive ``(min, max)`` range (an IntegerRange / FloatingPointRange in the
    descriptor, enforced by rclpy); ``choices`` is a closed set of strings (enforced by the node).
    """

    name: str
    default: object
    description: str
    read_only: bool = False
    bounds: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None

    def descriptor(self) -> ParameterDescriptor:
        d = ParameterDescriptor(name=self.name, description=self.description, read_only=self.read_only)
        if self.choices:
            d.additional_constraints = f"one of: {', '.join(self.choices)}"
        if self.bounds is not None:
            lo, hi = self.bounds
            if isinstance(self.default, bool):
                raise TypeError(f"{self.name}: bounds on a bool")
            if isinstance(self.default, int):
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
    ParamSpec("backend", "torch", "inference backend", True, choices=BACKENDS),
    ParamSpec("device", "cpu", "cpu, cuda or cuda:N (onnxruntime also tensorrt[:N])", True),
    ParamSpec(
        "engine_auto_build", True, "tensorrt only: build the engine from the ONNX file when missing or stale", True
    ),
    ParamSpec(
        "input_height",
        0,
        "network input height (px); 0 with input_width 0 = the model's input size, else each image's size "
        "scaled down to at most max_network_pixels",
        True,
        (0, MAX_NETWORK_SIDE),
    ),
    ParamSpec(
        "input_width",
        0,
        "network input width (px); 0 with input_height 0: see input_height",
        True,
        (0, MAX_NETWORK_SIDE),
    ),
    ParamSpec(
        "max_network_pixels",
        MAX_NETWORK_PIXELS,
        "input_height/width 0 and a model without an input size: larger frames run at a scaled-down size "
        "(aspect kept) of at most this many pixels",
        True,
        (1024, MAX_NETWORK_SIDE**2),
    ),
    ParamSpec("smoothing", True, "7x7 sigma-1 Gaussian smoothing of the energy score (the reference score)", True),
    ParamSpec(
        "score_threshold",
        math.nan,
        "anomaly threshold, an energy value (score >= threshold is anomalous); NaN = the model's stored "
        "threshold, or -9.0 when the model has none",
    ),
    *(ParamSpec(f"outputs.{name}", True, f"publish {name}") for name in ALL_OUTPUTS),
    ParamSpec("compute_only_subscribed", True, "compute an enabled output only while it has subscribers"),
    ParamSpec("overlay_alpha", 0.55, "tint strength of anomalous pixels in anomaly_overlay", bounds=(0.0, 1.0)),
    ParamSpec(
        "max_image_pixels",
        DEFAULT_MAX_PIXELS,
        "larger input images are refused (default 4096 x 3072, a 12 MP camera)",
        bounds=(1, 1 << 28),
    ),
    ParamSpec("subscribe_compressed", False, "also subscribe to image/compressed (JPEG/PNG)", True),
    ParamSpec("input_reliability", "best_effort", "QoS reliability of the inputs (depth 1)", True, choices=RELIABILITY),
    ParamSpec("output_reliability", "reliable", "QoS reliability of the outputs (depth 1)", True, choices=RELIABILITY),
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
        f"operating point stored in the model ({POLICIES_HELP}); empty = the model's default "
        "(score_threshold, when set, wins)",
    ),
    ParamSpec("alarms.region", "drivable", "where alarms are raised: drivable area or every pixel", choices=REGIONS),
    ParamSpec("alarms.include_sidewalk", False, "the drivable area includes sidewalk"),
    ParamSpec("alarms.min_pixels", 20, "smallest obstacle (pixels, 8-connected)", bounds=(1, 1 << 24)),
    ParamSpec("persistence.k", 2, "frames of the newest n that must alarm to raise an alarm", bounds=(1, 100)),
    ParamSpec("persistence.n", 3, "window (received frames); k = n = 1 turns the filter off", bounds=(1, 100)),
    ParamSpec("persistence.k_off", 1, "an alarm that is on stays on while k_off of n frames alarm", bounds=(1, 100)),
    ParamSpec("persistence.radius", 4, "image motion tolerated between frames (px)", bounds=(0, 100)),
    ParamSpec("persistence.grid_radius", 3, "ground-grid motion tolerated between frames (cells)", bounds=(0, 100)),
    ParamSpec(
        "persistence.max_gap", 0.5, "seconds between frames after which the filters start over", bounds=(0.0, 3600.0)
    ),
    ParamSpec(
        "grid.probability_scale",
        DEFAULT_PROBABILITY_SCALE,
        "energy units per logit of the anomaly probability 1/(1+exp(-(score-threshold)/scale))",
        bounds=(0.001, 100.0),
    ),
)
_SPECS = {spec.name: spec for spec in PARAMETERS}


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
    threshold: float
    threshold_source: str
    overlay_alpha: float
    max_image_pixels: int
    warning_throttle: float
    input_timeout: float
    watchdog_timeout: float
    grid: GroundGrid
    mount: CameraMount
    grid_frame: str
    probability_scale: float
    alarms: AlarmConfig
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


def alarm_config_from(values: dict) -> tuple[AlarmConfig, PersistenceConfig]:
    """The image alarm configuration and the grid's persistence filter."""
    persistence = PersistenceConfig(
        values["persistence.k"],
        values["persistence.n"],
        values["persistence.k_off"],
        values["persistence.radius"],
        values["persistence.max_gap"],
    )
    alarms = AlarmConfig(
        region=values["alarms.region"],
        include_sidewalk=values["alarms.include_sidewalk"],
        min_pixels=values["alarms.min_pixels"],
        persistence=persistence,
    )
    grid = PersistenceConfig(
        persistence.k, persistence.n, persistence.k_off, values["persistence.grid_radius"], persistence.max_gap
    )
    return alarms, grid


def check_value(name: str, value: object) -> str | None:
    """Why ``value`` is not acceptable for parameter ``name`` (None if it is)."""
    spec = _SPECS.get(name)
    if spec is None:
        return None
    if spec.choices and value not in spec.choices:
        return f"{name} must be one of {', '.join(spec.choices)}, got {value!r}"
    if name == "device" and not _DEVICE.match(str(value)):
        return f"device must be cpu, cuda, cuda:N (or tensorrt[:N] for onnxruntime), got {value!r}"
    if name == "model" and value and not is_model_name(value) and not Path(str(value)).expanduser().exists():
        return (
            f"model file {value} does not exist (leave model empty for the shipped default model, or name a shipped "
            f"model: {', '.join(model_names())})"
        )
    if name == "arch" and value and value not in list_models():
        return f"arch must be empty or one of {', '.join(list_models())}, got {value!r}"
    if name == "score_threshold" and math.isinf(float(value)):
        return "score_threshold must be a finite energy value, or NaN for the model's own threshold"
    if name == "grid.frame_id" and not str(value).strip():
        return "grid.frame_id must name a frame (e.g. base_footprint)"
    if name == "alarms.policy" and value:
        try:
            parse_policy(str(value))
        except ValueError as e:
            return str(e)
    return None


def check_combination(values: dict) -> str | None:
    """Why a full set of parameter values does not work together (None if it does)."""
    if (values["input_height"] == 0) != (values["input_width"] == 0):
        return (
            "input_height and input_width must both be 0 (native size) or both positive, "
            f"got {values['input_height']} x {values['input_width']}"
        )
    try:
        grid_from(values)
        mount_from(values)
        alarm_config_from(values)
    except ValueError as e:
        return str(e)
    return None


def settings_from(values: dict, metadata: dict) -> Settings:
    """The :class:`Settings` for a full set of parameter values; ``metadata`` is the model's
    (:attr:`pebal_core.runtime.Predictor.metadata`), which holds its threshold and operating points."""
    policy = str(values["alarms.policy"])
    model_threshold = policy_threshold(metadata, policy)
    threshold, source = resolve_threshold(values["score_threshold"], model_threshold)
    if source == "model" and policy:
        source = f"model, policy {policy}"
    alarms, grid_persistence = alarm_config_from(values)
    return Settings(
        outputs=frozenset(name for name in OUTPUTS if values[f"outputs.{name}"]),
        compute_only_subscribed=bool(values["compute_only_subscribed"]),
        threshold=threshold,
        threshold_source=source,
        overlay_alpha=float(values["overlay_alpha"]),
        max_image_pixels=int(values["max_image_pixels"]),
        warning_throttle=float(values["warning_throttle"]),
        input_timeout=float(values["input_timeout"]),
        watchdog_timeout=float(values["watchdog_timeout"]),
        grid=grid_from(values),
        mount=mount_from(values),
        grid_frame=str(values["grid.frame_id"]),
        probability_scale=float(values["grid.probability_scale"]),
        alarms=alarms,
        grid_persistence=grid_persistence,
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
        rows.append(f"  {s.name:<{width}}  default {s.default!r}{extra}{flag}\n  {'':<{width}}  {s.description}")
    return "\n".join(rows)
