"""The diagnostics of ``pebal_node``: its counters and the one DiagnosticStatus it publishes.

The node has one diagnostic task (``<node name>: anomaly segmentation``) and publishes its status
on ``/diagnostics`` every ``diagnostics_period`` seconds, in the shape ``diagnostic_updater`` gives a
task: key/value pairs (counters, rates, latency percentiles, model, settings) and one summary,
whose level and message are those of the most severe finding (:func:`summary`):

1. ERROR: the inference thread stopped, or one frame has been in flight (or frames have waited
   untaken) for longer than ``watchdog_timeout`` (:func:`watchdog_problem`);
2. ERROR: a frame failed since the last report;
3. WARN: no frame on ``image`` for ``input_timeout`` seconds although it has a publisher
   (:class:`InputSilence`);
4. WARN: frames rejected, lost before the node, or with bad stamps since the last report;
5. OK: waiting for the first image, or the frame rates.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from pebal_core.percentiles import percentiles
from pebal_ros.node_parameters import OUTPUTS

STATS_WINDOW = 300
"""Frames over which latency percentiles are computed."""
LATENCY_WINDOW_MS = (-1000.0, 60000.0)
"""Latencies (node clock minus header stamp, ms) outside this window are counted as bad stamps
instead of being averaged in: a stamp of 0, or a camera clock far off the node's. The lower end
allows clocks of two machines to differ by up to 1 s."""
SEQUENCE_PUBLISHERS = 64
"""Publishers whose last sequence number is remembered (for gap counting)."""


def stamp_latency_ms(now_ns: int, sec: int, nanosec: int) -> float:
    """Node clock minus a header stamp, in ms (any stamp, negative or zero, gives a number)."""
    return (now_ns - (int(sec) * 1_000_000_000 + int(nanosec))) / 1e6


@dataclass
class Period:
    """What the counters say about the time since the last report (:meth:`Stats.period`)."""

    values: dict[str, object]
    rate_in: float
    rate_out: float
    problems: int
    errors: int
    busy_since: float | None
    waiting_since: float | None
    failure: str
    last_frame: float


@dataclass
class Stats:
    """Counters and latency windows (milliseconds), guarded by ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    frames_in: int = 0
    frames_out: int = 0
    dropped: int = 0
    skipped: int = 0
    published: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTPUTS, 0))
    rejected: dict[str, int] = field(default_factory=dict)
    inference_errors: int = 0
    sequence_gaps: int = 0
    sequence_measured: bool = False
    bad_stamps: int = 0
    last_frame: float = -math.inf  # time.monotonic() of the last frame received
    busy_since: float | None = None  # time.monotonic() when the worker took the frame in flight
    waiting_since: float | None = None  # time.monotonic() when a frame arrived that no worker has taken yet
    worker_failure: str = ""
    last_problem: str = ""
    problems_since_report: int = 0
    errors_since_report: int = 0
    inference_ms: deque = field(default_factory=lambda: deque(maxlen=STATS_WINDOW))
    processing_ms: deque = field(default_factory=lambda: deque(maxlen=STATS_WINDOW))
    latency_ms: deque = field(default_factory=lambda: deque(maxlen=STATS_WINDOW))
    obstacles_last: int = 0
    obstacles_total: int = 0
    frames_with_obstacles: int = 0
    last_report: tuple[float, int, int] = (-math.inf, 0, 0)  # time.monotonic(), frames in, frames out

    def period(self, now: float, pending: int) -> Period:
        """The counters and rates since the last call (``now``: ``time.monotonic()``), whose
        per-period problem counts it resets; ``pending`` frames wait in the mailbox."""
        with self.lock:
            t_prev, in_prev, out_prev = self.last_report
            dt = max(now - t_prev, 1e-9)
            rate_in, rate_out = (self.frames_in - in_prev) / dt, (self.frames_out - out_prev) / dt
            self.last_report = (now, self.frames_in, self.frames_out)
            problems, errors = self.problems_since_report, self.errors_since_report
            self.problems_since_report = self.errors_since_report = 0
            values = counter_values(self, pending, rate_in, rate_out)
            return Period(
                values, rate_in, rate_out, problems, errors, self.busy_since, self.waiting_since,
                self.worker_failure, self.last_frame,
            )  # fmt: skip

    def busy(self, since: float | None) -> None:
        """The worker took a frame at ``since`` (``time.monotonic()``), or finished it (None)."""
        with self.lock:
            self.busy_since = since
            if since is not None:
                self.waiting_since = None

    def _problem(self, text: str) -> None:
        self.problems_since_report += 1
        self.last_problem = text

    def arrived(self, now: float, dropped: bool, gap: int | None) -> None:
        """A frame reached the callback at ``now`` (``time.monotonic()``), replacing a waiting one
        (``dropped``), after ``gap`` frames of its publisher that never arrived (None: not measurable)."""
        with self.lock:
            self.frames_in += 1
            self.dropped += int(dropped)
            self.last_frame = now
            if self.waiting_since is None:
                self.waiting_since = now
            if gap is not None:
                self.sequence_measured = True
                self.sequence_gaps += gap
                if gap:
                    self._problem(f"{gap} frame(s) lost before reaching the node (publisher sequence gap)")

    def rejected_frame(self, kind: str, text: str) -> None:
        with self.lock:
            self.rejected[kind] = self.rejected.get(kind, 0) + 1
            self._problem(text)

    def failed_frame(self, text: str) -> None:
        with self.lock:
            self.inference_errors += 1
            self.errors_since_report += 1
            self.last_problem = text

    def frame_done(
        self, published: list[str], inference_ms: float, processing_ms: float, latency_ms: float, obstacles: int | None
    ) -> bool:
        """Count a processed frame (``obstacles`` None: the alarm chain did not run); False when its
        latency lies outside :data:`LATENCY_WINDOW_MS` (a bad stamp, not averaged in)."""
        sane = LATENCY_WINDOW_MS[0] <= latency_ms <= LATENCY_WINDOW_MS[1]
        with self.lock:
            self.frames_out += 1
            for name in published:
                self.published[name] += 1
            self.inference_ms.append(inference_ms)
            self.processing_ms.append(processing_ms)
            if sane:
                self.latency_ms.append(latency_ms)
            else:
                self.bad_stamps += 1
                self._problem(f"bad header stamp: node clock - stamp = {latency_ms / 1e3:.6g} s")
            if obstacles is not None:
                self.obstacles_last = obstacles
                self.obstacles_total += obstacles
                self.frames_with_obstacles += int(obstacles > 0)
        return sane


class SequenceGaps:
    """Frames lost between a publisher and the node, from the publication sequence numbers."""

    def __init__(self) -> None:
        self._last: dict[bytes, int] = {}

    def gap(self, info: Mapping) -> int | None:
        """Frames this publisher sent between its previous frame and this one that never arrived
        (0 for consecutive frames and a publisher's first frame); None when the middleware gives no
        publication sequence numbers (``info``: the subscription's ``MessageInfo``)."""
        seq, gid = info.get("publication_sequence_number"), info.get("publisher_gid")
        if not seq or not gid:
            return None
        key = bytes(gid["data"]) if isinstance(gid, dict) else bytes(gid)
        last = self._last.pop(key, None)
        self._last[key] = max(seq, last or 0)  # re-inserted: the dict's order is least recently seen first
        if len(self._last) > SEQUENCE_PUBLISHERS:
            del self._last[next(iter(self._last))]
        return seq - last - 1 if last is not None and seq > last else 0


class WarningThrottle:
    """At most one log line per ``period`` seconds per kind of warning; the rest are counted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, tuple[float, int]] = {}

    def text(self, kind: str, text: str, now: float, period: float) -> str | None:
        """``text`` to log now (with the count of those suppressed since), or None to stay quiet."""
        with self._lock:
            last, suppressed = self._last.get(kind, (-math.inf, 0))
            if now - last < period:
                self._last[kind] = (last, suppressed + 1)
                return None
            self._last[kind] = (now, 0)
        return text + (f" ({suppressed} more like this since the last warning)" if suppressed else "")


def counter_values(st: Stats, pending: int, rate_in: float, rate_out: float) -> dict[str, object]:
    """The key/value pairs of the counters (the caller holds ``st.lock``); rates in frames/s,
    latency percentiles in ms."""
    return {
        "frames_in": st.frames_in,
        "frames_out": st.frames_out,
        "frames_dropped": st.dropped,
        "frames_skipped": st.skipped,
        "frames_rejected": sum(st.rejected.values()),
        **{f"rejected_{kind}": n for kind, n in sorted(st.rejected.items())},
        "inference_errors": st.inference_errors,
        "frames_lost_before_node": st.sequence_gaps if st.sequence_measured or not st.frames_in else "not measurable",
        "bad_stamps": st.bad_stamps,
        "pending_frames": pending,
        **{f"published_{name}": n for name, n in st.published.items()},
        "rate_in_hz": f"{rate_in:.2f}",
        "rate_out_hz": f"{rate_out:.2f}",
        **{f"inference_ms_{k}": f"{v:.2f}" for k, v in percentiles(st.inference_ms, (50, 90, 99)).items()},
        **{f"processing_ms_{k}": f"{v:.2f}" for k, v in percentiles(st.processing_ms, (50, 90, 99)).items()},
        **{f"latency_ms_{k}": f"{v:.2f}" for k, v in percentiles(st.latency_ms, (50, 90, 99)).items()},
        "obstacles_last_frame": st.obstacles_last,
        "obstacles_total": st.obstacles_total,
        "frames_with_obstacles": st.frames_with_obstacles,
        "last_problem": st.last_problem,
    }


def watchdog_problem(now: float, worker_stopped: bool, period: Period, timeout: float) -> str | None:
    """Why the worker is not producing output (None when it is running normally); times are
    ``time.monotonic()`` seconds, ``timeout`` is ``watchdog_timeout`` (s)."""
    failure, busy_since, waiting_since = period.failure, period.busy_since, period.waiting_since
    if worker_stopped:
        return (
            f"the inference thread has stopped ({failure or 'no exception recorded'}): frames are not "
            "processed; restart the node"
        )
    if busy_since is not None and now - busy_since > timeout:
        return (
            f"no output for {now - busy_since:.1f} s: one frame has been in processing for longer than "
            f"watchdog_timeout = {timeout} s (the backend hangs or the model is far "
            "too slow for this device)"
        )
    if waiting_since is not None and now - waiting_since > timeout:
        return (
            f"frames arrive but none has been taken for processing for {now - waiting_since:.1f} s "
            f"(watchdog_timeout = {timeout} s): the inference thread is stuck"
        )
    return None


class InputSilence:
    """Tells when no frame arriving is suspicious: the image topics have a publisher, and neither
    a frame nor that publisher's appearance is more recent than ``input_timeout`` seconds."""

    def __init__(self) -> None:
        self.publisher_since: float | None = None  # when an image topic was first seen with a publisher

    def check(self, now: float, last_frame: float, publishers: dict[str, int], timeout: float) -> str | None:
        """Why the silence is suspicious (None when frames arrive or nobody publishes);
        ``publishers`` maps each image topic to its matched publisher count, ``timeout`` 0 = never."""
        total = sum(publishers.values())
        if not total:
            self.publisher_since = None
            return None
        if self.publisher_since is None:
            self.publisher_since = now
        silent = now - max(last_frame, self.publisher_since)
        if not timeout or silent <= timeout:
            return None
        topics = ", ".join(topic for topic, n in publishers.items() if n)
        return (
            f"no frame on {topics} for {silent:.1f} s although {total} publisher(s) are matched: frames are "
            "lost before the node (messages larger than the transport delivers with best_effort QoS) or the "
            "camera driver stalled"
        )


def summary(stalled: str | None, silence: str | None, period: Period, image_topic: str) -> tuple[bytes, str]:
    """The level and message of the status: the most severe finding (see the module docstring)."""
    errors, problems, values = period.errors, period.problems, period.values
    rate_in, rate_out = period.rate_in, period.rate_out
    if stalled:
        return DiagnosticStatus.ERROR, stalled
    if errors:
        return DiagnosticStatus.ERROR, str(values["last_problem"])
    if silence:
        return DiagnosticStatus.WARN, silence
    if problems:
        return DiagnosticStatus.WARN, str(values["last_problem"])
    if values["frames_in"] == 0:
        return DiagnosticStatus.OK, f"waiting for images on {image_topic}"
    return DiagnosticStatus.OK, f"{rate_out:.1f} frames/s out of {rate_in:.1f} in"


def status_message(
    name: str, level: bytes, message: str, hardware_id: str, values: dict[str, object]
) -> DiagnosticStatus:
    """The DiagnosticStatus with every value as a string KeyValue."""
    return DiagnosticStatus(
        level=level,
        name=name,
        message=message,
        hardware_id=hardware_id,
        values=[KeyValue(key=k, value=str(v)) for k, v in values.items()],
    )
