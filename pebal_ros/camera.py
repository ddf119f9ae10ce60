"""``pebal_camera``: an image source published as a ROS camera, like image_pipeline's ``image_publisher``.

    pebal_camera frames/                                   # a folder of images, 10 frames/s, once
    pebal_camera drive.mp4 --ros-args -p publish_rate:=0.0 -p loop:=true      # a video at its own rate
    pebal_camera 0 --ros-args -p camera_info_url:=file:///calib/front.yaml    # a V4L2 camera
    pebal_camera 'frames/*.png' --ros-args -r __ns:=/front                    # /front/camera/image_raw

``SOURCE`` is any source of :mod:`pebal_core.sources` (image file, folder, glob, video file,
device index or ``/dev/videoN``), given as the first argument or as the ``source`` parameter.

Topics (relative, so ``-r`` remaps and ``__ns`` apply):

* ``camera/image_raw`` (``sensor_msgs/Image``, ``rgb8``): one frame per timer tick;
* ``camera/camera_info`` (``sensor_msgs/CameraInfo``) with the same header: from
  ``camera_info_url`` (a ROS calibration YAML, :class:`pebal_core.camera_calibration.CameraCalibration`),
  else the stated default for the frame's size (``fx = fy`` = image width, principal point at the
  centre; logged once).

Both are published reliable, keep-last 5, volatile (``qos_overrides./camera/image_raw.publisher.*``
parameters change them, :mod:`pebal_ros.qos`). Header stamps are the node clock's time when the
frame is published: wall time, or ``/clock`` time with ``use_sim_time:=true`` (frames wait until
the first ``/clock`` message arrives); ``frame_id`` is the ``frame_id`` parameter.

Parameters: ``source``; ``publish_rate`` (frames per second, default 10; 0 = the video's or
device's own rate, 10 for image files), paced by a steady timer whatever clock stamps the frames;
``loop`` (start again at the end; a single image file is always repeated, as ``image_publisher``
does); ``camera_info_url`` (``file://`` URL or path; empty = the stated default); ``frame_id``
(``camera_optical_frame``); ``wait_for_subscriber`` (default true: the first frame goes out once
``camera/image_raw`` has a subscriber, and half a second more for that subscriber's side of
discovery, so that a node still starting up misses none of a file source's frames; false =
publish from the start, as a live camera does). At the end of a source (no ``loop``) the node
logs what it published and exits with status 0; an unreadable source or calibration file is one
``pebal_camera: error:`` line and status 2. The console script applies the large-image Fast DDS
profile (:mod:`pebal_ros.dds_profile`) before it starts ROS: a 1280x720 frame needs it to arrive.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import rclpy
import rclpy.utilities
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.clock import Clock, ClockType
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from pebal_core.camera_calibration import CameraCalibration
from pebal_core.console import plain_text
from pebal_core.sources import ImageSource, SourceError, open_source
from pebal_ros.bag_record import stop_on_signals
from pebal_ros.conversions import ImageConverter
from pebal_ros.dds_profile import apply_profile, profile_note
from pebal_ros.qos import INPUT_DEPTH, OVERRIDES, output_qos

NODE_NAME = "pebal_camera"
IMAGE_TOPIC = "camera/image_raw"
INFO_TOPIC = "camera/camera_info"
MATCH_SETTLE_S = 0.5
"""After the first subscriber shows up, wait this long before the first frame: the publisher sees the
match before the subscriber's side of discovery is complete, and a best-effort subscriber drops
samples of a publisher it does not know yet."""
FILES_RATE_HZ = 10.0
"""Rate of image files when ``publish_rate`` is 0 (a file has no rate of its own)."""
PARAMETERS = {
    "source": ("", "image file, folder, glob, video file, device index or /dev/videoN (pebal_core.sources)"),
    "publish_rate": (10.0, "frames per second; 0 = the video's or device's own rate (image files: 10)"),
    "loop": (False, "start again at the end of a folder, glob or video (a single image always repeats)"),
    "camera_info_url": ("", "ROS camera calibration YAML (file:// URL or path); empty = the stated default"),
    "frame_id": ("camera_optical_frame", "header frame_id of image and camera_info"),
    "wait_for_subscriber": (True, "publish the first frame only once image_raw has a subscriber"),
}
"""Parameter name -> (default, description)."""


class CameraPublisher(Node):
    """Publishes the frames of one image source (see the module docstring).

    Args:
        **node_kwargs: passed to :class:`rclpy.node.Node` (``parameter_overrides``, ``context``, ...).
    """

    def __init__(self, **node_kwargs: object) -> None:
        self.source: ImageSource | None = None
        super().__init__(NODE_NAME, **node_kwargs)
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description, read_only=True))
        p = {name: self.get_parameter(name).value for name in PARAMETERS}
        if not p["source"]:
            raise SourceError("no source: give one as the first argument or with -p source:=<file|folder|glob|video|0>")
        rate = float(p["publish_rate"])
        if not 0 <= rate <= 1000:
            raise ValueError(f"publish_rate must be in 0..1000 frames/s, got {rate}")
        self.source = open_source(p["source"], loop=bool(p["loop"]))
        if self.source.kind == "image":
            self.source.loop = True  # one still image is a camera that always shows it
        self.calibration = CameraCalibration.from_yaml(p["camera_info_url"]) if p["camera_info_url"] else None
        self.frame_id = str(p["frame_id"])
        self.rate = rate or self.source.fps or FILES_RATE_HZ
        self.published = 0
        self.finished = False
        self.waiting = bool(p["wait_for_subscriber"])
        self._matched_at: float | None = None
        self._frames = iter(self.source)
        self._converter = ImageConverter()
        self._warned: set[str] = set()
        self._image_pub, self._info_pub = (
            self.create_publisher(kind, topic, output_qos(depth=INPUT_DEPTH), qos_overriding_options=OVERRIDES)
            for kind, topic in ((Image, IMAGE_TOPIC), (CameraInfo, INFO_TOPIC))
        )
        # a steady timer: the pace is the wall clock's even when stamps come from /clock
        self._timer = self.create_timer(1.0 / self.rate, self._tick, clock=Clock(clock_type=ClockType.STEADY_TIME))
        length = self.source.length
        self.get_logger().info(
            f"publishing {self.source.kind} {self.source.spec} ({length if length is not None else 'unknown'} frames"
            f"{', looping' if self.source.loop else ''}) at {self.rate:g} frames/s on "
            f"{self.resolve_topic_name(IMAGE_TOPIC)}; camera_info from "
            f"{self.calibration.source if self.calibration else 'the stated default'}"
        )

    def _tick(self) -> None:
        if self.finished:
            return
        if self.waiting:
            if not self._image_pub.get_subscription_count():
                self._warn_once("subscriber", f"waiting for a subscriber on {self._image_pub.topic_name}")
                return
            if self._matched_at is None:
                self._matched_at = time.monotonic()
            if time.monotonic() - self._matched_at < MATCH_SETTLE_S:
                return
            self.waiting = False
        now = self.get_clock().now()
        if now.nanoseconds == 0:  # use_sim_time and no /clock yet: a zero stamp would mean nothing
            self._warn_once("clock", "use_sim_time is set and no /clock message has arrived: waiting for it")
            return
        try:
            frame = next(self._frames)
        except StopIteration:
            self.finished = True
            self._timer.cancel()
            self.get_logger().info(f"end of {self.source.spec}: published {self.published} frames")
            return
        header = Header(stamp=now.to_msg(), frame_id=self.frame_id)
        height, width = frame.rgb.shape[:2]
        self._image_pub.publish(self._converter.to_image(frame.rgb, "rgb8", header))
        self._info_pub.publish(self._camera_info(header, height, width))
        self.published += 1

    def _camera_info(self, header: Header, height: int, width: int) -> CameraInfo:
        calibration = self.calibration
        if calibration is None:
            calibration = CameraCalibration.default(width, height)
            self._warn_once(f"default {width}x{height}", f"camera_info for {width}x{height}: {calibration.source}")
        elif (calibration.width, calibration.height) != (width, height):
            self._warn_once(
                "size",
                f"{calibration.source} is for {calibration.width}x{calibration.height} images, the source's are "
                f"{width}x{height}: published as calibrated (the node scales K to the image)",
            )
        fields = calibration.fields()
        fields["d"] = fields["d"].tolist()
        return CameraInfo(header=header, **fields)

    def _warn_once(self, key: str, text: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.get_logger().warning(text)

    def destroy_node(self) -> None:
        if self.source is not None:
            self.source.close()
        super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``pebal_camera``: ``pebal_camera [SOURCE] [--ros-args -p publish_rate:=10.0 ...]``."""
    argv = sys.argv if argv is None else argv
    user_args = rclpy.utilities.remove_ros_args(argv)[1:]
    parser = argparse.ArgumentParser(
        prog="pebal_camera",
        description=plain_text(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", nargs="?", help="image file, folder, glob, video file, device index or /dev/videoN")
    args = parser.parse_args(user_args)
    profile = apply_profile()  # before rclpy.init: Fast DDS reads it when the participant is created
    with stop_on_signals() as stop:
        rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
        overrides = [Parameter("source", value=args.source)] if args.source else []
        try:
            node = CameraPublisher(parameter_overrides=overrides)
        except (ValueError, OSError, rclpy.exceptions.ParameterException) as e:  # SourceError, CalibrationError
            rclpy.try_shutdown()
            if os.environ.get("PEBAL_DEBUG"):
                raise
            print(f"pebal_camera: error: {e}", file=sys.stderr)
            return 2
        node.get_logger().info(profile_note(profile))
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        try:
            while not stop.is_set() and not node.finished:
                executor.spin_once(timeout_sec=0.1)
        except SourceError as e:  # a file of the folder that cannot be read
            print(f"pebal_camera: error: {e}", file=sys.stderr)
            return 2
        except ExternalShutdownException:
            pass
        finally:
            executor.shutdown()
            node.destroy_node()
            rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
