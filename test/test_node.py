"""The perception node over real rclpy/DDS (localhost only, random domain id).

The node runs in-process with an injected Predictor (the same object computes the reference
outputs, so they must match bit for bit), and once as the installed ``pebal_node`` console script
with ``--ros-args --params-file config/pebal.yaml``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from conftest import ROOT
from node_harness import (
    Probe,
    RosSession,
    as_array,
    byte_array,
    camera_info_msg,
    first_outputs_from_process,
    image_msg,
    stop_process,
    wait_until,
)
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from sensor_msgs.msg import CompressedImage, Image

from pebal_core import backends
from pebal_core.alarms.frame import FrameContext
from pebal_core.alarms.operating_point import OperatingPoint, StoredPoints
from pebal_core.alarms.pipeline import AlarmPipeline
from pebal_core.backends import TorchBackend
from pebal_core.ground import CameraMount, GroundGrid, intrinsic_matrix
from pebal_core.labels import PALETTE
from pebal_core.operating_point_selection import write_operating_points
from pebal_core.runtime import Predictor
from pebal_core.visualize import alarm_overlay
from pebal_ros import node_outputs
from pebal_ros.node import OUTPUTS, PebalNode
from pebal_ros.node_parameters import IMAGE_OUTPUTS
from pebal_ros.occupancy import OccupancyMapper

pytestmark = pytest.mark.ros

H, W = 48, 64
FX = FY = 60.0
GRID = {
    "grid.resolution": 1.0,
    "grid.size_x": 30.0,
    "grid.size_y": 20.0,
    "grid.origin_x": -2.0,
    "grid.origin_y": -10.0,
    "grid.camera_height": 1.5,
    "grid.camera_pitch": 0.2,
    "grid.frame_id": "base_link",
}


@pytest.fixture(scope="module")
def rgb():
    y, x = np.mgrid[0:H, 0:W]
    img = np.stack([x * 4, y * 5, (x + y) * 2], axis=2) % 256
    noise = np.random.default_rng(3).integers(0, 40, (H, W, 3))
    return (img + noise).clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def reference(predictor, rgb):
    labels, score = predictor.predict(rgb)
    return labels, score, float(np.median(score))


def _overrides(values: dict) -> list[Parameter]:
    return [Parameter(k, value=v) for k, v in values.items()]


def _start(session, predictor, **params) -> PebalNode:
    values = {"diagnostics_period": 0.1, **GRID, **params}
    return session.add(PebalNode(predictor, context=session.context, parameter_overrides=_overrides(values)))


def _connected(probe: Probe, node: PebalNode, outputs=OUTPUTS) -> None:
    probe.wait_connected((probe.info_pub,))
    for name in outputs:
        wait_until(lambda name=name: node._outputs[name].get_subscription_count() > 0, 15.0, f"probe on {name}")


def test_every_output_matches_the_predictor_and_keeps_the_header(ros_env, predictor, rgb, reference):
    labels, score, threshold = reference
    with RosSession() as session:
        node = _start(session, predictor, score_threshold=threshold, overlay_alpha=0.4)
        probe = Probe(session)
        _connected(probe, node)
        probe.info_pub.publish(camera_info_msg(H, W, FX, FY))
        probe.wait_diag(lambda v: v.get("camera_info") == "received", what="camera_info received")

        stamp = probe.now()
        probe.image_pub.publish(image_msg(rgb, stamp, "cam_optical"))
        out = probe.wait_outputs(stamp)

        for name in IMAGE_OUTPUTS:
            msg = out[name]
            assert msg.header.frame_id == "cam_optical" and (msg.height, msg.width) == (H, W), name
        assert out["semantic"].encoding == "mono8" and out["semantic_color"].encoding == "rgb8"
        assert out["anomaly_score"].encoding == "32FC1" and out["anomaly_overlay"].encoding == "rgb8"
        np.testing.assert_array_equal(as_array(out["semantic"]), labels)
        np.testing.assert_array_equal(as_array(out["semantic_color"]), PALETTE[labels])
        np.testing.assert_array_equal(as_array(out["anomaly_score"]), score)
        mask = score >= threshold
        assert 0 < mask.sum() < mask.size
        np.testing.assert_array_equal(as_array(out["anomaly_mask"]), np.where(mask, 255, 0))
        k = intrinsic_matrix(FX, FY, (W - 1) / 2, (H - 1) / 2)
        mount = CameraMount(1.5, 0.2)
        # the tiny model stores no operating point: the default settings at the threshold set
        frame = FrameContext(labels, score, OperatingPoint(threshold), rgb, stamp.sec + stamp.nanosec * 1e-9, k, mount)
        overlay = alarm_overlay(frame, AlarmPipeline().process(frame), 0.4)
        np.testing.assert_array_equal(as_array(out["anomaly_overlay"]), overlay)

        grid = out["anomaly_grid"]
        assert grid.header.frame_id == "base_link" and grid.header.stamp == stamp
        assert (grid.info.width, grid.info.height, grid.info.resolution) == (30, 20, 1.0)
        assert (grid.info.origin.position.x, grid.info.origin.position.y) == (-2.0, -10.0)
        expected = OccupancyMapper().values(frame, GroundGrid(1.0, 30, 20, -2.0, -10.0))
        assert (expected >= 50).any()
        expected[expected >= 50] = 49  # the first frame: no alarm cell has persistence yet (2 of 3 frames)
        np.testing.assert_array_equal(np.array(grid.data, dtype=np.int8).reshape(20, 30), expected)
        assert (expected[:, :2] == -1).all() and (expected >= 0).any()  # behind the camera unknown, ahead seen

        # the same picture in every other camera encoding, one with padded rows, gives the same labels
        for encoding in ("bgr8", "rgba8", "bgra8"):
            stamp = probe.now()
            msg = image_msg(rgb, stamp, "cam_optical", encoding)
            if encoding == "bgra8":
                rows = np.frombuffer(bytes(msg.data), np.uint8).reshape(H, -1)
                msg.data = byte_array(np.concatenate([rows, np.zeros((H, 12), np.uint8)], axis=1))
                msg.step += 12
            probe.image_pub.publish(msg)
            got = probe.wait_outputs(stamp, ("semantic", "anomaly_score"))
            np.testing.assert_array_equal(as_array(got["semantic"]), labels, err_msg=encoding)
            np.testing.assert_array_equal(as_array(got["anomaly_score"]), score, err_msg=encoding)
        stamp = probe.now()
        probe.image_pub.publish(image_msg(rgb, stamp, "cam_optical", "mono8"))
        grey = np.repeat(rgb[..., :1], 3, axis=2)
        got = probe.wait_outputs(stamp, ("semantic",))
        np.testing.assert_array_equal(as_array(got["semantic"]), predictor.predict(grey)[0])

        values = probe.wait_diag(lambda v: int(v["frames_out"]) == 5, what="5 frames out")
        for key in ("rate_in_hz", "rate_out_hz", "inference_ms_p50", "inference_ms_p99", "latency_ms_p90"):
            assert float(values[key]) >= 0, key
        assert values["backend"] == "torch" and values["model_id"] == predictor.model_id
        assert values["backend_precision"] == "fp32" and values["backend_choice"] == "named, not measured"
        assert values["frames_dropped"] == "0" and values["frames_rejected"] == "0"


def test_compressed_png_input(ros_env, predictor, rgb, reference):
    labels, score, _ = reference
    with RosSession() as session:
        node = _start(session, predictor, subscribe_compressed=True)
        probe = Probe(session, outputs=("semantic", "anomaly_score"))
        _connected(probe, node, ("semantic", "anomaly_score"))
        wait_until(lambda: probe.compressed_pub.get_subscription_count() > 0, 15.0, "image/compressed subscription")
        ok, png = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        msg = CompressedImage(format="rgb8; png compressed bgr8", data=byte_array(png))
        msg.header.stamp = stamp = probe.now()
        msg.header.frame_id = "cam"
        probe.compressed_pub.publish(msg)
        out = probe.wait_outputs(stamp)
        assert out["semantic"].header.frame_id == "cam"
        np.testing.assert_array_equal(as_array(out["semantic"]), labels)
        np.testing.assert_array_equal(as_array(out["anomaly_score"]), score)


def _bad_inputs(stamp) -> list[tuple[str, object]]:
    bayer = Image(height=H, width=W, encoding="bayer_rggb8", step=W, data=byte_array(bytes(H * W)))
    empty = Image(height=0, width=W, encoding="rgb8", step=W * 3)
    short = Image(height=H, width=W, encoding="rgb8", step=W * 3, data=byte_array(bytes(W * 3 * H - 10)))
    corrupt = CompressedImage(format="jpeg", data=byte_array(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4))
    huge = Image(height=8000, width=8000, encoding="mono8", step=8000)
    huge.data = byte_array(np.zeros(8000 * 8000, np.uint8))
    ok, jpeg = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8))
    cut = CompressedImage(format="jpeg", data=byte_array(jpeg.tobytes()[: len(jpeg) // 2]))
    cases = [
        ("unsupported_encoding", bayer),
        ("empty_image", empty),
        ("truncated_data", short),
        ("decode_failed", corrupt),
        ("too_large", huge),
        ("truncated_compressed", cut),
    ]
    for _, msg in cases:
        msg.header.stamp = stamp
    return cases


def test_bad_input_warns_counts_and_keeps_serving(ros_env, predictor, rgb, reference):
    labels, _, _ = reference
    with RosSession() as session:
        node = _start(session, predictor, subscribe_compressed=True)
        probe = Probe(session, outputs=("semantic",))
        _connected(probe, node, ("semantic",))
        wait_until(lambda: probe.compressed_pub.get_subscription_count() > 0, 15.0, "image/compressed subscription")
        for i, (kind, msg) in enumerate(_bad_inputs(probe.now())):
            (probe.compressed_pub if isinstance(msg, CompressedImage) else probe.image_pub).publish(msg)
            values = probe.wait_diag(
                lambda v, kind=kind: v.get(f"rejected_{kind}") == "1", timeout=20.0, what=f"rejected_{kind}"
            )
            assert values["frames_rejected"] == str(i + 1)
            assert kind in values["last_problem"]
            first = probe.first_status(lambda v, kind=kind: v.get(f"rejected_{kind}") == "1")
            assert first["_level"] == 1 and kind in first["_message"]  # WARN in the period of the rejection
            probe.wait(
                lambda kind=kind: any(
                    log.name == "pebal_node" and log.level == 30 and kind in log.msg for log in probe.logs
                ),
                10.0,
                f"a WARN log about {kind}",
            )
            # the node stays up and serves the next good frame
            stamp = probe.now()
            probe.image_pub.publish(image_msg(rgb, stamp))
            np.testing.assert_array_equal(as_array(probe.wait_outputs(stamp)["semantic"]), labels)
        assert any("8000 x 8000" in log.msg and "max_image_pixels" in log.msg for log in probe.logs)
        assert any("bayer_rggb8" in log.msg and "rgb8" in log.msg for log in probe.logs)
        # the same problem again within warning_throttle (5 s): counted, but not logged again
        bayer = _bad_inputs(probe.now())[0][1]
        probe.image_pub.publish(bayer)
        probe.wait_diag(lambda v: v.get("rejected_unsupported_encoding") == "2", what="second bayer frame counted")
        time.sleep(0.3)
        warnings = [log for log in probe.logs if log.name == "pebal_node" and "unsupported_encoding" in log.msg]
        assert len(warnings) == 1


def test_parameters_validated_at_set_time_and_applied(ros_env, predictor, rgb, reference):
    labels, score, threshold = reference
    with RosSession() as session:
        node = _start(session, predictor, score_threshold=threshold)
        probe = Probe(session)
        _connected(probe, node)
        client = AsyncParameterClient(probe.node, "pebal_node")
        assert client.wait_for_services(timeout_sec=15.0)

        def set_remote(**values):
            future = client.set_parameters(_overrides(values))
            wait_until(future.done, 15.0, "set_parameters reply")
            return future.result().results

        refused = {
            "grid.resolution": (0.001, "out of range"),
            "overlay_alpha": (1.5, "out of range"),
            "score_threshold": (float("inf"), "finite"),
            "grid.frame_id": ("", "must name a frame"),
            "model": ("/elsewhere.safetensors", "read-only"),
            "backend": ("onnxruntime", "read-only"),
            "max_image_pixels": (0, "out of range"),
        }
        for name, (value, reason) in refused.items():
            (result,) = set_remote(**{name: value})
            assert not result.successful and reason in result.reason, (name, result.reason)
        # a combination that is only wrong together: refused as a whole, nothing half-applied
        future = client.set_parameters_atomically(_overrides({"grid.size_x": 1000.0, "grid.resolution": 0.01}))
        wait_until(future.done, 15.0, "set_parameters_atomically reply")
        result = future.result().result
        assert not result.successful and "exceeds" in result.reason
        assert node.get_parameter("grid.resolution").value == 1.0 and node.get_parameter("grid.size_x").value == 30.0
        (result,) = set_remote(**{"grid.camera_pitch": 1.57})
        assert not result.successful and "out of range" in result.reason

        # valid run-time changes take effect on the next frame
        results = set_remote(**{"score_threshold": -1e9, "outputs.semantic": False, "grid.resolution": 2.0})
        assert all(r.successful for r in results)
        probe.info_pub.publish(camera_info_msg(H, W, FX, FY))
        probe.wait_diag(lambda v: v.get("camera_info") == "received", what="camera_info received")
        stamp = probe.now()
        probe.image_pub.publish(image_msg(rgb, stamp))
        out = probe.wait_outputs(stamp, tuple(n for n in OUTPUTS if n != "semantic"))
        assert (as_array(out["anomaly_mask"]) == 255).all()
        assert out["anomaly_grid"].info.width == 15 and out["anomaly_grid"].info.resolution == 2.0
        values = probe.wait_diag(lambda v: v["frames_out"] == "1")
        assert values["published_semantic"] == "0" and values["published_semantic_color"] == "1"
        assert values["score_threshold"] == "-1e+09" and values["operating_point"].endswith("(default)")
        time.sleep(0.3)
        assert probe.outputs_with_stamp(stamp)["semantic"] is None


def test_the_models_operating_point_runs_and_an_override_is_said(ros_env, checkpoint, reference, tmp_path):
    """A model that stores an operating point: unset parameters run it as stored; a parameter set to
    another value overrides that part, and the log and /diagnostics say that the stored point no
    longer applies as chosen; set back to the stored value, the override is gone."""
    threshold = reference[2]
    stored = OperatingPoint(threshold, "fa:0.1", region="all", min_pixels=6, image_size=(2 * H, 2 * W))
    points = StoredPoints({"fa:0.1": stored}, "fa:0.1")
    model = Predictor.from_checkpoint(write_operating_points(checkpoint, tmp_path / "m.safetensors", points, None))
    with RosSession() as session:
        node = _start(session, model)
        probe = Probe(session)
        _connected(probe, node)
        values = probe.wait_diag(lambda v: True)
        assert values["operating_point_overrides"] == "none" and values["operating_point"].endswith("(model)")
        assert node._settings.point.point == stored and values["score_threshold"] == f"{threshold:.6g}"
        node.set_parameters([Parameter("alarms.min_pixels", value=3)])
        values = probe.wait_diag(lambda v: v["operating_point_overrides"] == "min_pixels", what="the override")
        assert values["operating_point"].endswith("(model, overridden)") and ">= 3 px" in values["operating_point"]
        probe.wait(
            lambda: any("min_pixels overridden" in log.msg and "no longer applies" in log.msg for log in probe.logs),
            10.0,
            "the override's warning",
        )
        # the stored count, 6 px at twice this size, means 2 px here (6 / 4, rounded): setting it back
        node.set_parameters([Parameter("alarms.min_pixels", value=6)])
        values = probe.wait_diag(lambda v: v["operating_point_overrides"] == "none", what="no override")
        assert node._settings.point.point == stored and stored.min_pixels_at((H, W)) == 2


def test_the_ego_mask_never_alarms_and_frames_it_does_not_fit_run_without_it(ros_env, predictor, rgb, reference):
    """``alarms.ego_mask`` as polygons over the bottom quarter: the overlay is the core's with that
    mask (hatched, no alarm under it); a frame of another aspect ratio runs without the mask and
    /diagnostics counts it; a mask that cannot be read is refused with the reason."""
    labels, score, threshold = reference
    polygons = f"{W}x{H}: 0,36 {W - 1},36 {W - 1},{H - 1} 0,{H - 1}"
    with RosSession() as session:
        node = _start(
            session, predictor, score_threshold=threshold, **{"alarms.ego_mask": polygons, "alarms.region": "all"}
        )
        probe = Probe(session)
        _connected(probe, node)
        stamp = probe.now()
        probe.image_pub.publish(image_msg(rgb, stamp, "cam_optical"))
        out = probe.wait_outputs(stamp, ("anomaly_overlay", "anomaly_score"))
        ego = np.zeros((H, W), bool)
        ego[36:, :] = True
        point = OperatingPoint(threshold, region="all", ego_mask=polygons)
        frame = FrameContext(labels, score, point, rgb, stamp.sec + stamp.nanosec * 1e-9, ego_mask=ego)
        alarms = AlarmPipeline().process(frame)
        assert (score[36:] >= threshold).any() and not (alarms.alarms & ego).any()
        np.testing.assert_array_equal(as_array(out["anomaly_overlay"]), alarm_overlay(frame, alarms))
        # a square frame: another camera for a 4:3 mask
        stamp = probe.now()
        probe.image_pub.publish(image_msg(rgb[:, :H], stamp, "cam_optical"))
        probe.wait_outputs(stamp, ("anomaly_overlay",))
        values = probe.wait_diag(lambda v: v["frames_without_ego_mask"] == "1", what="the unfit frame counted")
        assert "run without an ego mask" in values["last_problem"]
        client = AsyncParameterClient(probe.node, "pebal_node")
        assert client.wait_for_services(timeout_sec=15.0)
        future = client.set_parameters(_overrides({"alarms.ego_mask": "/no/such/mask.png"}))
        wait_until(future.done, 15.0, "set_parameters reply")
        (result,) = future.result().results
        assert not result.successful and "does not exist" in result.reason
        assert node._settings.point.point.ego_mask == polygons


def test_outputs_computed_only_for_subscribers(ros_env, predictor, rgb):
    with RosSession() as session:
        node = _start(session, predictor)
        probe = Probe(session, outputs=("semantic",))
        _connected(probe, node, ("semantic",))
        stamp = probe.now()
        probe.image_pub.publish(image_msg(rgb, stamp))
        probe.wait_outputs(stamp)
        values = probe.wait_diag(lambda v: v["frames_out"] == "1")
        assert values["published_semantic"] == "1"
        assert all(values[f"published_{n}"] == "0" for n in OUTPUTS if n != "semantic")
        # nobody listening to any output: the frame is not run through the network at all
        node.set_parameters([Parameter("outputs.semantic", value=False)])
        probe.image_pub.publish(image_msg(rgb, probe.now()))
        values = probe.wait_diag(lambda v: v["frames_skipped"] == "1")
        assert values["frames_out"] == "1"
        # with compute_only_subscribed off, every enabled output is published even without subscribers
        node.set_parameters(
            [Parameter("outputs.semantic", value=True), Parameter("compute_only_subscribed", value=False)]
        )
        stamp = probe.now()
        probe.image_pub.publish(image_msg(rgb, stamp))
        probe.wait_outputs(stamp)
        values = probe.wait_diag(lambda v: v["frames_out"] == "2")
        without_grid = [n for n in OUTPUTS if n != "anomaly_grid"]
        assert all(values[f"published_{n}"] == ("2" if n == "semantic" else "1") for n in without_grid)
        assert values["published_anomaly_grid"] == "0"  # no CameraInfo yet: the grid waits for intrinsics
        assert values["camera_info"] == "none yet"


def test_overlay_and_grid_are_made_only_while_subscribed_and_alarms_do_not_change(
    ros_env, predictor, rgb, reference, monkeypatch
):
    """Without a subscriber the overlay is not drawn and the grid not projected (calls of the real
    functions counted); once subscribed they are, the overlay equal to the core's over the alarm
    chain of the whole sequence: the chain ran on the frame nobody watched the alarms of (with
    persistence 2 of 3 a chain that skipped it would show no alarm on the second frame)."""
    labels, score, threshold = reference
    calls = {"overlay": 0, "grid": 0}

    def counted(name, fn):
        def call(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return call

    monkeypatch.setattr(node_outputs, "alarm_overlay", counted("overlay", node_outputs.alarm_overlay))
    with RosSession() as session:
        node = _start(
            session, predictor, score_threshold=threshold, **{"alarms.region": "all", "persistence.max_gap": 0.0}
        )
        node._grid.mapper.values = counted("grid", node._grid.mapper.values)
        point = node._settings.point.point
        assert (point.persistence.k, point.persistence.n) == (2, 3)
        probe = Probe(session, outputs=("anomaly_mask",))
        _connected(probe, node, ("anomaly_mask",))
        probe.info_pub.publish(camera_info_msg(H, W, FX, FY))
        probe.wait_diag(lambda v: v.get("camera_info") == "received", what="camera_info received")
        first = probe.now()
        probe.image_pub.publish(image_msg(rgb, first, "cam_optical"))
        probe.wait_outputs(first)
        values = probe.wait_diag(lambda v: v["frames_out"] == "1")
        assert values["published_anomaly_overlay"] == "0" and values["published_anomaly_grid"] == "0"
        assert calls == {"overlay": 0, "grid": 0}

        viewer = Probe(session, outputs=("anomaly_overlay", "anomaly_grid"))
        _connected(viewer, node, ("anomaly_overlay", "anomaly_grid"))
        second = probe.now()
        probe.image_pub.publish(image_msg(rgb, second, "cam_optical"))
        out = viewer.wait_outputs(second)
        assert calls == {"overlay": 1, "grid": 1}
        assert out["anomaly_overlay"].header.stamp == second and out["anomaly_overlay"].header.frame_id == "cam_optical"
        assert out["anomaly_grid"].header.stamp == second

        k = intrinsic_matrix(FX, FY, (W - 1) / 2, (H - 1) / 2)
        chain = AlarmPipeline()
        frames = [
            FrameContext(labels, score, point, rgb, t.sec + t.nanosec * 1e-9, k, CameraMount(1.5, 0.2))
            for t in (first, second)
        ]
        alarms = [chain.process(frame) for frame in frames]
        assert not alarms[0].alarms.any() and alarms[1].alarms.any()  # persistence: alarms from the second frame on
        np.testing.assert_array_equal(as_array(out["anomaly_overlay"]), alarm_overlay(frames[1], alarms[1]))
        values = probe.wait_diag(lambda v: v["frames_out"] == "2")
        assert values["obstacles_last_frame"] == str(len(alarms[1].obstacles))


def _node_env(ros_env) -> dict[str, str]:
    return {**os.environ, **ros_env, "PYTHONUNBUFFERED": "1"}


def test_console_script_with_params_file(ros_env, checkpoint, predictor, rgb, reference):
    labels, score, _ = reference
    script = os.path.join(os.path.dirname(sys.executable), "pebal_node")
    cmd = [
        script,
        "--ros-args",
        "--params-file",
        str(ROOT / "config" / "pebal.yaml"),
        "-p",
        f"model:={checkpoint}",
        "-p",
        "diagnostics_period:=0.2",
        "-p",  # the first start with backend auto exports and times the model (test_backend_auto_reports_...)
        "backend:=torch",
        "-r",
        "image:=/cam/image_raw",
        "-r",
        "camera_info:=/cam/camera_info",
        "-r",
        "__ns:=/cam",
    ]
    proc = subprocess.Popen(cmd, env=_node_env(ros_env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with RosSession() as session:
            probe = Probe(session, prefix="/cam/")
            probe.image_pub = probe.node.create_publisher(Image, "/cam/image_raw", 10)
            out = first_outputs_from_process(proc, probe, rgb, camera_info_msg(H, W, FX, FY), "cam")
            for name in IMAGE_OUTPUTS:
                assert out[name].header.frame_id == "cam" and (out[name].height, out[name].width) == (H, W)
            assert out["anomaly_grid"].header.frame_id == "base_footprint"
            assert out["anomaly_grid"].info.width == 200 and out["anomaly_grid"].info.height == 100  # pebal.yaml
            np.testing.assert_array_equal(as_array(out["semantic"]), labels)
            np.testing.assert_allclose(as_array(out["anomaly_score"]), score, rtol=1e-5, atol=1e-5)
            values = probe.wait_diag(lambda v: int(v["frames_out"]) >= 1, what="subprocess diagnostics")
            assert values["model_id"] == predictor.model_id
    finally:
        rc, log = stop_process(proc)
    assert rc == 0, log
    assert "listening on /cam/image_raw" in log


def test_console_script_refuses_bad_parameters(ros_env, checkpoint):
    script = os.path.join(os.path.dirname(sys.executable), "pebal_node")
    out = subprocess.run(
        [script, "--ros-args", "-p", f"model:={checkpoint}", "-p", "grid.camera_pitch:=2.0", "-p", "device:=tpu"],
        env=_node_env(ros_env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.startswith("pebal_node: error:") and "Traceback" not in out.stderr
    assert "device must be cpu, cuda, cuda:N" in out.stderr


@pytest.mark.parametrize(("name", "content"), [("model.safetensors", b"this is not a checkpoint"), ("empty.pt", b"")])
def test_console_script_refuses_a_file_that_is_no_model(ros_env, tmp_path, name, content):
    script = os.path.join(os.path.dirname(sys.executable), "pebal_node")
    bogus = tmp_path / name
    bogus.write_bytes(content)
    out = subprocess.run(
        [script, "--ros-args", "-p", f"model:={bogus}"],
        env=_node_env(ros_env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.startswith("pebal_node: error:") and "Traceback" not in out.stderr
    assert str(bogus) in out.stderr


class _RecordingTensorRT(TorchBackend):
    """Stands in for the TensorRT backend (no TensorRT or GPU here): records the options it gets."""

    received: list[dict] = []

    def __init__(self, path, device="cpu", smoothing=True, **options):
        _RecordingTensorRT.received.append(dict(options, device=device, smoothing=smoothing))
        super().__init__(path, device="cpu", smoothing=smoothing)


def test_engine_auto_build_reaches_only_the_tensorrt_backend(ros_env, checkpoint, monkeypatch):
    monkeypatch.setitem(backends.BACKENDS._entries, "tensorrt", _RecordingTensorRT)  # a stand-in entry for this test
    monkeypatch.setitem(backends.BACKENDS._entries, "torch", _RecordingTensorRT)  # record the torch call as well
    with RosSession() as session:
        for backend, auto in (("tensorrt", False), ("tensorrt", True), ("torch", False)):
            values = {"model": str(checkpoint), "backend": backend, "engine_auto_build": auto, "device": "cuda:0"}
            node = PebalNode(
                node_name=f"n_{backend}_{auto}", context=session.context, parameter_overrides=_overrides(values)
            )
            node.destroy_node()
    first, second, third = _RecordingTensorRT.received[-3:]
    assert first["engine_auto_build"] is False and first["device"] == "cuda:0" and first["smoothing"] is True
    assert second["engine_auto_build"] is True
    assert "engine_auto_build" not in third


def test_backend_auto_reports_its_measured_choice(ros_env, checkpoint, tmp_path, monkeypatch):
    monkeypatch.setenv("PEBAL_CACHE_DIR", str(tmp_path / "cache"))
    values = {"model": str(checkpoint), "backend": "auto", "input_height": 32, "input_width": 64}
    with RosSession() as session:
        node = PebalNode(node_name="n_auto", context=session.context, parameter_overrides=_overrides(values))
        try:
            choice = node.predictor.backend.choice
            status = {kv.key: kv.value for kv in node.diagnostic_status().values}
        finally:
            node.destroy_node()
    assert set(choice["times_ms"]) == {"torch", "onnxruntime", "openvino"}
    assert status["backend"] == choice["backend"] == min(choice["times_ms"], key=choice["times_ms"].get)
    assert status["backend_choice"] == choice["summary"] and f"{choice['backend']} " in choice["summary"]
    assert list((tmp_path / "cache" / "auto").glob("*.json")), "the choice is cached in PEBAL_CACHE_DIR"


def test_console_script_help():
    script = os.path.join(os.path.dirname(sys.executable), "pebal_node")
    out = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for name in (*OUTPUTS, "grid.camera_pitch", "score_threshold", "--params-file"):
        assert name in out.stdout, name
