"""``pebal_bag play`` and ``pebal_bag record`` over real rclpy/DDS (localhost only, random domain id).

Playback is checked against the bag read back with ``rosbags`` (stamps and bytes as recorded) and
against the schedule the options imply: every message is due at ``(t - t_first) / rate`` (gaps
clamped by ``max_gap``) and is never published before that; only a loose upper bound on the
lateness is asserted (the machine is shared).
"""

from __future__ import annotations

import contextlib
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
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image
from tiny_trees import make_anomaly_pairs

from pebal_ros.bag_convert import ConvertOptions, convert
from pebal_ros.bag_play import Player, PlayOptions, parse_remaps
from pebal_ros.bag_record import Recorder, RecordOptions
from pebal_ros.bag_storage import BagError, BagReader

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


def test_clock_follows_the_bag_time_and_drives_a_sim_time_node(ros_env, bag):
    """--clock: /clock starts at the first message's bag time, never runs backwards within a pass, is exactly
    each message's time when it is published; a node with use_sim_time lives in the bag's time (2001-era
    stamps) while it receives the frames."""
    images = [ts for ts, _ in _bag_messages(bag, "/camera/image_raw")]
    with RosSession() as session:
        sink = Sink(session, {"/clock": Clock})
        sim = session.add(
            rclpy.create_node(
                "sim_time_node", context=session.context, parameter_overrides=[Parameter("use_sim_time", value=True)]
            )
        )
        seen: list[tuple[int, int]] = []  # (header stamp, the sim-time node's clock when the frame arrived)
        sim.create_subscription(
            Image, "/camera/image_raw", lambda m: seen.append((_stamp(m), sim.get_clock().now().nanoseconds)), RELIABLE
        )
        _, result = _play(session, bag, rate=2.0, max_gap=0.25, clock=100.0, topics=("/camera/image_raw",))
        wait_until(lambda: len(seen) == 5, 10, "every frame at the sim-time node")
        with sink.lock:
            clock = [m.clock.sec * 10**9 + m.clock.nanosec for m in sink.got["/clock"]]
    assert result.published == {"/camera/image_raw": 5}
    assert clock[0] == images[0], "the clock starts at the first message's bag time, before it is published"
    assert clock == sorted(clock) and clock[-1] == images[-1]
    assert set(images) <= set(clock), "each message's own time is published right before it"
    assert len(clock) > 10, "ticks between messages"
    # the sim-time node lives in bag time (its clock and the image are two topics: no order between them
    # is promised, so only the bag's span is asserted, not now >= stamp)
    assert all(images[0] <= now <= images[-1] for _, now in seen), seen


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


def _pebal_bag(*args: str, env: dict) -> subprocess.Popen:
    script = os.path.join(os.path.dirname(sys.executable), "pebal_bag")
    return subprocess.Popen(
        [script, *args],
        env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@contextlib.contextmanager
def _publisher_to(proc: subprocess.Popen):
    """A reliable publisher of ``/src/image`` matched with the recorder ``proc`` (a ``pebal_bag
    record`` of that one topic that has printed its first line)."""
    assert "recording 1 topics" in proc.stdout.readline()
    with RosSession() as session:
        source = session.add(rclpy.create_node("source", context=session.context))
        pub = source.create_publisher(Image, "/src/image", RELIABLE)
        wait_until(lambda: pub.get_subscription_count() > 0, 30, "the recorder's subscription")
        time.sleep(0.3)
        yield pub


def test_record_console_script_finishes_the_bag_on_ctrl_c(ros_env, tmp_path):
    """Ctrl-C while messages keep arriving: the bag is complete and its metadata matches its messages.

    Before the signal became a flag, a KeyboardInterrupt could land between the storage write and
    the count (a bag with one message more than its metadata.yaml: refused by BagReader), and
    rclpy's signal thread shut the context down while the main thread destroyed the node (SIGSEGV).
    """
    out = tmp_path / "rec"
    proc = _pebal_bag("record", "-o", str(out), "--storage", "sqlite3", "/src/image:sensor_msgs/msg/Image", env=ros_env)
    try:
        with _publisher_to(proc) as pub:
            for k in range(3):
                pub.publish(_image(k))
            time.sleep(1.0)
            for k in range(3, 60):  # the signal arrives while messages keep coming
                pub.publish(_image(k))
                if k == 20:
                    proc.send_signal(signal.SIGINT)
                time.sleep(0.002)
        rc = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = proc.stdout.read()
    assert rc == 0, log
    with BagReader(out) as reader:  # checks the messages against metadata.yaml
        stamps = [_stamp(reader.deserialize(raw, conn)) for conn, _, raw in reader.messages()]
    assert f"wrote {len(stamps)} messages" in log
    assert 3 <= len(stamps) <= 60
    assert stamps == [(1000 + k) * 10**9 + 7 * k for k in range(len(stamps))]  # reliable: none lost or reordered


def _big_image(k: int, rng: np.random.Generator) -> Image:
    """A 100 KB mono8 image with random pixels (its bytes occur nowhere else)."""
    msg = Image(height=200, width=500, encoding="mono8", step=500)
    msg.header.stamp.sec, msg.header.stamp.nanosec = 2000 + k, k
    msg.data = byte_array(rng.integers(0, 256, 200 * 500, dtype=np.uint8))
    return msg


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_killed_recording_is_kept_refused_and_recovered(ros_env, bag, tmp_path, storage, capsys):
    """SIGKILL a real recorder mid-stream: the partial data stays, nothing overwrites it, `score`/`play`
    say what it is, and `pebal_bag recover` turns it into a bag that plays back every complete message."""
    out = tmp_path / "rec"
    rng = np.random.default_rng(0)
    sent = [_big_image(k, rng) for k in range(60)]
    proc = _pebal_bag("record", "-o", str(out), "--storage", storage, "/src/image:sensor_msgs/msg/Image", env=ros_env)
    try:
        with _publisher_to(proc) as pub:
            for msg in sent[:20]:
                pub.publish(msg)
                time.sleep(0.01)
            time.sleep(2.5)  # > flush period (1 s): these 20 are on disk
            for k, msg in enumerate(sent[20:]):
                pub.publish(msg)
                if k == 15:
                    proc.kill()  # SIGKILL while messages arrive
                time.sleep(0.01)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    partial = tmp_path / ".rec.partial" / "rec"
    (file,) = [p for p in partial.iterdir() if p.suffix in (".mcap", ".db3")]
    assert not out.exists()

    # score / play / a new recording to the same path: say where the data is, delete nothing
    from pebal_ros.bag import main

    for argv in (["play", str(out)], ["score", str(out), "--input", str(bag)], ["record", "-o", str(out), "/x"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert str(partial.parent) in err and "pebal_bag recover" in err, (argv, err)
    assert main(["play", str(partial)]) == 2
    assert "is a partial recording" in capsys.readouterr().err
    assert file.exists()

    assert main(["recover", str(partial)]) == 0
    assert file.exists(), "the partial data is only read"
    out = tmp_path / "rec_recovered"  # the default output
    with BagReader(out) as reader:
        rows = [(ts, reader.deserialize(raw, conn)) for conn, ts, raw in reader.messages()]
    got = [bytes(m.data) for _, m in rows]
    sent_bytes = [bytes(m.data) for m in sent]
    assert len(got) >= 20, "the flushed messages are all recovered"
    assert got == sent_bytes[: len(got)], "recovered: the first messages, in order, byte for byte"
    if storage == "mcap":  # independent of the parser: every payload that reached the disk is recovered
        on_disk = file.read_bytes()
        assert len(got) == sum(payload in on_disk for payload in sent_bytes)
    assert [_stamp(m) for _, m in rows] == [_stamp(m) for m in sent[: len(got)]]

    with RosSession() as session:  # and it plays
        sink = Sink(session, {"/src/image": Image})
        _, result = _play(session, out, rate=20.0)
        wait_until(lambda: sink.count("/src/image") == len(got), 20, "the recovered messages")
    assert result.published == {"/src/image": len(got)}
    assert [bytes(m.data) for m in sink.got["/src/image"]] == got


def test_recover_reads_every_complete_message_of_a_cut_off_mcap_file(tmp_path):
    """An MCAP file cut at any byte: exactly the messages whose bytes all lie before the cut come back."""
    from pebal_ros.bag_recover import recover
    from pebal_ros.bag_storage import bag_writer

    rng = np.random.default_rng(1)
    payloads = [bytes(TYPESTORE.serialize_cdr(_typestore_image(k, rng), "sensor_msgs/msg/Image")) for k in range(30)]
    with bag_writer(tmp_path / "full", "mcap") as bag:
        bag.add_topic("/img", "sensor_msgs/msg/Image")
        for k, data in enumerate(payloads):
            bag.write_raw("/img", T0_NS + k, data)
            if k % 7 == 6:
                bag.flush()  # several chunks
    data = (tmp_path / "full" / "full.mcap").read_bytes()
    for cut in (len(data) // 3, len(data) // 2 + 17, data.find(payloads[-1]) + 50):
        folder = tmp_path / f"cut{cut}"
        folder.mkdir()
        (folder / "cut.mcap").write_bytes(data[:cut])
        expected = [p for p in payloads if 0 <= data.find(p) and data.find(p) + len(p) <= cut]
        result = recover(folder, tmp_path / f"bag{cut}")
        with BagReader(tmp_path / f"bag{cut}") as reader:
            got = [(ts, bytes(raw)) for _, ts, raw in reader.messages()]
        assert [raw for _, raw in got] == expected and result.counts == {"/img": len(expected)}
        assert [ts for ts, _ in got] == [T0_NS + payloads.index(p) for p in expected]
        assert 0 < len(expected) < 30 and result.lost  # the cut-off record is reported
    with pytest.raises(BagError, match="not an MCAP file"):
        (tmp_path / "junk").mkdir()
        (tmp_path / "junk" / "x.mcap").write_bytes(b"not mcap" * 10)
        recover(tmp_path / "junk", tmp_path / "never")


def _typestore_image(k: int, rng: np.random.Generator):
    Img = TYPESTORE.types["sensor_msgs/msg/Image"]
    Header = TYPESTORE.types["std_msgs/msg/Header"]
    Time = TYPESTORE.types["builtin_interfaces/msg/Time"]
    return Img(
        header=Header(stamp=Time(sec=k, nanosec=0), frame_id="cam"),
        height=100,
        width=100,
        encoding="mono8",
        is_bigendian=0,
        step=100,
        data=rng.integers(0, 256, 10_000, dtype=np.uint8),
    )


def test_recording_playing_recovering_converting_and_info_do_not_import_torch(ros_env, tmp_path):
    make_tree(tmp_path / "laf", {"01_Hanns_Klemm_Str_45": 2})
    fs = tmp_path / "Validation_Dataset" / "fs_static"
    make_anomaly_pairs(fs / "images", fs / "labels_masks", (48, 64), [(10, 10, 8, 8), None])
    code = f"""
import sys
from pebal_ros.bag import main
root = {str(tmp_path)!r}
assert main(["convert", root + "/laf", root + "/bag", "--single"]) == 0
assert main(["convert", root + "/Validation_Dataset", root + "/bag_validation"]) == 0
assert main(["play", root + "/bag", "--rate", "50", "--clock"]) == 0
assert main(["info", root + "/bag"]) == 0
assert main(["record", "-o", root + "/rec", "/x:sensor_msgs/msg/Image", "--duration", "0.3"]) == 0
assert main(["recover", root + "/bag", "-o", root + "/copy"]) == 0
print("torch imported:", "torch" in sys.modules)
"""
    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **ros_env}, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "torch imported: False" in out.stdout


def test_play_waits_for_the_subscriber_count_asked_per_topic(ros_env, bag):
    """A node and a recorder on one topic: playing starts only once both are matched, so the one
    discovered later still gets the first messages (``pebal_demo`` waits so for its CameraInfo)."""
    with RosSession() as session:
        node_like = Sink(session, {"/camera/image_raw": Image, "/camera/camera_info": CameraInfo})
        player = Player(
            bag, PlayOptions(wait_for_subscribers=0.5, subscribers={"/camera/camera_info": 2}), context=session.context
        )
        try:
            with pytest.raises(BagError, match="too few subscribers: /camera/camera_info 1 of 2"):
                player.play()
        finally:
            player.close()
        recorder_like = Sink(session, {"/camera/camera_info": CameraInfo})
        _, result = _play(session, bag, subscribers={"/camera/camera_info": 2})
        wait_until(
            lambda: recorder_like.count("/camera/camera_info") == node_like.count("/camera/camera_info") == 5,
            10,
            "every CameraInfo at both subscribers",
        )
    assert result.published == {"/camera/camera_info": 5, "/camera/image_raw": 5}
    with pytest.raises(ValueError, match="counts >= 1"):
        PlayOptions(subscribers={"/camera/camera_info": 0})
