"""Obstacle-level counts of single frames against 0/1/255 labels (for recorded runs without identities).

Per frame, the ground-truth obstacles are the 8-connected components of the anomaly pixels
(label 1) with at least ``min_visible`` pixels; one is *detected* when a reported obstacle
(:class:`~pebal_core.alarms.pipeline.AlarmFrame`) overlaps it. A reported obstacle that overlaps
no anomaly pixel is a *false alarm*. Without obstacle identities across frames (real LostAndFound
labels have none) these are per-frame rates; ``benchmarks/bench_alarms.py`` follows obstacles
through synthetic sequences for first-detection numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from pebal_core.alarms.pipeline import AlarmFrame
from pebal_core.component_metrics import EIGHT_CONNECTED
from pebal_core.labels import EVAL_ANOMALY

DEFAULT_MIN_VISIBLE = 20
"""Pixels from which a ground-truth obstacle counts."""


@dataclass
class ObstacleCounts:
    """Running totals over frames (see the module docstring)."""

    min_visible: int = DEFAULT_MIN_VISIBLE
    frames: int = 0
    obstacles: int = 0
    detected: int = 0
    reported: int = 0
    false_alarms: int = 0

    def update(self, frame: AlarmFrame, labels: np.ndarray) -> None:
        """Add one frame: its alarms and its labels (``uint8 H x W``, 0 inlier, 1 anomaly, 255 void)."""
        if labels.shape != frame.components.shape:
            raise ValueError(f"labels {labels.shape} and alarms {frame.components.shape} differ in size")
        anomaly = labels == EVAL_ANOMALY
        truth, n = ndimage.label(anomaly, structure=EIGHT_CONNECTED)
        sizes = np.bincount(truth.ravel(), minlength=n + 1)
        counted = np.flatnonzero(sizes[1:] >= self.min_visible) + 1
        hit = np.unique(truth[(frame.components > 0) & anomaly])
        self.frames += 1
        self.obstacles += counted.size
        self.detected += int(np.isin(counted, hit).sum())
        self.reported += len(frame.obstacles)
        on_anomaly = np.unique(frame.components[anomaly])
        self.false_alarms += sum(1 for ob in frame.obstacles if ob.index + 1 not in on_anomaly)

    def summary(self) -> dict:
        """Totals plus ``detection_rate`` (per visible obstacle and frame) and ``false_alarms_per_frame``."""
        return {
            "frames": self.frames,
            "obstacles": self.obstacles,
            "detected": self.detected,
            "reported": self.reported,
            "false_alarms": self.false_alarms,
            "detection_rate": self.detected / self.obstacles if self.obstacles else None,
            "false_alarms_per_frame": self.false_alarms / self.frames if self.frames else None,
            "min_visible": self.min_visible,
        }
