"""Obstacles as ROS messages: marker contents, detections, and the node publishing them over real rclpy.

The node test runs the real node with a real (tiny, untrained) model; the expected obstacles come
from the model's own prediction, found again here with scipy's connected components and the
closed-form ground geometry of a level camera, independently of the node.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from node_harness import Probe, RosSession, camera_info_msg, image_msg, wait_until
from rclpy.parameter import Parameter
from scipy import ndimage
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from pebal_core.alarms.frame import FrameContext
from pebal_core.alarms.obstacles import Obstacle
from pebal_core.alarms.operating_point import OperatingPoint
from pebal_core.models import build_model
from pebal_core.models.checkpoint import save_checkpoint
from pebal_core.runtime import Predictor
from pebal_ros.node import PebalNode
from pebal_ros.obstacle_msgs import (
    DETECTIONS_AVAILABLE,
    MARKER_DEPTH,
    MARKER_NS,
    MIN_MARKER_SIZE,
    obstacle_detections,
    obstacle_markers,
)

H, W = 48, 64
F = 60.0
CAMERA_HEIGHT = 1.5


def _obstacle(index: int, ground, width=0.8, score=-2.0) -> Obstacle:
    return Obstacle(
        index=index,
        score=score,
        mean_score=score - 1.0,
        pixels=50,
        box=(10, 20, 19, 24),
        contact=(14.5, 24.5),
        ground=ground,
        distance=None if ground is None else math.hypot(*ground),
        width=None if ground is None else width,
    )


def _frame(threshold: float) -> FrameContext:
    """A frame judged at ``threshold`` (probability scale 1): what the markers' colours are computed from."""
    return FrameContext(np.zeros((2, 2), np.uint8), np.zeros((2, 2), np.float32), OperatingPoint(threshold))


def test_markers_clear_the_last_frame_then_draw_a_box_and_a_label_per_grounded_obstacle():
    header = Header(frame_id="base_footprint")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    obstacles = [_obstacle(0, (12.0, -1.0)), _obstacle(1, None), _obstacle(2, (30.0, 4.0), width=0.05, score=-6.0)]
    msg = obstacle_markers(obstacles, header, _frame(-4.0))
    clear, *rest = msg.markers
    assert clear.action == Marker.DELETEALL and clear.ns == MARKER_NS
    assert all(m.header.frame_id == "base_footprint" and m.header.stamp.sec == 12 for m in msg.markers)
    assert len(rest) == 4  # obstacle 1 has no ground position: nothing drawn
    cube, label, far_cube, far_label = rest
    assert (cube.type, cube.id, far_cube.id) == (Marker.CUBE, 0, 4) and (label.id, far_label.id) == (1, 5)
    assert label.type == Marker.TEXT_VIEW_FACING
    assert (cube.pose.position.x, cube.pose.position.y) == (12.0 + MARKER_DEPTH / 2, -1.0)
    assert (cube.scale.x, cube.scale.y, cube.scale.z) == pytest.approx((MARKER_DEPTH, 0.8, 0.8))
    assert cube.pose.position.z == pytest.approx(0.4)  # standing on the ground
    assert far_cube.scale.y == MIN_MARKER_SIZE  # tiny obstacles stay visible
    # colour: p = 1 / (1 + e^-2) = 0.881 for score -2 at threshold -4 -> red with some green left
    p = 1 / (1 + math.exp(-2.0))
    assert cube.color.r == 1.0 and cube.color.g == pytest.approx(170 / 255 * (1 - (p - 0.5) * 2), abs=1e-6)
    assert far_cube.color.g == pytest.approx(170 / 255, abs=1e-6)  # below the threshold: orange
    assert label.text == f"{math.hypot(12.0, -1.0):.1f} m  p={p:.2f}"
    assert cube.lifetime.sec == 1
    empty = obstacle_markers([], header, _frame(-4.0))
    assert [m.action for m in empty.markers] == [Marker.DELETEALL]


@pytest.mark.skipif(not DETECTIONS_AVAILABLE, reason="vision_msgs is not installed (not on PyPI; full ROS installs)")
def test_detections_carry_image_boxes_and_probabilities():
    header = Header(frame_id="cam")
    msg = obstacle_detections([_obstacle(0, None)], header, _frame(-2.0))
    (d,) = msg.detections
    assert msg.header.frame_id == "cam" and d.id == "0"
    assert (d.bbox.center.position.x, d.bbox.center.position.y, d.bbox.size_x, d.bbox.size_y) == (14.5, 22, 10, 5)
    assert d.results[0].hypothesis.class_id == "anomaly" and d.results[0].hypothesis.score == pytest.approx(0.5)


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    path = save_checkpoint(build_model("resnet18", width=0.25), tmp_path_factory.mktemp("obst") / "tiny.safetensors")
    return Predictor.from_checkpoint(path)


@pytest.fixture(scope="module")
def rgb():
    y, x = np.mgrid[0:H, 0:W]
    img = np.stack([x * 4, y * 5, (x + y) * 2], axis=2) % 256
    return (img + np.random.default_rng(5).integers(0, 40, (H, W, 3))).clip(0, 255).astype(np.uint8)


@pytest.mark.ros
def test_node_publishes_the_obstacles_it_finds(ros_env, predictor, rgb):
    labels, score = predictor.predict(rgb)
    threshold = float(np.quantile(score, 0.7))
    # the reference: 8-connected components of the alarms, those of >= 5 px, largest first
    cc, n = ndimage.label(score >= threshold, structure=np.ones((3, 3)))
    sizes = np.bincount(cc.ravel())[1:]
    big = [i + 1 for i in np.argsort(-sizes, kind="stable") if sizes[i] >= 5]
    assert big, "the test image must produce obstacles"
    params = {
        "score_threshold": threshold,
        "alarms.region": "all",  # an untrained model predicts no road
        "alarms.min_pixels": 5,
        "persistence.k": 1,
        "persistence.n": 1,
        "grid.camera_height": CAMERA_HEIGHT,
        "grid.camera_pitch": 0.0,
        "grid.frame_id": "base_link",
        "diagnostics_period": 0.1,
    }
    with RosSession() as session:
        node = session.add(
            PebalNode(
                predictor,
                context=session.context,
                parameter_overrides=[Parameter(k, value=v) for k, v in params.items()],
            )
        )
        probe = Probe(session, outputs=("obstacles",))
        probe.wait_connected((probe.info_pub,))
        wait_until(lambda: node._outputs["obstacles"].get_subscription_count() > 0, 15.0, "probe on obstacles")
        probe.info_pub.publish(camera_info_msg(H, W, F, F))
        probe.wait_diag(lambda v: v.get("camera_info") == "received", what="camera_info received")
        stamp = probe.now()
        probe.image_pub.publish(image_msg(rgb, stamp, "cam"))
        msg = probe.wait_outputs(stamp)["obstacles"]
        values = probe.wait_diag(lambda v: v["frames_out"] == "1")

    clear, *drawn = msg.markers
    assert clear.action == Marker.DELETEALL and clear.header.frame_id == "base_link"
    assert clear.header.stamp == stamp
    cubes = {m.id // 2: m for m in drawn if m.type == Marker.CUBE}
    cy = (H - 1) / 2
    grounded = 0
    for index, label in enumerate(big):
        rows, cols = np.nonzero(cc == label)
        v_bottom = rows.max() + 0.5
        if v_bottom <= cy:  # at or above the horizon of the level camera: no ground position
            assert index not in cubes
            continue
        grounded += 1
        u = cols[rows == rows.max()].mean()
        d = F * CAMERA_HEIGHT / (v_bottom - cy)
        cube = cubes[index]
        assert cube.pose.position.x == pytest.approx(d + MARKER_DEPTH / 2, rel=1e-6)
        assert cube.pose.position.y == pytest.approx(-(u - (W - 1) / 2) * d / F, rel=1e-6, abs=1e-9)
        width = (cols.max() - cols.min() + 1) * d / F
        assert cube.scale.y == pytest.approx(max(width, MIN_MARKER_SIZE), rel=1e-6)
    assert grounded and len(cubes) == grounded
    assert values["obstacles_last_frame"] == str(len(big)) and values["obstacles_total"] == str(len(big))
    assert values["frames_with_obstacles"] == "1"
