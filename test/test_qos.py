"""QoS the ROS way: the node's topics take rclpy's standard ``qos_overrides.<topic>.<entity>.<policy>``
parameters (pebal_ros.qos), read back from the ROS graph (the QoS each endpoint offers or requests, as
``ros2 topic info -v`` shows it) and from what a late subscriber receives; the old reliability
parameters still work as deprecated aliases and say so."""

from __future__ import annotations

import numpy as np
import pytest
import rclpy
from node_harness import RosSession, image_msg, wait_until
from rcl_interfaces.msg import Log
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from pebal_ros.node import PebalNode

pytestmark = pytest.mark.ros


def _node(session: RosSession, predictor, name: str = "pebal_node", **values) -> PebalNode:
    overrides = [Parameter(k, value=v) for k, v in values.items()]
    return session.add(PebalNode(predictor, node_name=name, context=session.context, parameter_overrides=overrides))


def _endpoint(node, topic: str, publishers: bool):
    """The QoS the graph shows for ``node``'s publisher (or subscription) of ``topic``."""
    infos = node.get_publishers_info_by_topic(topic) if publishers else node.get_subscriptions_info_by_topic(topic)
    (info,) = [i for i in infos if i.node_name == node.get_name()]
    return info.qos_profile


def test_defaults_and_per_topic_overrides(ros_env, predictor):
    with RosSession() as session:
        plain = _node(session, predictor)
        assert _endpoint(plain, "/image", False).reliability == ReliabilityPolicy.BEST_EFFORT
        assert _endpoint(plain, "/anomaly_score", True).reliability == ReliabilityPolicy.RELIABLE
        names = plain.describe_parameters(["qos_overrides./image.subscription.reliability"])[0]
        assert names.read_only  # the standard overrides are start-up parameters
        node = _node(
            session,
            predictor,
            "pebal_node_b",
            **{
                "qos_overrides./image.subscription.reliability": "reliable",
                "qos_overrides./anomaly_score.publisher.durability": "transient_local",
                "qos_overrides./anomaly_score.publisher.depth": 3,
            },
        )
        image_qos = _endpoint(node, "/image", False)
        assert image_qos.reliability == ReliabilityPolicy.RELIABLE
        assert _endpoint(node, "/camera_info", False).reliability == ReliabilityPolicy.BEST_EFFORT  # untouched
        score_qos = _endpoint(node, "/anomaly_score", True)
        assert score_qos.durability == DurabilityPolicy.TRANSIENT_LOCAL
        assert _endpoint(node, "/semantic", True).durability == DurabilityPolicy.VOLATILE
        assert node.get_parameter("qos_overrides./anomaly_score.publisher.depth").value == 3

        # transient local for real: a subscriber that joins after the frame still gets its score
        probe = session.add(rclpy.create_node("probe", context=session.context))
        early = probe.create_subscription(Image, "/anomaly_score", lambda m: None, 1)  # computes the output
        pub = probe.create_publisher(Image, "/image", 10)
        wait_until(lambda: pub.get_subscription_count() > 0, 30, "the node's image subscription")
        rgb = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
        late: list = []
        stamp = probe.get_clock().now().to_msg()
        pub.publish(image_msg(rgb, stamp, "cam"))
        wait_until(lambda: node._stats.published["anomaly_score"] >= 1, 30, "the score published")
        probe.destroy_subscription(early)
        probe.create_subscription(
            Image,
            "/anomaly_score",
            late.append,
            QoSProfile(depth=3, durability=DurabilityPolicy.TRANSIENT_LOCAL, reliability=ReliabilityPolicy.RELIABLE),
        )
        wait_until(lambda: late, 30, "the stored score at a late subscriber")
        assert late[0].header.stamp == stamp


def test_the_old_reliability_parameters_are_deprecated_aliases(ros_env, predictor):
    with RosSession() as session:
        logs: list[str] = []
        listener = session.add(rclpy.create_node("listener", context=session.context))
        listener.create_subscription(Log, "/rosout", lambda m: logs.append(m.msg), QoSProfile(depth=100))
        node = _node(session, predictor, input_reliability="reliable", output_reliability="best_effort")
        assert _endpoint(node, "/image", False).reliability == ReliabilityPolicy.RELIABLE
        assert _endpoint(node, "/anomaly_overlay", True).reliability == ReliabilityPolicy.BEST_EFFORT
        wait_until(lambda: sum("deprecated alias" in text for text in logs) == 2, 10, "two deprecation warnings")
        assert any("qos_overrides.<topic>.subscription.reliability" in text for text in logs)
        both = _node(
            session,
            predictor,
            "pebal_node_b",
            input_reliability="reliable",
            **{"qos_overrides./image.subscription.reliability": "best_effort"},
        )
        assert _endpoint(both, "/image", False).reliability == ReliabilityPolicy.BEST_EFFORT  # the override wins


def test_a_bad_override_is_refused_at_start_up(ros_env, predictor):
    with RosSession() as session, pytest.raises(RuntimeError, match="Unexpected QoS override for policy `reliability`"):
        _node(session, predictor, **{"qos_overrides./image.subscription.reliability": "sometimes"})
