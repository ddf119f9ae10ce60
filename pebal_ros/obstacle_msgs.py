"""Obstacles (:class:`pebal_core.alarms.obstacles.Obstacle`) as ROS messages.

* :func:`obstacle_markers`: ``visualization_msgs/MarkerArray`` for RViz, in the ground frame
  (``grid.frame_id``, x forward, y left, z up) with the image's stamp. The array first clears the
  previous frame's markers (one ``DELETEALL`` in namespace :data:`MARKER_NS`), then, per obstacle
  with a ground position, a ``CUBE`` standing on the ground at the contact point (as wide as the
  obstacle's ground width, :data:`MARKER_DEPTH` deep, drawn as tall as it is wide: the height is
  not measured) and a ``TEXT_VIEW_FACING`` label above it (distance and probability). Colour:
  orange at the threshold to red well above it (the calibrated probability of the frame's context,
  :meth:`pebal_core.alarms.frame.FrameContext.probability`), as in the overlay. Marker ids
  are ``2 * index`` (cube) and ``2 * index + 1`` (label).
* :func:`obstacle_detections`: ``vision_msgs/Detection2DArray`` in image coordinates (the image
  header unchanged): box centre and size in pixels, one hypothesis of class :data:`CLASS_ID` with
  the calibrated probability as score, ``id`` = the obstacle's index. Only where ``vision_msgs``
  is installed (:data:`DETECTIONS_AVAILABLE`; full ROS installs have it, the pip registry does not).
"""

from __future__ import annotations

from rclpy.duration import Duration
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from pebal_core.alarms.frame import FrameContext
from pebal_core.alarms.obstacles import Obstacle

try:  # optional: not on the pip registry
    from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose

    DETECTIONS_AVAILABLE = True
except ImportError:  # pragma: no cover - depends on the install
    Detection2D = Detection2DArray = ObjectHypothesisWithPose = None
    DETECTIONS_AVAILABLE = False

MARKER_NS = "pebal_obstacles"
MARKER_DEPTH = 0.4
"""Depth (m, along the viewing direction) of an obstacle's cube: only its front is seen."""
MIN_MARKER_SIZE = 0.2
"""Smallest drawn width/height (m), so that far-away obstacles stay visible."""
LABEL_HEIGHT = 0.35
"""Text height (m) of the labels."""
CLASS_ID = "anomaly"
MARKER_LIFETIME_S = 1.0
"""Markers vanish after this long without a new frame (a stalled node leaves nothing stale)."""


def _color(probability: float) -> ColorRGBA:
    p = min(max((probability - 0.5) * 2.0, 0.0), 1.0)
    return ColorRGBA(r=1.0, g=float(170.0 * (1.0 - p) / 255.0), b=0.0, a=0.8)


def obstacle_markers(obstacles: list[Obstacle], header: Header, frame: FrameContext) -> MarkerArray:
    """The MarkerArray of one frame's obstacles (``header``: the ground frame and the image stamp)."""
    clear = Marker(header=header, ns=MARKER_NS, action=Marker.DELETEALL)
    markers = [clear]
    lifetime = Duration(seconds=MARKER_LIFETIME_S).to_msg()
    for ob in obstacles:
        if ob.ground is None:
            continue
        p = float(frame.probability(ob.score))
        width = max(ob.width or 0.0, MIN_MARKER_SIZE)
        cube = Marker(header=header, ns=MARKER_NS, id=2 * ob.index, type=Marker.CUBE, action=Marker.ADD)
        cube.pose.position.x = ob.ground[0] + MARKER_DEPTH / 2
        cube.pose.position.y = ob.ground[1]
        cube.pose.position.z = width / 2
        cube.pose.orientation.w = 1.0
        cube.scale.x, cube.scale.y, cube.scale.z = MARKER_DEPTH, width, width
        cube.color = _color(p)
        cube.lifetime = lifetime
        label = Marker(header=header, ns=MARKER_NS, id=2 * ob.index + 1, type=Marker.TEXT_VIEW_FACING)
        label.action = Marker.ADD
        label.pose.position.x = cube.pose.position.x
        label.pose.position.y = ob.ground[1]
        label.pose.position.z = width + LABEL_HEIGHT
        label.pose.orientation.w = 1.0
        label.scale.z = LABEL_HEIGHT
        label.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
        label.text = f"{ob.distance:.1f} m  p={p:.2f}"
        label.lifetime = lifetime
        markers += [cube, label]
    return MarkerArray(markers=markers)


def obstacle_detections(obstacles: list[Obstacle], header: Header, frame: FrameContext) -> Detection2DArray:
    """The Detection2DArray of one frame's obstacles (``header``: the image's, unchanged)."""
    if not DETECTIONS_AVAILABLE:
        raise RuntimeError("vision_msgs is not installed: install ros-<distro>-vision-msgs for obstacle_detections")
    out = Detection2DArray(header=header)
    for ob in obstacles:
        d = Detection2D(header=header, id=str(ob.index))
        u, v = ob.center
        d.bbox.center.position.x, d.bbox.center.position.y = float(u), float(v)
        d.bbox.size_x, d.bbox.size_y = (float(s) for s in ob.size)
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = CLASS_ID
        hypothesis.hypothesis.score = float(frame.probability(ob.score))
        d.results.append(hypothesis)
        out.detections.append(d)
    return out
