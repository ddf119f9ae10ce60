"""``pebal_bag play`` and ``pebal_bag record`` over real rclpy/DDS (localhost only, random domain id).

Playback is checked against the bag read back with ``rosbags`` (stamps and bytes as recorded) and
against the schedule the options imply: every message is due at ``(t - t_first) / rate`` (gaps
clamped by ``max_gap``) and is never published before that; only a loose upper bound on the
lateness is asserted (the machine is shared).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from laf_tree import T0_NS, make_tree
from node_harness import RELIABLE, RosSession, byte_array, wait_until
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import CameraInfo, Image

from pebal_ros.bag_convert import ConvertOptions, convert
from pebal_ros.bag_play import Player, PlayOptions, parse_remaps
from pebal_ros.bag_record import Recorder, RecordOptions
from pebal_ros.bag_storage import BagError

pytestmark = pytest.mark.ros

TYPESTORE = get_typestore(Stores.ROS2_KILTED)
SEQS = {"01_Hanns_Klemm_Str_45": 3, "02_Hanns_Klemm_Str_44": 2}
GAP_NS = 3_000_000_000
"""Extra pause before the second sequence (to exercise max_gap)."""


@pytest.fixture(scope="module")
def bag(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("play")
    names = make_tree(base / "laf", SEQS)
    for name in names[3:]:  # the second sequence starts 3 s later
        f = base / "laf" / "timestamp" / "test" / name.rsplit("_", 2)[0] / f"{name}_timestamp.txt"
        f.write_text(str(int(f.read_text()) + GAP_NS))
    convert(base / "laf", base / "bag", ConvertOptions(per_sequence=False), progress=False)
    return base / "bag"


def _bag_messages(bag: Path, topic: str) -> list[tuple[int, bytes]]:
    with Reader(bag) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        return [(ts, raw) for _, ts, raw in reader.messages(conns)]


def _stamp(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


class Sink:
    """Subscribes to topics (reliable, deep queue) and keeps what arrives."""

    def __init__(self, session: RosSession, topics: dict[str, type]) -> None:
        self.node = session.add(rclpy.create_node("sink", context=session.context))
        self.lock = threading.Lock()
        self.got: dict[str, list] = {t: [] for t in topics}
        qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        for topic, cls in topics.items():
            self.node.create_subscription(cls, topic, self._keep(topic), qos)

    def _keep(self, topic):
        def keep(msg):
            with self.lock:
                self.got[topic].append(msg)

        return keep

    def count(self, topic: str) -> int:
        with self.lock:
            return len(self.got[topic])


def _play(session: RosSession, bag: Path, **options):
    player = Player(bag, PlayOptions(wait_for_subscribers=20.0, delay=0.3, **options), context=session.context)
    try:
        return player, player.play(keep_schedule=True)
    finally:
        player.close()


def test_play_keeps_stamps_and_bytes_and_follows_rate_remap_and_max_gap(ros_env, bag):
    images = _bag_messages(bag, "/camera/image_raw")
    infos = _bag_messages(bag, "/camera/camera_info")
    with RosSession() as session:
        sink = Sink(session, {"/replayed/image": Image, "/camera/camera_info": CameraInfo})
        _, result = _play(
            session, bag, rate=2.0, max_gap=0.25, remap=parse_remaps(["/camera/image_raw:=/replayed/image"])
        )
        wait_until(lambda: sink.count("/replayed/image") == 5 and sink.count("/camera/camera_info") == 5, 10, "all")
    assert result.published == {"/camera/camera_info": 5, "/replayed/image": 5} and result.loops == 1
    got = sink.got["/replayed/image"]
    assert [_stamp(m) for m in got] == [ts for ts, _ in images]  # header stamps = bag times = the dataset's
    for msg, (_, raw) in zip(got, images, strict=True):
        expected = TYPESTORE.deserialize_cdr(raw, "sensor_msgs/msg/Image")
        assert bytes(msg.data) == expected.data.tobytes() and msg.encoding == "rgb8"
    assert [_stamp(m) for m in sink.got["/camera/camera_info"]] == [ts for ts, _ in infos]

    # the schedule: bag time since the first message / rate, the 3.1 s pause between sequences cut to 0.25 s
    gaps = np.diff([ts for ts, _ in images]) / 1e9
    assert gaps[2] == pytest.approx(3.1)
    bag_times = np.r_[0.0, np.cumsum(np.minimum(gaps, 0.25))]
    image_rows = [row for row in result.schedule if row[0] == "/replayed/image"]
    np.testing.assert_allclose([due for _, _, due, _ in image_rows], bag_times / 2.0, atol=1e-9)
    for _, _, due, published in result.schedule:
        assert due <= published < due + 2.0  # never early; lateness bound loose (shared machine)


def test_start_offset_and_loops(ros_env, bag):
    stamps = [ts for ts, _ in _bag_messages(bag, "/camera/image_raw")]
    with RosSession() as session:
        sink = Sink(session, {"/camera/image_raw": Image})
        _, result = _play(session, bag, rate=4.0, start_offset=0.15, loops=2, topics=("/camera/image_raw",))
        wait_until(lambda: sink.count("/camera/image_raw") == 6, 10, "two loops")
    assert stamps[0] == T0_NS
    expected = [s for s in stamps if s >= T0_NS + 150_000_000]
    assert len(expected) == 3  # +0.2 s, and the second sequence
    assert [_stamp(m) for m in sink.got["/camera/image_raw"]] == expected * 2
    assert result.loops == 2 and result.published == {"/camera/image_raw": 6}
    dues = [due for _, _, due, _ in result.schedule]
    assert dues == sorted(dues), "the second loop follows the first"


def test_play_refuses_what_it_cannot_do(ros_env, bag):
    with RosSession() as session:
        with pytest.raises(BagError, match="no topic /nope"):
            Player(bag, PlayOptions(topics=("/nope",)), context=session.context)
        with pytest.raises(ValueError, match="not a played topic"):
            Player(
                bag, PlayOptions(topics=("/camera/image_raw",), remap={"/camera/camera_info": "/x"}), session.context
            )
        player = Player(bag, PlayOptions(wait_for_subscribers=0.3), context=session.context)
        try:
            with pytest.raises(BagError, match="no subscriber on /camera/camera_info, /camera/image_raw"):
                player.play()
        finally:
            player.close()
    for bad in ("/a:/b", "a:=/b"):
        with pytest.raises(ValueError, match="must be /old/topic:=/new/topic"):
            parse_remaps([bad])
    with pytest.raises(ValueError, match="rate"):
        PlayOptions(rate=0)


def _image(k: int) -> Image:
    msg = Image(height=2, width=3, encoding="mono8", step=3)
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1000 + k, 7 * k
    msg.header.frame_id = "cam"
    msg.data = byte_array(np.arange(6, dtype=np.uint8) + k)
    return msg


def test_record_writes_raw_messages_at_receive_time(ros_env, tmp_path):
    out = tmp_path / "rec"
    with RosSession() as session:
        source = session.add(rclpy.create_node("source", context=session.context))
        image_pub = source.create_publisher(Image, "/src/image", RELIABLE)
        info_pub = source.create_publisher(
            CameraInfo, "/src/info", QoSProfile(depth=5, reliability=ReliabilityPolicy.BEST_EFFORT)
        )
        recorder = Recorder(
            out, RecordOptions(topics=("/src/image:sensor_msgs/msg/Image", "/src/info")), session.context
        )
        session.add(recorder.node)
        assert recorder.pending_topics == ["/src/info"]  # typed topic subscribed at once, the other discovered
        wait_until(lambda: recorder.ready, 15, "discovery of /src/info")
        wait_until(lambda: image_pub.get_subscription_count() and info_pub.get_subscription_count(), 15, "match")
        time.sleep(0.3)
        t_before = time.time_ns()
        for k in range(4):
            image_pub.publish(_image(k))
        info = CameraInfo(height=4, width=5)
        info.header.stamp.sec = 55
        deadline = time.monotonic() + 10
        while recorder.counts["/src/info"] == 0 and time.monotonic() < deadline:  # best effort: resend until one lands
            info_pub.publish(info)
            time.sleep(0.05)
        wait_until(lambda: recorder.counts["/src/image"] == 4, 10, "four images")
        t_after = time.time_ns()
        assert not out.exists(), "the bag appears only when the recording is closed"
        assert not recorder.done()
        session.executor.remove_node(recorder.node)
        recorder.close()
    with Reader(out) as reader:
        by_topic = {c.topic: c for c in reader.connections}
        assert by_topic["/src/image"].msgtype == "sensor_msgs/msg/Image"
        assert by_topic["/src/info"].msgtype == "sensor_msgs/msg/CameraInfo"
        qos = by_topic["/src/info"].ext.offered_qos_profiles
        assert len(qos) == 1 and qos[0].reliability.name == "BEST_EFFORT"  # the publisher's offered QoS
        rows = [(c.topic, ts, TYPESTORE.deserialize_cdr(raw, c.msgtype)) for c, ts, raw in reader.messages()]
    images = [(ts, m) for topic, ts, m in rows if topic == "/src/image"]
    assert [_stamp(m) for _, m in images] == [(1000 + k) * 10**9 + 7 * k for k in range(4)]
    for k, (ts, m) in enumerate(images):
        assert t_before <= ts <= t_after
        assert m.header.frame_id == "cam" and m.data.tolist() == list(range(k, k + 6))
    assert any(topic == "/src/info" and m.header.stamp.sec == 55 for topic, _, m in rows)


def test_record_stops_on_idle_timeout_and_duration(ros_env, tmp_path):
    with RosSession() as session:
        source = session.add(rclpy.create_node("source", context=session.context))
        pub = source.create_publisher(Image, "/src/image", RELIABLE)
        recorder = Recorder(
            tmp_path / "idle", RecordOptions(("/src/image:sensor_msgs/msg/Image",), idle_timeout=0.5), session.context
        )
        session.add(recorder.node)
        wait_until(lambda: pub.get_subscription_count() > 0, 15, "match")
        time.sleep(0.7)
        assert not recorder.done(), "idle time counts only after the first message"
        pub.publish(_image(0))
        wait_until(lambda: recorder.counts["/src/image"] == 1, 10, "one image")
        assert not recorder.done()
        wait_until(recorder.done, 5, "idle timeout")
        session.executor.remove_node(recorder.node)
        recorder.close()
        timed = Recorder(
            tmp_path / "timed", RecordOptions(("/src/image:sensor_msgs/msg/Image",), duration=0.3), session.context
        )
        wait_until(timed.done, 5, "duration")
        timed.close()
    assert (tmp_path / "idle" / "metadata.yaml").is_file() and (tmp_path / "timed" / "metadata.yaml").is_file()
    with pytest.raises(ValueError, match="absolute name"):
        RecordOptions(("relative",))


def test_record_console_script_finishes_the_bag_on_ctrl_c(ros_env, tmp_path):
    script = os.path.join(os.path.dirname(sys.executable), "pebal_bag")
    out = tmp_path / "rec"
    proc = subprocess.Popen(
        [script, "record", "-o", str(out), "--storage", "sqlite3", "/src/image:sensor_msgs/msg/Image"],
        env={**os.environ, **ros_env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert "recording 1 topics" in proc.stdout.readline()
        with RosSession() as session:
            source = session.add(rclpy.create_node("source", context=session.context))
            pub = source.create_publisher(Image, "/src/image", RELIABLE)
            wait_until(lambda: pub.get_subscription_count() > 0, 30, "the recorder's subscription")
            time.sleep(0.3)
            for k in range(3):
                pub.publish(_image(k))
            time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = proc.stdout.read()
    assert rc == 0, log
    assert "wrote 3 messages" in log
    with Reader(out) as reader:
        assert reader.message_count == 3
