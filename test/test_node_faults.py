"""Faults the node must report instead of hiding, over real rclpy/DDS (localhost, random domain).

A worker that dies or hangs, an exception after an earlier warning (rclpy fixes a logging call
site's severity), absurd header stamps, frames lost before they reach the node, a camera topic
that goes silent, frames larger than the network bound, and a double Ctrl-C during shutdown of
the real ``pebal_node`` process. The predictors used to poison the worker are the real
:class:`Predictor` plus one injected fault each.
"""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from node_harness import Probe, RosSession, as_array, image_msg, wait_until
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile
from sensor_msgs.msg import Image
from std_msgs.msg import Empty

from pebal_core.preprocessing import Normalization
from pebal_core.protocols import bounded_size
from pebal_core.runtime import Predictor
from pebal_ros.node import PebalNode
from pebal_ros.node_diagnostics import LATENCY_WINDOW_MS
from pebal_ros.qos import INPUT_DEPTH

pytestmark = pytest.mark.ros

H, W = 48, 64
ERROR, WARN, OK = 2, 1, 0


@pytest.fixture(scope="module")
def rgb():
    return np.random.default_rng(5).integers(0, 256, (H, W, 3), dtype=np.uint8)


class PoisonedPredictor(Predictor):
    """The real predictor, except for frames whose top-left pixel is ``poison``: those raise
    ``fault`` (an exception instance) or, when ``fault`` is a threading.Event, block until it is set."""

    def __init__(self, inner: Predictor, fault: BaseException | threading.Event) -> None:
        super().__init__(inner.backend, inner.input_size)
        self.fault = fault
        self.poison = (7, 7, 7)
        self.calls = 0

    def predict(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        if tuple(rgb[0, 0]) == self.poison:
            if isinstance(self.fault, threading.Event):
                self.fault.wait()
            else:
                raise self.fault
        return super().predict(rgb)


def _poisoned(rgb: np.ndarray) -> np.ndarray:
    out = rgb.copy()
    out[0, 0] = (7, 7, 7)
    return out


def _start(session, predictor, **params) -> tuple[PebalNode, Probe]:
    values = {"diagnostics_period": 0.1, **params}
    node = session.add(
        PebalNode(
            predictor,
            context=session.context,
            parameter_overrides=[Parameter(k, value=v) for k, v in values.items()],
        )
    )
    probe = Probe(session, outputs=("semantic",))
    probe.wait_connected()
    wait_until(lambda: node._outputs["semantic"].get_subscription_count() > 0, 15.0, "probe on semantic")
    return node, probe


def _rejected_frame(stamp) -> Image:
    bayer = Image(height=H, width=W, encoding="bayer_rggb8", step=W)
    bayer.data = bytes(H * W)
    bayer.header.stamp = stamp
    return bayer


def _logs(probe: Probe, level: int, text: str) -> list:
    with probe.cond:
        return [log for log in probe.logs if log.name == "pebal_node" and log.level == level and text in log.msg]


def _serves(probe: Probe, rgb: np.ndarray, predictor: Predictor) -> None:
    stamp = probe.now()
    probe.image_pub.publish(image_msg(rgb, stamp))
    got = probe.wait_outputs(stamp, timeout=20.0)["semantic"]
    np.testing.assert_array_equal(as_array(got), predictor.predict(rgb)[0])


def test_negative_stamp_after_a_rejected_frame_keeps_the_worker_alive(ros_env, predictor, rgb):
    """The reported trigger: a warning (rejected frame), then a frame whose negative stamp broke
    the latency computation after its outputs were published; its error log then raised inside
    the worker's handler (rclpy: one severity per call site) and the worker died silently."""
    with RosSession() as session:
        node, probe = _start(session, predictor)
        probe.image_pub.publish(_rejected_frame(probe.now()))
        probe.wait_diag(lambda v: v.get("rejected_unsupported_encoding") == "1", what="rejection counted")
        negative = probe.now()
        negative.sec = -5
        probe.image_pub.publish(image_msg(rgb, negative))
        probe.wait_outputs(negative)
        future = probe.now()
        future.sec += 3600
        probe.image_pub.publish(image_msg(rgb, future))
        probe.wait_outputs(future)
        zero = probe.now()
        zero.sec, zero.nanosec = 0, 0
        probe.image_pub.publish(image_msg(rgb, zero))
        probe.wait_outputs(zero)
        _serves(probe, rgb, predictor)  # the worker is still alive
        values = probe.wait_diag(lambda v: v["frames_out"] == "4", what="4 frames out")
        assert values["bad_stamps"] == "3" and values["worker"] == "running"
        assert values["inference_errors"] == "0"
        # only the sane latency was averaged in: every percentile lies inside the window
        for key in ("latency_ms_p50", "latency_ms_max"):
            assert LATENCY_WINDOW_MS[0] <= float(values[key]) <= LATENCY_WINDOW_MS[1], values[key]
        warned = probe.first_status(lambda v: v["bad_stamps"] != "0")
        assert warned["_level"] == WARN and "bad header stamp" in warned["_message"]
        probe.wait(lambda: _logs(probe, 30, "header stamp -5."), 10.0, "a WARN log naming the negative stamp")
        assert node._worker.is_alive()


def test_an_exception_after_a_warning_is_logged_counted_and_contained(ros_env, predictor, rgb):
    poisoned = PoisonedPredictor(predictor, RuntimeError("CUDA error: an illegal memory access"))
    with RosSession() as session:
        node, probe = _start(session, poisoned)
        probe.image_pub.publish(_rejected_frame(probe.now()))  # a WARN log first
        probe.wait(lambda: _logs(probe, 30, "unsupported_encoding"), 10.0, "the rejection's WARN log")
        probe.image_pub.publish(image_msg(_poisoned(rgb), probe.now()))
        values = probe.wait_diag(lambda v: v["inference_errors"] == "1", what="the error counted")
        probe.wait(lambda: _logs(probe, 40, "illegal memory access"), 10.0, "an ERROR log after the WARN log")
        assert probe.first_status(lambda v: v["inference_errors"] == "1")["_level"] == ERROR
        _serves(probe, rgb, predictor)
        values = probe.wait_diag(lambda v: v["frames_out"] == "1" and v["_level"] == OK, what="OK again")
        assert values["worker"] == "running" and node._worker.is_alive()


def test_a_dead_worker_is_an_error_in_diagnostics(ros_env, predictor, rgb):
    """SystemExit ends a thread without any message (threading ignores it): the node must say so."""
    poisoned = PoisonedPredictor(predictor, SystemExit(3))
    with RosSession() as session:
        node, probe = _start(session, poisoned)
        _serves(probe, rgb, predictor)
        probe.wait_diag(lambda v: v["_level"] == OK and v["frames_out"] == "1", what="OK while healthy")
        probe.image_pub.publish(image_msg(_poisoned(rgb), probe.now()))
        values = probe.wait_diag(lambda v: v["_level"] == ERROR, what="ERROR after the worker died")
        assert "inference thread has stopped (SystemExit: 3)" in values["_message"]
        assert values["worker"] == "stopped"
        probe.wait(lambda: _logs(probe, 40, "inference thread has stopped"), 10.0, "an ERROR log")
        # frames keep arriving, none comes out, and the status stays ERROR (it does not go back to OK)
        for n in (3, 4, 5):
            probe.image_pub.publish(image_msg(rgb, probe.now()))
            probe.wait_diag(lambda v, n=n: int(v["frames_in"]) == n, what=f"frame {n} counted in")
        time.sleep(0.5)  # several diagnostics periods
        later = probe.statuses()[-3:]
        assert all(v["_level"] == ERROR and v["frames_out"] == "1" for v in later)


def test_a_hung_worker_is_reported_by_the_watchdog(ros_env, predictor, rgb):
    release = threading.Event()
    poisoned = PoisonedPredictor(predictor, release)
    try:
        with RosSession() as session:
            node, probe = _start(session, poisoned, watchdog_timeout=0.5)
            probe.image_pub.publish(image_msg(_poisoned(rgb), probe.now()))
            values = probe.wait_diag(lambda v: v["_level"] == ERROR, what="the watchdog's ERROR")
            assert "no output for" in values["_message"] and "watchdog_timeout = 0.5 s" in values["_message"]
            assert values["worker"] == "running"  # alive, but stuck
            probe.wait(lambda: _logs(probe, 40, "watchdog_timeout"), 10.0, "an ERROR log")
            release.set()
            _serves(probe, rgb, predictor)
            probe.wait_diag(lambda v: v["_level"] == OK, what="OK once frames flow again")
    finally:
        release.set()


def test_a_worker_that_stops_taking_frames_is_reported_by_the_watchdog(ros_env, predictor, rgb):
    """The worker thread stays alive but waits on a mailbox nobody fills (the callbacks are handed
    a new one): frames keep arriving and none is processed, which the watchdog reports."""
    from pebal_ros.mailbox import LatestFrame

    with RosSession() as session:
        node, probe = _start(session, predictor, watchdog_timeout=0.5)
        _serves(probe, rgb, predictor)
        probe.wait_diag(lambda v: v["_level"] == OK, what="OK while healthy")
        orphaned, node._slot = node._slot, LatestFrame()
        try:
            probe.image_pub.publish(image_msg(rgb, probe.now()))
            values = probe.wait_diag(lambda v: v["_level"] == ERROR, what="the watchdog's ERROR")
            assert "frames arrive but none has been taken for processing" in values["_message"]
            assert values["worker"] == "running" and values["frames_in"] == "2" and values["frames_out"] == "1"
        finally:
            orphaned.close()  # lets the worker thread end


def test_frames_lost_before_the_node_are_counted(ros_env, predictor, rgb):
    """The executor is held busy while 8 frames are published: the node's reader keeps only the
    newest INPUT_DEPTH (5) of them, the 3 others never reach the callback; the publisher's sequence
    numbers show them. Every published frame is accounted for: taken by the node or counted lost."""
    gate = threading.Event()
    with RosSession() as session:
        node, probe = _start(session, predictor)
        entered = threading.Event()

        def block(_: Empty) -> None:
            entered.set()
            gate.wait(30.0)

        probe.node.create_subscription(Empty, "hold_executor", block, QoSProfile(depth=1))
        hold = probe.node.create_publisher(Empty, "hold_executor", QoSProfile(depth=1))
        wait_until(lambda: hold.get_subscription_count() > 0, 15.0, "the executor blocker")
        _serves(probe, rgb, predictor)
        values = probe.wait_diag(lambda v: v["frames_out"] == "1", what="first frame")
        assert values["frames_lost_before_node"] == "0"
        hold.publish(Empty())
        assert entered.wait(10.0), "the executor thread never entered the blocking callback"
        published = 8
        for _ in range(published):
            probe.image_pub.publish(image_msg(rgb, probe.now()))
        time.sleep(1.0)  # let the frames reach the node's reader on loopback
        gate.set()
        values = probe.wait_diag(
            lambda v: int(v["frames_in"]) - 1 + int(v["frames_lost_before_node"]) == published, what="all counted"
        )
        assert int(values["frames_in"]) - 1 == INPUT_DEPTH, values  # the reader's history: the newest 5
        lost = int(values["frames_lost_before_node"])
        assert lost == published - INPUT_DEPTH, values
        warned = probe.first_status(lambda v: v["frames_lost_before_node"] not in ("0", "not measurable"))
        assert warned["_level"] == WARN and "lost before reaching the node" in warned["_message"]
        probe.wait(lambda: _logs(probe, 30, f"{lost} frame(s) lost before reaching the node"), 10.0, "a WARN log")


def test_silence_while_the_camera_topic_has_a_publisher_warns(ros_env, predictor, rgb):
    with RosSession() as session:
        node, probe = _start(session, predictor, input_timeout=0.5)
        values = probe.wait_diag(lambda v: v["_level"] == WARN, what="the silence warning")
        assert "no frame on /image for" in values["_message"] and "1 publisher(s) are matched" in values["_message"]
        probe.wait(lambda: _logs(probe, 30, "no frame on /image"), 10.0, "a WARN log")
        _serves(probe, rgb, predictor)
        probe.wait_diag(lambda v: v["_level"] == OK, what="OK once a frame arrived")
        # the publisher goes away: silence is expected then, no warning
        probe.node.destroy_publisher(probe.image_pub)
        wait_until(lambda: node._image_subs[0].get_publisher_count() == 0, 15.0, "publisher gone")
        time.sleep(1.0)  # twice input_timeout
        assert probe.wait_diag(lambda v: True)["_level"] == OK


def test_network_runs_at_most_max_network_pixels(ros_env, checkpoint, predictor, rgb):
    """The node loads its model with ``max_network_pixels``, and the Predictor sizes each frame: no
    input size anywhere, so a frame above the bound runs at the frame's size scaled by one factor,
    sides rounded down (48 x 64 with 1024 pixels: sqrt(1024 / 3072) = 0.577, so 27.7 x 36.95 ->
    27 x 36), and the outputs come back at the frame's size."""
    assert predictor.input_size is None
    assert bounded_size(H, W, 1024) == (27, 36) and bounded_size(H, W, H * W) == (H, W)
    with RosSession() as session:
        node, probe = _start(session, None, model=str(checkpoint), max_network_pixels=1024)
        values = probe.wait_diag(lambda v: True)
        assert values["input_size"] == "each frame's size, at most 1024 pixels"
        assert node.predictor.network_size((H, W)) == (27, 36)
        stamp = probe.now()
        probe.image_pub.publish(image_msg(rgb, stamp))
        got = as_array(probe.wait_outputs(stamp)["semantic"])
        expected = Predictor(predictor.backend, (27, 36)).predict(rgb)[0]
        assert got.shape == (H, W)
        np.testing.assert_array_equal(got, expected)
        assert not np.array_equal(expected, predictor.predict(rgb)[0])  # the bound changed the input


def test_model_input_size_is_used_and_reported(ros_env, predictor, rgb):
    sized = Predictor(predictor.backend, (24, 32))
    with RosSession() as session:
        node, probe = _start(session, sized)
        assert probe.wait_diag(lambda v: True)["input_size"] == "24x32 (model)"
        stamp = probe.now()
        probe.image_pub.publish(image_msg(rgb, stamp))
        got = as_array(probe.wait_outputs(stamp)["semantic"])
        np.testing.assert_array_equal(got, sized.predict(rgb)[0])


class NanOnPoison(Predictor):
    """The real predictor, except that poisoned frames run through a copy of its model whose input
    normalisation has std 0 (the issue's model file): every score of those frames is NaN."""

    def __init__(self, inner: Predictor) -> None:
        super().__init__(inner.backend, inner.input_size)
        broken = copy.deepcopy(inner.backend.model)
        broken.normalization = Normalization((0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
        self.broken = Predictor.from_model(broken)

    def predict(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if tuple(rgb[0, 0]) == (7, 7, 7):
            return self.broken.predict(rgb)
        return super().predict(rgb)


def test_nonfinite_scores_are_counted_warned_once_and_an_error_while_they_persist(ros_env, predictor, rgb):
    """The issue: all-NaN scores were published with status OK and no alarm ever."""
    with RosSession() as session:
        node, probe = _start(session, NanOnPoison(predictor), warning_throttle=0.0)
        _serves(probe, rgb, predictor)
        probe.wait_diag(lambda v: v["_level"] == OK and v["frames_out"] == "1", what="OK while finite")
        for n in (1, 2):
            stamp = probe.now()
            probe.image_pub.publish(image_msg(_poisoned(rgb), stamp))
            probe.wait_outputs(stamp)  # still published: downstream sees the NaN scores too
            values = probe.wait_diag(lambda v, n=n: v["frames_nonfinite_score"] == str(n), what=f"{n} counted")
            assert values["_level"] == ERROR and values["nonfinite_pixels_last_frame"] == str(H * W)
            assert f"NaN or infinite at {H * W} of {H * W} pixels ({n} frames so far)" in values["_message"]
        time.sleep(0.3)  # several periods: the status stays ERROR while the newest frame is NaN
        assert all(v["_level"] == ERROR for v in probe.statuses()[-3:])
        warned = _logs(probe, 30, "NaN or infinite")
        assert len(warned) == 1, "one WARN at the first non-finite frame, not one per frame"
        _serves(probe, rgb, predictor)
        values = probe.wait_diag(lambda v: v["_level"] == OK, what="OK once a frame is finite again")
        assert values["frames_nonfinite_score"] == "2" and values["nonfinite_pixels_last_frame"] == "0"


class SlowPredictor(Predictor):
    """The real predictor, taking at least ``delay`` seconds per frame (a device far too slow)."""

    def __init__(self, inner: Predictor, delay: float) -> None:
        super().__init__(inner.backend, inner.input_size)
        self.delay = delay

    def predict(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        time.sleep(self.delay)
        return super().predict(rgb)


def test_missed_rate_and_latency_requirements_are_errors_with_the_numbers(ros_env, predictor, rgb):
    """Frames at 20/s, one output per >= 0.5 s. Needing 20/s and 0.1 s: ERROR with the numbers
    (a slower machine only misses them by more). Needing 0.05/s and 60 s at run time: OK."""
    params = {"requirements.min_rate": 20.0, "requirements.max_latency": 0.1, "requirements.window": 1.0}
    with RosSession() as session:
        node, probe = _start(session, SlowPredictor(predictor, 0.5), **params)
        stop = threading.Event()

        def camera() -> None:
            while not stop.is_set():
                probe.image_pub.publish(image_msg(rgb, probe.now()))
                time.sleep(0.05)

        feeder = threading.Thread(target=camera, daemon=True)
        feeder.start()
        try:
            values = probe.wait_diag(
                lambda v: "requirements.min_rate" in v["_message"], timeout=30.0, what="the rate ERROR"
            )
            assert values["_level"] == ERROR, values["_message"]
            rate = float(values["_message"].split("output rate ")[1].split(" ")[0])
            assert rate <= 2.0 and "below requirements.min_rate 20/s - 10% = 18/s" in values["_message"]
            assert values["requirements"] == "min_rate 20/s, max_latency 100 ms, tolerance 10%, window 1 s"
            probe.wait(lambda: _logs(probe, 40, "requirements.min_rate"), 10.0, "an ERROR log")
            node.set_parameters([Parameter("requirements.min_rate", value=0.0)])
            values = probe.wait_diag(lambda v: "median latency" in v["_message"], what="the latency ERROR")
            assert (
                values["_level"] == ERROR
                and "exceeds requirements.max_latency 100 ms + 10% = 110 ms" in values["_message"]
            )
            median = float(values["_message"].split("median latency ")[1].split(" ")[0])
            assert median >= 500.0
            node.set_parameters(
                [Parameter("requirements.min_rate", value=0.05), Parameter("requirements.max_latency", value=60.0)]
            )
            probe.wait_diag(lambda v: v["_level"] == OK, what="OK when the needs are met")
        finally:
            stop.set()
            feeder.join(5.0)


# ---------------------------------------------------------------------------- the real process
@pytest.mark.parametrize(
    ("gap", "frame"),
    # 48 x 64: the frame is done at once, so the second signal lands while the interpreter exits
    [(0.05, (512, 1024)), (0.2, (512, 1024)), (0.5, (512, 1024)), (0.2, (1024, 2048))]
    + [(0.2, (48, 64)), (0.5, (48, 64))],
)
def test_two_sigints_during_shutdown_exit_cleanly(ros_env, checkpoint, gap, frame):
    """Ctrl-C twice (or the terminal's SIGINT plus ``ros2 launch``'s own) while a frame is in
    flight: exit status 0, no traceback. The tiny model needs about 2 s (512 x 1024) and 7 s
    (1024 x 2048) per frame on one core, so the second frame outlives the shutdown's wait for it."""
    script = os.path.join(os.path.dirname(sys.executable), "pebal_node")
    env = {**os.environ, **ros_env, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            script,
            "--ros-args",
            "-p",
            f"model:={checkpoint}",
            "-p",
            "qos_overrides./image.subscription.reliability:=reliable",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        with RosSession() as session:
            probe = Probe(session, outputs=("semantic",))
            wait_until(lambda: probe.image_pub.get_subscription_count() > 0 or proc.poll() is not None, 60.0, "node")
            assert proc.poll() is None, proc.stdout.read()
            wait_until(lambda: probe.subscriptions[0].get_publisher_count() > 0, 30.0, "node's semantic publisher")
            big = np.random.default_rng(0).integers(0, 256, (*frame, 3), dtype=np.uint8)
            probe.image_pub.publish(image_msg(big, probe.now()))
            time.sleep(0.3)
            proc.send_signal(signal.SIGINT)
            time.sleep(gap)
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
            rc = proc.wait(timeout=30.0)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = proc.stdout.read()
    assert rc == 0, log
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log
    assert "SIGINT: shutting down" in log
