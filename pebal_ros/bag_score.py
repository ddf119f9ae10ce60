"""Score a recorded output bag against the ground truth of the converted dataset (``pebal_bag score``).

Inputs: the bag(s) written by :mod:`pebal_ros.bag_convert` (their frame index maps header
stamps to frames and names the dataset layout and root) and a bag recorded from the node
(:mod:`pebal_ros.bag_record`) holding ``anomaly_score`` (``sensor_msgs/Image`` 32FC1, higher =
more anomalous) and, for latency, the camera topic the frames were played on.

Every score image is matched to its frame by header stamp; its label is mapped to 0 inlier /
1 anomaly / 255 void (:func:`pebal_ros.bag_convert.labelled_frames`: for LostAndFound the test
protocol, free space -> 0, hazards -> 1, rest -> void) and the pixels feed
:class:`pebal_core.metrics.AnomalyMetrics`, per sequence and pooled over all frames (AUROC, AP,
FPR95 in the PEBAL definition). Nothing is guessed: frames of the index without an output are
counted as *missing* (e.g. dropped by the node), outputs whose stamp is in no index as
*unmatched*, repeated stamps as *duplicates*, frames without a label file as *unlabelled*; all
appear in the report and the printed table. A score image whose size differs from its label is
an error.

Baselines (``baselines``, e.g. ``maxlogit``; any of :data:`pebal_core.scoring.BASELINES`) are
computed offline from the **same frames** with the **same model** (``model``), by the node's
own pipeline (normalise, forward at native size or ``input_size``, score, resize back). The
PEBAL score is recomputed the same way and compared with the recorded one
(``consistency.max_abs_diff``): a large difference means the node ran another model or input
size than the one given here, and is reported as a warning.

Alarms (``point`` set, the operating point the node ran, and the recording holds the node's
``semantic`` topic): the recorded trainIds and scores go through the node's alarm chain
(:class:`pebal_core.alarms.pipeline.AlarmPipeline` at that point: region, ego mask, persistence,
obstacles; a frame the mask does not fit runs without it, as in the node, and is counted) in
receive order, and :class:`pebal_core.alarms.frame_counts.ObstacleCounts` compares the
obstacles with the labelled hazards of each frame: obstacle detection rate per frame and
false-alarm obstacles per frame.

Throughput and latency come from bag (receive) times: output frames/s over the scored frames,
input frames/s over the reference topic, and latency = receive time of ``anomaly_score`` minus
receive time of the reference message (CameraInfo, published with each image) with the same
stamp — publish-to-result time through DDS and the node, on one clock.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pebal_core.alarms.ego_mask import cached_ego_mask, mask_for_frame
from pebal_core.alarms.frame import FrameContext
from pebal_core.alarms.frame_counts import ObstacleCounts
from pebal_core.alarms.operating_point import OperatingPoint
from pebal_core.alarms.pipeline import AlarmPipeline
from pebal_core.images import read_rgb
from pebal_core.metrics import DEFAULT_MAX_CELLS, AnomalyMetrics
from pebal_core.percentiles import percentiles
from pebal_core.runtime import Predictor
from pebal_core.scoring import BASELINES
from pebal_ros.bag_convert import labelled_frames, read_index
from pebal_ros.bag_storage import BagError, BagReader, metadata, stamp_ns
from pebal_ros.conversions import ImageConverter, ImageError

METHOD_LABELS = {
    "pebal": "PEBAL (node)",
    "maxlogit": "MaxLogit",
    "msp": "MSP",
    "entropy": "Entropy",
    "energy": "Energy",
}
CONSISTENCY_TOLERANCE = 1e-3
"""Largest |offline PEBAL - recorded PEBAL| (energy units) accepted without a warning."""
LIST_AT_MOST = 10
"""Frame names listed per skip category in the report."""


@dataclass
class ScoreOptions:
    """What :func:`score_bag` computes (the ``pebal_bag score`` options)."""

    score_topic: str = "/pebal/anomaly_score"
    reference_topic: str | None = None
    """Input topic whose receive times start the latency clock (None = the converted bags' CameraInfo topic)."""
    baselines: tuple[str, ...] = ()
    model: Path | None = None
    """Checkpoint for the offline baselines (needed when ``baselines`` is not empty)."""
    input_size: tuple[int, int] | None = None
    """(height, width) the node ran the network at, for the offline pass (None = what the node's
    Predictor defaults to: the size the model's metadata records, else native)."""
    data_root: Path | None = None
    """LostAndFound root (None = the one stored in the converted bags)."""
    non_hazards: str = "void"
    point: OperatingPoint | None = None
    """The operating point the node alarmed at (threshold, region, smallest obstacle, persistence);
    with ``semantic_topic`` recorded, the obstacle-level counts replay it."""
    semantic_topic: str = "/pebal/semantic"
    exact: bool = True
    max_cells: int = DEFAULT_MAX_CELLS
    progress: bool = True

    def __post_init__(self) -> None:
        unknown = [b for b in self.baselines if b not in BASELINES]
        if unknown:
            raise ValueError(f"unknown baseline(s) {', '.join(unknown)}; choose from {', '.join(BASELINES)}")
        if self.baselines and self.model is None:
            raise ValueError("offline baselines need the model the node ran (--model)")


@dataclass
class _Counts:
    missing: list[str] = field(default_factory=list)
    unmatched: int = 0
    duplicates: int = 0
    unlabelled: list[str] = field(default_factory=list)


class OfflineScorer:
    """Score maps of RGB frames by a checkpoint, through the node's own
    :class:`~pebal_core.runtime.Predictor` (torch backend)."""

    def __init__(self, model: str | os.PathLike, input_size: tuple[int, int] | None = None) -> None:
        self.predictor = Predictor.from_checkpoint(model, input_size=input_size)

    def __call__(self, rgb: np.ndarray, methods: tuple[str, ...]) -> dict[str, np.ndarray]:
        """``{method: float32 H x W}`` at the image's size."""
        return self.predictor.scores(rgb, methods).scores


def _rate(times_ns: list[int]) -> float | None:
    if len(times_ns) < 2:
        return None
    span = (max(times_ns) - min(times_ns)) / 1e9
    return (len(times_ns) - 1) / span if span > 0 else None


def _summary(metrics: AnomalyMetrics) -> dict:
    m = metrics.compute(curves=False)
    return {
        "auroc": m["auroc"],
        "ap": m["ap"],
        "fpr95": m["fpr95"],
        "n_images": m["n_images"],
        "n_anomaly_pixels": m["n_anomaly_pixels"],
        "n_inlier_pixels": m["n_inlier_pixels"],
        "exact": m["exact"],
    }


def load_index(input_bags: list[Path]) -> tuple[dict[int, tuple[str, str, str, str, str]], set[str]]:
    """Stamp -> (layout, root, split, sequence, name) over all converted bags, and their CameraInfo topics."""
    frames: dict[int, tuple[str, str, str, str, str]] = {}
    info_topics = set()
    for path in input_bags:
        index = read_index(metadata(path), path)
        info_topics.add(index["info_topic"])
        for ns, seq, name in index["frames"]:
            entry = (index["layout"], index["root"], index["split"], seq, name)
            if frames.setdefault(ns, entry) != entry:
                raise BagError(
                    f"stamp {ns} ns names frame {frames[ns][4]} in one converted bag and {name} in {path}; "
                    "score bags of one conversion together"
                )
    return frames, info_topics


def score_bag(output_bag: str | os.PathLike, input_bags: list[Path], options: ScoreOptions | None = None) -> dict:
    """The report dict (see the module docstring); raises :class:`BagError`/``DatasetError`` on bad input.

    The steps: read the converted bags' frame index and the frames' labels, load the offline
    scorer (when baselines are asked for), pass once over the output bag (:class:`_Tally`: each
    score message checked and counted, its frame's label and the offline maps added to the
    metrics, the alarm chain replayed where the semantic topic was recorded), then the report
    (:func:`_report`)."""
    o = options or ScoreOptions()
    index, info_topics = load_index([Path(p) for p in input_bags])
    reference = o.reference_topic or (next(iter(info_topics)) if len(info_topics) == 1 else None)
    frames = labelled_frames(index, o.data_root, o.non_hazards)
    tally = _Tally(o, index, frames, output_bag)
    with BagReader(output_bag) as reader:
        topics = reader.topics()
        if o.score_topic not in topics:
            raise BagError(
                f"output bag {output_bag} has no {o.score_topic}; it holds {', '.join(topics) or 'nothing'} "
                "(record the node's anomaly_score topic, or pass --score-topic)"
            )
        tally.alarms = o.point is not None and o.semantic_topic in topics
        wanted = [o.score_topic] + ([reference] if reference in topics else [])
        wanted += [o.semantic_topic] if tally.alarms else []
        bar = tqdm(total=topics[o.score_topic].count, desc="score", unit="frame", disable=not o.progress)
        for i, (conn, ts, data) in enumerate(reader.messages(wanted)):
            msg = reader.deserialize(data, conn, i)
            stamp = stamp_ns(msg.header.stamp)
            if tally.alarms and conn.topic == o.semantic_topic:
                tally.semantic(stamp, msg)
            elif conn.topic != o.score_topic:
                tally.reference_rx.setdefault(stamp, ts)
            else:
                bar.update(1)
                tally.score(stamp, ts, msg)
        bar.close()
    return _report(output_bag, input_bags, o, reference, tally)


class _Tally:
    """What one pass over the output bag accumulates: the metrics of every method overall and per
    sequence, the frame counts, receive times, the offline/recorded PEBAL difference and the
    replayed alarms."""

    def __init__(self, o: ScoreOptions, index: dict, frames: dict, output_bag: str | os.PathLike) -> None:
        self.o, self.index, self.frames, self.output_bag = o, index, frames, output_bag
        self.methods = ("pebal", *o.baselines)
        self.sequences = sorted({entry[3] for entry in index.values()})
        self.overall = {m: AnomalyMetrics(o.exact, max_cells=o.max_cells) for m in self.methods}
        self.per_seq = {
            m: {s: AnomalyMetrics(o.exact, max_cells=o.max_cells) for s in self.sequences} for m in self.methods
        }
        self.scorer = OfflineScorer(o.model, o.input_size) if o.baselines else None
        self.converter = ImageConverter()
        self.counts = _Counts()
        self.scored_rx: dict[int, int] = {}
        self.reference_rx: dict[int, int] = {}
        self.max_diff = 0.0
        self.alarms = False
        self.pipeline, self.counts_alarms, self.halves, self.alarm_sizes = AlarmPipeline(), ObstacleCounts(), {}, set()
        self.unfit: list[int] = []

    def semantic(self, stamp: int, msg) -> None:
        """A recorded semantic map: one half of its frame's alarm replay."""
        self.alarm_sizes.add(
            _alarm_half(
                self.halves, stamp, "semantic", self.converter.to_numpy(msg), self.pipeline, self.counts_alarms,
                self.o, self.unfit,
            )
        )  # fmt: skip

    def score(self, stamp: int, ts: int, msg) -> None:
        """A recorded score map: counted (unmatched, duplicate, unlabelled) or checked and scored."""
        if stamp not in self.index:
            self.counts.unmatched += 1
            return
        if stamp in self.scored_rx:
            self.counts.duplicates += 1
            return
        frame = self.frames[stamp]
        if not frame.labelled:
            self.counts.unlabelled.append(frame.name)
            self.scored_rx[stamp] = ts
            return
        score, label = self._checked(msg, frame)
        self.scored_rx[stamp] = ts
        maps = {"pebal": score}
        if self.scorer is not None:
            offline = self.scorer(read_rgb(frame.image), ("pebal", *self.o.baselines))
            self.max_diff = max(self.max_diff, float(np.abs(offline.pop("pebal") - score).max()))
            maps.update(offline)
        for m, arr in maps.items():
            self.overall[m].update(arr, label)
            self.per_seq[m][frame.sequence].update(arr, label)
        if self.alarms:
            self.alarm_sizes.add(
                _alarm_half(
                    self.halves, stamp, "score", (score, label), self.pipeline, self.counts_alarms, self.o, self.unfit
                )
            )

    def _checked(self, msg, frame) -> tuple[np.ndarray, np.ndarray]:
        """``(score, label)`` of a labelled frame; a score map that is no 32FC1 image at the label's
        size with finite values is a :class:`BagError`."""
        topic = self.o.score_topic
        try:
            score = self.converter.to_numpy(msg)
        except ImageError as e:
            raise BagError(f"{topic} message for frame {frame.name} in {self.output_bag}: {e}") from e
        if msg.encoding != "32FC1":
            raise BagError(f"{topic} has encoding {msg.encoding}; an anomaly score is 32FC1")
        label = frame.label()
        if score.shape != label.shape:
            raise BagError(
                f"{topic} of frame {frame.name} is {score.shape[1]} x {score.shape[0]} pixels but its "
                f"label is {label.shape[1]} x {label.shape[0]} (width x height): scores must come at the label "
                "resolution (the node returns scores at the input image size)"
            )
        if not np.isfinite(score).all():
            raise BagError(f"{topic} of frame {frame.name} holds non-finite scores; the model output is broken")
        return score, label


def _report(
    output_bag: str | os.PathLike, input_bags: list[Path], o: ScoreOptions, reference: str | None, tally: _Tally
) -> dict:
    """The report dict of a finished :class:`_Tally` (see the module docstring)."""
    index, frames, counts, scored_rx, reference_rx = (
        tally.index, tally.frames, tally.counts, tally.scored_rx, tally.reference_rx
    )  # fmt: skip
    counts.missing = [frames[s].name for s in sorted(index) if s not in scored_rx]
    latencies = [(rx - reference_rx[s]) / 1e6 for s, rx in scored_rx.items() if s in reference_rx]
    report = {
        "output_bag": str(output_bag),
        "input_bags": [str(p) for p in input_bags],
        "score_topic": o.score_topic,
        "reference_topic": reference if reference_rx else None,
        "frames": {
            "indexed": len(index),
            "received": len(scored_rx),
            "scored": len(scored_rx) - len(counts.unlabelled),
            "missing": len(counts.missing),
            "missing_names": counts.missing[:LIST_AT_MOST],
            "unmatched_outputs": counts.unmatched,
            "duplicate_outputs": counts.duplicates,
            "unlabelled": len(counts.unlabelled),
            "unlabelled_names": counts.unlabelled[:LIST_AT_MOST],
            "without_latency_reference": len(scored_rx) - len(latencies),
        },
        "throughput": {
            "output_fps": _rate(list(scored_rx.values())),
            "input_fps": _rate([reference_rx[s] for s in index if s in reference_rx]),
        },
        "latency_ms": {**percentiles(latencies, (50, 95)), "n": len(latencies)} if latencies else None,
        "methods": {
            m: {
                "overall": _summary(tally.overall[m]),
                "sequences": {s: _summary(tally.per_seq[m][s]) for s in tally.sequences},
            }
            for m in tally.methods
        },
        "model": None if o.model is None else str(o.model),
    }
    if tally.alarms:
        p = o.point.persistence
        sizes = tally.alarm_sizes - {None}
        report["alarms"] = {
            "threshold": o.point.threshold,
            "region": o.point.region,
            "min_pixels": sorted({o.point.min_pixels_at(size) for size in sizes}),
            "persistence": f"{p.k} of {p.n}",
            "ego_mask": o.point.ego_mask or None,
            "frames_without_ego_mask": len(tally.unfit),
            "point": o.point.to_dict(),
            **tally.counts_alarms.summary(),
        }
    if tally.scorer is not None:
        report["consistency"] = {
            "max_abs_diff": tally.max_diff,
            "tolerance": CONSISTENCY_TOLERANCE,
            "ok": tally.max_diff <= CONSISTENCY_TOLERANCE,
        }
    return report


def _alarm_half(
    halves: dict,
    stamp: int,
    kind: str,
    value,
    pipeline: AlarmPipeline,
    counts: ObstacleCounts,
    o: ScoreOptions,
    unfit: list[int],
) -> tuple[int, int] | None:
    """Keep one half of a frame (``semantic`` trainIds or ``score`` with its label); once both
    halves of a stamp are in, run the alarm chain on it (with the point's ego mask, as the node
    does: a frame the mask does not fit runs without it and its stamp goes to ``unfit``), count
    its obstacles and return its size."""
    entry = halves.setdefault(stamp, {})
    entry[kind] = value
    if len(entry) < 2:
        return None
    del halves[stamp]
    score, label = entry["score"]
    ego, why = mask_for_frame(cached_ego_mask(o.point.ego_mask), score.shape)
    if why:
        unfit.append(stamp)
    frame = FrameContext(entry["semantic"], score, o.point, stamp=stamp / 1e9, ego_mask=ego)
    counts.update(pipeline.process(frame), label, ego)
    return score.shape


# ---------------------------------------------------------------------------------------- table
def _pct(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def format_table(report: dict, per_sequence: bool = False) -> str:
    """A Markdown table: frames, frames/s, latency p50/p95 and AUROC/AP/FPR95 (%) per method."""
    f = report["frames"]
    fps = report["throughput"]["output_fps"]
    lat = report["latency_ms"]
    rows = [
        "| score | frames | frames/s | latency p50 | latency p95 | AUROC % | AP % | FPR95 % |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, (m, res) in enumerate(report["methods"].items()):
        o = res["overall"]
        first = i == 0
        label = METHOD_LABELS.get(m, m) + ("" if first else " (offline, same frames)")
        rows.append(
            f"| {label} | {o['n_images']} | "
            + (f"{fps:.2f} | " if first and fps else "– | ")
            + (f"{lat['p50']:.1f} ms | {lat['p95']:.1f} ms | " if first and lat else "– | – | ")
            + f"{_pct(o['auroc'])} | {_pct(o['ap'])} | {_pct(o['fpr95'])} |"
        )
    lines = ["\n".join(rows), ""]
    notes = [f"{f['scored']} of {f['indexed']} frames scored"]
    for key, what in (
        ("missing", "missing (no output: dropped by the node or lost)"),
        ("unlabelled", "without a label file"),
        ("unmatched_outputs", "outputs matching no frame"),
        ("duplicate_outputs", "duplicate outputs"),
    ):
        if f[key]:
            notes.append(f"{f[key]} {what}")
    if report["throughput"]["input_fps"]:
        notes.append(f"input played at {report['throughput']['input_fps']:.2f} frames/s")
    lines.append("; ".join(notes) + ".")
    if f["missing_names"]:
        lines.append(
            "missing: " + ", ".join(f["missing_names"]) + (" ..." if f["missing"] > len(f["missing_names"]) else "")
        )
    a = report.get("alarms")
    if a is not None and a["frames"]:
        rate = "–" if a["detection_rate"] is None else f"{100 * a['detection_rate']:.1f} %"
        px = "/".join(map(str, a["min_pixels"]))
        mask = a.get("ego_mask") or "none"
        if a.get("frames_without_ego_mask"):
            mask += f", which did not fit {a['frames_without_ego_mask']} frames (run without it)"
        lines.append(
            f"alarms at threshold {a['threshold']:.4g} ({a['region']} region, {a['persistence']} frames, obstacles "
            f">= {px} px, ego mask {mask}, as the node): "
            f"{a['detected']} of {a['obstacles']} labelled obstacles (>= {a['min_visible']} px) detected per frame "
            f"({rate}), {a['false_alarms_per_frame']:.3f} false-alarm obstacles per frame over {a['frames']} frames."
        )
    c = report.get("consistency")
    if c is not None:
        verdict = (
            "consistent" if c["ok"] else "WARNING: the node ran another model or input size than --model/--input-size"
        )
        lines.append(
            f"offline PEBAL recomputation vs recorded scores: max |diff| = {c['max_abs_diff']:.2g} ({verdict})."
        )
    if per_sequence:
        lines += [
            "",
            "| sequence | frames | "
            + " | ".join(f"{METHOD_LABELS.get(m, m)} AP % | FPR95 %" for m in report["methods"])
            + " |",
        ]
        lines.append("|---|---:|" + "---:|---:|" * len(report["methods"]))
        first = next(iter(report["methods"].values()))
        for seq in first["sequences"]:
            cells = []
            for res in report["methods"].values():
                s = res["sequences"][seq]
                cells += [_pct(s["ap"]), _pct(s["fpr95"])]
            lines.append(f"| {seq} | {first['sequences'][seq]['n_images']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
