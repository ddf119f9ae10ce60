"""Real-rclpy helpers for the node tests: a private context with a spinning executor, and a probe
node that publishes camera input and records everything the perception node says."""

from __future__ import annotations

import array
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Log
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from pebal_ros.node import OUTPUTS
from pebal_ros.node_outputs import OUTPUTS_TABLE

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def header_of(msg):
    """The header of an output: its own, or (MarkerArray) that of its first marker, the DELETEALL
    the node always sends first."""
    return msg.header if hasattr(msg, "header") else msg.markers[0].header


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.005)


class RosSession:
    """A fresh rclpy context whose nodes are spun by one executor thread."""

    def __init__(self) -> None:
        self.context = Context()
        rclpy.init(context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.nodes: list[Node] = []
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self.executor.spin()
        except Exception:  # context shut down under us at teardown
            if self.context.ok():
                raise

    def add(self, node: Node) -> Node:
        self.nodes.append(node)
        self.executor.add_node(node)
        return node

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5.0)
        self._thread.join(timeout=5.0)
        for node in reversed(self.nodes):
            node.destroy_node()
        rclpy.shutdown(context=self.context)

    def __enter__(self) -> RosSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Probe:
    """Publishes ``image``, ``image/compressed``, ``camera_info``; records outputs, diagnostics, logs.

    Args:
        prefix: prepended to the node's topic names (e.g. ``/cam/``), empty for the same namespace.
        outputs: which outputs to subscribe to.
        keep_messages: keep every received message (False: only headers, for long runs).
    """

    def __init__(
        self, session: RosSession, prefix: str = "", outputs: tuple[str, ...] = OUTPUTS, keep_messages: bool = True
    ) -> None:
        self.node = session.add(rclpy.create_node("probe", context=session.context))
        self.keep_messages = keep_messages
        self.cond = threading.Condition()
        self.received: dict[str, list] = {name: [] for name in outputs}
        self.arrival: dict[str, list[float]] = {name: [] for name in outputs}
        self.diagnostics: list[DiagnosticArray] = []
        self.logs: list[Log] = []
        self.subscriptions = [
            self.node.create_subscription(OUTPUTS_TABLE[name].type, prefix + name, self._recorder(name), RELIABLE)
            for name in outputs
        ]
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, RELIABLE)
        self.node.create_subscription(Log, "/rosout", self._on_log, QoSProfile(depth=100))
        self.image_pub = self.node.create_publisher(Image, prefix + "image", RELIABLE)
        self.compressed_pub = self.node.create_publisher(CompressedImage, prefix + "image/compressed", RELIABLE)
        self.info_pub = self.node.create_publisher(CameraInfo, prefix + "camera_info", RELIABLE)

    def _recorder(self, name: str):
        def record(msg) -> None:
            with self.cond:
                self.received[name].append(msg if self.keep_messages else SimpleNamespace(header=header_of(msg)))
                self.arrival[name].append(time.perf_counter())
                self.cond.notify_all()

        return record

    def _on_diag(self, msg: DiagnosticArray) -> None:
        with self.cond:
            self.diagnostics.append(msg)
            self.cond.notify_all()

    def _on_log(self, msg: Log) -> None:
        with self.cond:
            self.logs.append(msg)
            self.cond.notify_all()

    def wait(self, predicate: Callable[[], object], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
                self.cond.wait(left)

    def wait_connected(self, publishers: tuple = (), timeout: float = 15.0) -> None:
        """Until this probe's publishers and subscriptions are matched with the node's endpoints."""
        wait_until(lambda: self.image_pub.get_subscription_count() > 0, timeout, "the node's image subscription")
        for pub in publishers:
            wait_until(lambda pub=pub: pub.get_subscription_count() > 0, timeout, f"subscriber on {pub.topic_name}")

    def now(self):
        return self.node.get_clock().now().to_msg()

    def outputs_with_stamp(self, stamp) -> dict[str, object]:
        with self.cond:
            return {
                name: next((m for m in msgs if header_of(m).stamp == stamp), None)
                for name, msgs in self.received.items()
            }

    def wait_outputs(self, stamp, names: tuple[str, ...] | None = None, timeout: float = 20.0) -> dict[str, object]:
        names = tuple(self.received) if names is None else names
        self.wait(
            lambda: all(any(header_of(m).stamp == stamp for m in self.received[n]) for n in names),
            timeout,
            f"outputs {names} for stamp {stamp.sec}.{stamp.nanosec:09d}",
        )
        return self.outputs_with_stamp(stamp)

    def statuses(self) -> list[dict]:
        """Key/values of every pebal_node diagnostics status so far (plus ``_level``, ``_message``)."""
        with self.cond:
            return [
                {kv.key: kv.value for kv in status.values}
                | {"_level": int.from_bytes(status.level, "little"), "_message": status.message}
                for arr in self.diagnostics
                for status in arr.status
                if status.name.startswith("pebal_node")
            ]

    def latest_values(self) -> dict[str, str]:
        """The newest pebal_node diagnostics status ({} before the first)."""
        statuses = self.statuses()
        return statuses[-1] if statuses else {}

    def first_status(self, predicate: Callable[[dict], object]) -> dict:
        return next(v for v in self.statuses() if predicate(v))

    def wait_diag(self, predicate: Callable[[dict], object], timeout: float = 10.0, what: str = "diagnostics") -> dict:
        self.wait(lambda: (v := self.latest_values()) and predicate(v), timeout, what)
        return self.latest_values()


def first_outputs_from_process(proc, probe: Probe, rgb: np.ndarray, info: CameraInfo, frame_id: str) -> dict:
    """Send frames to a node running in subprocess ``proc`` until one frame's outputs all arrive.

    Waits for the node's subscription and publishers first; discovery completes on the node's side
    a little after ours, so the frame is re-sent (with a new stamp) until the node answers. Fails
    with the process's output if it exits.
    """

    def exited() -> bool:
        return proc.poll() is not None

    wait_until(lambda: probe.image_pub.get_subscription_count() > 0 or exited(), 60.0, "the node's image subscription")
    assert not exited(), proc.stdout.read()
    for sub in probe.subscriptions:
        wait_until(lambda sub=sub: sub.get_publisher_count() > 0, 30.0, f"node publishing {sub.topic_name}")
    deadline = time.monotonic() + 30.0
    while True:
        probe.info_pub.publish(info)
        stamp = probe.now()
        probe.image_pub.publish(image_msg(rgb, stamp, frame_id))
        try:
            return probe.wait_outputs(stamp, timeout=1.0)
        except AssertionError:
            if time.monotonic() > deadline or exited():
                raise


def stop_process(proc, timeout: float = 20.0) -> tuple[int, str]:
    """SIGINT a node subprocess (as Ctrl-C does) and return ``(exit code, its output)``."""
    proc.send_signal(signal.SIGINT)
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    return rc, proc.stdout.read()


def byte_array(arr: np.ndarray | bytes) -> array.array:
    """Message ``uint8[]`` data without the per-byte checks rclpy applies to other sequence types."""
    data = array.array("B")
    data.frombytes(arr if isinstance(arr, bytes) else np.ascontiguousarray(arr).tobytes())
    return data


def image_msg(rgb: np.ndarray, stamp, frame_id: str = "camera_optical_frame", encoding: str = "rgb8") -> Image:
    """An Image of ``rgb`` (H x W x 3) in one of rgb8/bgr8/rgba8/bgra8/mono8, built with numpy only."""
    pixels = {
        "rgb8": rgb,
        "bgr8": rgb[..., ::-1],
        "rgba8": np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2),
        "bgra8": np.concatenate([rgb[..., ::-1], np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2),
        "mono8": rgb[..., 0],
    }[encoding]
    pixels = np.ascontiguousarray(pixels)
    msg = Image(height=rgb.shape[0], width=rgb.shape[1], encoding=encoding, step=pixels.strides[0])
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.data = byte_array(pixels)
    return msg


def camera_info_msg(
    height: int, width: int, fx: float, fy: float, frame_id: str = "camera_optical_frame"
) -> CameraInfo:
    info = CameraInfo(height=height, width=width)
    info.header.frame_id = frame_id
    info.k = np.array([fx, 0.0, (width - 1) / 2, 0.0, fy, (height - 1) / 2, 0.0, 0.0, 1.0])
    return info


def as_array(msg: Image) -> np.ndarray:
    """Pixels of an unpadded output Image (independent of pebal_ros.conversions)."""
    dtype, channels = {"mono8": (np.uint8, 1), "rgb8": (np.uint8, 3), "32FC1": (np.float32, 1)}[msg.encoding]
    assert msg.step == msg.width * channels * np.dtype(dtype).itemsize
    arr = np.frombuffer(bytes(msg.data), dtype=dtype)
    return arr.reshape(msg.height, msg.width, channels) if channels > 1 else arr.reshape(msg.height, msg.width)
