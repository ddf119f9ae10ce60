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
from dataclasses import dataclass, field

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

from pebal_core.percentiles import percentiles
from pebal_ros.node_parameters import OUTPUTS

STATS_WINDOW = 300
"""Frames over which latency percentiles are computed."""


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


def watchdog_problem(
    now: float,
    worker_stopped: bool,
    failure: str,
    busy_since: float | None,
    waiting_since: float | None,
    timeout: float,
) -> str | None:
    """Why the worker is not producing output (None when it is running normally); times are
    ``time.monotonic()`` seconds, ``timeout`` is ``watchdog_timeout`` (s)."""
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


def summary(
    stalled: str | None,
    errors: int,
    silence: str | None,
    problems: int,
    values: dict[str, object],
    rate_in: float,
    rate_out: float,
    image_topic: str,
) -> tuple[bytes, str]:
    """The level and message of the status: the most severe finding (see the module docstring)."""
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
