"""Pinhole camera in the Cityscapes calibration convention, used to render the synthetic world.

Coordinate systems (Cityscapes ``csCalibration.pdf``, ``cityscapesscripts.helpers.box3dImageTransform``):

* vehicle frame V (ISO 8855): origin on the ground below the rear axle, ``x`` forward, ``y`` left,
  ``z`` up, metres;
* camera frame C: origin at the optical centre, same axis orientation as V;
* image: ``u`` right, ``v`` down, pixels; integer ``(u, v)`` is the centre of pixel column ``u``,
  row ``v``.

The extrinsic rotation is ``R = Rz(yaw) @ Ry(pitch) @ Rx(roll)`` (radians) and maps camera-frame
vectors to the vehicle frame; the camera centre in V is ``(x, y, z)``. A positive pitch tilts the
optical axis down towards the road. A point ``p_V`` projects to

    p_C = R.T @ (p_V - (x, y, z));   u = u0 - fx * p_C[1] / p_C[0];   v = v0 - fy * p_C[2] / p_C[0]

and ``p_C[0]`` (metres along the optical axis) is the depth the renderer stores. The synthetic
renderer casts, for every pixel, the ray ``R @ (1, -(u - u0) / fx, -(v - v0) / fy)`` from the camera
centre, so what :meth:`Camera.to_cityscapes_json` writes is exactly the geometry the images were
drawn with. ``baseline`` (stereo) is carried for the file format only; the rendered image is the
left camera at ``(x, y, z)``.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

CITYSCAPES_FOCAL_PER_WIDTH = 2262.52 / 2048.0
"""Focal length of the Cityscapes cameras in units of the image width (fx = 2262.52 px at 2048 px)."""


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """``Rz(yaw) @ Ry(pitch) @ Rx(roll)`` as a float64 3 x 3 matrix (camera -> vehicle frame)."""
    cy, sy = math.cos(yaw), math.sin(yaw)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cr, sr = math.cos(roll), math.sin(roll)
    rz = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    ry = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cr, -sr], [0.0, sr, cr]])
    return rz @ ry @ rx


@dataclasses.dataclass(frozen=True)
class Camera:
    """Intrinsics (pixels), extrinsics (metres, radians) and image size of one rendered view."""

    width: int
    height: int
    fx: float
    fy: float
    u0: float
    v0: float
    x: float = 1.7
    y: float = 0.0
    z: float = 1.2
    yaw: float = 0.0
    pitch: float = 0.03
    roll: float = 0.0
    baseline: float = 0.21

    @classmethod
    def for_size(cls, height: int, width: int, **extrinsics: float) -> Camera:
        """A camera with the Cityscapes field of view at ``height x width`` (principal point centred)."""
        f = CITYSCAPES_FOCAL_PER_WIDTH * width
        return cls(width, height, f, f, (width - 1) / 2.0, (height - 1) / 2.0, **extrinsics)

    def moved(self, dx: float = 0.0, dy: float = 0.0) -> Camera:
        """The same camera translated by ``(dx, dy)`` metres in the ground plane."""
        return dataclasses.replace(self, x=self.x + dx, y=self.y + dy)

    @property
    def centre(self) -> np.ndarray:
        """Camera centre in the vehicle frame, float64 ``(3,)``."""
        return np.array([self.x, self.y, self.z])

    @functools.cached_property
    def rotation(self) -> np.ndarray:
        """Camera-to-vehicle rotation, float64 3 x 3."""
        return rotation(self.yaw, self.pitch, self.roll)

    def rays(self) -> np.ndarray:
        """Per-pixel ray directions in the vehicle frame, float32 ``H x W x 3``.

        Each ray has camera-frame x component 1, so ``centre + t * ray`` is at depth ``t``.
        """
        u = (np.arange(self.width, dtype=np.float64) - self.u0) / self.fx
        v = (np.arange(self.height, dtype=np.float64) - self.v0) / self.fy
        r = self.rotation
        # d_C = (1, -u, -v); d_V = R @ d_C, expanded per component to stay vectorised
        out = np.empty((self.height, self.width, 3), dtype=np.float32)
        for k in range(3):
            out[..., k] = r[k, 0] - r[k, 1] * u[None, :] - r[k, 2] * v[:, None]
        return out

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Project vehicle-frame points ``(..., 3)`` to ``(u, v, depth)`` arrays (depth <= 0: behind)."""
        p = np.asarray(points, dtype=np.float64) - self.centre
        pc = p @ self.rotation  # == (R.T @ p.T).T
        depth = pc[..., 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = self.u0 - self.fx * pc[..., 1] / depth
            v = self.v0 - self.fy * pc[..., 2] / depth
        return u, v, depth

    def horizon_row(self) -> float:
        """Image row of the horizon at the principal column (rays parallel to the ground)."""
        r = self.rotation
        # solve (R @ (1, 0, -v'))_z = 0 for v' = (v - v0) / fy
        return float(self.v0 + self.fy * r[2, 0] / r[2, 2])

    def to_cityscapes_json(self) -> dict:
        """The Cityscapes ``camera/*.json`` dictionary for this camera."""
        return {
            "extrinsic": {
                "baseline": round(self.baseline, 6),
                "pitch": self.pitch,
                "roll": self.roll,
                "x": self.x,
                "y": self.y,
                "yaw": self.yaw,
                "z": self.z,
            },
            "intrinsic": {"fx": self.fx, "fy": self.fy, "u0": self.u0, "v0": self.v0},
        }
