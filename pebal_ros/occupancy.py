"""Anomaly score map -> ``nav_msgs/OccupancyGrid`` on the ground plane.

The geometry lives in :mod:`pebal_core.ground` (image -> ground homography from the pinhole
intrinsics, camera height and pitch; per-cell maxima) and the score -> probability map in the
frame's context (:meth:`pebal_core.alarms.frame.FrameContext.probability`). This module adds the
ROS parts: intrinsics from ``sensor_msgs/CameraInfo`` and the OccupancyGrid message.

Cell values follow the OccupancyGrid convention: ``0..100`` = ``round(100 * p)`` with ``p`` the
calibrated anomaly probability of the most anomalous pixel that lands in the cell, ``-1`` =
unknown (no pixel centre of the image lands in the cell: outside the field of view, above the
horizon, or between the rays of far-away pixels).

Intrinsics come from ``CameraInfo.k`` (the raw camera matrix; lens distortion is ignored, so feed
rectified images or accept the error of a mildly distorted lens). When the image size differs from
``CameraInfo.width/height`` (binning, a resized topic) ``K`` is scaled to the image.
"""

from __future__ import annotations

import array

import numpy as np
from nav_msgs.msg import OccupancyGrid
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from pebal_core.alarms.frame import FrameContext
from pebal_core.ground import CameraMount, CellMaxima, GroundGrid, image_to_ground_homography, intrinsic_matrix

UNKNOWN = -1
"""OccupancyGrid value of cells no pixel sees."""


def intrinsics_from_camera_info(info: CameraInfo, image_shape: tuple[int, int] | None = None) -> np.ndarray:
    """``K`` (3x3 float64) from ``info.k``, scaled to ``image_shape = (height, width)`` when it differs.

    Raises ``ValueError`` when the CameraInfo carries no usable camera matrix (an all-zero ``k`` is
    what an uncalibrated driver publishes).
    """
    k = np.asarray(info.k, dtype=np.float64).reshape(3, 3)
    fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
    if not (fx > 0 and fy > 0 and np.all(np.isfinite(k))):
        raise ValueError(
            f"camera_info has no usable camera matrix (fx={fx}, fy={fy}); calibrate the camera "
            "(camera_calibration) or publish its intrinsics"
        )
    if image_shape is not None and info.width > 0 and info.height > 0:
        sy, sx = image_shape[0] / info.height, image_shape[1] / info.width
        if sx != 1.0 or sy != 1.0:
            # integer pixel coordinates are pixel centres: x -> (x + 0.5) * s - 0.5
            return intrinsic_matrix(fx * sx, fy * sy, (cx + 0.5) * sx - 0.5, (cy + 0.5) * sy - 0.5)
    return intrinsic_matrix(fx, fy, cx, cy)


def camera_intrinsics(
    info: CameraInfo | None, image_shape: tuple[int, int], topic: str
) -> tuple[np.ndarray | None, str | None]:
    """``(K, None)`` for a frame of ``image_shape`` from the latest CameraInfo of ``topic``, or
    ``(None, why not)`` when none arrived or it carries no usable camera matrix."""
    if info is None:
        return None, f"anomaly_grid needs intrinsics: no CameraInfo on {topic}"
    try:
        return intrinsics_from_camera_info(info, image_shape), None
    except ValueError as e:
        return None, str(e)


class OccupancyMapper:
    """Fills grid cells from score maps, caching the pixel -> cell lookup between frames.

    The lookup is rebuilt only when the intrinsics, the image size, the grid or the mount change.
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._cells: CellMaxima | None = None

    def cell_maxima(self, k: np.ndarray, image_shape: tuple[int, int], grid: GroundGrid, mount: CameraMount):
        key = (np.asarray(k, dtype=np.float64).tobytes(), tuple(image_shape), grid, mount)
        if key != self._key or self._cells is None:
            self._cells = CellMaxima(image_to_ground_homography(k, mount), image_shape, grid)
            self._key = key
        return self._cells

    def values(self, frame: FrameContext, grid: GroundGrid) -> np.ndarray:
        """Cell values ``int8 cells_y x cells_x`` (0..100, -1 unknown) of one frame's score, seen with
        its intrinsics and mount (both required)."""
        if frame.intrinsics is None or frame.mount is None:
            raise ValueError("the ground grid needs the frame's camera intrinsics and mount")
        top = self.cell_maxima(frame.intrinsics, frame.shape, grid, frame.mount).reduce(frame.score)
        seen = ~np.isnan(top)
        out = np.full(top.shape, UNKNOWN, dtype=np.int8)
        out[seen] = np.rint(100.0 * frame.probability(top[seen])).astype(np.int8)
        return out


def occupancy_grid_msg(values: np.ndarray, grid: GroundGrid, header: Header) -> OccupancyGrid:
    """An OccupancyGrid of ``values`` (``int8 cells_y x cells_x``, row-major from the origin corner)."""
    if values.shape != grid.shape or values.dtype != np.int8:
        raise ValueError(f"grid values must be int8 {grid.shape}, got {values.dtype} {values.shape}")
    msg = OccupancyGrid()
    msg.header = header
    msg.info.map_load_time = header.stamp
    msg.info.resolution = float(grid.resolution)
    msg.info.width = grid.cells_x
    msg.info.height = grid.cells_y
    msg.info.origin.position.x = float(grid.origin_x)
    msg.info.origin.position.y = float(grid.origin_y)
    data = array.array("b")
    data.frombytes(np.ascontiguousarray(values).tobytes())
    msg.data = data
    return msg
