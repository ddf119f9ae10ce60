"""From a predicted frame (trainIds + anomaly score) to the alarms and obstacles of that frame.

:class:`AlarmPipeline` holds the per-stream state (the persistence filter) and runs, per frame:
region (:mod:`~pebal_core.alarms.region`) -> ``score >= threshold`` inside it and outside the
ego-vehicle mask (:mod:`~pebal_core.alarms.ego_mask`) -> persistence
(:mod:`~pebal_core.alarms.persistence`) -> obstacles (:mod:`~pebal_core.alarms.obstacles`).
The ROS node, the alarm benchmark and the overlays all call :meth:`AlarmPipeline.process`, so
the numbers measured are those of what the node publishes.

:func:`persist_grid` applies a second persistence filter to ground-grid values (OccupancyGrid
convention: 0..100 = probability in percent, -1 unknown; a cell alarms at ``>= 50``, i.e. at the
threshold): a cell that alarms without persistence is capped to :data:`GRID_CAP` (just below an
alarm), so the grid still carries the evidence but only persistent cells read as occupied.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pebal_core.alarms.obstacles import DEFAULT_MIN_PIXELS, Obstacle, find_obstacles
from pebal_core.alarms.persistence import Persistence, PersistenceConfig
from pebal_core.alarms.region import DEFAULT_MIN_FRACTION, REGIONS, alarm_region
from pebal_core.ground import CameraMount

GRID_ALARM = 50
"""Grid value (percent) from which a cell alarms: the calibrated probability at the threshold."""
GRID_CAP = GRID_ALARM - 1
"""Value a non-persistent alarm cell is capped to by :func:`persist_grid`."""


@dataclass(frozen=True)
class AlarmConfig:
    """How alarms are made (the node's ``alarms.*`` parameters).

    Attributes:
        region: ``drivable`` or ``all`` (:data:`pebal_core.alarms.region.REGIONS`).
        include_sidewalk: the drivable area includes sidewalk.
        region_min_fraction: road fragments below this fraction of the image are ignored.
        min_pixels: smallest obstacle (pixels).
        persistence: the image-space temporal filter.
    """

    region: str = "drivable"
    include_sidewalk: bool = False
    region_min_fraction: float = DEFAULT_MIN_FRACTION
    min_pixels: int = DEFAULT_MIN_PIXELS
    persistence: PersistenceConfig = field(default_factory=PersistenceConfig)

    def __post_init__(self) -> None:
        if self.region not in REGIONS:
            raise ValueError(f"alarm region must be one of {', '.join(REGIONS)}, got {self.region!r}")
        if self.min_pixels < 1:
            raise ValueError(f"min_pixels must be >= 1, got {self.min_pixels}")


@dataclass
class AlarmFrame:
    """What :meth:`AlarmPipeline.process` found in one frame (all maps ``H x W``).

    Attributes:
        region: bool, the region of interest, ego pixels left out (None = every pixel).
        raw: bool, ``score >= threshold`` (the per-pixel mask of the paper).
        alarms: bool, ``raw`` inside the region and outside the ego mask, after persistence.
        obstacles: the obstacles, largest first.
        components: int32, ``i + 1`` on the pixels of ``obstacles[i]``.
        threshold: the score threshold used (energy).
        ego: bool, the ego-vehicle mask at the frame's size (None = no mask).
    """

    region: np.ndarray | None
    raw: np.ndarray
    alarms: np.ndarray
    obstacles: list[Obstacle]
    components: np.ndarray
    threshold: float
    ego: np.ndarray | None = None


class AlarmPipeline:
    """Alarms of one camera stream, frame after frame (see the module docstring)."""

    def __init__(self, config: AlarmConfig | None = None) -> None:
        self.config = config or AlarmConfig()
        self.persistence = Persistence(self.config.persistence)

    def process(
        self,
        labels: np.ndarray,
        score: np.ndarray,
        threshold: float,
        stamp: float | None = None,
        homography: np.ndarray | None = None,
        mount: CameraMount | None = None,
        ego: np.ndarray | None = None,
    ) -> AlarmFrame:
        """Alarms of one frame.

        Args:
            labels: ``uint8 H x W`` predicted trainIds (for the region).
            score: ``float32 H x W`` anomaly score (energy; higher = more anomalous).
            threshold: alarm where ``score >= threshold``.
            stamp: frame time in seconds (header stamp); None = no gap detection.
            homography: image -> ground ``H`` for obstacle ground positions (None = image only).
            mount: the camera mount of ``homography``.
            ego: bool ``H x W`` ego-vehicle mask at the frame's size (:meth:`EgoMask.at
                <pebal_core.alarms.ego_mask.EgoMask.at>`); its pixels never alarm. None = no mask.
        """
        if labels.shape != score.shape:
            raise ValueError(f"labels {labels.shape} and score {score.shape} must be equal H x W maps")
        if ego is not None and ego.shape != score.shape:
            raise ValueError(f"ego mask {ego.shape} and score {score.shape} must be equal H x W maps")
        c = self.config
        region = alarm_region(labels, c.region, c.include_sidewalk, c.region_min_fraction, ego)
        raw = score >= threshold
        allowed = region if region is not None else None if ego is None else ~ego
        alarms = self.persistence.update(raw if allowed is None else raw & allowed, stamp)
        obstacles, components = find_obstacles(alarms, score, c.min_pixels, homography, mount)
        return AlarmFrame(region, raw, alarms, obstacles, components, float(threshold), ego)


def persist_grid(values: np.ndarray, persistence: Persistence, stamp: float | None = None) -> np.ndarray:
    """Grid values (int8, 0..100, -1 unknown) with alarm cells that lack persistence capped to
    :data:`GRID_CAP`; a new array, ``values`` is not changed."""
    alarm = values >= GRID_ALARM
    kept = persistence.update(alarm, stamp)
    out = values.copy()
    out[alarm & ~kept] = GRID_CAP
    return out
