"""Ground-plane geometry of a forward-looking camera: image <-> ground homography and per-cell maxima.

Frames and units (metres, radians, pixels):

* **Ground frame** (e.g. ROS ``base_footprint``): x forward, y left, z up, the ground is ``z = 0``.
* **Camera optical frame** (ROS REP 103 ``*_optical_frame``, OpenCV): x right, y down, z forward.
  The pinhole model maps a point ``(x, y, z)`` to pixel ``(u, v) = (fx x/z + cx, fy y/z + cy)``;
  integer ``(u, v)`` are pixel centres.
* **Mount** (:class:`CameraMount`): the optical centre sits at ``(x, y, height)`` in the ground frame
  and the optical axis is pitched **down** by ``pitch`` from the horizontal; no roll, no yaw (the
  optical axis lies in the ground frame's x-z plane).

With the pixel ray ``n = K^-1 (u, v, 1) = (a, b, 1)`` the ground-frame ray direction is
``d = (cos p - b sin p, -a, -(sin p + b cos p))``; it meets the ground where
``w = sin p + b cos p > 0`` (below the horizon), at ``X = x + height (cos p - b sin p) / w`` and
``Y = y - height a / w``. As a projective map, ``(X, Y, 1) ~ H (u, v, 1)`` with ``H`` from
:func:`image_to_ground_homography`.

A :class:`GroundGrid` is a row-major raster of square cells in the ground frame (the layout of
``nav_msgs/OccupancyGrid``: cell ``(row, col)`` covers ``x in origin_x + col*res .. +res`` and
``y in origin_y + row*res .. +res``; flat index ``row * cells_x + col``). :class:`CellMaxima`
precomputes which cell every pixel centre lands in, so that the per-frame work is one gather and
one ``np.maximum.reduceat``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MAX_GRID_CELLS = 4_000_000
"""Largest grid accepted (cells_x * cells_y); about 4 MB per published OccupancyGrid."""


@dataclass(frozen=True)
class CameraMount:
    """Where the camera sits on the vehicle, in the ground frame.

    Attributes:
        height: optical centre above the ground (m, > 0).
        pitch: downward tilt of the optical axis from the horizontal (rad; 0 = level, > 0 = down).
        x: optical centre's forward position in the ground frame (m).
        y: optical centre's left position in the ground frame (m).
    """

    height: float
    pitch: float
    x: float = 0.0
    y: float = 0.0

    def __post_init__(self) -> None:
        if not (self.height > 0 and math.isfinite(self.height)):
            raise ValueError(f"camera height must be a positive number of metres, got {self.height}")
        if not abs(self.pitch) < math.pi / 2:
            raise ValueError(f"camera pitch must lie strictly between -pi/2 and pi/2 rad, got {self.pitch}")


@dataclass(frozen=True)
class GroundGrid:
    """A raster of square cells on the ground (row-major, rows along y, columns along x).

    Attributes:
        resolution: cell edge length (m).
        cells_x: number of columns (along ground x; ``OccupancyGrid.info.width``).
        cells_y: number of rows (along ground y; ``OccupancyGrid.info.height``).
        origin_x: ground x of the grid's corner at cell (0, 0) (m).
        origin_y: ground y of that corner (m).
    """

    resolution: float
    cells_x: int
    cells_y: int
    origin_x: float = 0.0
    origin_y: float = 0.0

    def __post_init__(self) -> None:
        if not (self.resolution > 0 and math.isfinite(self.resolution)):
            raise ValueError(f"grid resolution must be a positive number of metres, got {self.resolution}")
        if self.cells_x < 1 or self.cells_y < 1:
            raise ValueError(f"grid must have at least one cell each way, got {self.cells_x} x {self.cells_y}")
        if self.cells_x * self.cells_y > MAX_GRID_CELLS:
            raise ValueError(
                f"grid of {self.cells_x} x {self.cells_y} cells exceeds {MAX_GRID_CELLS} cells; "
                "use a coarser resolution or a smaller extent"
            )

    @classmethod
    def from_extent(
        cls, resolution: float, size_x: float, size_y: float, origin_x: float = 0.0, origin_y: float = 0.0
    ) -> GroundGrid:
        """A grid covering ``size_x`` by ``size_y`` metres (rounded to whole cells) from the origin corner."""
        if not (resolution > 0 and size_x > 0 and size_y > 0):
            raise ValueError(f"grid resolution and sizes must be positive, got {resolution}, {size_x}, {size_y}")
        return cls(
            resolution, max(1, round(size_x / resolution)), max(1, round(size_y / resolution)), origin_x, origin_y
        )

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols) = (cells_y, cells_x)``."""
        return self.cells_y, self.cells_x

    def cell_of(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Flat cell index (``row * cells_x + col``) of ground points, ``-1`` outside the grid."""
        col = np.floor((np.asarray(x, dtype=np.float64) - self.origin_x) / self.resolution)
        row = np.floor((np.asarray(y, dtype=np.float64) - self.origin_y) / self.resolution)
        inside = (col >= 0) & (col < self.cells_x) & (row >= 0) & (row < self.cells_y)
        flat = np.where(inside, row * self.cells_x + col, -1)
        return flat.astype(np.int64)

    def cell_centers(self) -> tuple[np.ndarray, np.ndarray]:
        """Ground ``(x, y)`` of every cell centre, each ``cells_y x cells_x`` (float64)."""
        cols = self.origin_x + (np.arange(self.cells_x) + 0.5) * self.resolution
        rows = self.origin_y + (np.arange(self.cells_y) + 0.5) * self.resolution
        return np.meshgrid(cols, rows)


def intrinsic_matrix(fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """The 3x3 pinhole camera matrix ``K`` (float64)."""
    if not (fx > 0 and fy > 0):
        raise ValueError(f"focal lengths must be positive, got fx={fx}, fy={fy}")
    return np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])


def image_to_ground_homography(k: np.ndarray, mount: CameraMount) -> np.ndarray:
    """``H`` (3x3, float64) with ``(X, Y, 1) ~ H (u, v, 1)`` for pixels below the horizon.

    The third homogeneous coordinate ``w`` of ``H (u, v, 1)`` is positive exactly for pixels whose
    ray meets the ground in front of the camera (see the module docstring).
    """
    s, c = math.sin(mount.pitch), math.cos(mount.pitch)
    # rows act on the normalised ray n = (a, b, 1): h*(cos p - b sin p), -h*a, sin p + b cos p
    ray_to_ground = np.array(
        [
            [0.0, -mount.height * s, mount.height * c],
            [-mount.height, 0.0, 0.0],
            [0.0, c, s],
        ]
    )
    # translate by the camera's ground position: X = x + (.)/w, Y = y + (.)/w
    shift = np.array([[1.0, 0.0, mount.x], [0.0, 1.0, mount.y], [0.0, 0.0, 1.0]])
    return shift @ ray_to_ground @ np.linalg.inv(np.asarray(k, dtype=np.float64))


def pixels_to_ground(h: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ground ``(X, Y)`` of pixels ``(u, v)`` and whether each ray meets the ground (below the horizon)."""
    u = np.asarray(u, dtype=np.float64)
    v = np.asarray(v, dtype=np.float64)
    x = h[0, 0] * u + h[0, 1] * v + h[0, 2]
    y = h[1, 0] * u + h[1, 1] * v + h[1, 2]
    w = h[2, 0] * u + h[2, 1] * v + h[2, 2]
    valid = w > 1e-12
    safe = np.where(valid, w, 1.0)
    return np.where(valid, x / safe, np.nan), np.where(valid, y / safe, np.nan), valid


class CellMaxima:
    """Per-cell maximum of a per-pixel map, for one camera, image size and grid.

    Every pixel centre below the horizon is projected to the ground once; pixels landing in the
    grid are sorted by cell so that :meth:`reduce` is a gather plus ``np.maximum.reduceat``.

    Args:
        homography: image -> ground ``H`` (:func:`image_to_ground_homography`).
        image_shape: ``(height, width)`` of the maps that will be reduced.
        grid: the ground raster.
    """

    def __init__(self, homography: np.ndarray, image_shape: tuple[int, int], grid: GroundGrid) -> None:
        self.grid = grid
        self.image_shape = (int(image_shape[0]), int(image_shape[1]))
        rows, cols = self.image_shape
        v, u = np.mgrid[0:rows, 0:cols]
        x, y, valid = pixels_to_ground(homography, u.ravel(), v.ravel())
        cell = np.full(rows * cols, -1, dtype=np.int64)
        cell[valid] = grid.cell_of(x[valid], y[valid])
        pixels = np.flatnonzero(cell >= 0)
        order = np.argsort(cell[pixels], kind="stable")
        self._pixels = pixels[order]
        sorted_cells = cell[self._pixels]
        if sorted_cells.size:
            starts = np.flatnonzero(np.diff(sorted_cells, prepend=-1))
        else:
            starts = np.zeros(0, dtype=np.int64)
        self._starts = starts
        self._cells = sorted_cells[starts]
        self.seen = np.zeros(grid.shape, dtype=bool)
        self.seen.flat[self._cells] = True

    @property
    def num_pixels(self) -> int:
        """How many pixel centres land inside the grid."""
        return int(self._pixels.size)

    def reduce(self, values: np.ndarray) -> np.ndarray:
        """Per-cell maximum of ``values`` (``H x W``), as float32 ``cells_y x cells_x``; NaN where no pixel lands."""
        if values.shape != self.image_shape:
            raise ValueError(f"map of shape {values.shape} does not match the precomputed image {self.image_shape}")
        out = np.full(self.grid.shape, np.nan, dtype=np.float32)
        if self._cells.size:
            flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
            out.flat[self._cells] = np.maximum.reduceat(flat[self._pixels], self._starts)
        return out
