"""``pebal_node``: the PEBAL perception node, a thin rclpy shell over :class:`pebal_core.runtime.Predictor`.

Topics: ``pebal_node --help`` and docs/node.md (``image``, ``camera_info`` in; the outputs of
:data:`~pebal_ros.node_outputs.OUTPUTS_TABLE`; ``/diagnostics``), all relative for ``-r`` and namespaces.

Every output carries the input header unchanged (stamp and frame_id); the grid keeps the stamp
and uses ``grid.frame_id``.

Per frame (docs/architecture.md, "One frame through the node"): the callback puts the message into
a one-frame mailbox (:class:`~pebal_ros.mailbox.LatestFrame`; a frame still waiting is replaced and
counted as dropped, so latency never builds up); the worker thread decodes the newest frame, runs
the Predictor (which sizes the network input: ``input_height`` x ``input_width``, else the model's
size, else the frame's bounded by ``max_network_pixels``), builds the frame's context once
(:class:`~pebal_ros.node_outputs.NodeFrame`: header, intrinsics, operating point) and publishes each
wanted output from it (:data:`~pebal_ros.node_outputs.OUTPUTS_TABLE`). Outputs that are disabled,
or (``compute_only_subscribed``) have no subscriber, are not computed (the overlay is not drawn,
the grid not projected); with none wanted the frame is not run at all. The alarm chain runs on
every frame that is run, so its persistence state never depends on who subscribes. Alarms run at
the model's stored operating point (:mod:`pebal_core.alarms`); ``score_threshold``, ``alarms.*``
and ``persistence.*`` override its parts when set, and the log and /diagnostics then say that the
stored point no longer applies as it was chosen.

Faults are reported, never silent (:mod:`pebal_ros.node_diagnostics`): a failing frame is counted
and logged and the worker goes on; /diagnostics says ERROR when the worker stopped or a frame is
stuck past ``watchdog_timeout``, WARN for rejected or lost frames, silence and bad stamps. ``main``
stops on the first SIGINT/SIGTERM and ignores further ones (:mod:`pebal_ros.stop_request`).
Parameters (:mod:`pebal_ros.node_parameters`) are declared with descriptors and validated on every
set; model, backend, device, sizes and QoS are read-only, the rest changes at run time.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
import traceback

import numpy as np
import rclpy
import rclpy.utilities
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import SetParametersResult
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions
from rclpy.subscription import MessageInfo
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from pebal_core.alarms.ego_mask import mask_for_frame
from pebal_core.alarms.frame import FrameContext
from pebal_core.alarms.pipeline import AlarmPipeline
from pebal_core.runtime import Predictor
from pebal_ros.conversions import ImageError, make_converter
from pebal_ros.dds_profile import apply_profile, lost_frames_text, profile_note
from pebal_ros.mailbox import Frame, LatestFrame
from pebal_ros.node_diagnostics import (
    LATENCY_WINDOW_MS,
    InputSilence,
    SequenceGaps,
    Stats,
    WarningThrottle,
    stamp_latency_ms,
    status_message,
    summary,
    watchdog_problem,
)
from pebal_ros.node_outputs import OUTPUTS_TABLE, GridState, NodeFrame, OutputUnavailable
from pebal_ros.node_parameters import (
    OUTPUTS,
    PARAMETERS,
    Settings,
    check_combination,
    check_value,
    load_predictor,
    parameters_help,
    settings_from,
)
from pebal_ros.occupancy import camera_intrinsics
from pebal_ros.qos import advertise, subscribe, warn_deprecated_aliases
from pebal_ros.stop_request import StopRequest

NODE_NAME = "pebal_node"
SHUTDOWN_JOIN_S = 3.0
"""How long shutdown waits for the frame in flight before leaving the (daemon) worker behind;
below the 5 s after which ``ros2 launch`` escalates SIGINT to SIGTERM."""


# ============================================================================ the node
class PebalNode(Node):
    """The perception node (see the module docstring for topics and behaviour).

    Args:
        predictor: run this predictor as it is configured (model, backend, input size, the bound on
            the network size) instead of loading the ``model`` parameter with
            ``backend``/``device``/``input_*``/``max_network_pixels`` (tests, embedding the node in
            another program).
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
            default = spec.default if spec.default is not None else Parameter.Type.from_parameter_value(spec.kind())
            self.declare_parameter(spec.name, default, spec.descriptor())
        self._declared = True
        p = self._values()
        reason = check_combination(p)
        if reason:
            raise ValueError(f"invalid parameters: {reason}")
        self._converter = make_converter(p["image_conversion"])
        self.predictor = predictor if predictor is not None else load_predictor(p)
        self._stats = Stats()
        self._camera_info: CameraInfo | None = None
        self._info_lock = threading.Lock()
        self._grid = GridState()
        self._throttle = WarningThrottle()
        self._sequence = SequenceGaps()
        self._size_source = "parameter" if p["input_height"] and predictor is None else "model"
        self._settings = settings_from(p, self.predictor.metadata)
        self._alarm_chain = AlarmPipeline()
        self._announce_point()
        self.add_post_set_parameters_callback(self._apply)

        warn_deprecated_aliases(self.get_logger(), p)
        qos_in, qos_out = p["input_reliability"], p["output_reliability"]  # qos_overrides.<topic>.* win
        self._outputs = {name: advertise(self, OUTPUTS_TABLE[name].type, name, qos_out) for name in OUTPUTS}
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._image_subs = [subscribe(self, Image, "image", self._on_image, qos_in)]
        if p["subscribe_compressed"]:
            self._image_subs.append(subscribe(self, CompressedImage, "image/compressed", self._on_image, qos_in))
        subscribe(self, CameraInfo, "camera_info", self._on_camera_info, qos_in)
        self._stats.last_report = (time.monotonic(), 0, 0)
        self._silence = InputSilence()
        steady = Clock(clock_type=ClockType.STEADY_TIME)  # diagnostics go on when /clock stops (use_sim_time)
        self.create_timer(float(p["diagnostics_period"]), self._publish_diagnostics, clock=steady)
        self._worker = threading.Thread(target=self._work, name="pebal_inference", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"model {self.predictor.model_id} on {self.predictor.backend.describe()}, images via "
            f"{self._converter.name}, network input {self._input_size_text()}; listening on "
            f"{self.resolve_topic_name('image')}"
        )

    # ------------------------------------------------------------------ parameters
    def _values(self) -> dict:
        """Every parameter's value; None for one that is unset."""
        return {spec.name: self.get_parameter_or(spec.name).value for spec in PARAMETERS}

    def _validate(self, params: list[Parameter]) -> SetParametersResult:
        """Refuse bad values with a reason (runs for start-up values as well as later sets)."""
        for param in params:
            reason = check_value(param.name, param.value)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        if self._declared:  # combinations are checked once all parameters exist (see __init__)
            proposed = self._values() | {param.name: param.value for param in params}
            metadata = self.predictor.metadata if hasattr(self, "predictor") else None
            reason = check_combination(proposed, metadata)
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _apply(self, params: list[Parameter]) -> None:
        if not (params := [q for q in params if not q.name.startswith("qos_overrides.")]):
            return  # rclpy declaring the read-only QoS overrides at start-up
        previous = self._settings.point
        self._settings = settings_from(self._values(), self.predictor.metadata)
        changed = ", ".join(f"{p.name}={p.value}" for p in params)
        self.get_logger().info(f"parameters changed: {changed}")
        if self._settings.point != previous:
            self._announce_point()

    def _announce_point(self) -> None:
        """Log the operating point the alarms run at; a warning when it is not the model's as stored."""
        resolved = self._settings.point
        warning = resolved.warning()
        if warning:
            self.get_logger().warning(warning)
        else:
            self.get_logger().info(f"operating point: the model's {resolved.point.describe()}")

    def _input_size_text(self) -> str:
        if self.predictor.input_size is not None:
            return f"{'x'.join(map(str, self.predictor.input_size))} ({self._size_source})"
        return f"each frame's size, at most {self.predictor.max_network_pixels} pixels"

    # ------------------------------------------------------------------ callbacks (executor thread)
    def _on_image(self, msg: Image | CompressedImage, info: MessageInfo) -> None:
        gap = self._sequence.gap(info)
        self._stats.arrived(time.monotonic(), self._slot.put(Frame(msg, time.perf_counter())), gap)
        if gap:
            self._warn("lost", lost_frames_text(gap, len(msg.data)))

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
                self._stats.busy(time.monotonic())
                try:
                    self._process(frame)
                except Exception as e:  # keep serving: one bad frame must not stop the node
                    if not self.context.ok():
                        return
                    self._count_error(e)
                finally:
                    self._stats.busy(None)
        except BaseException as e:
            with self._stats.lock:
                self._stats.worker_failure = f"{type(e).__name__}: {e}"
            raise

    def _count_error(self, e: Exception) -> None:
        text = f"{type(e).__name__}: {e}"
        self._stats.failed_frame(text)
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
        try:
            rgb = self._decode(frame.msg, s)
        except ImageError as e:
            self._reject(e)
            return
        t0 = time.perf_counter()
        labels, score = self.predictor.predict(rgb)
        t1 = time.perf_counter()
        if problem := self._stats.scores(score):  # NaN/inf scores: warn at the first frame of a run
            self._warn("nonfinite", problem)
        f = self._frame_context(frame.msg.header, rgb, labels, score, s)
        published = []
        for name in wanted:
            try:
                msg = OUTPUTS_TABLE[name].make(f)
            except OutputUnavailable as e:
                self._warn(e.kind, str(e))
                continue
            self._outputs[name].publish(msg)
            published.append(name)
        self._record(frame, f, (t1 - t0) * 1e3, published)

    def _frame_context(self, header: Header, rgb: np.ndarray, labels, score, s: Settings) -> NodeFrame:
        """The frame's context (labels uint8, score float32, H x W), built once: the CameraInfo is read
        here once for every output."""
        with self._info_lock:
            info = self._camera_info
        intrinsics, problem = camera_intrinsics(info, score.shape, self.resolve_topic_name("camera_info"))
        stamp = header.stamp.sec + header.stamp.nanosec * 1e-9
        ego, unfit = mask_for_frame(s.ego, score.shape)
        if unfit:  # a frame of another camera: alarms without the mask, and the node says so
            self._stats.unfit_ego_mask(unfit)
            self._warn("ego_mask", unfit)
        core = FrameContext(
            labels, score, s.point.point, rgb, stamp, intrinsics, s.mount, s.probability_scale, ego_mask=ego
        )
        return NodeFrame(header, core, s, self._converter, self._alarm_chain, self._grid, problem)

    def _record(self, frame: Frame, f: NodeFrame, inference_ms: float, published: list[str]) -> None:
        """Count a processed frame: outputs, timings, latency (header stamp to now), obstacles."""
        stamp = f.header.stamp
        processing_ms = (time.perf_counter() - frame.received) * 1e3
        latency = stamp_latency_ms(self.get_clock().now().nanoseconds, stamp.sec, stamp.nanosec)
        obstacles = len(f.alarms.obstacles)  # the chain runs on every frame, whoever subscribes
        if not self._stats.frame_done(published, inference_ms, processing_ms, latency, obstacles):
            self._warn(
                "stamp",
                f"header stamp {stamp.sec}.{stamp.nanosec:09d}: node clock - stamp = "
                f"{latency / 1e3:.6g} s, outside the latency window {LATENCY_WINDOW_MS} ms, so not counted in the "
                "latency; stamp frames with their capture time (and set use_sim_time when playing bags)",
            )

    # ------------------------------------------------------------------ problems
    def _reject(self, e: ImageError) -> None:
        self._stats.rejected_frame(e.kind, f"frame rejected ({e.kind}): {e}")
        self._warn(e.kind, f"frame rejected ({e.kind}): {e}")

    def _warn(self, kind: str, text: str, error: bool = False) -> None:
        """Log ``text`` at most once per ``warning_throttle`` seconds per ``kind``, counting the rest.

        Called from the worker and the executor thread. rclpy fixes a logging call site's severity
        at its first call, so errors and warnings are logged from two separate lines."""
        text = self._throttle.text(kind, text, time.monotonic(), self._settings.warning_throttle)
        if text is None:
            return
        if error:
            self.get_logger().error(text)
        else:
            self.get_logger().warning(text)

    # ------------------------------------------------------------------ diagnostics
    def diagnostic_status(self) -> DiagnosticStatus:
        """The node's current DiagnosticStatus (also resets the per-period problem counters)."""
        now = time.monotonic()
        period, s = self._stats.period(now, self._slot.pending, self._settings.requirements), self._settings
        period.values.update(
            {
                "backend": self.predictor.backend.name,
                "backend_precision": self.predictor.backend.precision,
                "backend_choice": self.predictor.backend.choice_summary(),
                "model_id": self.predictor.model_id,
                "input_size": self._input_size_text(),
                "worker": "running" if self.worker_alive else "stopped",
                "score_threshold": f"{s.point.point.threshold:.6g}",
                "operating_point": f"{s.point.point.describe()} ({s.point.origin})",
                "operating_point_overrides": ", ".join(s.point.overridden) or "none",
                "image_conversion": self._converter.name,
                "camera_info": "received" if self._camera_info is not None else "none yet",
            }
        )
        worker_stopped = self._worker is not None and not self._worker.is_alive() and not self._destroyed
        stalled = watchdog_problem(now, worker_stopped, period, s.watchdog_timeout)
        publishers = {sub.topic_name: sub.get_publisher_count() for sub in self._image_subs}
        silence = self._silence.check(now, period.last_frame, publishers, s.input_timeout)
        if stalled:
            self._warn("watchdog", stalled, error=True)
        elif silence and not period.errors:
            self._warn("silence", silence)
        for level, text in period.missed:  # requirements missed: one throttled log line per level
            self._warn(f"requirement {level!r}", text, error=level == DiagnosticStatus.ERROR)
        level, message = summary(stalled, silence, period, self.resolve_topic_name("image"))
        device = str(getattr(self.predictor.backend, "device", self.predictor.backend.name))
        return status_message(f"{self.get_name()}: anomaly segmentation", level, message, device, period.values)

    def _publish_diagnostics(self) -> None:
        stamp = self.get_clock().now().to_msg()
        self._diag_pub.publish(DiagnosticArray(header=Header(stamp=stamp), status=[self.diagnostic_status()]))

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
    rows = ["  image, camera_info (in)  camera frames (image/compressed with subscribe_compressed), intrinsics"]
    rows += [f"  {name:24} {out.type.__name__}: {out.content}" for name, out in OUTPUTS_TABLE.items()]
    topics = "Topics (relative: -r remaps and namespaces apply; /diagnostics too):\n" + "\n".join(rows)
    return topics + "\n\nParameters (-p name:=value or --params-file):\n" + parameters_help()


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
    profile = apply_profile()  # before rclpy.init: Fast DDS reads it when the participant is created
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
    node.get_logger().info(profile_note(profile))
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


if __name__ == "__main__":
    sys.exit(main())
