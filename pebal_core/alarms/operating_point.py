"""Operating points: which score threshold raises an alarm, chosen on validation data by a policy.

A policy is a string:

``tpr95``
    The paper's point: the highest threshold that flags at least 95 % of the anomalous pixels
    (all non-void pixels, no region). On the shipped synthetic model it flags about a fifth of
    the inlier pixels too: red along every edge.
``fpr:<x>``
    A pixel false-alarm budget inside the drivable region: the lowest threshold at which at most
    a fraction ``x`` of the inlier pixels in the region (:mod:`pebal_core.alarms.region`, from the
    model's own prediction) score at or above it.
``fa:<x>``
    An obstacle false-alarm budget: the lowest threshold (on a grid of candidates, scanned from
    high to low and stopped at the first one over budget) at which the single frames produce at
    most ``x`` false-alarm obstacles per frame on average. A false-alarm obstacle is an 8-connected
    component of ``score >= threshold`` inside the region with at least ``min_pixels`` pixels
    and no pixel on a ground-truth anomaly (void pixels are not alarms).

:data:`DEFAULT_POLICY` is ``fa:0.1``: at most one false obstacle in ten frames, one a second at
10 Hz, the project's target for what a driver accepts. It is set in the unit a driver experiences
(obstacles, not pixels) and holds whatever the image size or the share of road in the image,
which a pixel budget does not. On the shipped synthetic model it transfers: chosen on the 30
single images of the validation world, it gives 0.100 false-alarm obstacles per frame on the
validation world's driving sequences too (``docs/alarms.md``). ``pebal threshold`` computes the points
of a model on a validation set and stores them in a copy of the model: ``score_threshold`` (the
default policy's threshold, which the ROS node uses) and ``alarm_operating_points`` (every
policy's threshold and how it was chosen).

Labels follow the evaluation convention: 0 inlier, 1 anomaly, 255 void.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from pebal_core.alarms.obstacles import DEFAULT_MIN_PIXELS
from pebal_core.component_metrics import EIGHT_CONNECTED
from pebal_core.labels import EVAL_ANOMALY, EVAL_INLIER, EVAL_VOID

DEFAULT_POLICY = "fa:0.1"
POLICIES_HELP = "tpr95 | fpr:<fraction of inlier region pixels> | fa:<false-alarm obstacles per frame>"
"""The policy syntax, for help texts."""
METADATA_KEY = "alarm_operating_points"
"""Model metadata entry holding the operating points (see :func:`operating_points_metadata`)."""
FA_CANDIDATES = 120
"""Thresholds tried by ``fa:<x>`` (inlier-region FPR from 1e-7 to 0.5, log-spaced)."""


def parse_policy(text: str) -> tuple[str, float]:
    """``(kind, value)`` of a policy string: ``("tpr", 0.95)``, ``("fpr", x)`` or ``("fa", x)``."""
    text = str(text).strip()
    if text == "tpr95":
        return "tpr", 0.95
    kind, _, value = text.partition(":")
    try:
        x = float(value)
    except ValueError:
        x = math.nan
    if kind == "fpr" and 0 <= x < 1:
        return "fpr", x
    if kind == "fa" and 0 <= x and math.isfinite(x):
        return "fa", x
    raise ValueError(f"unknown alarm policy {text!r}; use {POLICIES_HELP} (e.g. fpr:0.001, fa:0.05)")


@dataclass
class ValidationFrame:
    """One validation image: score (float32 ``H x W``), labels (0/1/255) and region (bool or None)."""

    score: np.ndarray
    labels: np.ndarray
    region: np.ndarray | None


@dataclass
class OperatingPoint:
    """A chosen threshold and what it does on the data it was chosen on."""

    policy: str
    threshold: float
    tpr: float
    """Fraction of anomalous pixels flagged (all pixels)."""
    fpr: float
    """Fraction of inlier pixels flagged (all pixels)."""
    fpr_region: float
    """Fraction of inlier pixels inside the region flagged."""
    false_alarms_per_frame: float
    """False-alarm obstacles (components in the region, ``min_pixels``) per frame."""
    rule: str = ""
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "policy": self.policy,
            "threshold": self.threshold,
            "tpr": self.tpr,
            "fpr": self.fpr,
            "fpr_region": self.fpr_region,
            "false_alarms_per_frame": self.false_alarms_per_frame,
            "rule": self.rule,
            **self.extra,
        }


class OperatingPointSearch:
    """Pixel scores of a validation set, kept for choosing thresholds by several policies."""

    def __init__(self, frames: list[ValidationFrame], min_pixels: int = DEFAULT_MIN_PIXELS) -> None:
        if not frames:
            raise ValueError("choosing an operating point needs at least one validation image")
        self.frames = frames
        self.min_pixels = int(min_pixels)
        anomaly, inlier, inlier_region = [], [], []
        for f in frames:
            if f.score.shape != f.labels.shape:
                raise ValueError(f"score {f.score.shape} and labels {f.labels.shape} differ in size")
            anomaly.append(f.score[f.labels == EVAL_ANOMALY])
            inlier.append(f.score[f.labels == EVAL_INLIER])
            keep = f.labels == EVAL_INLIER if f.region is None else (f.labels == EVAL_INLIER) & f.region
            inlier_region.append(f.score[keep])
        self.anomaly = np.sort(np.concatenate(anomaly)).astype(np.float64)
        self.inlier = np.sort(np.concatenate(inlier)).astype(np.float64)
        self.inlier_region = np.sort(np.concatenate(inlier_region)).astype(np.float64)

    # ------------------------------------------------------------------ measures at a threshold
    @staticmethod
    def _flagged(sorted_values: np.ndarray, threshold: float) -> float:
        if sorted_values.size == 0:
            return math.nan
        return float(sorted_values.size - np.searchsorted(sorted_values, threshold, "left")) / sorted_values.size

    def false_alarms_per_frame(self, threshold: float) -> float:
        """Mean number of false-alarm obstacles per frame at ``threshold`` (module docstring)."""
        total = 0
        for f in self.frames:
            mask = (f.score >= threshold) & (f.labels != EVAL_VOID)
            if f.region is not None:
                mask &= f.region
            cc, n = ndimage.label(mask, structure=EIGHT_CONNECTED)
            if n == 0:
                continue
            sizes = np.bincount(cc.ravel(), minlength=n + 1)
            hits = np.bincount(cc[f.labels == EVAL_ANOMALY], minlength=n + 1)
            total += int(np.count_nonzero((sizes[1:] >= self.min_pixels) & (hits[1:] == 0)))
        return total / len(self.frames)

    def point(self, policy: str, threshold: float, rule: str, **extra: object) -> OperatingPoint:
        return OperatingPoint(
            policy=policy,
            threshold=float(threshold),
            tpr=self._flagged(self.anomaly, threshold),
            fpr=self._flagged(self.inlier, threshold),
            fpr_region=self._flagged(self.inlier_region, threshold),
            false_alarms_per_frame=self.false_alarms_per_frame(threshold),
            rule=rule,
            extra=dict(extra),
        )

    # ------------------------------------------------------------------ policies
    def tpr_threshold(self, tpr: float) -> float:
        """The highest threshold flagging at least ``tpr`` of the anomalous pixels."""
        if self.anomaly.size == 0:
            raise ValueError("the validation set has no anomalous pixels; tpr95 needs some")
        return float(self.anomaly[int(math.floor((1.0 - tpr) * self.anomaly.size + 1e-9))])

    def region_fpr_threshold(self, fpr: float) -> float:
        """The lowest threshold flagging at most ``fpr`` of the inlier pixels in the region."""
        values = self.inlier_region
        if values.size == 0:
            raise ValueError(
                "the validation set has no inlier pixels inside the region (does the model predict road?); "
                "fpr:<x> and fa:<x> need some: check the model, or choose with --region all"
            )
        allowed = int(math.floor(fpr * values.size + 1e-9))  # pixels that may be flagged
        if allowed >= values.size:
            return float(values[0])
        # the next float32 above: scores are float32 and compared in float32 (score >= threshold)
        return float(np.nextafter(np.float32(values[values.size - 1 - allowed]), np.float32(np.inf)))

    def false_alarm_threshold(self, budget: float) -> tuple[float, int]:
        """``(threshold, candidates tried)`` for the ``fa:<budget>`` policy (module docstring)."""
        candidates = [self.region_fpr_threshold(x) for x in np.geomspace(1e-7, 0.5, FA_CANDIDATES)]
        best = candidates[0]  # the highest threshold: flags at most 1e-7 of the region
        tried = 0
        for t in candidates:  # descending thresholds
            tried += 1
            if self.false_alarms_per_frame(t) > budget:
                break
            best = t
        return best, tried

    def choose(self, policy: str) -> OperatingPoint:
        """The operating point of ``policy`` on these frames."""
        kind, value = parse_policy(policy)
        if kind == "tpr":
            rule = "highest threshold flagging >= 95% of the anomalous pixels (all pixels)"
            return self.point(policy, self.tpr_threshold(value), rule)
        if kind == "fpr":
            rule = f"lowest threshold flagging <= {value:g} of the inlier pixels inside the region"
            return self.point(policy, self.region_fpr_threshold(value), rule)
        threshold, tried = self.false_alarm_threshold(value)
        rule = (
            f"lowest of {FA_CANDIDATES} candidate thresholds (scanned from high to low, stopped at the first over "
            f"budget) with <= {value:g} false-alarm obstacles (>= {self.min_pixels} px, in the region) per frame"
        )
        return self.point(policy, threshold, rule, candidates_tried=tried)


def operating_points_metadata(points: list[OperatingPoint], default: str, source: dict) -> dict:
    """The model metadata entries for ``points``: ``score_threshold`` (``default``'s) and
    :data:`METADATA_KEY` ``{"default", "points": {policy: point}, "source"}``."""
    by_policy = {p.policy: p.to_dict() for p in points}
    if default not in by_policy:
        raise ValueError(f"default policy {default!r} is not among the computed ones ({', '.join(by_policy)})")
    return {
        "score_threshold": by_policy[default]["threshold"],
        METADATA_KEY: {"default": default, "points": by_policy, "source": source},
    }


def policy_threshold(metadata: dict, policy: str) -> float | None:
    """The threshold a model's metadata stores for ``policy`` ("" = its default), None if absent.

    ``metadata`` is a backend's (``Predictor.metadata``): a checkpoint's carries the points at the
    top level, an ONNX export's (and so a TensorRT engine's) inside ``checkpoint_metadata``.
    Raises ``ValueError`` when a policy is named that the model does not carry, listing those it does.
    """
    points = metadata.get(METADATA_KEY) or (metadata.get("checkpoint_metadata") or {}).get(METADATA_KEY) or {}
    if not policy:
        value = metadata.get("score_threshold")
        return None if value is None else float(value)
    stored = points.get("points", {})
    if policy not in stored:
        have = ", ".join(stored) or "none"
        raise ValueError(
            f"the model carries no operating point {policy!r} (it has: {have}); compute it with "
            f"`pebal threshold --policy {policy}` or set score_threshold"
        )
    return float(stored[policy]["threshold"])
