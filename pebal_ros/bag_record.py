"""Subscribe to topics and write what arrives to a bag (``pebal_bag record``).

Messages are stored as the raw CDR bytes received (``raw=True`` subscriptions), at bag time =
receive time (the node clock, nanoseconds since the epoch), as ``ros2 bag record`` does; header
stamps are untouched, so :mod:`pebal_ros.bag_score` can match outputs to input frames and
measure latency as ``receive time of the output - receive time of the input with the same
stamp``.

A topic is given either as ``/name`` — its type and QoS are discovered from the ROS graph once a
publisher appears (the subscription is reliable only if every publisher is, and the publishers'
QoS is stored in the bag) — or as ``/name:pkg/msg/Type``, subscribed at once with a reliable
keep-last-100 subscription (for topics whose publisher starts later, so the first messages are
not missed).

The bag is written under a hidden temporary name and appears at the output path only when the
recorder closes cleanly (Ctrl-C, SIGTERM, ``duration`` or ``idle_timeout``). Every
``flush_period`` seconds what was received is put into the storage file, so a recorder that is
killed (SIGKILL, power loss) loses at most that much: ``pebal_bag recover`` turns the partial
data into a bag (:mod:`pebal_ros.bag_recover`). When the storage fails (a full disk, an I/O or
database error: :class:`pebal_ros.bag_storage.StorageError`) recording stops at once, and
:meth:`Recorder.close` leaves the data as such an unfinished recording and raises one
:class:`~pebal_ros.bag_storage.BagError` naming the file, the cause and the ``recover`` command:
no ``metadata.yaml`` is written that could count messages the storage lost.

Stopping on a signal (:func:`stop_on_signals`): SIGINT and SIGTERM only set a flag; the loop that
spins the recorder sees it between two callbacks and closes the bag. Nothing interrupts a write
halfway (a ``KeyboardInterrupt`` raised between the storage write and the bookkeeping left bags
holding one message more than their metadata said), and rclpy's own signal handling, which shuts
the context down from a separate thread while this one may still be spinning or destroying the
node, must be switched off (``rclpy.init(signal_handler_options=SignalHandlerOptions.NO)``).
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from pebal_ros.bag_play import message_class
from pebal_ros.bag_storage import BagError, StorageError, bag_writer, make_qos

NODE_NAME = "pebal_bag_record"
SUBSCRIPTION_DEPTH = 100


def parse_topic(spec: str) -> tuple[str, str | None]:
    """``/name`` or ``/name:pkg/msg/Type`` -> ``(name, type or None)``."""
    name, _, msgtype = spec.partition(":")
    if not name.startswith("/") or name.endswith("/") or "//" in name:
        raise ValueError(
            f"topic {spec!r} must be an absolute name like /pebal/anomaly_score (optionally :pkg/msg/Type)"
        )
    if msgtype and msgtype.count("/") != 2:
        raise ValueError(f"topic type in {spec!r} must look like sensor_msgs/msg/Image")
    return name, msgtype or None


@dataclass
class RecordOptions:
    """What :class:`Recorder` records (the ``pebal_bag record`` options)."""

    topics: tuple[str, ...]
    storage: str = "mcap"
    duration: float | None = None
    """Stop after this many seconds (None = until stopped)."""
    idle_timeout: float | None = None
    """Stop when nothing arrived for this many seconds after the first message (None = never)."""
    discovery_period: float = 0.1
    flush_period: float = 1.0
    """Seconds between flushes of the received messages into the storage file (what a kill can lose)."""

    def __post_init__(self) -> None:
        if not self.topics:
            raise ValueError("name at least one topic to record")
        for spec in self.topics:
            parse_topic(spec)
        for value, what in (
            (self.duration, "duration"),
            (self.idle_timeout, "idle timeout"),
            (self.flush_period, "flush period"),
        ):
            if value is not None and not value > 0:
                raise ValueError(f"{what} must be > 0 seconds, got {value}")


class Recorder:
    """Records ``options.topics`` into a bag at ``out`` on an rclpy node (see the module docstring).

    Spin :attr:`node` with any executor; call :meth:`close` to finish the bag. :meth:`done`
    says when ``duration``/``idle_timeout`` have run out.
    """

    def __init__(self, out: str | Path, options: RecordOptions, context=None) -> None:
        self.out = Path(out)
        self.options = options
        specs = [parse_topic(s) for s in options.topics]
        names = [n for n, _ in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"topics named twice: {', '.join(sorted({n for n in names if names.count(n) > 1}))}")
        self._pending = {n: t for n, t in specs}
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.first_rx: float | None = None
        self.last_rx: float | None = None
        self.started = time.monotonic()
        self.failure: StorageError | None = None
        """The storage failure that stopped the recording (None while it runs or when it ended well)."""
        self._bag_cm = bag_writer(self.out, options.storage, keep_unfinished=True)
        self.bag = self._bag_cm.__enter__()
        self._closed = False
        self.node: Node = Node(NODE_NAME, context=context)
        self._subscriptions = []
        try:
            for name, msgtype in list(self._pending.items()):
                if msgtype is not None:
                    self._subscribe(name, msgtype, reliable=True, transient=False, offered=())
            self._timer = self.node.create_timer(options.discovery_period, self._discover)
            self._flush_timer = self.node.create_timer(options.flush_period, self.flush)
        except BaseException as e:
            self._abort(e)
            raise

    # ------------------------------------------------------------------ subscriptions
    def _subscribe(self, name: str, msgtype: str, reliable: bool, transient: bool, offered: tuple) -> None:
        cls = message_class(msgtype)
        with self._lock:
            self.bag.add_topic(name, msgtype, offered)
            self.counts[name] = 0
        qos = QoSProfile(
            history=HistoryPolicy.KEEP_LAST,
            depth=SUBSCRIPTION_DEPTH,
            reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
            durability=DurabilityPolicy.TRANSIENT_LOCAL if transient else DurabilityPolicy.VOLATILE,
        )
        self._subscriptions.append(self.node.create_subscription(cls, name, self._writer(name), qos, raw=True))
        del self._pending[name]

    def _discover(self) -> None:
        if not self._pending:
            return
        graph = dict(self.node.get_topic_names_and_types())
        for name in [n for n in self._pending if n in graph]:
            types = graph[name]
            if len(types) != 1:
                raise BagError(
                    f"topic {name} is published with several types ({', '.join(types)}); name one as {name}:TYPE"
                )
            infos = self.node.get_publishers_info_by_topic(name)
            if not infos:
                continue
            profiles = [i.qos_profile for i in infos]
            reliable = all(p.reliability == ReliabilityPolicy.RELIABLE for p in profiles)
            transient = all(p.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in profiles)
            offered = tuple(
                make_qos(
                    p.reliability == ReliabilityPolicy.RELIABLE,
                    max(int(p.depth), 1),
                    p.durability == DurabilityPolicy.TRANSIENT_LOCAL,
                )
                for p in profiles
            )
            self._subscribe(name, types[0], reliable, transient, offered)

    @property
    def ready(self) -> bool:
        """Whether every topic is subscribed (typed ones at once, others once discovered)."""
        return not self._pending

    @property
    def pending_topics(self) -> list[str]:
        return list(self._pending)

    def matched_topics(self) -> set[str]:
        """Topics whose subscription is matched with at least one publisher now."""
        return {sub.topic_name for sub in self._subscriptions if sub.get_publisher_count() > 0}

    def _writer(self, name: str):
        clock = self.node.get_clock()

        def write(data: bytes) -> None:
            now_ns = clock.now().nanoseconds
            with self._lock:
                if self._closed or self.failure is not None:
                    return
                try:
                    self.bag.write_raw(name, now_ns, data)
                except StorageError as e:
                    self.failure = e
                    return
                self.counts[name] += 1
                t = time.monotonic()
                self.first_rx = self.first_rx or t
                self.last_rx = t

        return write

    def flush(self) -> None:
        """Put every message received so far into the storage file (see the module docstring)."""
        with self._lock:
            if self._closed or self.failure is not None:
                return
            try:
                self.bag.flush()
            except StorageError as e:
                self.failure = e

    # ------------------------------------------------------------------ stopping
    def done(self) -> bool:
        """True once ``duration`` has passed, ``idle_timeout`` expired after the first message, or
        the storage failed (:attr:`failure`)."""
        now = time.monotonic()
        o = self.options
        if self.failure is not None:
            return True
        if o.duration is not None and now - self.started >= o.duration:
            return True
        with self._lock:
            last = self.last_rx
        return o.idle_timeout is not None and last is not None and now - last >= o.idle_timeout

    def close(self) -> Path:
        """Destroy the node, then finish the bag (renamed into place); returns the bag path.

        After a storage failure (:attr:`failure`), or when the bag cannot be finished, the data stays
        as an unfinished recording and a :class:`~pebal_ros.bag_storage.BagError` says where and how
        to recover it. Call it after the executor stopped spinning :attr:`node` and before the
        context is shut down.
        """
        with self._lock:
            if self._closed:
                return self.out
            self._closed = True
            failure = self.failure
        self.node.destroy_node()
        if failure is not None:
            self._bag_cm.__exit__(type(failure), failure, failure.__traceback__)
        else:
            self._bag_cm.__exit__(None, None, None)
        return self.out

    def _abort(self, e: BaseException) -> None:
        with self._lock:
            self._closed = True
        try:
            self._bag_cm.__exit__(type(e), e, e.__traceback__)
        except BaseException:
            pass


class StopFlag:
    """Set by a signal handler, polled by the loop that spins the recorder.

    A plain attribute, not a :class:`threading.Event`: ``Event.set`` takes a lock that the
    interrupted main thread may hold, so calling it from a signal handler can deadlock.
    """

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


@contextmanager
def stop_on_signals(signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[StopFlag]:
    """Within the block, ``signals`` set the yielded flag instead of raising or terminating.

    Must be entered in the main thread. The previous handlers come back when the block ends.
    """
    stop = StopFlag()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in signals}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
