"""QoS of the package's topics, overridable per topic with rclpy's standard ``qos_overrides`` parameters.

Defaults (all keep-last, volatile):

* camera inputs (the node's ``image``, ``image/compressed``, ``camera_info``): depth 5, best effort
  (rclpy's sensor-data profile; a reliable camera matches too). The depth lets frames wait in
  the middleware while the node's executor is busy for up to half a second at 10 Hz instead of
  being overwritten there, uncounted; the node's own one-frame mailbox still runs only the
  newest and counts the others as dropped;
* the node's outputs: depth 1, reliable (every subscriber, best effort or reliable, matches);
* ``pebal_camera``'s ``image_raw`` and ``camera_info``: depth 5, reliable.

Every publisher and subscription is created with :data:`OVERRIDES` (rclpy's
``QoSOverridingOptions`` for history, depth, reliability and durability), so the node declares one
read-only parameter per topic, direction and policy, named after the *resolved* topic (after
namespace and remaps)::

    qos_overrides.<topic>.<publisher|subscription>.<history|depth|reliability|durability>

set at start-up like any parameter, e.g. a reliable camera input and a transient-local overlay::

    pebal_node --ros-args -p qos_overrides./camera/image_raw.subscription.reliability:=reliable \\
        -p qos_overrides./anomaly_overlay.publisher.durability:=transient_local

or in a parameter file (``/camera/image_raw`` nested as a key). ``ros2 param list`` shows them.
The node's ``input_reliability`` / ``output_reliability`` parameters are deprecated aliases that set
the default reliability of all inputs / outputs (:func:`input_qos`, :func:`output_qos`); a
``qos_overrides`` parameter of a topic wins over them.
"""

from __future__ import annotations

from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSPolicyKind, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions

RELIABILITY = ("best_effort", "reliable")
"""Values of the reliability aliases (and of ``qos_overrides.*.reliability``)."""
INPUT_RELIABILITY, OUTPUT_RELIABILITY = "best_effort", "reliable"
"""Default reliability of inputs and outputs (the defaults of the node's two alias parameters)."""
INPUT_DEPTH = 5
"""History depth of camera inputs and of published camera frames (rclpy's sensor-data depth)."""
OVERRIDES = QoSOverridingOptions(
    policy_kinds=(QoSPolicyKind.HISTORY, QoSPolicyKind.DEPTH, QoSPolicyKind.RELIABILITY, QoSPolicyKind.DURABILITY)
)
"""Pass as ``qos_overriding_options`` to ``create_publisher`` / ``create_subscription``."""


def _profile(reliability: str, depth: int) -> QoSProfile:
    """A fresh keep-last volatile profile (rclpy writes overrides into the profile it is given)."""
    if reliability not in RELIABILITY:
        raise ValueError(f"reliability must be one of {', '.join(RELIABILITY)}, got {reliability!r}")
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.VOLATILE,
    )


def input_qos(reliability: str = INPUT_RELIABILITY) -> QoSProfile:
    """Default profile of one camera input subscription (depth :data:`INPUT_DEPTH`)."""
    return _profile(reliability, INPUT_DEPTH)


def output_qos(reliability: str = OUTPUT_RELIABILITY, depth: int = 1) -> QoSProfile:
    """Default profile of one output publisher (camera frames: ``depth=INPUT_DEPTH``)."""
    return _profile(reliability, depth)


def warn_deprecated_aliases(logger: object, values: dict) -> None:
    """Log a deprecation warning for each reliability alias set away from its default (node parameter values)."""
    for name, kind, default in (
        ("input_reliability", "subscription", INPUT_RELIABILITY),
        ("output_reliability", "publisher", OUTPUT_RELIABILITY),
    ):
        if values.get(name, default) != default:
            logger.warning(
                f"{name} is a deprecated alias; set qos_overrides.<topic>.{kind}.reliability per topic instead "
                "(docs/node.md#qos)"
            )


def advertise(node: object, msg_type: type, topic: str, reliability: str, depth: int = 1) -> object:
    """``node.create_publisher`` with the default profile and rclpy's ``qos_overrides`` parameters."""
    return node.create_publisher(msg_type, topic, output_qos(reliability, depth), qos_overriding_options=OVERRIDES)


def subscribe(node: object, msg_type: type, topic: str, callback: object, reliability: str) -> object:
    """``node.create_subscription`` of a camera input with its default profile and the ``qos_overrides``."""
    return node.create_subscription(msg_type, topic, callback, input_qos(reliability), qos_overriding_options=OVERRIDES)
