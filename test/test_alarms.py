"""pebal_core.alarms: region, persistence, obstacles and the alarm chain on hand-made inputs.

References are independent of the code under test: hand-drawn label maps, hand-counted
sequences, closed-form pinhole geometry and scikit-learn's ROC curve.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pebal_core.alarms.frame import FrameContext
from pebal_core.alarms.obstacles import find_obstacles
from pebal_core.alarms.operating_point import OperatingPoint
from pebal_core.alarms.persistence import Persistence, PersistenceConfig
from pebal_core.alarms.pipeline import AlarmPipeline, persist_grid
from pebal_core.alarms.region import alarm_region, drivable_region
from pebal_core.ground import CameraMount, image_to_ground_homography, intrinsic_matrix

ROAD, SIDEWALK, BUILDING, CAR = 0, 1, 2, 13


# ----------------------------------------------------------------------------- region
def _street() -> np.ndarray:
    """40 x 60 trainIds: building above row 15, sidewalk strips left/right, road between."""
    labels = np.full((40, 60), BUILDING, np.uint8)
    labels[15:, :10] = SIDEWALK
    labels[15:, 50:] = SIDEWALK
    labels[15:, 10:50] = ROAD
    return labels


def test_region_is_the_road_and_keeps_an_obstacle_the_road_encloses():
    labels = _street()
    labels[25:30, 20:26] = CAR  # an object on the road: road all around it
    region = drivable_region(labels)
    expected = np.zeros_like(region)
    expected[15:, 10:50] = True  # the road, the object included
    np.testing.assert_array_equal(region, expected)


def test_region_keeps_an_obstacle_at_the_far_end_with_road_left_and_right():
    labels = _street()
    labels[15:19, 25:32] = CAR  # touches the road's far (top) edge: not a hole, but road left and right
    region = drivable_region(labels)
    assert region[15:19, 25:32].all()
    assert not region[:15].any() and not region[:, :10].any() and not region[:, 50:].any()


def test_region_keeps_an_obstacle_at_the_road_side_with_road_above_and_below():
    labels = _street()
    labels[25:30, 10:14] = CAR  # on the left edge of the road: road above and below it in its columns
    region = drivable_region(labels)
    assert region[25:30, 10:14].all()
    assert not region[:, :10].any()


def test_region_sidewalk_option_small_fragments_and_all():
    labels = _street()
    labels[2:4, 2:4] = ROAD  # a 4-pixel road speckle on a wall
    region = drivable_region(labels)
    assert not region[2:4, 2:4].any() and region[20, 30]
    with_sidewalk = drivable_region(labels, include_sidewalk=True)
    assert with_sidewalk[15:, :].all() and not with_sidewalk[5:15].any()
    assert alarm_region(labels, "all") is None
    assert not drivable_region(np.full((10, 10), BUILDING, np.uint8)).any()
    with pytest.raises(ValueError, match="drivable, all"):
        alarm_region(labels, "road")


def test_region_of_a_large_frame_is_computed_subsampled_and_scaled_back():
    labels = _street()
    labels[25:30, 20:26] = CAR
    big = np.kron(labels, np.ones((40, 40), np.uint8))  # 1600 x 2400: computed at every 5th pixel
    expected = np.kron(drivable_region(labels), np.ones((40, 40), bool))
    np.testing.assert_array_equal(drivable_region(big), expected)  # borders on multiples of 5: exact


# ----------------------------------------------------------------------------- persistence
def _frames(pattern: str, shape=(5, 5)) -> list[np.ndarray]:
    """One mask per character: '1' = an alarm on pixel (2, 2), '0' = none."""
    out = []
    for c in pattern:
        m = np.zeros(shape, bool)
        m[2, 2] = c == "1"
        out.append(m)
    return out


def _fired(config: PersistenceConfig, pattern: str) -> str:
    p = Persistence(config)
    return "".join("1" if p.update(m, 0.1 * i)[2, 2] else "0" for i, m in enumerate(_frames(pattern)))


def test_k_of_n_needs_k_of_the_newest_n_frames():
    two_of_three = PersistenceConfig(k=2, n=3, k_off=2, radius=0)
    assert _fired(two_of_three, "1111") == "0111"
    assert _fired(two_of_three, "10101") == "00101"  # 2 of the last 3 at frames 2 and 4
    assert _fired(two_of_three, "1001001") == "0000000"  # never 2 within 3 frames
    three_of_four = PersistenceConfig(k=3, n=4, k_off=3, radius=0)
    assert _fired(three_of_four, "110110") == "000110"


def test_a_one_frame_flicker_never_fires():
    for k, n in ((2, 2), (2, 3), (3, 5)):
        assert _fired(PersistenceConfig(k=k, n=n, k_off=1, radius=0), "0001000") == "0000000"
    # and a flicker elsewhere does not borrow support from a real alarm further than the radius away
    p = Persistence(PersistenceConfig(k=2, n=3, k_off=1, radius=1))
    a, b = np.zeros((9, 9), bool), np.zeros((9, 9), bool)
    a[1, 1] = True
    b[1, 1] = b[7, 7] = True
    p.update(a, 0.0)
    out = p.update(b, 0.1)
    assert out[1, 1] and not out[7, 7]


def test_hysteresis_keeps_a_confirmed_alarm_through_a_missed_frame():
    with_hysteresis = PersistenceConfig(k=3, n=3, k_off=1, radius=0)
    without = PersistenceConfig(k=3, n=3, k_off=3, radius=0)
    # on at frame 2; frame 4 is missed; frame 5 has only 2 of 3 frames of support
    assert _fired(with_hysteresis, "111011") == "001011"
    assert _fired(without, "111011") == "001000"
    # once the support drops below k_off the alarm is off and needs k of n again
    assert _fired(with_hysteresis, "1110001") == "0010000"


def test_persistence_follows_motion_within_the_radius_and_restarts_after_a_gap():
    moving = []
    for i in range(3):
        m = np.zeros((20, 20), bool)
        m[10, 5 + 3 * i] = True  # moves 3 px per frame
        moving.append(m)
    slow = Persistence(PersistenceConfig(k=2, n=3, k_off=2, radius=3))
    assert [slow.update(m, 0.1 * i).any() for i, m in enumerate(moving)] == [False, True, True]
    tight = Persistence(PersistenceConfig(k=2, n=3, k_off=2, radius=2))
    assert not any(tight.update(m, 0.1 * i).any() for i, m in enumerate(moving))
    # a gap longer than max_gap clears the history: the first frame after it cannot fire
    p = Persistence(PersistenceConfig(k=2, n=3, k_off=1, radius=0, max_gap=0.5))
    still = _frames("1")[0]
    assert [p.update(still, t)[2, 2] for t in (0.0, 0.1, 0.2, 1.0, 1.1)] == [False, True, True, False, True]
    # a new image size starts over too
    assert not p.update(np.ones((6, 6), bool), 1.2).any()


def test_persistence_rejects_bad_parameters():
    with pytest.raises(ValueError, match="k <= n"):
        PersistenceConfig(k=4, n=3)
    with pytest.raises(ValueError, match="k_off <= k"):
        PersistenceConfig(k=2, n=3, k_off=3)
    assert not PersistenceConfig(k=1, n=1).active


def test_grid_persistence_caps_cells_that_alarm_once():
    p = Persistence(PersistenceConfig(k=2, n=3, k_off=1, radius=0))
    values = np.array([[-1, 10, 80], [50, 49, 100]], np.int8)
    first = persist_grid(values, p, 0.0)
    np.testing.assert_array_equal(first, [[-1, 10, 49], [49, 49, 49]])
    np.testing.assert_array_equal(persist_grid(values, p, 0.1), values)  # second frame: persistent
    assert values[0, 2] == 80  # input untouched


# ----------------------------------------------------------------------------- obstacles
def test_components_become_obstacles_with_boxes_scores_and_sizes():
    alarms = np.zeros((30, 40), bool)
    alarms[5:10, 4:12] = True  # 40 px
    alarms[20:23, 30:33] = True  # 9 px
    alarms[20, 34] = True  # diagonal neighbour of nothing: separate 1-px speck
    alarms[22, 33] = True  # 8-connected to the 3x3 block (diagonal)
    score = np.full(alarms.shape, -10.0, np.float32)
    score[5:10, 4:12] = -5.0
    score[7, 6] = -1.0
    obstacles, components = find_obstacles(alarms, score, min_pixels=5)
    assert [o.pixels for o in obstacles] == [40, 10]
    big, small = obstacles
    assert big.box == (4, 5, 11, 9) and big.size == (8, 5) and big.score == -1.0
    assert big.mean_score == pytest.approx((39 * -5.0 - 1.0) / 40)
    assert small.box == (30, 20, 33, 22)
    assert big.contact == (7.5, 9.5) and big.ground is None and big.distance is None
    assert (components == 1).sum() == 40 and (components == 2).sum() == 10 and components[20, 34] == 0


def test_ground_position_and_distance_match_closed_form_geometry():
    # level camera 1.5 m above the ground: a ground point at distance d ahead and y to the left is
    # seen at row v = cy + fy h / d and column u = cx - fx y / d (pixel edges are at +-0.5)
    fx = fy = 500.0
    cx, cy, h = 99.5, 59.5, 1.5
    mount = CameraMount(height=h, pitch=0.0, x=2.0, y=0.5)
    homography = image_to_ground_homography(intrinsic_matrix(fx, fy, cx, cy), mount)
    alarms = np.zeros((120, 200), bool)
    alarms[70:85, 90:110] = True  # bottom edge at row 84.5, columns 89.5 .. 109.5
    score = np.where(alarms, -2.0, -12.0).astype(np.float32)
    (ob,), _ = find_obstacles(alarms, score, 20, homography, mount)
    d = fy * h / (84.5 - cy)  # forward distance from the camera
    u_mid = 99.5
    assert ob.contact == (u_mid, 84.5)
    assert ob.ground[0] == pytest.approx(2.0 + d)
    assert ob.ground[1] == pytest.approx(0.5 - (u_mid - cx) * d / fx)
    assert ob.distance == pytest.approx(d)
    assert ob.width == pytest.approx(20 * d / fx)
    # above the horizon: no ground position
    sky = np.zeros_like(alarms)
    sky[10:30, 10:30] = True
    (high,), _ = find_obstacles(sky, score, 20, homography, mount)
    assert high.ground is None and high.distance is None and high.width is None


def test_pitched_camera_distance_matches_the_ray_ground_intersection():
    fx = fy = 400.0
    cx, cy, h, pitch = 63.5, 47.5, 1.2, 0.1
    mount = CameraMount(height=h, pitch=pitch)
    homography = image_to_ground_homography(intrinsic_matrix(fx, fy, cx, cy), mount)
    alarms = np.zeros((96, 128), bool)
    alarms[60:70, 60:68] = True
    (ob,), _ = find_obstacles(alarms, np.zeros(alarms.shape, np.float32), 1, homography, mount)
    # the ray through the contact point leaves the camera at angle pitch + atan(b) below the horizon
    b = (69.5 - cy) / fy
    a = (ob.contact[0] - cx) / fx
    forward = h / math.tan(pitch + math.atan(b))
    # lateral: along the ray, y = -a * (depth along the optical axis)
    depth = h / (math.sin(pitch) + b * math.cos(pitch))
    assert ob.ground[0] == pytest.approx(forward)
    assert ob.ground[1] == pytest.approx(-a * depth)


# ----------------------------------------------------------------------------- pipeline
def test_pipeline_region_persistence_and_obstacles_together():
    labels = _street()
    labels[25:30, 20:26] = CAR
    score = np.full(labels.shape, -12.0, np.float32)
    score[25:30, 20:26] = -3.0  # the object on the road
    score[2:8, 2:8] = -3.0  # a sign on the building: outside the region
    point = OperatingPoint(-6.0, min_pixels=20)
    pipe = AlarmPipeline()
    first_frame = FrameContext(labels, score, point, stamp=0.0)
    first = pipe.process(first_frame)
    assert first_frame.mask.sum() == 30 + 36 and not first.alarms.any() and first.obstacles == []
    second = pipe.process(FrameContext(labels, score, point, stamp=0.1))
    assert second.alarms.sum() == 30 and [o.box for o in second.obstacles] == [(20, 25, 25, 29)]
    everywhere = OperatingPoint(-6.0, region="all", persistence=PersistenceConfig(k=1, n=1))
    assert len(AlarmPipeline().process(FrameContext(labels, score, everywhere)).obstacles) == 2
    # a still is judged on its own: the first frame already alarms, whatever the point's persistence
    assert AlarmPipeline(sequence=False).process(FrameContext(labels, score, point)).alarms.sum() == 30
    # a new operating point starts the filter over: the next frame needs k frames again
    pipe.process(
        FrameContext(labels, score, OperatingPoint(-6.0, min_pixels=20, persistence=PersistenceConfig(3, 4)), stamp=0.2)
    )
    assert not pipe.process(FrameContext(labels, score, OperatingPoint(-6.0, min_pixels=20), stamp=0.3)).alarms.any()


def test_smallest_obstacle_scales_with_the_image_area_it_was_counted_at():
    """A point's ``min_pixels`` counted at 40 x 60 holds a quarter as many pixels at 20 x 30 (and four
    times as many at 80 x 120); without an image size the count is the same at every size."""
    point = OperatingPoint(-6.0, region="all", min_pixels=20, image_size=(40, 60), persistence=PersistenceConfig(1, 1))
    assert (point.min_pixels_at((40, 60)), point.min_pixels_at((20, 30)), point.min_pixels_at((80, 120))) == (20, 5, 80)
    assert point.min_pixels_at((1, 1)) == 1 and OperatingPoint(-6.0, min_pixels=20).min_pixels_at((80, 120)) == 20
    score = np.full((20, 30), -12.0, np.float32)
    score[2:4, 2:4] = 0.0  # 4 px: below the 5 px the point asks for at this size
    score[10:12, 10:13] = 0.0  # 6 px: kept
    labels = np.zeros(score.shape, np.uint8)
    found = AlarmPipeline().process(FrameContext(labels, score, point)).obstacles
    assert [o.pixels for o in found] == [6]


def test_the_ego_vehicle_never_alarms():
    labels = _street()
    score = np.full(labels.shape, -12.0, np.float32)
    score[30:, 20:40] = 0.0  # the bonnet at the bottom of the frame, on the predicted road
    ego = np.zeros(labels.shape, bool)
    ego[34:, :] = True
    point = OperatingPoint(-6.0, min_pixels=1, persistence=PersistenceConfig(1, 1))
    alarms = AlarmPipeline().process(FrameContext(labels, score, point, ego_mask=ego)).alarms
    assert alarms.sum() == 4 * 20 and not (alarms & ego).any()


def test_frame_counts_detections_and_false_alarms_by_hand():
    from pebal_core.alarms.frame_counts import ObstacleCounts

    labels = np.zeros((30, 40), np.uint8)
    labels[2:8, 2:8] = 1  # 36 px hazard, hit
    labels[20:25, 20:25] = 1  # 25 px hazard, missed
    labels[28, 0:5] = 1  # 5 px: too small to count
    labels[:, 35:] = 255
    score = np.full(labels.shape, -10.0, np.float32)
    score[4:10, 4:10] = 0.0  # overlaps the first hazard
    score[12:17, 30:39] = 0.0  # a false alarm, partly on void
    point = OperatingPoint(-1.0, region="all", min_pixels=10, persistence=PersistenceConfig(k=1, n=1))
    pipe, trainids = AlarmPipeline(), np.zeros(labels.shape, np.uint8)
    counts = ObstacleCounts(min_visible=20)
    counts.update(pipe.process(FrameContext(trainids, score, point)), labels)
    counts.update(pipe.process(FrameContext(trainids, np.full(labels.shape, -10.0, np.float32), point)), labels)
    s = counts.summary()
    assert (s["frames"], s["obstacles"], s["detected"], s["reported"], s["false_alarms"]) == (2, 4, 1, 2, 1)
    assert s["detection_rate"] == 0.25 and s["false_alarms_per_frame"] == 0.5
