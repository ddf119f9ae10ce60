"""Camera intrinsics as ROS ``sensor_msgs/CameraInfo`` carries them, from a calibration file or a stated default.

A :class:`CameraCalibration` holds the fields of a ``CameraInfo`` (pinhole model of
``pebal_core.ground``: ``K = [fx 0 cx; 0 fy cy; 0 0 1]`` in pixels, distortion ``D`` of
``distortion_model``, rectification ``R``, projection ``P = [fx' 0 cx' Tx; 0 fy' cy' Ty; 0 0 1 0]``,
row-major) for images of ``width`` x ``height`` pixels. It comes from:

* :meth:`CameraCalibration.from_yaml`: the ROS calibration file format that
  ``camera_calibration`` writes and ``camera_info_manager`` reads (``image_width``,
  ``image_height``, ``camera_name``, ``camera_matrix``, ``distortion_model``,
  ``distortion_coefficients``, ``rectification_matrix``, ``projection_matrix``; each matrix as
  ``{rows, cols, data}``). Without ``rectification_matrix`` ``R = I``; without
  ``projection_matrix`` ``P = [K | 0]``; without distortion, ``plumb_bob`` with zeros.
* :meth:`CameraCalibration.from_intrinsics`: ``fx, fy, cx, cy`` of rectified images (zero
  distortion, ``R = I``, ``P = [K | 0]``), e.g. a Cityscapes camera JSON.
* :meth:`CameraCalibration.default`: no calibration at all. ``fx = fy = width`` (a horizontal
  field of view of ``2 atan(1/2)`` = 53.1 degrees, :data:`DEFAULT_HFOV_DEG`) and the principal point
  at the image centre ``((width - 1) / 2, (height - 1) / 2)``. The anomaly grid and obstacle
  distances computed from it are only as right as that guess: calibrate the camera for real
  distances.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

DEFAULT_HFOV_DEG = math.degrees(2 * math.atan(0.5))
"""Horizontal field of view of :meth:`CameraCalibration.default` (degrees): focal length = image width."""


class CalibrationError(ValueError):
    """A calibration file or value that cannot describe a camera; the message names the file and field."""


@dataclass(frozen=True)
class CameraCalibration:
    """The ``CameraInfo`` fields of one camera (see the module docstring)."""

    width: int
    height: int
    k: tuple[float, ...]
    """3 x 3 intrinsic matrix, row-major (pixels)."""
    d: tuple[float, ...]
    """Distortion coefficients of ``distortion_model``."""
    r: tuple[float, ...]
    """3 x 3 rectification rotation, row-major."""
    p: tuple[float, ...]
    """3 x 4 projection matrix, row-major (pixels)."""
    distortion_model: str = "plumb_bob"
    camera_name: str = ""
    source: str = "stated default"
    """Where the values came from (a file path, ``camera JSON``, or the default), for log lines."""

    def __post_init__(self) -> None:
        for name, n in (("k", 9), ("r", 9), ("p", 12)):
            values = getattr(self, name)
            if len(values) != n or not all(math.isfinite(v) for v in values):
                raise CalibrationError(f"{self.source}: {name} needs {n} finite numbers, got {values}")
        if self.width <= 0 or self.height <= 0:
            raise CalibrationError(f"{self.source}: image size {self.width}x{self.height} must be positive")
        fx, fy = self.k[0], self.k[4]
        if fx <= 0 or fy <= 0:
            raise CalibrationError(f"{self.source}: focal lengths fx={fx}, fy={fy} must be positive")

    @classmethod
    def from_intrinsics(
        cls, fx: float, fy: float, cx: float, cy: float, width: int, height: int, source: str = "intrinsics"
    ) -> CameraCalibration:
        """Rectified images: zero ``plumb_bob`` distortion, ``R = I``, ``P = [K | 0]``."""
        fx, fy, cx, cy = (float(v) for v in (fx, fy, cx, cy))
        return cls(
            width=int(width),
            height=int(height),
            k=(fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0),
            d=(0.0,) * 5,
            r=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
            p=(fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0),
            source=source,
        )

    @classmethod
    def default(cls, width: int, height: int) -> CameraCalibration:
        """The stated default for an uncalibrated camera (see the module docstring)."""
        return cls.from_intrinsics(
            width, width, (width - 1) / 2, (height - 1) / 2, width, height,
            source=f"stated default (no calibration: fx = fy = image width, {DEFAULT_HFOV_DEG:.1f} deg field of view)",
        )  # fmt: skip

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> CameraCalibration:
        """Read a ROS camera calibration YAML file (a ``file://`` URL is accepted too)."""
        text = str(path)
        path = Path(text[len("file://") :] if text.startswith("file://") else text).expanduser()
        try:
            doc = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise CalibrationError(f"cannot read camera calibration {path}: {e}") from e
        if not isinstance(doc, dict) or "camera_matrix" not in doc:
            raise CalibrationError(
                f"{path} is not a ROS camera calibration file: it needs image_width, image_height and camera_matrix "
                "(the format camera_calibration writes; see docs/camera.md)"
            )

        def matrix(key: str, rows: int, cols: int, default: tuple[float, ...] | None) -> tuple[float, ...]:
            entry = doc.get(key)
            if entry is None:
                if default is None:
                    raise CalibrationError(f"{path}: {key} is missing")
                return default
            try:
                data = tuple(float(v) for v in entry["data"])
                shape = (int(entry.get("rows", rows)), int(entry.get("cols", cols or len(data) // rows)))
            except (KeyError, TypeError, ValueError) as e:
                raise CalibrationError(f"{path}: {key} needs rows, cols and numeric data ({e})") from e
            if cols is not None and shape != (rows, cols):
                raise CalibrationError(f"{path}: {key} is {shape[0]}x{shape[1]}, expected {rows}x{cols}")
            if len(data) != shape[0] * shape[1]:
                raise CalibrationError(f"{path}: {key} has {len(data)} values for {shape[0]}x{shape[1]}")
            return data

        try:
            width, height = int(doc["image_width"]), int(doc["image_height"])
        except (KeyError, TypeError, ValueError) as e:
            raise CalibrationError(f"{path}: image_width and image_height must be integers ({e})") from e
        k = matrix("camera_matrix", 3, 3, None)
        return cls(
            width=width,
            height=height,
            k=k,
            d=matrix("distortion_coefficients", 1, None, (0.0,) * 5),
            r=matrix("rectification_matrix", 3, 3, (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)),
            p=matrix("projection_matrix", 3, 4, (k[0], k[1], k[2], 0.0, k[3], k[4], k[5], 0.0, k[6], k[7], k[8], 0.0)),
            distortion_model=str(doc.get("distortion_model") or "plumb_bob"),
            camera_name=str(doc.get("camera_name") or ""),
            source=str(path),
        )

    def fields(self) -> dict:
        """Keyword arguments of a ``CameraInfo`` message (rclpy or rosbags): ``height``, ``width``,
        ``distortion_model``, and ``d``, ``k``, ``r``, ``p`` as float64 arrays."""
        return {
            "height": self.height,
            "width": self.width,
            "distortion_model": self.distortion_model,
            "d": np.array(self.d, dtype=np.float64),
            "k": np.array(self.k, dtype=np.float64),
            "r": np.array(self.r, dtype=np.float64),
            "p": np.array(self.p, dtype=np.float64),
        }
