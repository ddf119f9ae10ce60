"""The diagnostics of ``pebal_node``: its counters and the one DiagnosticStatus it publishes.

The node has one diagnostic task (``<node name>: anomaly segmentation``) and publishes its status
on ``/diagnostics`` every ``diagnostics_period`` seconds, in the shape ``diagnostic_updater`` gives a
task: key/value pairs (counters, rates, latency percentiles, model, settings) and one summary,
whose level and message are those of the most severe finding (:func:`summary`):

1. ERROR: the inference thread stopped, or one frame has been in flight (or frames have waited
   untaken) for longer than ``watchdog_timeout`` (:func:`watchdog_problem`);
2. ERROR: a frame failed since the last report;
3. ERROR: the newest frame's anomaly score is NaN or infinite somewhere (:func:`nonfinite_problem`):
   alarms cannot fire there; it stays ERROR until a frame comes out finite;
4. ERROR: the output rate is below half of ``requirements.min_rate`` x (1 - tolerance), or the
   median latency above ``requirements.max_latency`` x (1 + tolerance), over the last
   ``requirements.window`` seconds (:func:`requirement_findings`);
5. WARN: no frame on ``image`` for ``input_timeout`` seconds although it has a publisher
   (:class:`InputSilence`);
6. WARN: the output rate below ``min_rate`` x (1 - tolerance), or one frame later than
   ``max_latency`` x (1 + tolerance), over the window;
7. WARN: frames rejected, lost before the node, or with bad stamps since the last report;
8. OK: waiting for the first image, or the frame rates.

Rate and latency are judged the way ``diagnostic_updater``'s ``FrequencyStatus`` and
``TimeStampStatus`` judge a topic (a bound with a tolerance over a sliding window), against what
the user says the application needs; both are off (0) by default. The rate is judged once
frames have been arriving for one window (start-up is not a miss).
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from pebal_core.percentiles import percentiles
from pebal_core.scoring import nonfinite_pixels
from pebal_ros.node_parameters import OUTPUTS, Requirements

STATS_WINDOW = 300
"""Frames over which latency percentiles are computed."""
PUBLISHED_HISTORY = 1 << 17
"""Published frames remembered for the requirement window (218 frames/s over the longest, 600 s, window)."""
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
    nonfinite: str | None = None
    """Why the newest frame's score cannot be trusted (:func:`nonfinite_problem`), None when finite."""
    missed: list[tuple[bytes, str]] = field(default_factory=list)
    """``(level, message)`` of each requirement missed over its window (:func:`requirement_findings`)."""


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
    ego_mask_unfit: int = 0
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
    first_frame: float | None = None  # time.monotonic() of the first frame received
    published_at: deque = field(default_factory=lambda: deque(maxlen=PUBLISHED_HISTORY))
    """``(time.monotonic(), latency ms or NaN for a bad stamp)`` of every published frame, oldest first."""
    nonfinite_frames: int = 0
    nonfinite_last: int = 0  # NaN/inf pixels of the newest frame's score
    nonfinite_size: int = 0  # pixels of that frame

    def period(self, now: float, pending: int, requirements: Requirements | None = None) -> Period:
        """The counters and rates since the last call (``now``: ``time.monotonic()``), whose
        per-period problem counts it resets; ``pending`` frames wait in the mailbox; the
        ``requirements`` are judged over their window."""
        with self.lock:
            t_prev, in_prev, out_prev = self.last_report
            dt = max(now - t_prev, 1e-9)
            rate_in, rate_out = (self.frames_in - in_prev) / dt, (self.frames_out - out_prev) / dt
            self.last_report = (now, self.frames_in, self.frames_out)
            problems, errors = self.problems_since_report, self.errors_since_report
            self.problems_since_report = self.errors_since_report = 0
            values = counter_values(self, pending, rate_in, rate_out)
            values["requirements"] = requirements_text(requirements) if requirements is not None else "none"
            missed = (
                requirement_findings(now, self.published_at, self.first_frame, requirements, rate_in)
                if requirements is not None
                else []
            )
            return Period(
                values, rate_in, rate_out, problems, errors, self.busy_since, self.waiting_since,
                self.worker_failure, self.last_frame, nonfinite_problem(self), missed,
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
            self.first_frame = now if self.first_frame is None else self.first_frame
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

    def scores(self, score: np.ndarray) -> str | None:
        """Count the NaN/inf pixels of a frame's score map; the problem to warn about when this frame
        starts a run of frames with them, else None."""
        nonfinite, size = nonfinite_pixels(score), score.size
        with self.lock:
            starts = nonfinite > 0 and self.nonfinite_last == 0
            self.nonfinite_frames += int(nonfinite > 0)
            self.nonfinite_last, self.nonfinite_size = nonfinite, size
            return nonfinite_problem(self) if starts else None

    def unfit_ego_mask(self, text: str) -> None:
        """A frame the ego mask does not fit (another aspect ratio) ran without it."""
        with self.lock:
            self.ego_mask_unfit += 1
            self._problem(text)

    def failed_frame(self, text: str) -> None:
        with self.lock:
            self.inference_errors += 1
            self.errors_since_report += 1
            self.last_problem = text

    def frame_done(
        self, published: list[str], inference_ms: float, processing_ms: float, latency_ms: float, obstacles: int
    ) -> bool:
        """Count a processed frame (``obstacles``: how many its alarm chain found); False when its
        latency lies outside :data:`LATENCY_WINDOW_MS` (a bad stamp, not averaged in)."""
        sane = LATENCY_WINDOW_MS[0] <= latency_ms <= LATENCY_WINDOW_MS[1]
        with self.lock:
            self.frames_out += 1
            self.published_at.append((time.monotonic(), latency_ms if sane else math.nan))
            for name in published:
                self.published[name] += 1
            self.inference_ms.append(inference_ms)
            self.processing_ms.append(processing_ms)
            if sane:
                self.latency_ms.append(latency_ms)
            else:
                self.bad_stamps += 1
                self._problem(f"bad header stamp: node clock - stamp = {latency_ms / 1e3:.6g} s")
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
        "frames_without_ego_mask": st.ego_mask_unfit,
        "pending_frames": pending,
        **{f"published_{name}": n for name, n in st.published.items()},
        "rate_in_hz": f"{rate_in:.2f}",
        "rate_out_hz": f"{rate_out:.2f}",
        **{f"inference_ms_{k}": f"{v:.2f}" for k, v in percentiles(st.inference_ms, (50, 90, 99)).items()},
        **{f"processing_ms_{k}": f"{v:.2f}" for k, v in percentiles(st.processing_ms, (50, 90, 99)).items()},
        **{f"latency_ms_{k}": f"{v:.2f}" for k, v in percentiles(st.latency_ms, (50, 90, 99)).items()},
        "frames_nonfinite_score": st.nonfinite_frames,
        "nonfinite_pixels_last_frame": st.nonfinite_last,
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


def nonfinite_problem(st: Stats) -> str | None:
    """Why the newest frame's score cannot be trusted (None when it is finite everywhere); the
    caller holds ``st.lock``."""
    if not st.nonfinite_last:
        return None
    return (
        f"the anomaly score of the newest frame is NaN or infinite at {st.nonfinite_last} of {st.nonfinite_size} "
        f"pixels ({st.nonfinite_frames} frames so far): no alarm can fire there; the model or backend is broken "
        "(normalisation, weights, numeric overflow)"
    )


def requirement_findings(
    now: float, published: deque, first_frame: float | None, req: Requirements, rate_in: float
) -> list[tuple[bytes, str]]:
    """``(level, message)`` for each requirement the node misses (see the module docstring).

    ``published`` holds ``(time.monotonic(), latency ms)`` per published frame (NaN latency: a bad
    stamp, not judged); entries older than ``req.window`` seconds are dropped from it. ``now`` and
    ``first_frame`` are ``time.monotonic()`` seconds, ``rate_in`` the input rate (frames/s) for the
    message.
    """
    while published and published[0][0] < now - req.window:
        published.popleft()
    found = []
    pct = f"{req.tolerance:.0%}"
    if req.min_rate > 0 and first_frame is not None and now - first_frame >= req.window:
        rate = len(published) / req.window
        bound = req.min_rate * (1 - req.tolerance)
        text = (
            f"output rate {rate:.2f} frames/s over the last {req.window:g} s (input {rate_in:.1f}/s) is below "
            f"requirements.min_rate {req.min_rate:g}/s - {pct} = {bound:.3g}/s"
        )
        if rate < bound / 2:
            found.append((DiagnosticStatus.ERROR, text + f", even below half of it ({bound / 2:.3g}/s)"))
        elif rate < bound:
            found.append((DiagnosticStatus.WARN, text))
    latencies = [ms for _, ms in published if not math.isnan(ms)]
    if req.max_latency > 0 and latencies:
        bound_ms = req.max_latency * (1 + req.tolerance) * 1e3
        late = sum(ms > bound_ms for ms in latencies)
        median = percentiles(latencies, (50,))["p50"]
        head = f"requirements.max_latency {req.max_latency * 1e3:g} ms + {pct} = {bound_ms:.4g} ms"
        if median > bound_ms:
            found.append(
                (
                    DiagnosticStatus.ERROR,
                    f"median latency {median:.1f} ms over the last {req.window:g} s ({len(latencies)} frames, "
                    f"worst {max(latencies):.1f} ms) exceeds {head}",
                )
            )
        elif late:
            found.append(
                (
                    DiagnosticStatus.WARN,
                    f"{late} of {len(latencies)} frames over the last {req.window:g} s were later than {head} "
                    f"(worst {max(latencies):.1f} ms)",
                )
            )
    return found


def requirements_text(req: Requirements) -> str:
    """The judged requirements for the diagnostics values ("none" when both are 0)."""
    parts = [
        f"min_rate {req.min_rate:g}/s" if req.min_rate > 0 else "",
        f"max_latency {req.max_latency * 1e3:g} ms" if req.max_latency > 0 else "",
    ]
    judged = ", ".join(p for p in parts if p)
    return f"{judged}, tolerance {req.tolerance:.0%}, window {req.window:g} s" if judged else "none"


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
    if period.nonfinite:
        return DiagnosticStatus.ERROR, period.nonfinite
    missed = sorted(period.missed, key=lambda finding: finding[0], reverse=True)
    if missed and missed[0][0] == DiagnosticStatus.ERROR:
        return missed[0]
    if silence:
        return DiagnosticStatus.WARN, silence
    if missed:
        return missed[0]
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
