"""Publish a bag's messages with rclpy at the recorded pace (``pebal_bag play``).

Messages are published as the raw CDR bytes stored in the bag (``Publisher.publish(bytes)``),
so header stamps and every other field arrive exactly as recorded. Message ``i`` is due at
``start + (t_i - t_first) / rate`` on a monotonic clock, where ``t`` are bag timestamps from
``start_offset`` seconds into the bag on; ``max_gap`` shortens pauses longer than that many
(bag) seconds, e.g. between the sequences of a one-bag-for-all LostAndFound conversion.
Publishing never runs ahead of schedule; if it falls behind (a slow disk) it catches up without
skipping messages.

Publisher QoS follows the bag's offered QoS profile of each topic (reliability, durability,
depth), as ``ros2 bag play`` does; topics recorded without one are published reliable,
volatile, keep-last 10.

With ``clock`` (Hz) the player also publishes ``rosgraph_msgs/Clock`` on ``/clock`` from the bag's
time, as ``ros2 bag play --clock`` does, so that nodes with ``use_sim_time`` live in bag time: the
clock starts at the first played message's bag time (published from the moment the publishers
exist, through ``wait_for_subscribers`` and ``delay``), advances ``rate`` times as fast as the wall
clock between messages (never past the next message's time), and is published at exactly each
message's bag time right before that message. Shortened pauses (``max_gap``) make it jump forward;
``loops`` make it jump back to the start. ``wait_for_subscribers`` then also waits for a ``/clock``
subscriber (a node with ``use_sim_time`` has one).
"""

from __future__ import annotations

import importlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import rclpy
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosReliability
from rosgraph_msgs.msg import Clock

from pebal_ros.bag_storage import BagError, BagReader

NODE_NAME = "pebal_bag_play"
CLOCK_TOPIC = "/clock"
DEFAULT_CLOCK_HZ = 40.0
"""``--clock`` without a rate publishes this often (``ros2 bag play``'s default)."""


def message_class(msgtype: str) -> type:
    """``sensor_msgs/msg/Image`` -> the rclpy message class (its package must be importable)."""
    pkg, kind, name = (msgtype.split("/") + ["", ""])[:3]
    try:
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise BagError(
            f"message type {msgtype} is not available to rclpy here ({e}); install its interface package "
            "or leave the topic out with --topics"
        ) from e


def qos_profile(offered: tuple[Qos, ...], default_depth: int = 10) -> QoSProfile:
    """An rclpy QoS profile from a bag topic's offered profiles (first one), else reliable depth ``default_depth``."""
    q = offered[0] if offered else None
    reliable = q is None or q.reliability != QosReliability.BEST_EFFORT
    transient = q is not None and q.durability == QosDurability.TRANSIENT_LOCAL
    keep_all = q is not None and q.history == QosHistory.KEEP_ALL
    depth = q.depth if q is not None and q.depth > 0 else default_depth
    return QoSProfile(
        history=HistoryPolicy.KEEP_ALL if keep_all else HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if transient else DurabilityPolicy.VOLATILE,
    )


def parse_remaps(items: list[str] | None) -> dict[str, str]:
    """``["/a:=/b", ...]`` -> ``{"/a": "/b"}`` (absolute topic names on both sides)."""
    out = {}
    for item in items or []:
        old, sep, new = item.partition(":=")
        if not sep or not old.startswith("/") or not new.startswith("/"):
            raise ValueError(f"remap {item!r} must be /old/topic:=/new/topic")
        out[old] = new
    return out


@dataclass
class PlayOptions:
    """How :class:`Player` publishes (the ``pebal_bag play`` options)."""

    rate: float = 1.0
    """Playback speed factor (2 = twice as fast)."""
    start_offset: float = 0.0
    """Seconds into the bag to start from."""
    loops: int = 1
    """Times to play the bag; 0 = until stopped."""
    topics: tuple[str, ...] | None = None
    """Topics to publish (None = all)."""
    remap: dict[str, str] = field(default_factory=dict)
    max_gap: float | None = None
    """Longest pause between two messages in bag seconds (None = as recorded)."""
    wait_for_subscribers: float = 0.0
    """Before publishing, wait up to this many seconds until every topic has a subscriber (0 = don't)."""
    subscribers: dict[str, int] = field(default_factory=dict)
    """Published topic -> how many subscribers the wait needs on it (other topics: 1); e.g. a
    node and a recorder on one topic, so that the recorder cannot miss the first messages."""
    delay: float = 0.0
    """Seconds to sleep after the publishers are created (and matched) before the first message."""
    clock: float | None = None
    """Publish ``/clock`` from the bag's time this many times per second (None = no clock)."""

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise ValueError(f"rate must be > 0, got {self.rate}")
        if self.start_offset < 0:
            raise ValueError(f"start offset must be >= 0 seconds, got {self.start_offset}")
        if self.loops < 0:
            raise ValueError(f"loops must be >= 0 (0 = forever), got {self.loops}")
        if self.max_gap is not None and not self.max_gap > 0:
            raise ValueError(f"max gap must be > 0 seconds, got {self.max_gap}")
        if self.wait_for_subscribers < 0 or self.delay < 0:
            raise ValueError("wait and delay times must be >= 0 seconds")
        if self.clock is not None and not 0 < self.clock <= 10_000:
            raise ValueError(f"the clock rate must be in (0, 10000] Hz, got {self.clock}")
        bad = {t: n for t, n in self.subscribers.items() if not t.startswith("/") or int(n) < 1}
        if bad:
            raise ValueError(f"subscriber counts need absolute topics and counts >= 1, got {bad}")


@dataclass
class PlayResult:
    """What a :meth:`Player.play` call published."""

    published: dict[str, int]
    """Output topic -> messages published."""
    loops: int
    wall_s: float
    schedule: list[tuple[str, int, float, float]]
    """Per message: output topic, bag timestamp (ns), due time and publish time (s after the start)."""


class Player:
    """Plays one bag on an rclpy node (``context`` lets tests use a private context).

    Args:
        bag: the bag folder.
        options: :class:`PlayOptions`.
        context: rclpy context (``None`` = the global one; it must be initialised).
    """

    def __init__(self, bag: str | Path, options: PlayOptions | None = None, context=None) -> None:
        self.bag = Path(bag)
        self.options = options or PlayOptions()
        self._stop = threading.Event()
        with BagReader(self.bag) as reader:
            summary = reader.topics()
            self.start_ns = reader.start_ns
        wanted = list(summary) if self.options.topics is None else list(self.options.topics)
        unknown = [t for t in wanted if t not in summary]
        if unknown:
            raise BagError(f"bag {self.bag} has no topic {', '.join(unknown)}; it holds {', '.join(summary)}")
        unused = [t for t in self.options.remap if t not in wanted]
        if unused:
            raise ValueError(f"remap of {', '.join(unused)}: not a played topic of {self.bag} ({', '.join(wanted)})")
        self.topics = wanted
        self.node: Node = rclpy.create_node(NODE_NAME, context=context)
        self.publishers = {
            t: self.node.create_publisher(
                message_class(summary[t].msgtype), self.options.remap.get(t, t), qos_profile(summary[t].qos)
            )
            for t in wanted
        }
        self.clock_publisher = None
        if self.options.clock is not None:
            if CLOCK_TOPIC in [self.publishers[t].topic_name for t in wanted]:
                raise ValueError(f"the bag has a {CLOCK_TOPIC} topic: leave it out with --topics to publish --clock")
            self.clock_publisher = self.node.create_publisher(Clock, CLOCK_TOPIC, QoSProfile(depth=1))
        self._clock_period = 1.0 / self.options.clock if self.options.clock else None
        self._next_tick = 0.0

    def stop(self) -> None:
        """Ask a running :meth:`play` to return after the message in flight."""
        self._stop.set()

    def close(self) -> None:
        self.node.destroy_node()

    def _publish_clock(self, bag_ns: int) -> None:
        msg = Clock()
        msg.clock.sec, msg.clock.nanosec = divmod(int(bag_ns), 1_000_000_000)
        self.clock_publisher.publish(msg)
        self._next_tick = time.monotonic() + self._clock_period

    def _sleep(self, seconds: float, bag_ns: int = 0, bag_limit_ns: int = 0) -> bool:
        """Wait ``seconds`` (False when stopped meanwhile). With a clock: publish it every period,
        advancing from ``bag_ns`` at ``rate`` bag seconds per second, never past ``bag_limit_ns``."""
        if self.clock_publisher is None:
            return seconds <= 0 or not self._stop.wait(seconds)
        t0 = time.monotonic()
        end = t0 + seconds
        while True:
            now = time.monotonic()
            if now >= end:
                return True
            if self._stop.wait(max(0.0, min(end, self._next_tick) - now)):
                return False
            now = time.monotonic()
            if now >= self._next_tick and now < end:
                advanced = bag_ns + round((now - t0) * self.options.rate * 1e9)
                self._publish_clock(min(advanced, max(bag_limit_ns, bag_ns)))

    def _wait_for_subscribers(self, bag_ns: int) -> None:
        timeout = self.options.wait_for_subscribers
        if timeout <= 0:
            return
        deadline = time.monotonic() + timeout
        publishers = list(self.publishers.values())
        if self.clock_publisher is not None:
            publishers.append(self.clock_publisher)
        need = {p.topic_name: int(self.options.subscribers.get(p.topic_name, 1)) for p in publishers}
        while True:
            counts = {p.topic_name: p.get_subscription_count() for p in publishers}
            lacking = [t for t, n in counts.items() if n < need[t]]
            if not lacking:
                return
            if time.monotonic() > deadline:
                if all(counts[t] == 0 for t in lacking):
                    what = f"no subscriber on {', '.join(lacking)}"
                else:
                    what = "too few subscribers: " + ", ".join(f"{t} {counts[t]} of {need[t]}" for t in lacking)
                raise BagError(
                    f"{what} after {timeout:g} s; start the consumer first, "
                    "check remaps and ROS_DOMAIN_ID, or leave those topics out with --topics"
                )
            if not self._sleep(0.02, bag_ns, bag_ns):
                return

    def play(self, keep_schedule: bool = False) -> PlayResult:
        """Publish the bag (``loops`` times); returns counts (and, with ``keep_schedule``, the schedule)."""
        o = self.options
        first_ns = self.start_ns + round(o.start_offset * 1e9) if o.start_offset else None
        start_bag_ns = 0
        if self.clock_publisher is not None:
            start_bag_ns = self._first_message_ns(first_ns)
            self._publish_clock(start_bag_ns)
        self._wait_for_subscribers(start_bag_ns)
        if o.delay:
            self._sleep(o.delay, start_bag_ns, start_bag_ns)
        published = dict.fromkeys((self.publishers[t].topic_name for t in self.topics), 0)
        schedule: list[tuple[str, int, float, float]] | None = [] if keep_schedule else None
        t_start = time.monotonic()
        due_base = 0.0
        loops = 0
        while not self._stop.is_set() and (o.loops == 0 or loops < o.loops):
            loop_end = self._play_once(first_ns, t_start, due_base, published, schedule)
            loops += 1
            due_base = loop_end
        return PlayResult(published, loops, time.monotonic() - t_start, schedule or [])

    def _first_message_ns(self, first_ns: int | None) -> int:
        """Bag time of the first message played (from ``first_ns`` on)."""
        with BagReader(self.bag) as reader:
            for _, ts, _ in reader.messages(self.topics, start_ns=first_ns):
                return ts
        return first_ns or self.start_ns

    def _play_once(
        self, first_ns: int | None, t_start: float, due_base: float, published: dict, schedule: list | None
    ) -> float:
        """One pass over the bag; returns the due time (s after start) of its last message."""
        o = self.options
        due = due_base
        prev_ns = None
        with BagReader(self.bag) as reader:
            for conn, ts, data in reader.messages(self.topics, start_ns=first_ns):
                if self._stop.is_set():
                    break
                gap = 0.0 if prev_ns is None else (ts - prev_ns) / 1e9
                if o.max_gap is not None:
                    gap = min(gap, o.max_gap)
                due += gap / o.rate
                wait = t_start + due - time.monotonic()
                if not self._sleep(wait, prev_ns if prev_ns is not None else ts, ts):
                    break
                prev_ns = ts
                if self.clock_publisher is not None:
                    self._publish_clock(ts)
                pub = self.publishers[conn.topic]
                pub.publish(data)
                published[pub.topic_name] += 1
                if schedule is not None:
                    schedule.append((pub.topic_name, ts, due, time.monotonic() - t_start))
        return due
