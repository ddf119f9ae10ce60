"""``pebal_node``: the PEBAL perception node, a thin rclpy shell over :class:`pebal_core.runtime.Predictor`.

Topics (all relative, so ``-r`` remaps and namespaces apply):

==================== ================================ =========================================================
topic                type                             content
==================== ================================ =========================================================
``image`` (in)       sensor_msgs/Image                camera frames: rgb8, bgr8, mono8, rgba8, bgra8
``image/compressed`` sensor_msgs/CompressedImage      JPEG/PNG frames (when ``subscribe_compressed``)
``camera_info`` (in) sensor_msgs/CameraInfo           intrinsics for the ground grid
``semantic``         sensor_msgs/Image mono8          Cityscapes trainIds 0..18
``semantic_color``   sensor_msgs/Image rgb8           trainIds in the Cityscapes palette
``anomaly_score``    sensor_msgs/Image 32FC1          PEBAL score (smoothed free energy; higher = more anomalous)
``anomaly_mask``     sensor_msgs/Image mono8          255 where score >= threshold (every pixel, one frame), else 0
``anomaly_overlay``  sensor_msgs/Image rgb8           the camera image, region outlined, alarms tinted, obstacles boxed
``anomaly_grid``     nav_msgs/OccupancyGrid           anomaly probability on the ground plane, 0..100, -1 unknown
``obstacles``        visualization_msgs/MarkerArray   obstacles on the ground (grid.frame_id) for RViz
``obstacle_detections`` vision_msgs/Detection2DArray  obstacle boxes in the image (when vision_msgs is installed)
``/diagnostics``     diagnostic_msgs/DiagnosticArray  rates, drops, rejections, latency percentiles, model, obstacles
==================== ================================ =========================================================

Alarms (:mod:`pebal_core.alarms`): ``score >= threshold`` inside ``alarms.region`` (the drivable
area by default), kept by the ``persistence.*`` filter, grouped into obstacles of at least
``alarms.min_pixels`` pixels with ground positions when CameraInfo is known. The grid applies its
own persistence filter (``persistence.grid_radius``): non-persistent cells stay below 50.

Every output carries the input header unchanged (stamp and frame_id); the grid keeps the stamp
and uses ``grid.frame_id``.

Real-time behaviour: the subscription callbacks only put the message into a one-frame mailbox
(:class:`LatestFrame`); a worker thread takes the newest frame, decodes it, runs the predictor and
publishes. A frame that arrives while the previous one is still waiting replaces it (counted as
dropped), so latency never accumulates behind a slow model and memory stays flat. Outputs that are
disabled, or (``compute_only_subscribed``) have no subscriber, are not computed; with none wanted
the frame is not even run through the network.

Network size: ``input_height`` x ``input_width`` when set; else the model's own input size
(``Predictor.input_size``: a fixed-size export, or the size the model was trained and thresholded
at when its metadata records one); else each frame's own size, scaled down (aspect ratio kept) to
at most ``max_network_pixels``. So the cost of a frame never grows with the camera's resolution.

Faults are reported, never silent: an exception while processing a frame is counted and logged
and the worker goes on with the next frame; /diagnostics reports ERROR when the worker thread is
not running, or one frame has been in flight (or frames have waited untaken) for longer than
``watchdog_timeout``; WARN for rejected frames, frames lost before they reached the node (gaps in
the publisher's sequence numbers, where the middleware reports them), silence on ``image`` for
``input_timeout`` seconds while it has a publisher, and header stamps too far from the node's clock
for a latency (:data:`LATENCY_WINDOW_MS`; counted, not averaged in). ``main`` handles
SIGINT/SIGTERM itself: the first stops the node (waiting at most :data:`SHUTDOWN_JOIN_S` for the
frame in flight), any further one while stopping is ignored, so a double Ctrl-C exits cleanly with
status 0.

Parameters are declared with descriptors and ranges (:data:`pebal_ros.node_parameters.PARAMETERS`,
which also holds their validation); every set, including the values from a ``--params-file`` at
start-up, goes through :meth:`PebalNode._validate`, which refuses bad values with a reason. Model,
backend, device, input size, smoothing and the QoS choices are read-only (they take effect at
start-up); thresholds, outputs and grid geometry change at run time.
The /diagnostics status is built by :mod:`pebal_ros.node_diagnostics`.
"""

from __future__ import annotations

import argparse
import copy
import math
import os
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass

import numpy as np
import rclpy
import rclpy.utilities
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from nav_msgs.msg import OccupancyGrid
from rcl_interfaces.msg import SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from rclpy.subscription import MessageInfo
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header
from visualization_msgs.msg import MarkerArray

from pebal_core.alarms.operating_point import policy_threshold
from pebal_core.alarms.persistence import Persistence
from pebal_core.alarms.pipeline import AlarmFrame, AlarmPipeline, persist_grid
from pebal_core.ground import image_to_ground_homography
from pebal_core.labels import colorize
from pebal_core.model_store import resolve_model
from pebal_core.runtime import Predictor
from pebal_core.scoring import nonfinite_pixels
from pebal_core.visualize import alarm_overlay
from pebal_ros.conversions import ImageError, make_converter
from pebal_ros.node_diagnostics import (
    InputSilence,
    Stats,
    counter_values,
    nonfinite_problem,
    requirement_findings,
    requirements_text,
    status_message,
    summary,
    watchdog_problem,
)
from pebal_ros.node_parameters import (
    IMAGE_OUTPUTS,
    OUTPUTS,
    PARAMETERS,
    Settings,
    check_combination,
    check_value,
    parameters_help,
    settings_from,
)
from pebal_ros.obstacle_msgs import DETECTIONS_AVAILABLE, Detection2DArray, obstacle_detections, obstacle_markers
from pebal_ros.occupancy import OccupancyMapper, intrinsics_from_camera_info, occupancy_grid_msg

NODE_NAME = "pebal_node"
OUTPUT_TYPES = {
    **dict.fromkeys(IMAGE_OUTPUTS, Image),
    "anomaly_grid": OccupancyGrid,
    "obstacles": MarkerArray,
    **({"obstacle_detections": Detection2DArray} if DETECTIONS_AVAILABLE else {}),
}
ALARM_OUTPUTS = ("anomaly_overlay", "obstacles", "obstacle_detections")
"""Outputs that need the alarm pipeline."""
LATENCY_WINDOW_MS = (-1000.0, 60000.0)
"""Latencies (node clock minus header stamp, ms) outside this window are counted as bad stamps
instead of being averaged in: a stamp of 0, or a camera clock far off the node's. The lower end
allows clocks of two machines to differ by up to 1 s."""
SHUTDOWN_JOIN_S = 3.0
"""How long shutdown waits for the frame in flight before leaving the (daemon) worker behind;
below the 5 s after which ``ros2 launch`` escalates SIGINT to SIGTERM."""
SEQUENCE_PUBLISHERS = 64
"""Publishers whose last sequence number is remembered (for gap counting)."""


# ============================================================================ runtime pieces
class LatestFrame:
    """A one-slot mailbox: ``put`` replaces what is waiting, ``take`` blocks for the newest item."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: object | None = None
        self._closed = False

    def put(self, item: object) -> bool:
        """Store ``item``; True if it replaced one that was never taken (a dropped frame)."""
        with self._cond:
            replaced = self._item is not None
            self._item = item
            self._cond.notify()
        return replaced

    def take(self, timeout: float | None = None) -> object | None:
        """The newest item (removing it), or None once closed or after ``timeout`` seconds."""
        with self._cond:
            self._cond.wait_for(lambda: self._item is not None or self._closed, timeout)
            item, self._item = self._item, None
            return None if self._closed else item

    @property
    def pending(self) -> int:
        with self._cond:
            return int(self._item is not None)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


@dataclass
class Frame:
    msg: Image | CompressedImage
    received: float  # time.perf_counter() at the subscription callback


def network_size(height: int, width: int, max_pixels: int) -> tuple[int, int]:
    """The network input for a ``height`` x ``width`` frame: the frame's own size when it has at
    most ``max_pixels`` pixels, else both sides scaled by ``sqrt(max_pixels / (height * width))``
    and rounded down (aspect ratio kept within rounding, each side at least 1)."""
    if height * width <= max_pixels:
        return height, width
    scale = math.sqrt(max_pixels / (height * width))
    h, w = max(1, math.floor(height * scale)), max(1, math.floor(width * scale))
    while h * w > max_pixels:  # floating-point rounding at the boundary
        if h >= w:
            h -= 1
        else:
            w -= 1
    return h, w


def stamp_latency_ms(now_ns: int, sec: int, nanosec: int) -> float:
    """Node clock minus a header stamp, in ms (any stamp, negative or zero, gives a number)."""
    return (now_ns - (int(sec) * 1_000_000_000 + int(nanosec))) / 1e6


def _qos(reliability: str) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        reliability=ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.VOLATILE,
    )


# ============================================================================ the node
class PebalNode(Node):
    """The perception node (see the module docstring for topics and behaviour).

    Args:
        predictor: run this predictor instead of loading the ``model`` parameter (tests, embedding
            the node in another program); ``None`` loads ``model`` with ``backend``/``device``/...
        node_name: ROS node name.
        **node_kwargs: passed to :class:`rclpy.node.Node` (``parameter_overrides``, ``context``,
            ``namespace``, ``cli_args``, ...).
    """

    def __init__(self, predictor: Predictor | None = None, node_name: str = NODE_NAME, **node_kwargs: object) -> None:
        self._slot = LatestFrame()
        self._worker: threading.Thread | None = None
        self._destroyed = False
        super().__init__(node_name, **node_kwargs)
        self._declared = False
        self.add_on_set_parameters_callback(self._validate)
        for spec in PARAMETERS:
            self.declare_parameter(spec.name, spec.default, spec.descriptor())
        self._declared = True
        p = self._values()
        reason = check_combination(p)
        if reason:
            raise ValueError(f"invalid parameters: {reason}")
        self._converter = make_converter(p["image_conversion"])
        self.predictor = predictor if predictor is not None else self._load_predictor(p)
        self._stats = Stats()
        self._camera_info: CameraInfo | None = None
        self._info_lock = threading.Lock()
        self._mapper = OccupancyMapper()
        self._last_warning: dict[str, tuple[float, int]] = {}
        self._warn_lock = threading.Lock()
        self._sequence: dict[bytes, int] = {}
        self._max_network_pixels = int(p["max_network_pixels"])
        self._size_source = "parameter" if p["input_height"] else "model"
        self._scaled: dict[tuple[int, int], Predictor] = {}
        self._settings = self._build_settings(p)
        self._alarms = AlarmPipeline(self._settings.alarms)
        self._grid_persistence = Persistence(self._settings.grid_persistence)
        if self._settings.threshold_source == "default":
            self.get_logger().warning(
                f"model {self.predictor.model_id} carries no score_threshold and the parameter is unset: "
                f"using {self._settings.threshold} (set score_threshold to the 95%-TPR energy of `pebal eval`)"
            )
        self.add_post_set_parameters_callback(self._apply)

        qos_in, qos_out = _qos(p["input_reliability"]), _qos(p["output_reliability"])
        self._outputs = {name: self.create_publisher(OUTPUT_TYPES[name], name, qos_out) for name in OUTPUTS}
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._image_subs = [self.create_subscription(Image, "image", self._on_image, qos_in)]
        if p["subscribe_compressed"]:
            self._image_subs.append(
                self.create_subscription(CompressedImage, "image/compressed", self._on_image, qos_in)
            )
        self.create_subscription(CameraInfo, "camera_info", self._on_camera_info, qos_in)
        self._diag_period = float(p["diagnostics_period"])
        self._last_report = (time.monotonic(), 0, 0)
        self._silence = InputSilence()
        self.create_timer(self._diag_period, self._publish_diagnostics)
        self._worker = threading.Thread(target=self._work, name="pebal_inference", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"model {self.predictor.model_id} on {self.predictor.backend.name}, threshold "
            f"{self._settings.threshold:.4g} ({self._settings.threshold_source}), images via "
            f"{self._converter.name}, network input {self._input_size_text()}; listening on "
            f"{self.resolve_topic_name('image')}"
        )

    # ------------------------------------------------------------------ parameters
    def _values(self) -> dict:
        return {spec.name: self.get_parameter(spec.name).value for spec in PARAMETERS}

    def _validate(self, params: list[Parameter]) -> SetParametersResult:
        """Refuse bad values with a reason (runs for start-up values as well as later sets)."""
        for param in params:
            reason = check_value(param.name, param.value)
            if not reason and param.name == "alarms.policy" and hasattr(self, "predictor"):
                try:
                    policy_threshold(self.predictor.metadata, str(param.value))
                except ValueError as e:
                    reason = str(e)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        if self._declared:  # combinations are checked once all parameters exist (see __init__)
            proposed = self._values() | {param.name: param.value for param in params}
            reason = check_combination(proposed)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _apply(self, params: list[Parameter]) -> None:
        previous = self._settings
        self._settings = self._build_settings(self._values())
        if self._settings.alarms != previous.alarms:
            self._alarms = AlarmPipeline(self._settings.alarms)
        if self._settings.grid_persistence != previous.grid_persistence:
            self._grid_persistence = Persistence(self._settings.grid_persistence)
        changed = ", ".join(f"{p.name}={p.value}" for p in params)
        self.get_logger().info(f"parameters changed: {changed}")

    def _build_settings(self, p: dict) -> Settings:
        return settings_from(p, self.predictor.metadata)

    def _load_predictor(self, p: dict) -> Predictor:
        options: dict[str, object] = {}
        if p["backend"] == "tensorrt":
            options["engine_auto_build"] = bool(p["engine_auto_build"])
        size = (p["input_height"], p["input_width"]) if p["input_height"] else None
        kwargs = dict(backend=p["backend"], device=p["device"], input_size=size, smoothing=p["smoothing"], **options)
        return Predictor.from_checkpoint(resolve_model(p["model"]), arch=p["arch"] or None, **kwargs)

    def _input_size_text(self) -> str:
        if self.predictor.input_size is not None:
            return f"{'x'.join(map(str, self.predictor.input_size))} ({self._size_source})"
        return f"each frame's size, at most {self._max_network_pixels} pixels"

    def _predictor_for(self, height: int, width: int) -> Predictor:
        """The predictor for a frame: the node's own one, or (no input size anywhere and the frame
        above ``max_network_pixels``) a copy of it that runs the network at a bounded size."""
        if self.predictor.input_size is not None:
            return self.predictor
        size = network_size(height, width, self._max_network_pixels)
        if size == (height, width):
            return self.predictor
        scaled = self._scaled.get(size)
        if scaled is None:
            scaled = copy.copy(self.predictor)  # shares the backend (the loaded network)
            scaled.input_size = size
            self._scaled = {size: scaled}  # a camera keeps its size: remember only the last one
        return scaled

    # ------------------------------------------------------------------ callbacks (executor thread)
    def _on_image(self, msg: Image | CompressedImage, info: MessageInfo) -> None:
        dropped = self._slot.put(Frame(msg, time.perf_counter()))
        gap = self._sequence_gap(info)
        with self._stats.lock:
            self._stats.frames_in += 1
            self._stats.dropped += int(dropped)
            self._stats.last_frame = time.monotonic()
            self._stats.first_frame = self._stats.first_frame or self._stats.last_frame
            if self._stats.waiting_since is None:
                self._stats.waiting_since = self._stats.last_frame
            if gap is not None:
                self._stats.sequence_measured = True
                self._stats.sequence_gaps += gap
                if gap:
                    self._stats.problems_since_report += 1
                    self._stats.last_problem = f"{gap} frame(s) lost before reaching the node (publisher sequence gap)"
        if gap:
            self._warn(
                "lost",
                f"{gap} frame(s) lost before reaching the node (gap in the publisher's sequence numbers): the "
                "transport dropped them (best_effort QoS and large images) or they were overwritten in the "
                "depth-1 queue before the executor took them",
            )

    def _sequence_gap(self, info: MessageInfo) -> int | None:
        """Frames this publisher sent between its previous frame and this one that never arrived
        (0 for consecutive frames and a publisher's first frame); None when the middleware gives no
        publication sequence numbers."""
        seq, gid = info.get("publication_sequence_number"), info.get("publisher_gid")
        if not seq or not gid:
            return None
        key = bytes(gid["data"]) if isinstance(gid, dict) else bytes(gid)
        last = self._sequence.pop(key, None)
        self._sequence[key] = max(seq, last or 0)  # re-inserted: the dict's order is least recently seen first
        if len(self._sequence) > SEQUENCE_PUBLISHERS:
            del self._sequence[next(iter(self._sequence))]
        return seq - last - 1 if last is not None and seq > last else 0

    def _on_camera_info(self, msg: CameraInfo) -> None:
        with self._info_lock:
            self._camera_info = msg

    # ------------------------------------------------------------------ worker thread
    def _work(self) -> None:
        """The worker loop: every Exception from one frame is counted and logged, and the loop goes
        on; anything else (SystemExit, an asynchronous KeyboardInterrupt) ends the thread, and the
        cause is kept for diagnostics (which then say ERROR)."""
        try:
            while True:
                frame = self._slot.take()
                if frame is None:
                    return
                with self._stats.lock:
                    self._stats.busy_since = time.monotonic()
                    self._stats.waiting_since = None
                try:
                    self._process(frame)
                except Exception as e:  # keep serving: one bad frame must not stop the node
                    if not self.context.ok():
                        return
                    self._count_error(e)
                finally:
                    with self._stats.lock:
                        self._stats.busy_since = None
        except BaseException as e:
            with self._stats.lock:
                self._stats.worker_failure = f"{type(e).__name__}: {e}"
            raise

    def _count_error(self, e: Exception) -> None:
        text = f"{type(e).__name__}: {e}"
        with self._stats.lock:
            self._stats.inference_errors += 1
            self._stats.errors_since_report += 1
            self._stats.last_problem = text
        try:
            self._warn("error", f"frame failed: {text}", error=True)
        except Exception:  # logging itself failed: the count above still reaches diagnostics
            traceback.print_exc()

    def _wanted(self, s: Settings) -> list[str]:
        return [
            name
            for name in OUTPUTS
            if name in s.outputs and (not s.compute_only_subscribed or self._outputs[name].get_subscription_count())
        ]

    def _decode(self, msg: Image | CompressedImage, s: Settings) -> np.ndarray:
        if isinstance(msg, CompressedImage):
            return self._converter.compressed_to_rgb(msg, s.max_image_pixels)
        return self._converter.to_rgb(msg, s.max_image_pixels)

    def _process(self, frame: Frame) -> None:
        s = self._settings
        wanted = self._wanted(s)
        if not wanted:
            with self._stats.lock:
                self._stats.skipped += 1
            return
        msg = frame.msg
        try:
            rgb = self._decode(msg, s)
        except ImageError as e:
            self._reject(e)
            return
        t0 = time.perf_counter()
        labels, score = self._predictor_for(*rgb.shape[:2]).predict(rgb)
        t1 = time.perf_counter()
        with self._stats.lock:
            starts = self._stats.note_scores(nonfinite_pixels(score), score.size)
            problem = nonfinite_problem(self._stats)
        if starts:
            self._warn("nonfinite", problem)
        header = msg.header
        conv = self._converter
        published = []
        mask = score >= s.threshold if "anomaly_mask" in wanted else None
        alarm = self._alarm_frame(labels, score, header, s) if set(wanted) & set(ALARM_OUTPUTS) else None
        for name in wanted:
            if name == "semantic":
                out = conv.to_image(labels, "mono8", header)
            elif name == "semantic_color":
                out = conv.to_image(colorize(labels), "rgb8", header)
            elif name == "anomaly_score":
                out = conv.to_image(score, "32FC1", header)
            elif name == "anomaly_mask":
                out = conv.to_image(mask.view(np.uint8) * np.uint8(255), "mono8", header)
            elif name == "anomaly_overlay":
                pic = alarm_overlay(rgb, alarm, score, s.probability_scale, s.overlay_alpha)
                out = conv.to_image(pic, "rgb8", header)
            elif name == "obstacles":
                ground = Header(stamp=header.stamp, frame_id=s.grid_frame)
                out = obstacle_markers(alarm.obstacles, ground, s.threshold, s.probability_scale)
            elif name == "obstacle_detections":
                out = obstacle_detections(alarm.obstacles, header, s.threshold, s.probability_scale)
            else:
                out = self._grid_message(score, header, s)
                if out is None:
                    continue
            self._outputs[name].publish(out)
            published.append(name)
        done = time.perf_counter()
        latency = stamp_latency_ms(self.get_clock().now().nanoseconds, header.stamp.sec, header.stamp.nanosec)
        sane = LATENCY_WINDOW_MS[0] <= latency <= LATENCY_WINDOW_MS[1]
        with self._stats.lock:
            self._stats.frames_out += 1
            self._stats.published_at.append((time.monotonic(), latency if sane else math.nan))
            for name in published:
                self._stats.published[name] += 1
            self._stats.inference_ms.append((t1 - t0) * 1e3)
            self._stats.processing_ms.append((done - frame.received) * 1e3)
            if sane:
                self._stats.latency_ms.append(latency)
            else:
                self._stats.bad_stamps += 1
                self._stats.problems_since_report += 1
                self._stats.last_problem = f"bad header stamp: node clock - stamp = {latency / 1e3:.6g} s"
            if alarm is not None:
                self._stats.obstacles_last = len(alarm.obstacles)
                self._stats.obstacles_total += len(alarm.obstacles)
                self._stats.frames_with_obstacles += int(bool(alarm.obstacles))
        if not sane:
            self._warn(
                "stamp",
                f"header stamp {header.stamp.sec}.{header.stamp.nanosec:09d}: node clock - stamp = "
                f"{latency / 1e3:.6g} s, outside the latency window {LATENCY_WINDOW_MS} ms, so not counted in the "
                "latency; stamp frames with their capture time (and set use_sim_time when playing bags)",
            )

    def _alarm_frame(self, labels: np.ndarray, score: np.ndarray, header: Header, s: Settings) -> AlarmFrame:
        """Region, persistence and obstacles of this frame (:class:`pebal_core.alarms.pipeline.AlarmPipeline`);
        obstacles get ground positions once a usable CameraInfo arrived (anomaly_grid warns when none does)."""
        with self._info_lock:
            info = self._camera_info
        homography = None
        if info is not None:
            try:
                homography = image_to_ground_homography(intrinsics_from_camera_info(info, score.shape), s.mount)
            except ValueError:
                pass
        stamp = header.stamp.sec + header.stamp.nanosec * 1e-9
        return self._alarms.process(labels, score, s.threshold, stamp, homography, s.mount)

    def _grid_message(self, score: np.ndarray, header: Header, s: Settings) -> OccupancyGrid | None:
        with self._info_lock:
            info = self._camera_info
        if info is None:
            self._warn(
                "camera_info",
                f"anomaly_grid needs intrinsics: no CameraInfo on {self.resolve_topic_name('camera_info')}",
            )
            return None
        try:
            k = intrinsics_from_camera_info(info, score.shape)
        except ValueError as e:
            self._warn("camera_info", str(e))
            return None
        values = self._mapper.values(score, k, s.grid, s.mount, s.threshold, s.probability_scale)
        values = persist_grid(values, self._grid_persistence, header.stamp.sec + header.stamp.nanosec * 1e-9)
        return occupancy_grid_msg(values, s.grid, Header(stamp=header.stamp, frame_id=s.grid_frame))

    # ------------------------------------------------------------------ problems
    def _reject(self, e: ImageError) -> None:
        with self._stats.lock:
            self._stats.rejected[e.kind] = self._stats.rejected.get(e.kind, 0) + 1
            self._stats.problems_since_report += 1
            self._stats.last_problem = f"frame rejected ({e.kind}): {e}"
        self._warn(e.kind, f"frame rejected ({e.kind}): {e}")

    def _warn(self, kind: str, text: str, error: bool = False) -> None:
        """Log ``text`` at most once per ``warning_throttle`` seconds per ``kind``, counting the rest.

        Called from the worker and the executor thread. rclpy fixes a logging call site's severity
        at its first call, so errors and warnings are logged from two separate lines."""
        now = time.monotonic()
        with self._warn_lock:
            last, suppressed = self._last_warning.get(kind, (-math.inf, 0))
            if now - last < self._settings.warning_throttle:
                self._last_warning[kind] = (last, suppressed + 1)
                return
            self._last_warning[kind] = (now, 0)
        if suppressed:
            text += f" ({suppressed} more like this since the last warning)"
        if error:
            self.get_logger().error(text)
        else:
            self.get_logger().warning(text)

    # ------------------------------------------------------------------ diagnostics
    def diagnostic_status(self) -> DiagnosticStatus:
        """The node's current DiagnosticStatus (also resets the per-period problem counters)."""
        now = time.monotonic()
        st = self._stats
        with st.lock:
            busy_since, failure, last_frame = st.busy_since, st.worker_failure, st.last_frame
            waiting_since = st.waiting_since
            t_prev, in_prev, out_prev = self._last_report
            dt = max(now - t_prev, 1e-9)
            rate_in = (st.frames_in - in_prev) / dt
            rate_out = (st.frames_out - out_prev) / dt
            self._last_report = (now, st.frames_in, st.frames_out)
            problems, errors = st.problems_since_report, st.errors_since_report
            st.problems_since_report = st.errors_since_report = 0
            values = counter_values(st, self._slot.pending, rate_in, rate_out)
            nonfinite = nonfinite_problem(st)
            missed = requirement_findings(now, st.published_at, st.first_frame, self._settings.requirements, rate_in)
        s = self._settings
        values.update(
            {
                "backend": self.predictor.backend.name,
                "model_id": self.predictor.model_id,
                "input_size": self._input_size_text(),
                "worker": "running" if self.worker_alive else "stopped",
                "score_threshold": f"{s.threshold:.6g} ({s.threshold_source})",
                "alarm_region": s.alarms.region,
                "image_conversion": self._converter.name,
                "camera_info": "received" if self._camera_info is not None else "none yet",
                "requirements": requirements_text(s.requirements),
            }
        )
        worker_stopped = self._worker is not None and not self._worker.is_alive() and not self._destroyed
        stalled = watchdog_problem(now, worker_stopped, failure, busy_since, waiting_since, s.watchdog_timeout)
        publishers = {sub.topic_name: sub.get_publisher_count() for sub in self._image_subs}
        silence = self._silence.check(now, last_frame, publishers, s.input_timeout)
        if stalled:
            self._warn("watchdog", stalled, error=True)
        elif silence and not errors:
            self._warn("silence", silence)
        for level, text in missed:
            error = level == DiagnosticStatus.ERROR
            self._warn("requirement error" if error else "requirement warning", text, error=error)
        image_topic = self.resolve_topic_name("image")
        level, message = summary(
            stalled, errors, silence, problems, values, rate_in, rate_out, image_topic, nonfinite, missed
        )
        device = str(getattr(self.predictor.backend, "device", self.predictor.backend.name))
        return status_message(f"{self.get_name()}: anomaly segmentation", level, message, device, values)

    def _publish_diagnostics(self) -> None:
        msg = DiagnosticArray()
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.status = [self.diagnostic_status()]
        self._diag_pub.publish(msg)

    # ------------------------------------------------------------------ shutdown
    @property
    def worker_alive(self) -> bool:
        """Whether the inference thread is still running."""
        return self._worker is not None and self._worker.is_alive()

    def destroy_node(self) -> None:
        """Stop the worker (waiting at most :data:`SHUTDOWN_JOIN_S` for the frame in flight), then
        destroy the ROS entities. Calling it again does nothing."""
        if self._destroyed:
            return
        self._destroyed = True
        self._slot.close()
        if self.worker_alive and threading.current_thread() is not self._worker:
            self._worker.join(SHUTDOWN_JOIN_S)
            if self._worker.is_alive():
                self.get_logger().warning(
                    f"the frame in flight did not finish within {SHUTDOWN_JOIN_S} s; shutting down without it"
                )
        super().destroy_node()


# ============================================================================ console script
def _help_text() -> str:
    topics = __doc__.split("Topics", 1)[1].split("Every output", 1)[0]
    return "Topics" + topics + "Parameters (-p name:=value or --params-file):\n" + parameters_help()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``pebal_node``: ``pebal_node [--ros-args --params-file config/pebal.yaml -r image:=/cam]``."""
    argv = sys.argv if argv is None else argv
    user_args = rclpy.utilities.remove_ros_args(argv)[1:]
    parser = argparse.ArgumentParser(
        prog="pebal_node",
        description="PEBAL anomaly segmentation as a ROS 2 node. Configure it with ROS arguments, e.g.\n"
        "  pebal_node --ros-args --params-file config/pebal.yaml -r image:=/camera/image_raw",
        epilog=_help_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(user_args)
    stop = StopRequest()
    # rclpy's own handlers would raise KeyboardInterrupt wherever the main thread is, shutdown included
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    try:
        node = PebalNode()
    except (ValueError, OSError, RuntimeError, rclpy.exceptions.ParameterException) as e:
        # parameter, model-file and backend problems (CheckpointError and BackendError are
        # RuntimeErrors): one line for the user; PEBAL_DEBUG=1 shows the traceback
        if os.environ.get("PEBAL_DEBUG"):
            raise
        print(f"pebal_node: error: {e}", file=sys.stderr)
        rclpy.try_shutdown()
        return 2
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    try:
        while not stop.requested:
            executor.spin_once(timeout_sec=StopRequest.POLL_S)
    except ExternalShutdownException:
        pass
    finally:
        if stop.requested:
            node.get_logger().info(f"{stop.signal_name}: shutting down")
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    if node.worker_alive:
        # the frame in flight outlived SHUTDOWN_JOIN_S: interpreter finalisation would tear the
        # libraries down under the still-running inference (seen as SIGABRT, "terminate called
        # without an active exception"), so leave without it
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


class StopRequest:
    """SIGINT/SIGTERM handling for :func:`main`: the first signal asks the spin loop to stop, later
    ones (a second Ctrl-C, ``ros2 launch``'s own SIGINT next to the terminal's) are ignored, so a
    shutdown in progress is never interrupted by a KeyboardInterrupt. The handlers stay installed
    until the process ends (unlike ``pebal_ros.bag_record.stop_on_signals``, which restores the
    previous ones after its block): a signal after ``main`` returned would otherwise raise during
    interpreter exit. ``requested`` is a plain attribute, not a ``threading.Event``: a handler
    that takes a lock the interrupted main thread holds would deadlock."""

    POLL_S = 0.1
    """Longest time between a signal and the spin loop noticing it (s)."""

    def __init__(self) -> None:
        self.requested = False
        self.signal_name = ""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        if not self.requested:
            self.signal_name = signal.Signals(signum).name
            self.requested = True
        # From now on the kernel drops these signals. A Python handler would not survive
        # interpreter finalisation (CPython resets Python-level handlers to SIG_DFL there), so a
        # second Ctrl-C during that window killed the node with status -2; SIG_IGN is kept.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)


if __name__ == "__main__":
    sys.exit(main())
