"""Your own camera: calibration files, ``pebal_camera`` over real rclpy, and the Fast DDS profile that lets
camera-sized frames arrive.

``pebal_camera`` runs as its installed console script (a real process, real DDS on loopback with a
random domain id); what arrives is compared with the image files decoded independently and with
the calibration file's numbers.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import rclpy
from node_harness import RELIABLE, RosSession, wait_until
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image

from pebal_core.camera_calibration import DEFAULT_HFOV_DEG, CalibrationError, CameraCalibration
from pebal_ros.dds_profile import (
    FAST_DDS_2_VARIABLE,
    PROFILE_VARIABLE,
    apply_profile,
    large_image_profile,
    lost_frames_hint,
)

CAMERA = os.path.join(os.path.dirname(sys.executable), "pebal_camera")
# camera_calibration's own output for a 640x480 camera (the ROS monocular calibration tutorial's file)
CALIBRATION_YAML = """\
image_width: 640
image_height: 480
camera_name: narrow_stereo
camera_matrix:
  rows: 3
  cols: 3
  data: [423.48, 0.0, 316.52, 0.0, 425.31, 238.36, 0.0, 0.0, 1.0]
distortion_model: plumb_bob
distortion_coefficients:
  rows: 1
  cols: 5
  data: [-0.314, 0.096, -0.0005, 0.0012, 0.0]
rectification_matrix:
  rows: 3
  cols: 3
  data: [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
projection_matrix:
  rows: 3
  cols: 4
  data: [345.9, 0.0, 318.1, 0.0, 0.0, 389.4, 237.7, 0.0, 0.0, 0.0, 1.0, 0.0]
"""


# --------------------------------------------------------------------------- calibration
def test_a_ros_calibration_file_gives_its_numbers(tmp_path):
    path = tmp_path / "front.yaml"
    path.write_text(CALIBRATION_YAML)
    for spec in (path, f"file://{path}"):
        cal = CameraCalibration.from_yaml(spec)
        assert (cal.width, cal.height, cal.camera_name, cal.distortion_model) == (
            640,
            480,
            "narrow_stereo",
            "plumb_bob",
        )
        assert cal.k == (423.48, 0.0, 316.52, 0.0, 425.31, 238.36, 0.0, 0.0, 1.0)
        assert cal.d == (-0.314, 0.096, -0.0005, 0.0012, 0.0)
        assert cal.p == (345.9, 0.0, 318.1, 0.0, 0.0, 389.4, 237.7, 0.0, 0.0, 0.0, 1.0, 0.0)
    minimal = tmp_path / "minimal.yaml"
    minimal.write_text(
        "image_width: 8\nimage_height: 6\ncamera_matrix: {rows: 3, cols: 3, data: [5,0,4,0,6,3,0,0,1]}\n"
    )
    cal = CameraCalibration.from_yaml(minimal)
    assert cal.p == (5, 0, 4, 0, 0, 6, 3, 0, 0, 0, 1, 0) and cal.r == (1, 0, 0, 0, 1, 0, 0, 0, 1)
    assert cal.d == (0,) * 5 and cal.distortion_model == "plumb_bob"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("image_width: 8\nimage_height: 6\n", "not a ROS camera calibration file"),
        ("image_width: 8\nimage_height: 6\ncamera_matrix: {rows: 3, cols: 3, data: [1, 2]}\n", "2 values for 3x3"),
        ("image_width: 8\nimage_height: 6\ncamera_matrix: {rows: 2, cols: 2, data: [1, 0, 0, 1]}\n", "expected 3x3"),
        ("image_width: 8\nimage_height: 6\ncamera_matrix: {rows: 3, cols: 3, data: [0,0,4,0,6,3,0,0,1]}\n", "positive"),
        ("image_width: x\ncamera_matrix: {rows: 3, cols: 3, data: [5,0,4,0,6,3,0,0,1]}\n", "must be integers"),
        ("camera_matrix: [unclosed\n", "cannot read camera calibration"),
    ],
)
def test_bad_calibration_files_are_named(tmp_path, text, words):
    path = tmp_path / "cal.yaml"
    path.write_text(text)
    with pytest.raises(CalibrationError, match=words) as err:
        CameraCalibration.from_yaml(path)
    assert str(path) in str(err.value)


def test_the_stated_default_sees_53_degrees_about_the_image_centre():
    cal = CameraCalibration.default(1280, 720)
    fx, cx, cy = cal.k[0], cal.k[2], cal.k[5]
    # the rays through the outer edges of the first and last pixel columns (u = -0.5 and u = 1279.5)
    hfov = math.degrees(math.atan((cx + 0.5) / fx) + math.atan((1279.5 - cx) / fx))
    assert hfov == pytest.approx(DEFAULT_HFOV_DEG) == pytest.approx(53.130102, abs=1e-6)
    assert (cx, cy) == (639.5, 359.5) and cal.k[4] == fx == 1280
    assert "stated default" in cal.source


# --------------------------------------------------------------------------- the Fast DDS profile
def test_the_profile_is_applied_once_and_never_over_the_users_choice():
    profile = large_image_profile()
    assert profile is not None and profile.name == "fastdds_large_images.xml" and profile.is_file()
    env: dict[str, str] = {}
    assert apply_profile(env) == profile and env == {PROFILE_VARIABLE: str(profile)}
    assert apply_profile(env) is None  # set already
    mine = {FAST_DDS_2_VARIABLE: "/etc/mine.xml"}
    assert apply_profile(mine) is None and mine == {FAST_DDS_2_VARIABLE: "/etc/mine.xml"}
    jazzy = {"ROS_DISTRO": "jazzy"}  # Fast DDS 2 reads only the old name
    assert apply_profile(jazzy) == profile and jazzy[FAST_DDS_2_VARIABLE] == str(profile)
    cyclone = {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}
    assert apply_profile(cyclone) is None and cyclone == {"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}
    hint = lost_frames_hint(1280 * 720 * 3, {})
    assert f"export {PROFILE_VARIABLE}={profile}" in hint and "2.6 MiB" in hint
    assert "export" not in lost_frames_hint(64 * 48 * 3, {})  # small frames: the profile is not the cause


# --------------------------------------------------------------------------- pebal_camera
def _frames_folder(tmp_path: Path, n: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    pictures = [rng.integers(0, 256, (30 + i, 40, 3), dtype=np.uint8) for i in range(n)]  # sizes differ
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, rgb in enumerate(pictures):
        cv2.imwrite(str(folder / f"{i}.png"), rgb[..., ::-1].copy())
    return pictures


def _start(*args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [CAMERA, *args], env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _received(session: RosSession, topics: dict[str, type]) -> dict[str, list]:
    node = session.add(rclpy.create_node("camera_sink", context=session.context))
    got: dict[str, list] = {t: [] for t in topics}
    for topic, cls in topics.items():
        node.create_subscription(cls, topic, got[topic].append, RELIABLE)
    return got


@pytest.mark.ros
def test_camera_publishes_the_folder_in_order_with_calibrated_camera_info(ros_env, tmp_path):
    pictures = _frames_folder(tmp_path)
    calibration = tmp_path / "front.yaml"
    calibration.write_text(CALIBRATION_YAML)
    with RosSession() as session:
        got = _received(session, {"/front/camera/image_raw": Image, "/front/camera/camera_info": CameraInfo})
        proc = _start(
            str(tmp_path / "frames"),
            "--ros-args", "-r", "__ns:=/front", "-p", "publish_rate:=20.0", "-p", "loop:=true",
            "-p", f"camera_info_url:=file://{calibration}", "-p", "frame_id:=front_optical",
            env=ros_env,
        )  # fmt: skip
        try:
            t_start = time.time()
            wait_until(lambda: len(got["/front/camera/image_raw"]) >= 7 or proc.poll() is not None, 60, "7 frames")
            assert proc.poll() is None, proc.stdout.read()
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        images, infos = list(got["/front/camera/image_raw"]), list(got["/front/camera/camera_info"])
    t_end = time.time()
    assert proc.returncode == 0, out
    assert "stated default" not in out and str(calibration) in out
    # the loop shows every file in order: the sizes tell which file a frame is
    order = [m.height - 30 for m in images]  # file i is 30 + i rows high
    start = order[0]
    assert order == [(start + k) % 3 for k in range(len(order))]
    for msg, k in zip(images, order, strict=True):
        assert (msg.encoding, msg.header.frame_id) == ("rgb8", "front_optical")
        np.testing.assert_array_equal(np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width, 3), pictures[k])
    stamps = [m.header.stamp.sec + m.header.stamp.nanosec * 1e-9 for m in images]
    assert stamps == sorted(stamps) and t_start < stamps[0] and stamps[-1] <= t_end  # wall time
    info_stamps = {(i.header.stamp.sec, i.header.stamp.nanosec) for i in infos}
    assert {(m.header.stamp.sec, m.header.stamp.nanosec) for m in images[1:]} <= info_stamps  # same headers
    info = infos[-1]
    np.testing.assert_array_equal(info.k, [423.48, 0.0, 316.52, 0.0, 425.31, 238.36, 0.0, 0.0, 1.0])
    np.testing.assert_array_equal(info.d, [-0.314, 0.096, -0.0005, 0.0012, 0.0])
    assert (info.width, info.height, info.header.frame_id) == (640, 480, "front_optical")


@pytest.mark.ros
def test_camera_stamps_with_sim_time_and_stops_at_the_end(ros_env, tmp_path):
    """use_sim_time: no frame before /clock, then the clock's time; without loop the node publishes the
    source once, says so and exits with 0; the default camera_info follows each frame's size."""
    pictures = _frames_folder(tmp_path, 2)
    with RosSession() as session:
        got = _received(session, {"/camera/image_raw": Image, "/camera/camera_info": CameraInfo})
        clock = session.add(rclpy.create_node("clock", context=session.context)).create_publisher(Clock, "/clock", 1)
        proc = _start(str(tmp_path / "frames"), "--ros-args", "-p", "use_sim_time:=true", env=ros_env)
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
        reader.start()
        try:
            # the camera says it waits for /clock (after its subscriber showed up): only then does the clock start
            wait_until(lambda: any("waiting for it" in line for line in lines) or proc.poll() is not None, 60, "log")
            assert not got["/camera/image_raw"], "no frame before the first /clock message"
            while proc.poll() is None:
                clock.publish(Clock(clock=rclpy.time.Time(seconds=1234, nanoseconds=5).to_msg()))
                time.sleep(0.05)
            reader.join(10)
            out = "".join(lines)
        finally:
            if proc.poll() is None:
                proc.kill()
        wait_until(lambda: len(got["/camera/camera_info"]) >= len(got["/camera/image_raw"]), 5, "camera_info")
        images, infos = list(got["/camera/image_raw"]), list(got["/camera/camera_info"])
    assert proc.returncode == 0, out
    assert "published 2 frames" in out and "waiting for it" in out
    assert images and all((m.header.stamp.sec, m.header.stamp.nanosec) == (1234, 5) for m in images)
    for info in infos:  # the stated default for each frame's size
        h = info.height
        assert info.width == 40 and h in (30, 31)
        np.testing.assert_array_equal(info.k, [40, 0, 19.5, 0, 40, (h - 1) / 2, 0, 0, 1])
    assert {m.height for m in images} <= {p.shape[0] for p in pictures}


def test_camera_errors_are_one_line(tmp_path):
    for args, words in (
        ([str(tmp_path / "nothing")], "no image, folder, video or camera device"),
        ([], "no source"),
        ([str(tmp_path), "--ros-args", "-p", "camera_info_url:=/no/such.yaml"], "cannot read camera calibration"),
    ):
        if str(tmp_path) in args and not list(tmp_path.glob("*.png")):
            cv2.imwrite(str(tmp_path / "a.png"), np.zeros((4, 4, 3), np.uint8))
        out = subprocess.run([CAMERA, *args], capture_output=True, text=True, timeout=60)
        assert out.returncode == 2, out.stdout + out.stderr
        assert out.stderr.startswith("pebal_camera: error:") and words in out.stderr and "Traceback" not in out.stderr
