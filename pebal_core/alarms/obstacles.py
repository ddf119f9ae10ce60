"""Obstacles as objects: connected alarm components with a score, a box and a ground position.

An obstacle is an 8-connected component of the alarm mask with at least ``min_pixels`` pixels.
Pixel coordinates follow :mod:`pebal_core.ground`: ``u`` column, ``v`` row, integer values are
pixel centres, so pixel ``(u, v)`` covers ``u - 0.5 .. u + 0.5``.

With intrinsics and the camera mount (:func:`pebal_core.ground.image_to_ground_homography`) each
obstacle gets a **ground contact point**: where its lowest image row meets the ground, i.e. the
bottom edge ``v_max + 0.5`` of the component at the mean column of its lowest row. An object
standing on the road touches the ground at its lowest visible pixel (unless something nearer
hides its foot), so this is its position in the ground frame (x forward, y left, metres), and
``distance`` is the ground-plane distance from the camera's foot point ``(mount.x, mount.y)``.
``width`` is the ground distance between the left and right edges of the box at the contact row.
Components whose lowest row lies at or above the horizon have no ground position (None).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from pebal_core.component_metrics import EIGHT_CONNECTED
from pebal_core.ground import CameraMount, pixels_to_ground

DEFAULT_MIN_PIXELS = 20
"""Smallest component (pixels) reported as an obstacle."""


@dataclass(frozen=True)
class Obstacle:
    """One detected obstacle (see the module docstring for conventions).

    Attributes:
        index: position in the frame's list (0 = largest); marker and detection ids use it.
        score: the highest anomaly score (energy) over the component's pixels.
        mean_score: the mean anomaly score over its pixels.
        pixels: number of pixels.
        box: ``(u_min, v_min, u_max, v_max)``, inclusive pixel indices.
        contact: ``(u, v)`` image point where it touches the ground (pixels; ``v = v_max + 0.5``).
        ground: ``(x, y)`` of the contact point in the ground frame (m), None above the horizon.
        distance: ground-plane distance from the camera's foot point (m), None without ``ground``.
        width: ground width of the box at the contact row (m), None without ``ground``.
    """

    index: int
    score: float
    mean_score: float
    pixels: int
    box: tuple[int, int, int, int]
    contact: tuple[float, float]
    ground: tuple[float, float] | None = None
    distance: float | None = None
    width: float | None = None

    @property
    def center(self) -> tuple[float, float]:
        """Box centre ``(u, v)`` (pixels)."""
        u0, v0, u1, v1 = self.box
        return (u0 + u1) / 2.0, (v0 + v1) / 2.0

    @property
    def size(self) -> tuple[int, int]:
        """Box ``(width, height)`` in pixels."""
        u0, v0, u1, v1 = self.box
        return u1 - u0 + 1, v1 - v0 + 1


def find_obstacles(
    alarms: np.ndarray,
    score: np.ndarray,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    homography: np.ndarray | None = None,
    mount: CameraMount | None = None,
) -> tuple[list[Obstacle], np.ndarray]:
    """Obstacles of one frame (largest first) and their component map.

    Args:
        alarms: bool ``H x W`` alarm mask (after region and persistence).
        score: float ``H x W`` anomaly score (energy).
        min_pixels: smaller components are dropped.
        homography: image -> ground ``H`` for ground positions (None = image only).
        mount: the camera mount used for ``homography`` (its foot point is the distance origin).

    Returns:
        ``(obstacles, components)``: ``components`` is ``int32 H x W``, ``i + 1`` on the pixels
        of ``obstacles[i]`` and 0 elsewhere.
    """
    alarms = np.asarray(alarms, dtype=bool)
    score = np.asarray(score)
    if alarms.ndim != 2 or alarms.shape != score.shape:
        raise ValueError(f"alarms {alarms.shape} and score {score.shape} must be equal H x W maps")
    if min_pixels < 1:
        raise ValueError(f"min_pixels must be >= 1, got {min_pixels}")
    labelled, n = ndimage.label(alarms, structure=EIGHT_CONNECTED)
    components = np.zeros(alarms.shape, np.int32)
    if n == 0:
        return [], components
    sizes = np.bincount(labelled.ravel(), minlength=n + 1)
    keep = [i for i in np.argsort(-sizes[1:], kind="stable") + 1 if sizes[i] >= min_pixels]
    obstacles = []
    origin = (mount.x, mount.y) if mount is not None else (0.0, 0.0)
    boxes = ndimage.find_objects(labelled)
    for index, label in enumerate(keep):
        rows, cols = boxes[label - 1]
        mask = labelled[rows, cols] == label
        components[rows, cols][mask] = index + 1
        values = score[rows, cols][mask]
        v_max = rows.stop - 1
        bottom = np.flatnonzero(mask[-1]) + cols.start
        contact = (float(bottom.mean()), v_max + 0.5)
        box = (cols.start, rows.start, cols.stop - 1, v_max)
        ground = distance = width = None
        if homography is not None:
            x, y, ok = pixels_to_ground(
                homography, np.array([contact[0], box[0] - 0.5, box[2] + 0.5]), np.full(3, contact[1])
            )
            if ok.all():
                ground = (float(x[0]), float(y[0]))
                distance = math.hypot(ground[0] - origin[0], ground[1] - origin[1])
                width = math.hypot(x[2] - x[1], y[2] - y[1])
        obstacles.append(
            Obstacle(
                index=index,
                score=float(values.max()),
                mean_score=float(values.mean()),
                pixels=int(sizes[label]),
                box=box,
                contact=contact,
                ground=ground,
                distance=distance,
                width=width,
            )
        )
    return obstacles, components
