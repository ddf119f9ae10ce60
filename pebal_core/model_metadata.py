"""What a model file may say about itself, checked once when the file is loaded.

Checkpoints in the project format and ONNX exports carry metadata (``docs/models.md``): the
architecture to build, the input normalisation, the size the network runs at, the score
threshold and operating points the node compares scores with. Everything downstream (the
network builder, the preprocessing, the node's size bounds and thresholds) trusts these values,
so they are checked where the file is read (:func:`check_metadata`, called by
:func:`pebal_core.models.checkpoint.read_checkpoint`, :func:`pebal_core.onnx_contract.parse_metadata`
and the TensorRT backend): a value of the wrong type, out of range, not finite, or with unknown
sub-keys is one :class:`CheckpointError` naming the file, the key, the value and what is allowed.
The checks are the table :data:`METADATA_RULES` (one row per key); keys it does not name are
free-form notes (provenance, training configuration) that no code acts on.

Sizes are ``(height, width)`` in pixels; a network side is at most :data:`MAX_NETWORK_SIDE`, the
same bound as the node's ``input_height`` / ``input_width`` parameters and a dynamic ONNX
export's axes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

MAX_NETWORK_SIDE = 8192
"""Largest network input height or width (pixels) any model or parameter may ask for."""
CHECKPOINT_FORMAT_VERSION = 1
"""Version of the project checkpoint format (``format_version`` in the metadata) this code reads."""
INLIER_CLASSES = 19
"""Cityscapes trainIds 0..18: the inlier channels every model has (PEBAL adds an abstention channel)."""


class CheckpointError(RuntimeError):
    """A model file (checkpoint, ONNX export, TensorRT plan) cannot be read, holds invalid metadata, or
    does not fit the requested architecture; the message names the file and the cause."""


def _real(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _integer(v: object, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _triple(v: object, positive: bool) -> bool:
    return isinstance(v, (list, tuple)) and len(v) == 3 and all(_real(x) and (not positive or x > 0) for x in v)


def _normalization(v: object) -> bool:
    if not isinstance(v, Mapping) or not {"mean", "std"} <= set(v) <= {"mean", "std", "bgr", "post_scale"}:
        return False
    post_scale = v.get("post_scale", 1.0)
    return (
        _triple(v["mean"], False)
        and _triple(v["std"], True)
        and isinstance(v.get("bgr", False), bool)
        and _real(post_scale)
        and post_scale > 0
    )


def _input_size(v: object) -> bool:
    return v is None or (
        isinstance(v, (list, tuple)) and len(v) == 2 and all(_integer(x, 1, MAX_NETWORK_SIDE) for x in v)
    )


def _arch_kwargs(v: object) -> bool:
    return isinstance(v, Mapping) and all(
        isinstance(k, str) and (x is None or isinstance(x, (bool, str)) or _real(x)) for k, x in v.items()
    )


_POINT_FIELDS: dict[str, Callable[[object], bool]] = {
    "threshold": _real,
    "policy": lambda v: isinstance(v, str),
    "region": lambda v: isinstance(v, str),
    "include_sidewalk": lambda v: isinstance(v, bool),
    "region_min_fraction": lambda v: _real(v) and 0 <= v <= 1,
    "min_pixels": lambda v: _integer(v, 1, MAX_NETWORK_SIDE**2),
    "image_size": _input_size,
    "persistence": lambda v: isinstance(v, Mapping) and all(_real(x) and x >= 0 for x in v.values()),
}
"""Types and ranges of an operating point's fields as stored (``pebal_core.alarms.operating_point``
checks their meaning, e.g. the region's name, when a consumer resolves the point)."""


def _point_settings(entry: object, required: tuple[str, ...]) -> bool:
    return (
        isinstance(entry, Mapping)
        and all(k in entry for k in required)
        and all(check(entry[k]) for k, check in _POINT_FIELDS.items() if k in entry)
    )


def _operating_points(v: object) -> bool:
    if v is None:
        return True
    if not isinstance(v, Mapping) or not isinstance(v.get("points"), Mapping):
        return False
    return (
        isinstance(v.get("default"), str)
        and v["default"] in v["points"]
        and _point_settings(v.get("source") or {}, ())
        and all(isinstance(k, str) and _point_settings(p, ("threshold",)) for k, p in v["points"].items())
    )


@dataclass(frozen=True)
class Rule:
    """One metadata key: the test its value must pass, and what is allowed (for the error message)."""

    key: str
    allowed: str
    check: Callable[[object], bool]


METADATA_RULES: tuple[Rule, ...] = (
    Rule(
        "format_version",
        f"an integer from 1 to {CHECKPOINT_FORMAT_VERSION} (a newer file needs a newer pebal)",
        lambda v: _integer(v, 1, CHECKPOINT_FORMAT_VERSION),
    ),
    Rule(
        "arch", "a non-empty string naming an architecture (`pebal models`)", lambda v: isinstance(v, str) and v != ""
    ),
    Rule(
        "arch_kwargs",
        "an object of architecture options (names -> finite numbers, strings, booleans or null)",
        _arch_kwargs,
    ),
    Rule(
        "num_classes",
        f"{INLIER_CLASSES} (inlier trainIds) or {INLIER_CLASSES + 1} (plus PEBAL's abstention channel)",
        lambda v: _integer(v, INLIER_CLASSES, INLIER_CLASSES + 1),
    ),
    Rule(
        "normalization",
        "an object {mean: 3 finite numbers, std: 3 finite numbers > 0, bgr: true/false (optional), post_scale: a "
        "finite number > 0 (optional)} on the 0..255 scale, nothing else",
        _normalization,
    ),
    Rule(
        "input_size",
        f"null or [height, width], integers from 1 to {MAX_NETWORK_SIDE} (the node's input_height/width bound)",
        _input_size,
    ),
    Rule("score_threshold", "null or a finite number (an energy value)", lambda v: v is None or _real(v)),
    Rule(
        "alarm_operating_points",
        "null or an object {default: one of the points, points: {policy: {threshold: a finite number, min_pixels: "
        "an integer >= 1, image_size: null or [height, width], region: a string, persistence: an object of numbers "
        ">= 0, ...}}, source: ...}",
        _operating_points,
    ),
)
"""The checked keys of a model's metadata (checkpoint format and ONNX export alike)."""


def check_metadata(meta: Mapping, source: object, rules: tuple[Rule, ...] = METADATA_RULES) -> Mapping:
    """``meta`` itself when every key named in ``rules`` that it holds is allowed, else a
    :class:`CheckpointError` naming ``source`` (the file), the key, the value and what is allowed."""
    if not isinstance(meta, Mapping):
        raise CheckpointError(f"{source}: the model metadata must be an object, got {type(meta).__name__}")
    for rule in rules:
        if rule.key in meta and not rule.check(meta[rule.key]):
            raise CheckpointError(
                f"{source}: metadata key {rule.key!r} is {_short(meta[rule.key])}; allowed: {rule.allowed}. "
                "Re-save the model with pebal (or fix the key)"
            )
    return meta


def _short(value: object, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
