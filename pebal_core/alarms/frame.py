"""One predicted frame and what every consumer reads from it, each computed once.

:class:`FrameContext` is built once per camera frame (by the ROS node, ``pebal predict``, the bag
scorer) from the Predictor's output and the frame's operating point; the alarm chain
(:class:`pebal_core.alarms.pipeline.AlarmPipeline`), the overlay
(:func:`pebal_core.visualize.alarm_overlay`) and the node's outputs all read it: the mask
``score >= threshold`` is compared once (:attr:`FrameContext.mask`), the image -> ground homography
is derived once from the intrinsics (:attr:`FrameContext.homography`), and the calibrated anomaly
probability has one definition (:meth:`FrameContext.probability`).

Maps are ``H x W`` at the image's size: labels uint8 Cityscapes trainIds 0..18, score float32
energy (higher = more anomalous).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from pebal_core.alarms.operating_point import OperatingPoint
from pebal_core.calibration import DEFAULT_PROBABILITY_SCALE, anomaly_probability
from pebal_core.ground import CameraMount, image_to_ground_homography


@dataclass
class FrameContext:
    """Everything about one frame that the alarm chain and the outputs read.

    Attributes:
        labels: uint8 ``H x W`` predicted trainIds.
        score: float32 ``H x W`` anomaly score (energy).
        point: the operating point this frame is judged at.
        rgb: uint8 ``H x W x 3`` camera image (None where only outputs were recorded).
        stamp: capture time in seconds (the header stamp); None = unknown (no gap detection).
        intrinsics: 3x3 pinhole ``K`` at the image's size, None when unknown.
        mount: the camera mount on the ground (with ``intrinsics``: ground positions).
        probability_scale: energy units per logit of :meth:`probability`.
        ego_mask: bool ``H x W``, True on pixels of the ego vehicle (never alarms); None = none.
    """

    labels: np.ndarray
    score: np.ndarray
    point: OperatingPoint
    rgb: np.ndarray | None = None
    stamp: float | None = None
    intrinsics: np.ndarray | None = None
    mount: CameraMount | None = None
    probability_scale: float = DEFAULT_PROBABILITY_SCALE
    ego_mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.labels.shape != self.score.shape:
            raise ValueError(f"labels {self.labels.shape} and score {self.score.shape} must be equal H x W maps")
        if self.rgb is not None and self.rgb.shape[:2] != self.score.shape:
            raise ValueError(f"image {self.rgb.shape[:2]} and score {self.score.shape} differ in size")

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` of the frame."""
        return self.score.shape

    @cached_property
    def mask(self) -> np.ndarray:
        """bool ``H x W``: ``score >= threshold`` at every pixel (the paper's per-pixel mask)."""
        return self.score >= self.point.threshold

    @cached_property
    def homography(self) -> np.ndarray | None:
        """Image -> ground ``H`` (3x3) from the intrinsics and the mount, None without either."""
        if self.intrinsics is None or self.mount is None:
            return None
        return image_to_ground_homography(self.intrinsics, self.mount)

    def probability(self, score: np.ndarray | float) -> np.ndarray:
        """Calibrated anomaly probability of score values: 0.5 at the threshold (float32, the shape
        of ``score``; :func:`pebal_core.calibration.anomaly_probability`)."""
        return anomaly_probability(score, self.point.threshold, self.probability_scale)
