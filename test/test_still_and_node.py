"""A still and the node show the same alarms: one real frame through ``pebal predict`` and through
the real node (rclpy, the shipped default model loaded by the node from its parameters).

Both run the model's stored operating point through the one alarm chain: ``pebal predict`` judges
the image as a still (persistence off), the node runs the point's persistence filter (2 of 3
frames), so it is sent the frame twice and its second overlay must equal the still's, pixel for
pixel: region outline, alarm pixels and their tint, obstacle outlines and boxes.
"""

from __future__ import annotations

import re
import subprocess
import sys

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Time
from node_harness import Probe, RosSession, as_array, image_msg, wait_until
from rclpy.parameter import Parameter

from pebal_core.images import read_rgb, write_rgb
from pebal_ros.node import PebalNode

FRAME = "Validation_Dataset/FS_LostFound_full/images/{}.png"
INDEX = 16
"""A frame in which the default model raises alarms at its stored point (two obstacles; any frame
would do, one with alarms tests more)."""
SIZE = (512, 1024)
"""The real frame at half its 1024 x 2048 (height, width): a 1.5 MB message instead of 6 MB; the
operating point's smallest obstacle (320 px at 1024 x 2048) becomes 80 px on both sides."""


@pytest.mark.ros
@pytest.mark.realdata
def test_a_still_and_the_node_raise_the_same_alarms(ros_env, realdata, tmp_path):
    full = read_rgb(realdata / FRAME.format(INDEX))
    rgb = cv2.resize(full, SIZE[::-1], interpolation=cv2.INTER_AREA)
    write_rgb(tmp_path / "frame.png", rgb)
    out = subprocess.run(
        [sys.executable, "-m", "pebal_core.cli", "predict", str(tmp_path / "frame.png"), "--out", str(tmp_path / "p")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    obstacles = int(re.search(r"(\d+) obstacle\(s\)", out.stdout).group(1))
    still = read_rgb(tmp_path / "p" / "frame_overlay.png")
    score = np.load(tmp_path / "p" / "frame_score.npy")
    alarm_pixels = int((still != rgb).any(axis=2).sum())  # alarms, region outline, ego mask hatching
    assert obstacles >= 1 and alarm_pixels > 1000, (obstacles, alarm_pixels)  # the frame shows alarms

    params = [Parameter("input_reliability", value="reliable"), Parameter("diagnostics_period", value=0.2)]
    with RosSession() as session:
        node = session.add(PebalNode(context=session.context, parameter_overrides=params))  # the default model
        probe = Probe(session, outputs=("anomaly_score", "anomaly_overlay"))
        probe.wait_connected()
        for name in ("anomaly_score", "anomaly_overlay"):
            wait_until(lambda name=name: node._outputs[name].get_subscription_count() > 0, 15.0, name)
        first = probe.now()
        probe.image_pub.publish(image_msg(rgb, first, "camera"))
        got_first = probe.wait_outputs(first, timeout=120.0)
        # the camera's next frame, 0.1 s later by its stamp (the filter's max_gap is 0.5 s)
        t = first.sec * 10**9 + first.nanosec + 100_000_000
        second = Time(sec=t // 10**9, nanosec=t % 10**9)
        probe.image_pub.publish(image_msg(rgb, second, "camera"))
        got = probe.wait_outputs(second, timeout=120.0)
        values = probe.wait_diag(lambda v: v["frames_out"] == "2", what="two frames out")

    np.testing.assert_array_equal(as_array(got["anomaly_score"]), score)  # the same scores
    # the first frame has no persistent alarm yet (2 of 3 frames): little more than the region outline
    changed_first = int((as_array(got_first["anomaly_overlay"]) != rgb).any(axis=2).sum())
    assert changed_first < alarm_pixels
    np.testing.assert_array_equal(as_array(got["anomaly_overlay"]), still)
    assert values["operating_point_overrides"] == "none" and values["operating_point"].endswith("(model)")
    assert values["obstacles_last_frame"] == str(obstacles)
