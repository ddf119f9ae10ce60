"""The outputs of ``pebal_node``: one small publisher function per topic, over one frame's context.

The node builds a :class:`NodeFrame` once per camera frame (the input header, the core
:class:`~pebal_core.alarms.frame.FrameContext` with the image, labels, score, operating point,
intrinsics read once and the ground homography, and the settings) and calls the function of each
wanted output in :data:`OUTPUTS_TABLE`, in the order of :data:`pebal_ros.node_parameters.OUTPUTS`.
Each returns the message to publish, or raises :class:`OutputUnavailable` when it cannot be made
(``anomaly_grid`` without usable intrinsics): the node warns and goes on. The alarm chain runs
once per processed frame (:attr:`NodeFrame.alarms`): when an output first needs it, else after the
outputs are published, so its persistence state sees every frame and the alarms do not depend on
which outputs have subscribers. The overlay, the grid and every message are made only for wanted
outputs.

Every image output carries the input header unchanged; the ground outputs keep its stamp and use
``grid.frame_id``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from nav_msgs.msg import OccupancyGrid
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from pebal_core.alarms.frame import FrameContext
from pebal_core.alarms.persistence import Persistence, PersistenceConfig
from pebal_core.alarms.pipeline import AlarmFrame, AlarmPipeline, persist_grid
from pebal_core.labels import colorize
from pebal_core.visualize import alarm_overlay
from pebal_ros.conversions import ImageConverter
from pebal_ros.node_parameters import OUTPUTS, Settings
from pebal_ros.obstacle_msgs import Detection2DArray, obstacle_detections, obstacle_markers
from pebal_ros.occupancy import OccupancyMapper, occupancy_grid_msg


class OutputUnavailable(Exception):
    """An output cannot be made for this frame; ``kind`` names the warning (throttled per kind)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class GridState:
    """The state of ``anomaly_grid`` across frames: the pixel -> cell lookup and its persistence filter."""

    def __init__(self) -> None:
        self.mapper = OccupancyMapper()
        self.persistence = Persistence()

    def filter(self, config: PersistenceConfig) -> Persistence:
        """The grid's persistence filter, started over when its configuration changed."""
        if config != self.persistence.config:
            self.persistence = Persistence(config)
        return self.persistence


@dataclass
class NodeFrame:
    """One frame as the node's outputs see it (see the module docstring).

    Attributes:
        header: the input image's header (stamp and frame id), passed on unchanged.
        frame: the core context: image, labels, score, operating point, intrinsics, mount.
        settings: the node's settings for this frame.
        converter: numpy <-> ``sensor_msgs/Image``.
        alarm_chain: the node's alarm chain (its persistence state spans frames).
        grid: the ground grid's state.
        intrinsics_problem: why ``frame.intrinsics`` is None (no CameraInfo yet, an unusable one).
    """

    header: Header
    frame: FrameContext
    settings: Settings
    converter: ImageConverter
    alarm_chain: AlarmPipeline
    grid: GridState
    intrinsics_problem: str | None = None

    @cached_property
    def alarms(self) -> AlarmFrame:
        """This frame's alarms (region, persistence, obstacles), computed on first use."""
        return self.alarm_chain.process(self.frame)

    def image(self, array: np.ndarray, encoding: str) -> Image:
        return self.converter.to_image(array, encoding, self.header)

    @property
    def ground_header(self) -> Header:
        return Header(stamp=self.header.stamp, frame_id=self.settings.grid_frame)


def _semantic(f: NodeFrame) -> Image:
    return f.image(f.frame.labels, "mono8")


def _semantic_color(f: NodeFrame) -> Image:
    return f.image(colorize(f.frame.labels), "rgb8")


def _anomaly_score(f: NodeFrame) -> Image:
    return f.image(f.frame.score, "32FC1")


def _anomaly_mask(f: NodeFrame) -> Image:
    return f.image(f.frame.mask.view(np.uint8) * np.uint8(255), "mono8")


def _anomaly_overlay(f: NodeFrame) -> Image:
    return f.image(alarm_overlay(f.frame, f.alarms, f.settings.overlay_alpha), "rgb8")


def _anomaly_grid(f: NodeFrame) -> OccupancyGrid:
    if f.frame.intrinsics is None:
        raise OutputUnavailable("camera_info", f.intrinsics_problem or "anomaly_grid needs camera intrinsics")
    values = f.grid.mapper.values(f.frame, f.settings.grid)
    values = persist_grid(values, f.grid.filter(f.settings.grid_persistence), f.frame.stamp)
    return occupancy_grid_msg(values, f.settings.grid, f.ground_header)


def _obstacles(f: NodeFrame) -> MarkerArray:
    return obstacle_markers(f.alarms.obstacles, f.ground_header, f.frame)


def _obstacle_detections(f: NodeFrame) -> Detection2DArray:
    return obstacle_detections(f.alarms.obstacles, f.header, f.frame)


@dataclass(frozen=True)
class Output:
    """One output topic: its message type, the function that makes its message, and what it holds."""

    type: type
    make: Callable[[NodeFrame], object]
    content: str


_ALL = {
    "semantic": Output(Image, _semantic, "mono8 Cityscapes trainIds 0..18"),
    "semantic_color": Output(Image, _semantic_color, "rgb8 trainIds in the Cityscapes palette"),
    "anomaly_score": Output(Image, _anomaly_score, "32FC1 PEBAL score (smoothed free energy; higher = more anomalous)"),
    "anomaly_mask": Output(Image, _anomaly_mask, "mono8 255 where score >= threshold (every pixel, one frame)"),
    "anomaly_overlay": Output(Image, _anomaly_overlay, "rgb8 camera image, region outlined, alarms tinted, boxes"),
    "anomaly_grid": Output(OccupancyGrid, _anomaly_grid, "anomaly probability on the ground, 0..100, -1 unknown"),
    "obstacles": Output(MarkerArray, _obstacles, "obstacles on the ground (grid.frame_id) for RViz"),
    "obstacle_detections": Output(Detection2DArray, _obstacle_detections, "obstacle boxes in the image"),
}
OUTPUTS_TABLE = {name: _ALL[name] for name in OUTPUTS}
"""Output name -> :class:`Output`, for the outputs of this install, in publishing order."""
