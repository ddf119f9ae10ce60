"""Obstacle-level counts of single frames against 0/1/255 labels: what a driver experiences.

Per frame (:func:`count_frame`), given the alarms of the chain
(:class:`~pebal_core.alarms.pipeline.AlarmFrame`: region, ego mask, persistence, smallest
obstacle) and the evaluation labels (0 inlier, 1 anomaly, 255 void):

* **labelled obstacles**: the 8-connected components of the anomaly pixels (label 1) with at least
  ``min_visible`` pixels; void pixels are not anomaly pixels, so two anomaly blobs that touch only
  through void are two obstacles. Every one counts, wherever it lies (outside the region, under
  the ego mask): one the chain cannot see is missed.
* **detected**: a labelled obstacle that a reported obstacle (an alarm component the chain keeps)
  overlaps by at least one pixel.
* **false alarms**: reported obstacles that overlap no anomaly pixel. Void is not an excuse: an
  obstacle reported on void pixels only (the bonnet, which LostAndFound labels void) is a false
  alarm, as the driver sees it.
* **pixel FPR in the region**: of the inlier pixels (label 0) inside the alarm region (every
  pixel for region ``all``) and outside the ego mask, the share that alarm.

:class:`ThresholdSweep` counts the same for one frame at many thresholds (choosing a threshold by
obstacles).

:class:`ObstacleCounts` adds frames up (``pebal eval``'s ``obstacle_level`` report, the bag scorer,
the demo). Without obstacle identities across frames (real LostAndFound labels have none) these
are per-frame rates; ``benchmarks/bench_alarms.py`` follows obstacles through synthetic sequences
for first-detection numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from pebal_core.alarms.pipeline import AlarmFrame
from pebal_core.component_metrics import EIGHT_CONNECTED
from pebal_core.labels import EVAL_ANOMALY, EVAL_INLIER

DEFAULT_MIN_VISIBLE = 20
"""Pixels from which a labelled obstacle counts."""


@dataclass(frozen=True)
class LabelledObstacle:
    """One labelled obstacle of a frame: ``box`` ``(u_min, v_min, u_max, v_max)`` inclusive pixel
    indices, its pixel count and whether a reported obstacle overlaps it."""

    box: tuple[int, int, int, int]
    pixels: int
    detected: bool


@dataclass(frozen=True)
class FrameObstacles:
    """:func:`count_frame`'s result for one frame (module docstring).

    Attributes:
        labelled: the labelled obstacles, largest first.
        reported: number of reported obstacles.
        false_alarms: indices (into the frame's ``obstacles``) of the reported obstacles on no anomaly pixel.
        inlier_region: inlier pixels inside the region and outside the ego mask.
        flagged_region: of those, the pixels that alarm.
    """

    labelled: tuple[LabelledObstacle, ...]
    reported: int
    false_alarms: tuple[int, ...]
    inlier_region: int
    flagged_region: int

    @property
    def detected(self) -> int:
        return sum(o.detected for o in self.labelled)


def _labelled(labels: np.ndarray, min_visible: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(truth, sizes, counted)``: the 8-connected anomaly components (int map, 0 elsewhere),
    their sizes (index = component id) and the bool array of ids that count (``>= min_visible``)."""
    truth, n = ndimage.label(labels == EVAL_ANOMALY, structure=EIGHT_CONNECTED)
    sizes = np.bincount(truth.ravel(), minlength=n + 1)
    counted = sizes >= min_visible
    counted[0] = False
    return truth, sizes, counted


def _overlaps(components: np.ndarray, n: int, truth: np.ndarray, counted: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(hit, on_anomaly)``: per labelled id, whether a reported component overlaps it; per
    reported id ``1..n``, whether it covers an anomaly pixel (index 0 unused in both)."""
    both = (components > 0) & (truth > 0)
    hit = np.zeros(counted.size, bool)
    hit[truth[both]] = True
    on_anomaly = np.zeros(n + 1, bool)
    on_anomaly[components[both]] = True
    return hit & counted, on_anomaly


def count_frame(
    frame: AlarmFrame, labels: np.ndarray, min_visible: int = DEFAULT_MIN_VISIBLE, ego: np.ndarray | None = None
) -> FrameObstacles:
    """Labelled obstacles, detections, false alarms and region pixels of one frame (module docstring).

    Args:
        frame: the chain's alarms of the frame (all maps ``H x W``).
        labels: ``uint8 H x W``, 0 inlier, 1 anomaly, 255 void.
        min_visible: smallest labelled obstacle that counts (pixels).
        ego: bool ``H x W`` ego-vehicle mask the chain ran with (None = none): its pixels leave the
            pixel counts.
    """
    labels = np.asarray(labels)
    if labels.shape != frame.components.shape:
        raise ValueError(f"labels {labels.shape} and alarms {frame.components.shape} differ in size")
    truth, sizes, counted = _labelled(labels, min_visible)
    hit, on_anomaly = _overlaps(frame.components, len(frame.obstacles), truth, counted)
    labelled = []
    for index, box in enumerate(ndimage.find_objects(truth), start=1):
        if box is None or not counted[index]:
            continue
        rows, cols = box
        corners = (cols.start, rows.start, cols.stop - 1, rows.stop - 1)
        labelled.append(LabelledObstacle(corners, int(sizes[index]), bool(hit[index])))
    labelled.sort(key=lambda o: -o.pixels)
    false_alarms = tuple(ob.index for ob in frame.obstacles if not on_anomaly[ob.index + 1])
    inside = labels == EVAL_INLIER
    if frame.region is not None:
        inside &= frame.region
    if ego is not None:
        inside &= ~ego
    return FrameObstacles(
        labelled=tuple(labelled),
        reported=len(frame.obstacles),
        false_alarms=false_alarms,
        inlier_region=int(inside.sum()),
        flagged_region=int((inside & frame.alarms).sum()),
    )


def frame_evidence(name: str, counted: FrameObstacles, frame: AlarmFrame) -> dict:
    """One frame's obstacle-level result as JSON values, for reports: which labelled obstacles
    were missed and where the false alarms are (boxes ``[u_min, v_min, u_max, v_max]``, inclusive
    pixel indices; ``score`` the peak energy)."""
    false_alarms = [frame.obstacles[i] for i in counted.false_alarms]
    return {
        "name": name,
        "labelled": len(counted.labelled),
        "detected": counted.detected,
        "missed": [{"box": list(o.box), "pixels": o.pixels} for o in counted.labelled if not o.detected],
        "false_alarms": [{"box": list(o.box), "pixels": o.pixels, "score": o.score} for o in false_alarms],
    }


class ThresholdSweep:
    """Labelled obstacles detected and false alarms of one single frame at many thresholds, as
    :func:`count_frame` counts them after the alarm chain without persistence (for choosing a
    threshold by obstacles; labelled components are found once).

    Args:
        score: float32 ``H x W`` anomaly score.
        labels: ``uint8 H x W``, 0 inlier, 1 anomaly, 255 void.
        allowed: bool ``H x W`` where alarms may be raised (the region, ego pixels left out), None = everywhere.
        min_pixels: smallest reported obstacle (pixels of this frame).
        min_visible: smallest labelled obstacle that counts.
    """

    def __init__(
        self,
        score: np.ndarray,
        labels: np.ndarray,
        allowed: np.ndarray | None,
        min_pixels: int,
        min_visible: int = DEFAULT_MIN_VISIBLE,
    ) -> None:
        if score.shape != labels.shape or (allowed is not None and allowed.shape != score.shape):
            raise ValueError(f"score {score.shape}, labels {labels.shape} and region must be equal H x W maps")
        self.score, self.allowed, self.min_pixels = score, allowed, int(min_pixels)
        self.truth, _, self.counted = _labelled(np.asarray(labels), min_visible)
        self.labelled = int(self.counted.sum())

    def at(self, threshold: float) -> tuple[int, int]:
        """``(detected, false alarms)`` at ``threshold``."""
        alarm = self.score >= threshold
        if self.allowed is not None:
            alarm &= self.allowed
        components, n = ndimage.label(alarm, structure=EIGHT_CONNECTED)
        if n == 0:
            return 0, 0
        sizes = np.bincount(components.ravel(), minlength=n + 1)
        small = sizes < self.min_pixels
        small[0] = True
        components[small[components]] = 0
        hit, on_anomaly = _overlaps(components, n, self.truth, self.counted)
        reported = ~small
        return int(hit.sum()), int((reported & ~on_anomaly).sum())


@dataclass
class ObstacleCounts:
    """Running totals of :func:`count_frame` over frames."""

    min_visible: int = DEFAULT_MIN_VISIBLE
    frames: int = 0
    obstacles: int = 0
    detected: int = 0
    reported: int = 0
    false_alarms: int = 0
    inlier_region: int = 0
    flagged_region: int = 0

    def update(self, frame: AlarmFrame, labels: np.ndarray, ego: np.ndarray | None = None) -> FrameObstacles:
        """Add one frame: its alarms, its labels (``uint8 H x W``, 0 inlier, 1 anomaly, 255 void)
        and the ego mask the chain ran with (:func:`count_frame`)."""
        counted = count_frame(frame, labels, self.min_visible, ego)
        self.frames += 1
        self.obstacles += len(counted.labelled)
        self.detected += counted.detected
        self.reported += counted.reported
        self.false_alarms += len(counted.false_alarms)
        self.inlier_region += counted.inlier_region
        self.flagged_region += counted.flagged_region
        return counted

    def summary(self) -> dict:
        """Totals plus ``detection_rate`` (labelled obstacles detected, per obstacle and frame),
        ``false_alarms_per_frame`` and ``pixel_fpr_region``."""
        return {
            "frames": self.frames,
            "obstacles": self.obstacles,
            "detected": self.detected,
            "reported": self.reported,
            "false_alarms": self.false_alarms,
            "detection_rate": self.detected / self.obstacles if self.obstacles else None,
            "false_alarms_per_frame": self.false_alarms / self.frames if self.frames else None,
            "pixel_fpr_region": self.flagged_region / self.inlier_region if self.inlier_region else None,
            "min_visible": self.min_visible,
        }
