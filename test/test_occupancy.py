"""Ground-plane projection and the anomaly OccupancyGrid, against closed-form camera geometry.

The reference projection used here goes the other way round from the code under test: a ground
point ``(X, Y, 0)`` is expressed in the camera's optical frame by hand (pitch about the camera's
x axis) and projected with the pinhole model; the homography must send that pixel back to the point.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from pebal_core.alarms.frame import FrameContext
from pebal_core.alarms.operating_point import OperatingPoint
from pebal_core.calibration import anomaly_probability
from pebal_core.ground import (
    MAX_GRID_CELLS,
    CameraMount,
    CellMaxima,
    GroundGrid,
    image_to_ground_homography,
    intrinsic_matrix,
    pixels_to_ground,
)
from pebal_ros.occupancy import UNKNOWN, OccupancyMapper, intrinsics_from_camera_info, occupancy_grid_msg

FX, FY, CX, CY = 120.0, 110.0, 31.5, 23.5
K = intrinsic_matrix(FX, FY, CX, CY)


def project(x: np.ndarray, y: np.ndarray, mount: CameraMount) -> tuple[np.ndarray, np.ndarray]:
    """Pixel of ground point (x, y, 0), by hand: camera axes right = -y_g, forward/down pitched by p."""
    rx, ry, rz = x - mount.x, y - mount.y, -mount.height
    s, c = math.sin(mount.pitch), math.cos(mount.pitch)
    z_cam = rx * c - rz * s  # along the optical axis (cos p, 0, -sin p)
    y_cam = -rx * s - rz * c  # along image-down (-sin p, 0, -cos p)
    x_cam = -ry  # along image-right (0, -1, 0)
    return FX * x_cam / z_cam + CX, FY * y_cam / z_cam + CY


def test_level_camera_closed_form():
    """Pitch 0: pixel (du, dv) from the principal point sees the ground at X = h fy/dv, Y = -h (du/fx) (fy/dv)."""
    mount = CameraMount(height=1.5, pitch=0.0)
    h = image_to_ground_homography(K, mount)
    u = np.array([CX, CX + 10.0, CX - 20.0, 0.0])
    v = np.array([CY + 5.0, CY + 10.0, CY + 40.0, 47.0])
    x, y, valid = pixels_to_ground(h, u, v)
    assert valid.all()
    np.testing.assert_allclose(x, 1.5 * FY / (v - CY), rtol=1e-12)
    np.testing.assert_allclose(y, -1.5 * (u - CX) / FX * FY / (v - CY), rtol=1e-12, atol=1e-12)
    # rows at or above the principal point never meet the ground of a level camera
    _, _, above = pixels_to_ground(h, np.array([CX, 5.0]), np.array([CY, CY - 3.0]))
    assert not above.any()


@pytest.mark.parametrize(
    "mount",
    [
        CameraMount(1.2, 0.1),
        CameraMount(1.6, 0.35, x=1.8, y=-0.4),
        CameraMount(2.5, -0.05, x=-0.5, y=0.3),  # slightly up: the ground is still below the horizon
    ],
)
def test_homography_inverts_hand_projection(mount):
    rng = np.random.default_rng(0)
    x = mount.x + rng.uniform(3.0, 60.0, 200)
    y = mount.y + rng.uniform(-10.0, 10.0, 200)
    u, v = project(x, y, mount)
    gx, gy, valid = pixels_to_ground(image_to_ground_homography(K, mount), u, v)
    assert valid.all()
    np.testing.assert_allclose(gx, x, rtol=1e-9)
    np.testing.assert_allclose(gy, y, rtol=1e-9, atol=1e-9)


def test_principal_ray_and_horizon():
    mount = CameraMount(1.5, 0.2)
    h = image_to_ground_homography(K, mount)
    x, y, _ = pixels_to_ground(h, np.array([CX]), np.array([CY]))
    assert x[0] == pytest.approx(1.5 / math.tan(0.2)) and y[0] == pytest.approx(0.0, abs=1e-12)
    horizon = CY - FY * math.tan(0.2)
    _, _, valid = pixels_to_ground(h, np.array([CX, CX]), np.array([horizon - 0.01, horizon + 0.01]))
    assert valid.tolist() == [False, True]


def test_grid_cells_row_major_from_origin():
    grid = GroundGrid(resolution=0.5, cells_x=4, cells_y=3, origin_x=-1.0, origin_y=2.0)
    assert grid.shape == (3, 4)
    x = np.array([-1.0, -0.51, 0.99, 0.5, -1.01, 1.0, 0.0])
    y = np.array([2.0, 2.0, 3.49, 3.0, 2.2, 2.2, 3.5])
    # col = floor((x + 1) / 0.5), row = floor((y - 2) / 0.5); outside -> -1
    assert grid.cell_of(x, y).tolist() == [0, 0, 2 * 4 + 3, 2 * 4 + 3, -1, -1, -1]
    cx, cy = grid.cell_centers()
    assert cx[0, 0] == -0.75 and cy[0, 0] == 2.25 and cx[2, 3] == 0.75 and cy[2, 3] == 3.25


def test_grid_from_extent_and_limits():
    grid = GroundGrid.from_extent(0.2, 40.0, 20.0, 0.0, -10.0)
    assert (grid.cells_x, grid.cells_y) == (200, 100)
    with pytest.raises(ValueError, match="exceeds"):
        GroundGrid.from_extent(0.01, 1000.0, 1000.0)
    assert MAX_GRID_CELLS >= 200 * 100
    with pytest.raises(ValueError, match="resolution"):
        GroundGrid(0.0, 10, 10)
    with pytest.raises(ValueError, match="height"):
        CameraMount(0.0, 0.1)
    with pytest.raises(ValueError, match="pitch"):
        CameraMount(1.0, 1.6)


def test_cell_maxima_equals_brute_force_loop():
    mount = CameraMount(1.4, 0.15, x=0.5)
    grid = GroundGrid(resolution=0.5, cells_x=30, cells_y=16, origin_x=-1.0, origin_y=-4.0)
    shape = (48, 64)
    values = np.random.default_rng(1).normal(size=shape).astype(np.float32)
    cells = CellMaxima(image_to_ground_homography(K, mount), shape, grid)

    expected = np.full(grid.shape, np.nan, dtype=np.float32)
    s, c = math.sin(mount.pitch), math.cos(mount.pitch)
    for v in range(shape[0]):
        for u in range(shape[1]):
            a, b = (u - CX) / FX, (v - CY) / FY
            w = s + b * c
            if w <= 0:
                continue
            gx = mount.x + mount.height * (c - b * s) / w
            gy = mount.y - mount.height * a / w
            col, row = math.floor((gx - grid.origin_x) / 0.5), math.floor((gy - grid.origin_y) / 0.5)
            if 0 <= col < grid.cells_x and 0 <= row < grid.cells_y:
                old = expected[row, col]
                expected[row, col] = values[v, u] if np.isnan(old) else max(old, values[v, u])
    out = cells.reduce(values)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(expected))
    np.testing.assert_array_equal(out[~np.isnan(out)], expected[~np.isnan(expected)])
    np.testing.assert_array_equal(cells.seen, ~np.isnan(expected))
    assert cells.num_pixels > 0 and np.isnan(expected).any() and (~np.isnan(expected)).any()
    with pytest.raises(ValueError, match="does not match"):
        cells.reduce(values[:10])


def test_anomaly_probability_logistic():
    t, scale = -8.0, 1.5
    s = np.array([t, t + scale, t - scale, t + 100 * scale, t - 1e6, np.nan])
    p = anomaly_probability(s, t, scale)
    z = (s - t) / scale
    with np.errstate(over="ignore"):
        ref = 1.0 / (1.0 + np.exp(-z))
    np.testing.assert_allclose(p[:5], ref[:5], rtol=1e-6, atol=1e-7)
    assert p[0] == 0.5 and np.isnan(p[5]) and p.dtype == np.float32
    with pytest.raises(ValueError, match="scale"):
        anomaly_probability(s, t, 0.0)


def _camera_info(width: int, height: int, k: np.ndarray) -> CameraInfo:
    info = CameraInfo(width=width, height=height)
    info.k = k.reshape(-1).astype(np.float64)
    return info


def test_intrinsics_from_camera_info_and_scaling():
    info = _camera_info(64, 48, K)
    np.testing.assert_array_equal(intrinsics_from_camera_info(info, (48, 64)), K)
    half = intrinsics_from_camera_info(info, (24, 32))
    # pixel centres scale as x -> (x + 0.5) / 2 - 0.5
    np.testing.assert_allclose(half, intrinsic_matrix(FX / 2, FY / 2, (CX + 0.5) / 2 - 0.5, (CY + 0.5) / 2 - 0.5))
    with pytest.raises(ValueError, match="no usable camera matrix"):
        intrinsics_from_camera_info(CameraInfo(width=64, height=48))


def test_mapper_values_at_known_ground_positions():
    """One hot pixel at a known ground position -> that cell is 95 (p at threshold + 2.944 scale), others 0."""
    mount = CameraMount(1.5, 0.1)
    grid = GroundGrid(resolution=1.0, cells_x=40, cells_y=20, origin_x=-5.0, origin_y=-10.0)
    threshold, scale = -9.0, 2.0
    score = np.full((48, 64), threshold - 30.0, dtype=np.float32)
    target_x, target_y = 12.3, 1.7
    u, v = project(np.array([target_x]), np.array([target_y]), mount)
    score[int(round(v[0])), int(round(u[0]))] = threshold + 2.944 * scale
    frame = FrameContext(np.zeros(score.shape, np.uint8), score, OperatingPoint(threshold), None, None, K, mount, scale)
    values = OccupancyMapper().values(frame, grid)
    assert values.dtype == np.int8 and values.shape == (20, 40)
    # the rounded pixel centre lands within a few cm of the target, well inside cell (11, 17)
    row, col = math.floor(target_y + 10.0), math.floor(target_x + 5.0)
    assert values[row, col] == 95
    seen = values != UNKNOWN
    assert (values[seen] == 0).sum() == seen.sum() - 1
    # cells behind the camera (x < 0 <=> col < 5) are never seen
    assert (values[:, :5] == UNKNOWN).all()
    assert seen.sum() > 20


def test_occupancy_grid_msg_layout():
    grid = GroundGrid(resolution=0.25, cells_x=5, cells_y=3, origin_x=-1.0, origin_y=-0.5)
    values = np.arange(15, dtype=np.int8).reshape(3, 5)
    values[1, 2] = UNKNOWN
    header = Header(frame_id="base_footprint")
    header.stamp.sec = 42
    msg = occupancy_grid_msg(values, grid, header)
    assert (msg.info.width, msg.info.height, msg.info.resolution) == (5, 3, 0.25)
    assert (msg.info.origin.position.x, msg.info.origin.position.y) == (-1.0, -0.5)
    assert msg.info.origin.orientation.w == 1.0
    assert msg.header.frame_id == "base_footprint" and msg.header.stamp.sec == 42
    assert msg.info.map_load_time.sec == 42
    # row-major from the origin: data[row * width + col]
    assert [msg.data[r * 5 + c] for r in range(3) for c in range(5)] == values.reshape(-1).tolist()
    assert msg.data[1 * 5 + 2] == -1
    with pytest.raises(ValueError, match="int8"):
        occupancy_grid_msg(values.astype(np.int16), grid, header)
