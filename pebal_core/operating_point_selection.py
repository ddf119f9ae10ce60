"""Choosing a model's operating points on validation data and storing them: ``pebal threshold``.

The model runs over any dataset ``pebal eval`` reads (:func:`pebal_core.data.anomaly_sets.build_anomaly_dataset`),
through the Predictor ``pebal eval`` uses (:func:`pebal_core.evaluate.predictor_for`; at the input
size the model's metadata records unless one is given, as the node runs it): per image the
predicted trainIds give the region (:mod:`pebal_core.alarms.region`; with an ego-vehicle mask,
:mod:`pebal_core.alarms.ego_mask`, its pixels left out) and the PEBAL score (smoothed free energy
at the label size) is kept (:class:`ValidationFrame`). :class:`OperatingPointSearch`
then picks each policy's threshold (:mod:`pebal_core.alarms.operating_point` defines the policies),
and every point is stored with the alarm settings it was chosen with (region, smallest obstacle at
the validation images' size, ego mask) as :class:`~pebal_core.alarms.operating_point.StoredPoints`.
Every point also records what it does to obstacles on the validation images, counted as ``pebal
eval`` counts them (:mod:`pebal_core.alarms.frame_counts`).

:func:`write_operating_points` is the one writer of a model's operating points (``pebal threshold
--write``, ``pebal eval --write-threshold``, ``benchmarks/real_operating_point.py``); it writes a copy
of the checkpoint, weights unchanged.

Labels follow the evaluation convention: 0 inlier, 1 anomaly, 255 void.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy import ndimage
from tqdm import tqdm

from pebal_core.alarms.ego_mask import cached_ego_mask
from pebal_core.alarms.frame_counts import DEFAULT_MIN_VISIBLE, ThresholdSweep
from pebal_core.alarms.obstacles import DEFAULT_MIN_PIXELS
from pebal_core.alarms.operating_point import (
    DEFAULT_POLICIES,
    DEFAULT_POLICY,
    LEGACY_KEYS,
    OperatingPoint,
    StoredPoints,
    parse_policy,
)
from pebal_core.alarms.region import DEFAULT_MIN_FRACTION, alarm_region
from pebal_core.component_metrics import EIGHT_CONNECTED
from pebal_core.data.anomaly_pairs import AnomalyPairs
from pebal_core.evaluate import EvalOptions, load_for_evaluation, predictor_for
from pebal_core.labels import EVAL_ANOMALY, EVAL_INLIER, EVAL_VOID
from pebal_core.models.checkpoint import copy_with_metadata

FA_CANDIDATES = 120
"""Thresholds tried by ``fa:<x>`` and ``obstacles:<x>`` (inlier-region FPR from 1e-7 to 0.5, log-spaced)."""


@dataclass
class ValidationFrame:
    """One validation image: score (float32 ``H x W``), labels (0/1/255) and region (bool or None):
    where alarms may be raised, the alarm region with the ego mask's pixels left out (None =
    every pixel)."""

    score: np.ndarray
    labels: np.ndarray
    region: np.ndarray | None


class OperatingPointSearch:
    """Pixel scores of a validation set, kept for choosing thresholds by several policies.

    Args:
        frames: the validation images.
        min_pixels: smallest reported obstacle (pixels of each frame) of ``fa:<x>``, ``obstacles:<x>``
            and the obstacle counts.
        min_visible: smallest labelled obstacle counted (pixels of each frame).
        progress: show a progress bar while ``obstacles:<x>`` tries its candidates.
    """

    def __init__(
        self,
        frames: list[ValidationFrame],
        min_pixels: int = DEFAULT_MIN_PIXELS,
        min_visible: int = DEFAULT_MIN_VISIBLE,
        progress: bool = False,
    ) -> None:
        if not frames:
            raise ValueError("choosing an operating point needs at least one validation image")
        self.frames = frames
        self.min_pixels = int(min_pixels)
        self.min_visible = int(min_visible)
        self._sweeps: list[ThresholdSweep] | None = None
        self._obstacles: dict[float, tuple[int, int, int]] = {}
        self.progress = progress
        anomaly, inlier, inlier_region = [], [], []
        for f in frames:
            if f.score.shape != f.labels.shape:
                raise ValueError(f"score {f.score.shape} and labels {f.labels.shape} differ in size")
            anomaly.append(f.score[f.labels == EVAL_ANOMALY])
            inlier.append(f.score[f.labels == EVAL_INLIER])
            keep = f.labels == EVAL_INLIER if f.region is None else (f.labels == EVAL_INLIER) & f.region
            inlier_region.append(f.score[keep])
        self.anomaly = np.sort(np.concatenate(anomaly)).astype(np.float64)
        self.inlier = np.sort(np.concatenate(inlier)).astype(np.float64)
        self.inlier_region = np.sort(np.concatenate(inlier_region)).astype(np.float64)

    @property
    def image_size(self) -> tuple[int, int] | None:
        """``(height, width)`` shared by every frame (the size ``min_pixels`` counts at), else None."""
        sizes = {f.labels.shape for f in self.frames}
        return next(iter(sizes)) if len(sizes) == 1 else None

    # ------------------------------------------------------------------ measures at a threshold
    @staticmethod
    def _flagged(sorted_values: np.ndarray, threshold: float) -> float:
        if sorted_values.size == 0:
            return math.nan
        return float(sorted_values.size - np.searchsorted(sorted_values, threshold, "left")) / sorted_values.size

    def false_alarms_per_frame(self, threshold: float) -> float:
        """Mean number of false-alarm obstacles per frame at ``threshold`` (see the ``fa:<x>`` policy)."""
        total = 0
        for f in self.frames:
            mask = (f.score >= threshold) & (f.labels != EVAL_VOID)
            if f.region is not None:
                mask &= f.region
            cc, n = ndimage.label(mask, structure=EIGHT_CONNECTED)
            if n == 0:
                continue
            sizes = np.bincount(cc.ravel(), minlength=n + 1)
            hits = np.bincount(cc[f.labels == EVAL_ANOMALY], minlength=n + 1)
            total += int(np.count_nonzero((sizes[1:] >= self.min_pixels) & (hits[1:] == 0)))
        return total / len(self.frames)

    def obstacles(self, threshold: float) -> tuple[int, int, int]:
        """``(labelled, detected, false alarms)`` over all frames at ``threshold``, counted as
        ``pebal eval`` counts them (see the ``obstacles:<x>`` policy)."""
        if threshold in self._obstacles:  # several policies and the measures ask for the same thresholds
            return self._obstacles[threshold]
        if self._sweeps is None:
            self._sweeps = [
                ThresholdSweep(f.score, f.labels, f.region, self.min_pixels, self.min_visible) for f in self.frames
            ]
        counts = [sweep.at(threshold) for sweep in self._sweeps]
        found = sum(s.labelled for s in self._sweeps), sum(c[0] for c in counts), sum(c[1] for c in counts)
        self._obstacles[threshold] = found
        return found

    def measured(self, threshold: float, rule: str, **extra: object) -> dict:
        """What ``threshold`` does on these frames: ``tpr`` (anomalous pixels flagged, all pixels),
        ``fpr`` (inlier pixels flagged), ``fpr_region`` (inlier pixels in the region flagged),
        ``false_alarms_per_frame`` (obstacles of ``min_pixels``, the ``fa:<x>`` count),
        ``obstacles_labelled`` / ``obstacles_detected`` / ``obstacle_false_alarms_per_frame`` (the
        ``obstacles:<x>`` counts), ``rule`` and ``extra``."""
        labelled, detected, false_alarms = self.obstacles(threshold)
        return {
            "tpr": self._flagged(self.anomaly, threshold),
            "fpr": self._flagged(self.inlier, threshold),
            "fpr_region": self._flagged(self.inlier_region, threshold),
            "false_alarms_per_frame": self.false_alarms_per_frame(threshold),
            "obstacles_labelled": labelled,
            "obstacles_detected": detected,
            "obstacle_false_alarms_per_frame": false_alarms / len(self.frames),
            "rule": rule,
            **extra,
        }

    # ------------------------------------------------------------------ policies
    def tpr_threshold(self, tpr: float) -> float:
        """The highest threshold flagging at least ``tpr`` of the anomalous pixels."""
        if self.anomaly.size == 0:
            raise ValueError("the validation set has no anomalous pixels; tpr95 needs some")
        return float(self.anomaly[int(math.floor((1.0 - tpr) * self.anomaly.size + 1e-9))])

    def region_fpr_threshold(self, fpr: float) -> float:
        """The lowest threshold flagging at most ``fpr`` of the inlier pixels in the region."""
        values = self.inlier_region
        if values.size == 0:
            raise ValueError(
                "the validation set has no inlier pixels inside the region (does the model predict road?); "
                "fpr:<x> and fa:<x> need some: check the model, or choose with --region all"
            )
        allowed = int(math.floor(fpr * values.size + 1e-9))  # pixels that may be flagged
        if allowed >= values.size:
            return float(values[0])
        # the next float32 above: scores are float32 and compared in float32 (score >= threshold)
        return float(np.nextafter(np.float32(values[values.size - 1 - allowed]), np.float32(np.inf)))

    def candidates(self) -> list[float]:
        """The thresholds ``fa:<x>`` and ``obstacles:<x>`` try, highest first: those flagging
        1e-7 .. 0.5 of the inlier pixels in the region (log-spaced)."""
        return [self.region_fpr_threshold(x) for x in np.geomspace(1e-7, 0.5, FA_CANDIDATES)]

    def false_alarm_threshold(self, budget: float) -> tuple[float, int]:
        """``(threshold, candidates tried)`` for the ``fa:<budget>`` policy."""
        candidates = self.candidates()
        best = candidates[0]  # the highest threshold: flags at most 1e-7 of the region
        tried = 0
        for t in candidates:  # descending thresholds
            tried += 1
            if self.false_alarms_per_frame(t) > budget:
                break
            best = t
        return best, tried

    def obstacle_threshold(self, budget: float) -> tuple[float, bool]:
        """``(threshold, within budget)`` for the ``obstacles:<budget>`` policy: of the candidates, the
        one detecting the most labelled obstacles with at most ``budget`` false alarms per frame
        (ties: the highest); the highest candidate, flagged, when none is within budget."""
        best, most = None, -1
        candidates = tqdm(
            self.candidates(), desc=f"obstacles:{budget:g}", unit="threshold", leave=False, disable=not self.progress
        )
        for t in candidates:  # descending: a tie keeps the higher threshold
            _, detected, false_alarms = self.obstacles(t)
            if false_alarms / len(self.frames) <= budget and detected > most:
                best, most = t, detected
        return (best, True) if best is not None else (self.candidates()[0], False)

    def choose(self, policy: str) -> tuple[float, dict]:
        """``(threshold, what it measured)`` of ``policy`` on these frames (see :meth:`measured`)."""
        kind, value = parse_policy(policy)
        if kind == "tpr":
            rule = "highest threshold flagging >= 95% of the anomalous pixels (all pixels)"
            return (t := self.tpr_threshold(value)), self.measured(t, rule)
        if kind == "fpr":
            rule = f"lowest threshold flagging <= {value:g} of the inlier pixels inside the region"
            return (t := self.region_fpr_threshold(value)), self.measured(t, rule)
        if kind == "obstacles":
            threshold, within = self.obstacle_threshold(value)
            rule = (
                f"of {FA_CANDIDATES} candidate thresholds, the one detecting the most labelled obstacles (>= "
                f"{self.min_visible} px) with <= {value:g} false-alarm obstacles (>= {self.min_pixels} px, in the "
                "region, off the ego mask, void counted) per frame"
            )
            if not within:
                rule += "; no candidate was within the budget: the highest is kept"
            return threshold, self.measured(threshold, rule, within_budget=within)
        threshold, tried = self.false_alarm_threshold(value)
        rule = (
            f"lowest of {FA_CANDIDATES} candidate thresholds (scanned from high to low, stopped at the first over "
            f"budget) with <= {value:g} false-alarm obstacles (>= {self.min_pixels} px, in the region) per frame"
        )
        return threshold, self.measured(threshold, rule, candidates_tried=tried)


def validation_frames(
    model: torch.nn.Module,
    dataset: AnomalyPairs,
    options: EvalOptions,
    region: str = "drivable",
    include_sidewalk: bool = False,
    min_fraction: float = DEFAULT_MIN_FRACTION,
    ego_mask: str = "",
) -> list[ValidationFrame]:
    """Score, labels and region of every image of ``dataset``; the region leaves out the pixels of
    ``ego_mask`` (a :func:`~pebal_core.alarms.ego_mask.load_ego_mask` spec; ``""`` = none), with
    region ``all`` too."""
    predictor = predictor_for(model.eval(), options)
    mask = cached_ego_mask(ego_mask)
    n = len(dataset) if options.limit is None else min(options.limit, len(dataset))
    if n == 0:
        raise ValueError(f"dataset {dataset!r} has no images to choose a threshold on")
    frames = []
    for i in tqdm(range(n), desc="pebal threshold", unit="img", disable=not options.progress):
        item = dataset[i]
        label = item["label"]
        pred = predictor.scores(item["image"], ("pebal",), labels=True, output_size=label.shape)
        score, trainids = pred.scores["pebal"], pred.labels
        ego = None if mask is None else mask.at(label.shape)
        allowed = alarm_region(trainids, region, include_sidewalk, min_fraction, ego)
        if allowed is None and ego is not None:
            allowed = ~ego
        frames.append(ValidationFrame(score, label, allowed))
    return frames


def choose_operating_points(
    checkpoint: str | os.PathLike,
    dataset_name: str,
    root: str | os.PathLike,
    options: EvalOptions,
    dataset_options: dict | None = None,
    policies: tuple[str, ...] = DEFAULT_POLICIES,
    default: str = DEFAULT_POLICY,
    region: str = "drivable",
    include_sidewalk: bool = False,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    arch: str | None = None,
    ego_mask: str = "",
) -> StoredPoints:
    """Every policy's point with the settings it was chosen with (region, smallest obstacle,
    ``ego_mask``), the default, and the data they were chosen on (``source``: dataset, images,
    network input size, checkpoint hash)."""
    for policy in (*policies, default):
        parse_policy(policy)
    policies = tuple(dict.fromkeys((*policies, default)))
    model, dataset, options = load_for_evaluation(checkpoint, dataset_name, root, options, dataset_options, arch)
    frames = validation_frames(model, dataset, options, region, include_sidewalk, ego_mask=ego_mask)
    search = OperatingPointSearch(frames, min_pixels, progress=options.progress)
    settings = dict(
        region=region,
        include_sidewalk=include_sidewalk,
        min_pixels=min_pixels,
        image_size=search.image_size,
        ego_mask=ego_mask,
    )
    points, measured = {}, {}
    for policy in policies:
        threshold, measured[policy] = search.choose(policy)
        points[policy] = OperatingPoint(threshold, policy, **settings)
    source = {
        "dataset": dataset_name,
        "dataset_root": str(root),
        "dataset_options": dataset_options or {},
        "n_images": len(frames),
        "input_size": list(options.input_size) if options.input_size else None,
        "evaluated_checkpoint_sha256": model.checkpoint_metadata.get("sha256"),
    }
    return StoredPoints(points, default, measured, source)


def eval_points(report: dict) -> tuple[StoredPoints, tuple[int, int] | None]:
    """The PEBAL score's 95 %-TPR point of a ``pebal eval`` report as a model's one stored point
    (with the default alarm settings), and the network size it holds at: the one size every image
    ran at, None when they ran at several."""
    if "score_threshold" not in report:
        raise ValueError("the evaluation produced no PEBAL threshold (no 'pebal' method or no anomalous pixels)")
    t = report["score_threshold"]
    sizes = report.get("network_sizes") or []
    rule = "score >= threshold flags >= 95% of the anomalous pixels (highest such threshold)"
    source = {
        "dataset": report.get("dataset"),
        "dataset_options": report.get("dataset_options", {}),
        "n_images": report["n_images"],
        "evaluated_checkpoint_sha256": report.get("model", {}).get("sha256"),
    }
    measured = {"tpr95": {"tpr": t["tpr"], "fpr": t["fpr"], "rule": rule}}
    stored = StoredPoints({"tpr95": OperatingPoint(float(t["score"]), "tpr95")}, "tpr95", measured, source)
    return stored, (tuple(sizes[0]) if len(sizes) == 1 else None)


def format_points(stored: StoredPoints) -> str:
    """A Markdown table of the stored points (rates in %)."""
    rows = [
        "| policy | threshold | TPR % | FPR % | FPR in region % | false-alarm obstacles / frame (fa) | "
        "labelled obstacles detected | false-alarm obstacles / frame (obstacles) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, p in stored.points.items():
        m = stored.measured.get(name, {})
        mark = " (default)" if name == stored.default else ""
        found = f"{m['obstacles_detected']} / {m['obstacles_labelled']}" if "obstacles_detected" in m else "–"
        per_frame = m.get("obstacle_false_alarms_per_frame")
        rows.append(
            f"| {name}{mark} | {p.threshold:.4f} | {100 * m['tpr']:.2f} | {100 * m['fpr']:.3f} | "
            f"{100 * m['fpr_region']:.3f} | {m['false_alarms_per_frame']:.3f} | {found} | "
            + ("–" if per_frame is None else f"{per_frame:.3f}")
            + " |"
        )
    return "\n".join(rows)


def write_operating_points(
    checkpoint: str | os.PathLike,
    dst: str | os.PathLike,
    stored: StoredPoints,
    input_size: tuple[int, int] | None,
    arch: str | None = None,
) -> Path:
    """Copy ``checkpoint`` to ``dst`` (weights unchanged, float16 files stay float16) with
    ``stored`` as its operating points and, when they were measured at one network size,
    ``input_size`` = that ``(height, width)`` (the Predictor then runs the model at it, so the
    thresholds hold; absent otherwise). Other metadata is kept; a bare ``score_threshold`` (a
    threshold without its settings) is dropped. ``arch`` names the architecture of a bare
    state_dict."""
    updates = stored.to_metadata()
    if input_size is not None:
        updates["input_size"] = [int(v) for v in input_size]
    remove = LEGACY_KEYS + (() if input_size is not None else ("input_size",))
    return copy_with_metadata(checkpoint, dst, updates, remove=remove, arch=arch)
