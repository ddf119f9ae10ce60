"""From a predicted frame (trainIds + anomaly score) to the alarms and obstacles of that frame.

:class:`AlarmPipeline` is the alarm chain of one image stream: it holds the stream's state (the
persistence filter) and runs, per frame (:class:`~pebal_core.alarms.frame.FrameContext`, at the
frame's operating point): region (:mod:`~pebal_core.alarms.region`) -> ``score >= threshold``
inside it, off the ego vehicle (:mod:`~pebal_core.alarms.ego_mask`) -> persistence
(:mod:`~pebal_core.alarms.persistence`; on for sequences, off for single still images) ->
obstacles of at least the point's smallest size at the frame's size
(:mod:`~pebal_core.alarms.obstacles`). The ROS node, ``pebal predict``, the bag scorer and the
alarm benchmark all call :meth:`AlarmPipeline.process`, so the numbers measured are those of what
the node publishes and a still shows what the node shows.

:func:`persist_grid` applies a second persistence filter to ground-grid values (OccupancyGrid
convention: 0..100 = probability in percent, -1 unknown; a cell alarms at ``>= 50``, i.e. at the
threshold): a cell that alarms without persistence is capped to :data:`GRID_CAP` (just below an
alarm), so the grid still carries the evidence but only persistent cells read as occupied.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pebal_core.alarms.frame import FrameContext
from pebal_core.alarms.obstacles import Obstacle, find_obstacles
from pebal_core.alarms.operating_point import NO_PERSISTENCE
from pebal_core.alarms.persistence import Persistence
from pebal_core.alarms.region import alarm_region

GRID_ALARM = 50
"""Grid value (percent) from which a cell alarms: the calibrated probability at the threshold."""
GRID_CAP = GRID_ALARM - 1
"""Value a non-persistent alarm cell is capped to by :func:`persist_grid`."""


@dataclass
class AlarmFrame:
    """What :meth:`AlarmPipeline.process` found in one frame (all maps ``H x W``).

    Attributes:
        region: bool, the region of interest, ego pixels left out (None = every pixel).
        alarms: bool, ``score >= threshold`` inside the region, off the ego vehicle, after persistence.
        obstacles: the obstacles, largest first.
        components: int32, ``i + 1`` on the pixels of ``obstacles[i]``.
    """

    region: np.ndarray | None
    alarms: np.ndarray
    obstacles: list[Obstacle]
    components: np.ndarray


class AlarmPipeline:
    """The alarm chain of one image stream (see the module docstring).

    Args:
        sequence: the frames form a sequence (a camera, a video): the operating point's persistence
            filter runs. False for single still images: each frame is judged on its own.
    """

    def __init__(self, sequence: bool = True) -> None:
        self.sequence = sequence
        self.persistence = Persistence(NO_PERSISTENCE)

    def process(self, frame: FrameContext) -> AlarmFrame:
        """Alarms of one frame, at ``frame.point``."""
        point = frame.point
        config = point.persistence if self.sequence else NO_PERSISTENCE
        if config != self.persistence.config:  # a new operating point: the filter starts over
            self.persistence = Persistence(config)
        region = alarm_region(
            frame.labels, point.region, point.include_sidewalk, point.region_min_fraction, frame.ego_mask
        )
        candidates = frame.mask if region is None else frame.mask & region
        if frame.ego_mask is not None:
            candidates = candidates & ~frame.ego_mask
        alarms = self.persistence.update(candidates, frame.stamp)
        obstacles, components = find_obstacles(
            alarms, frame.score, point.min_pixels_at(frame.shape), frame.homography, frame.mount
        )
        return AlarmFrame(region, alarms, obstacles, components)


def persist_grid(values: np.ndarray, persistence: Persistence, stamp: float | None = None) -> np.ndarray:
    """Grid values (int8, 0..100, -1 unknown) with alarm cells that lack persistence capped to
    :data:`GRID_CAP`; a new array, ``values`` is not changed."""
    alarm = values >= GRID_ALARM
    kept = persistence.update(alarm, stamp)
    out = values.copy()
    out[alarm & ~kept] = GRID_CAP
    return out
