"""Evaluation metrics: inlier segmentation (mIoU) and pixel-level anomaly detection.

Inlier segmentation quality
---------------------------
:func:`confusion_matrix` accumulates an ``N x N`` int64 matrix (rows = ground truth, columns =
prediction) over pixels whose ground truth is a class (< N); void (255) and anomaly (254) pixels
are skipped. :func:`mean_iou` gives per-class IoU = TP / (TP + FP + FN) and their mean over a set
of classes chosen by ``average_over``:

``"gt_or_pred"`` (default)
    classes that occur in the ground truth or the prediction; classes with no pixel in either
    are NaN and left out (the Cityscapes convention on subsets). A class predicted on a few
    pixels but absent from the ground truth counts with IoU 0.
``"gt"``
    classes that occur in the ground truth only (the per-frame checkpoint sanity checks and the
    ``course`` protocol's evaluations, ``docs/data_sources.md``).

Pixel-level anomaly detection
-----------------------------
Labels: 0 = inlier (negative), 1 = anomaly (positive), 255 = void (dropped); scores: higher =
more anomalous. All pixels of a dataset are pooled (one curve per dataset, as every benchmark
does). :func:`anomaly_metrics` (one call) and :class:`AnomalyMetrics` (``update`` per image,
``compute`` at the end) return:

``auroc``
    Area under the ROC curve with scikit-learn's definition (``roc_auc_score``): trapezoidal
    area over the curve of distinct thresholds, so **tied scores** form one diagonal step; equal
    to the Mann-Whitney statistic P(s+ > s-) + 0.5 P(s+ = s-).
``ap``
    Average precision with scikit-learn's definition (``average_precision_score``, step-wise,
    no interpolation): sum over distinct thresholds of (recall increase) x precision, where all
    pixels with a **tied score** enter at the same threshold.
``fpr95``
    False positive rate at 95 % true positive rate, in the definition named by ``fpr95``
    (the result carries it as ``fpr95_definition``; ``fpr95_by_definition`` holds all three):

    ``"pebal"`` (default)
        The PEBAL/Meta-OoD reference code (``docs/evaluation.md``): on the curve of distinct thresholds, cut
        where recall first reaches 1, the point whose recall is closest to 0.95
        (``argmin |recall - 0.95|``; among equally close points the one with higher recall, and
        within a recall level the lowest threshold); FPR = false positives there / all inliers.
    ``"smiyc"``
        SegmentMeIfYouCan / Fishyscapes: FPR at the first (highest) threshold whose TPR >= 0.95.
    ``"ood_metrics"``
        The ``ood-metrics`` package used by the ``course`` protocol (``docs/data_sources.md``):
        scikit-learn ``roc_curve`` then ``np.interp(0.95, tpr, fpr)`` (linear interpolation;
        where TPR equals 0.95 exactly, the largest FPR at that TPR).

A threshold ``t`` flags pixels with ``score >= t``. Metrics that are undefined (no anomalous or
no inlier pixel) are NaN (scikit-learn warns and returns NaN for AUROC; for AP without positives
it returns 0, here NaN).

Exact and streaming modes
~~~~~~~~~~~~~~~~~~~~~~~~~
Both accumulate, per distinct score, the counts of anomalous and inlier pixels
(:mod:`pebal_core.score_counts`), never the pixels themselves. **Exact** mode
(``AnomalyMetrics(exact=True)``) keeps every distinct score and equals scikit-learn (and the
reference FPR95 code) up to float64 rounding, ties included; its memory grows with the number of
distinct scores (not with the number of pixels). **Streaming** mode bounds the stored cells by
``max_cells`` (memory independent of the number of images): when exceeded, neighbouring scores
are merged into one cell (dropping one low bit of the order-preserving key at a time). While the
number of distinct scores stays within ``max_cells`` the result is exact. Otherwise only cells
that merged several distinct scores *and* contain an anomalous pixel can change a result, and
``compute()`` returns ``error_bound``: a rigorous upper bound on ``|streaming - exact|`` for each
metric, derived from those cells (AUROC: sum of pos*neg / (2PN) over merged cells; AP: per merged
cell, its recall share times the spread between the best and worst precision its pixels could
have; FPR95: the spread of inlier counts over the merged cells around the 95 % recall level).
There is no a-priori bound that holds for every input with a fixed memory budget and a fixed key
resolution (all scores may fall into one cell); the certificate is computed, reported, and
``AnomalyMetrics(tolerance=...)`` warns when it exceeds the tolerance.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from pebal_core.labels import EVAL_ANOMALY, EVAL_INLIER, EVAL_VOID, NUM_CLASSES
from pebal_core.score_counts import PositiveTable, ScoreCounts, key_dtype_for, score_keys


def confusion_matrix(pred: np.ndarray, label: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """``num_classes x num_classes`` int64 counts; rows = ground truth, columns = prediction.

    Pixels whose ``label`` is not a class id (254, 255) are ignored. Every ``pred`` value at a
    counted pixel must be a class id (< ``num_classes``).
    """
    pred = np.asarray(pred).ravel()
    label = np.asarray(label).ravel()
    if pred.shape != label.shape:
        raise ValueError(f"prediction has {pred.size} pixels, label {label.size}")
    keep = label < num_classes
    gt = label[keep].astype(np.int64)
    pr = pred[keep].astype(np.int64)
    if pr.size and pr.max() >= num_classes:
        raise ValueError(f"prediction holds class {pr.max()} >= num_classes={num_classes}")
    return np.bincount(gt * num_classes + pr, minlength=num_classes**2).reshape(num_classes, num_classes)


MIOU_AVERAGES = ("gt_or_pred", "gt")
"""Class sets :func:`mean_iou` can average over (see the module docstring)."""


def mean_iou(conf: np.ndarray, average_over: str = "gt_or_pred") -> tuple[float, np.ndarray]:
    """``(mIoU, per-class IoU)`` from a confusion matrix (rows = ground truth).

    Per-class IoU is NaN for classes with no pixel in the ground truth or the prediction. The
    mean is over the classes named by ``average_over`` (``MIOU_AVERAGES``): ``"gt_or_pred"``
    (every non-NaN IoU) or ``"gt"`` (classes with ground-truth pixels); NaN when that set is empty.
    """
    if average_over not in MIOU_AVERAGES:
        raise ValueError(f"average_over must be one of {', '.join(MIOU_AVERAGES)}, got {average_over!r}")
    conf = np.asarray(conf, dtype=np.float64)
    tp = np.diag(conf)
    denom = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(denom > 0, tp / denom, np.nan)
    counted = conf.sum(1) > 0 if average_over == "gt" else np.isfinite(iou)
    return (float(np.mean(iou[counted])) if counted.any() else float("nan")), iou


# ----------------------------------------------------------------------------- anomaly metrics
FPR95_DEFINITIONS = ("pebal", "smiyc", "ood_metrics")
"""Names of the FPR@95TPR definitions (see the module docstring); the first is the default."""
TARGET_TPR = 0.95
DEFAULT_MAX_CELLS = 1 << 20
"""Streaming-mode cell budget. Each cell costs about 25 bytes (key, two int64 counts, smallest key,
flag); with pending merges at most about 2 x max_cells cells are held (~50 MB for the default)."""
CURVE_POINTS = 2000
"""At most this many points per curve are returned for plotting."""


def _check_definition(fpr95: str) -> str:
    if fpr95 not in FPR95_DEFINITIONS:
        raise ValueError(f"unknown FPR95 definition {fpr95!r}; choose from {', '.join(FPR95_DEFINITIONS)}")
    return fpr95


def _thin(n: int, max_points: int = CURVE_POINTS) -> np.ndarray:
    """At most ``max_points`` evenly spaced indices into ``range(n)``, always with both ends."""
    if n <= max_points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_points).round().astype(np.intp))


class _Curve:
    """Cumulative counts of a :class:`PositiveTable` (rows in descending score order)."""

    def __init__(self, t: PositiveTable) -> None:
        self.t = t
        self.P, self.N = t.n_pos, t.n_neg
        self.tp = np.cumsum(t.pos)  # anomalous pixels with score >= value[k]
        self.tp_before = self.tp - t.pos
        self.fp = t.neg_gt + t.neg_eq  # inlier pixels with score >= value[k]
        self.recall = self.tp / self.P
        self.recall_before = self.tp_before / self.P

    # ---- scikit-learn AUROC / AP
    def auroc(self) -> float:
        P, N, t = self.P, self.N, self.t
        # Mann-Whitney: each anomalous pixel beats the inliers below it and ties half of its cell.
        terms = t.pos * (2 * (N - self.fp) + t.neg_eq)
        if 2 * P * N < 2**62:
            return float(int(terms.sum(dtype=np.int64))) / float(2 * P * N)
        return float(math.fsum(terms.astype(np.float64))) / (2.0 * P * N)

    def ap(self) -> float:
        precision = self.tp / (self.tp + self.fp)
        return float(max(0.0, math.fsum((self.t.pos / self.P) * precision)))

    # ---- FPR95, three definitions; each returns (fpr, row index whose threshold was used)
    def fpr95_pebal(self) -> tuple[float, int]:
        K = self.tp.size
        # candidate FP per recall level k: the lowest threshold still at that recall, i.e. just
        # above the next anomalous score -> inliers above row k+1 (the last level: inliers >= it)
        fp_level = np.empty(K, np.int64)
        fp_level[:-1] = self.t.neg_gt[1:]
        fp_level[-1] = self.fp[-1]
        order = np.arange(K - 1, -1, -1)  # reference scans from full recall upwards; argmin keeps the first
        k = int(order[np.argmin(np.abs(self.recall[order] - TARGET_TPR))])
        return fp_level[k] / self.N, k

    def fpr95_smiyc(self) -> tuple[float, int]:
        k = int(np.searchsorted(self.recall, TARGET_TPR, side="left"))
        return self.fp[k] / self.N, k

    def fpr95_ood_metrics(self) -> tuple[float, int]:
        k = int(np.searchsorted(self.recall, TARGET_TPR, side="left"))
        if self.recall[k] == TARGET_TPR:
            # np.interp returns the last point with TPR == 0.95: just above the next anomalous score
            return self.t.neg_gt[k + 1] / self.N, k
        x0, x1 = self.recall_before[k], self.recall[k]
        y0, y1 = self.t.neg_gt[k] / self.N, self.fp[k] / self.N
        return (y1 - y0) / (x1 - x0) * (TARGET_TPR - x0) + y0, k

    # ---- certified error bounds for merged (streaming) cells
    def error_bounds(self, fpr95_rows: dict[str, tuple[float, int]]) -> dict[str, float]:
        t, P, N = self.t, self.P, self.N
        m = t.multi
        if not m.any():
            return {"auroc": 0.0, "ap": 0.0, **{f"fpr95_{d}": 0.0 for d in FPR95_DEFINITIONS}}
        auroc = float((t.pos[m] * t.neg_eq[m]).sum(dtype=np.float64) / (2.0 * P * N))
        best = self.tp[m] / (self.tp[m] + t.neg_gt[m])  # the cell's anomalies ranked above its inliers
        worst = (self.tp_before[m] + 1) / (self.tp_before[m] + 1 + self.fp[m])  # ... below them
        ap = float(np.sum(t.pos[m] / P * (best - worst)))
        out = {"auroc": auroc, "ap": ap}
        for d, (fpr, k) in fpr95_rows.items():
            if d == "pebal":
                dist = abs(self.recall[k] - TARGET_TPR)
                lo, hi = TARGET_TPR - dist, TARGET_TPR + dist
            elif d == "smiyc":
                lo, hi = TARGET_TPR, self.recall[k]
            else:
                lo, hi = self.recall_before[k], self.recall[k]
            out[f"fpr95_{d}"] = self._fpr_bound(fpr, lo - 1e-12, hi + 1e-12)
        return out

    def _fpr_bound(self, fpr: float, lo: float, hi: float) -> float:
        """Largest distance from ``fpr`` to any FPR an exact curve point with recall in [lo, hi] may have."""
        rows = np.flatnonzero((self.recall_before <= hi) & (self.recall >= lo))
        first, last = max(int(rows[0]) - 1, 0), min(int(rows[-1]) + 1, self.tp.size - 1)
        if not self.t.multi[first : last + 1].any():
            return 0.0
        fp_min, fp_max = self.t.neg_gt[first] / self.N, self.fp[last] / self.N
        return float(max(fpr - fp_min, fp_max - fpr))

    # ---- operating points and plot data
    def operating_point(self, k: int) -> dict:
        return {
            "score": float(self.t.value[k]),
            "tpr": float(self.recall[k]),
            "fpr": float(self.fp[k] / self.N),
            "precision": float(self.tp[k] / (self.tp[k] + self.fp[k])),
        }

    def curves(self) -> dict[str, np.ndarray]:
        """ROC (FPR, TPR) and PR (recall, precision) vertices, thinned for plotting."""
        N = self.N
        fpr = np.concatenate([[0.0], np.column_stack([self.t.neg_gt / N, self.fp / N]).ravel(), [1.0]])
        tpr = np.concatenate([[0.0], np.column_stack([self.recall_before, self.recall]).ravel(), [1.0]])
        i = _thin(fpr.size)
        j = _thin(self.tp.size)
        return {
            "roc_fpr": fpr[i],
            "roc_tpr": tpr[i],
            "pr_recall": self.recall[j],
            "pr_precision": (self.tp / (self.tp + self.fp))[j],
            "pr_threshold": self.t.value[j],
        }


def metrics_from_table(table: PositiveTable, fpr95: str = "pebal", curves: bool = True) -> dict:
    """AUROC, AP, FPR95 (+ operating points, curves, error bounds) from accumulated counts."""
    _check_definition(fpr95)
    P, N = table.n_pos, table.n_neg
    nan = float("nan")
    out: dict = {
        "auroc": nan,
        "ap": nan,
        "fpr95": nan,
        "fpr95_definition": fpr95,
        "fpr95_by_definition": dict.fromkeys(FPR95_DEFINITIONS, nan),
        "n_anomaly_pixels": int(P),
        "n_inlier_pixels": int(N),
        "threshold_tpr95": None,
        "best_f1": None,
        "exact": not bool(table.multi.any()),
        "error_bound": None,
    }
    if P == 0:
        return out
    c = _Curve(table)
    out["ap"] = c.ap()
    if N == 0:
        return out
    out["auroc"] = c.auroc()
    rows = {d: getattr(c, f"fpr95_{d}")() for d in FPR95_DEFINITIONS}
    out["fpr95_by_definition"] = {d: float(v) for d, (v, _) in rows.items()}
    out["fpr95"] = out["fpr95_by_definition"][fpr95]
    out["threshold_tpr95"] = c.operating_point(rows["smiyc"][1])
    f1 = 2 * c.tp / (c.tp + c.fp + P)
    k = int(np.argmax(f1))
    out["best_f1"] = {"f1": float(f1[k]), **c.operating_point(k)}
    bounds = c.error_bounds(rows)
    bounds["fpr95"] = bounds[f"fpr95_{fpr95}"]
    out["error_bound"] = bounds
    if curves:
        out["curves"] = c.curves()
    return out


def _split_pixels(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(scores of inlier pixels, scores of anomalous pixels, number of void pixels), validated."""
    scores = np.asarray(scores)
    labels = np.asarray(labels)
    if scores.shape != labels.shape:
        raise ValueError(f"scores have shape {scores.shape} but labels {labels.shape}; they must match pixel for pixel")
    if scores.dtype.kind not in "fiub":
        raise ValueError(f"scores must be numeric, got dtype {scores.dtype}")
    if labels.dtype != np.uint8:
        if labels.dtype.kind not in "iub" or (labels.size and (labels.min() < 0 or labels.max() > 255)):
            raise ValueError("labels must be integers 0 (inlier), 1 (anomaly) or 255 (void)")
        labels = labels.astype(np.uint8)
    lab = labels.ravel()
    counts = np.bincount(lab, minlength=256)
    present = np.flatnonzero(counts)
    bad = present[(present != EVAL_INLIER) & (present != EVAL_ANOMALY) & (present != EVAL_VOID)]
    if bad.size:
        raise ValueError(
            f"labels hold values {bad[:8].tolist()}; anomaly labels must be 0 (inlier), 1 (anomaly) or 255 (void) "
            "(map dataset-specific ids first, e.g. Road Anomaly's 2 -> 1)"
        )
    flat = scores.ravel()
    return flat[lab == EVAL_INLIER], flat[lab == EVAL_ANOMALY], int(counts[EVAL_VOID])


class AnomalyMetrics:
    """Pixel-level AUROC / AP / FPR95 accumulated image by image (see the module docstring).

    Args:
        exact: ``True`` keeps every distinct score (results equal scikit-learn); ``False`` is
            streaming mode with at most ``max_cells`` stored score cells.
        fpr95: which FPR@95TPR definition ``compute()["fpr95"]`` reports (all three are
            always in ``fpr95_by_definition``).
        max_cells: streaming-mode cell budget (memory ~ 24 bytes per cell).
        tolerance: streaming mode warns when a certified error bound exceeds it.

    ``update(scores, labels)`` takes one image (or any batch): ``scores`` float array, ``labels``
    uint8 array of the same shape with 0 = inlier, 1 = anomaly, 255 = void (void is dropped).
    Scores must be finite; float16/float32 scores are keyed in 32 bits, float64 and integer scores
    in 64 bits (do not mix the two within one accumulator).
    """

    def __init__(
        self,
        exact: bool = True,
        fpr95: str = "pebal",
        max_cells: int = DEFAULT_MAX_CELLS,
        tolerance: float = 1e-4,
    ) -> None:
        self.exact = exact
        self.fpr95 = _check_definition(fpr95)
        self.tolerance = tolerance
        self.counts = ScoreCounts(None if exact else max_cells)
        self.n_void = 0
        self.n_images = 0

    def update(self, scores: np.ndarray, labels: np.ndarray) -> None:
        neg, pos, n_void = _split_pixels(scores, labels)
        kd = self.counts.key_dtype or key_dtype_for(neg)
        if kd == np.uint32 and neg.dtype not in (np.float16, np.float32):
            raise ValueError(
                f"this accumulator holds float32 scores; got {neg.dtype}: pass every image with the same score dtype"
            )
        self.counts.add_keys(score_keys(neg, kd), positive=False)
        self.counts.add_keys(score_keys(pos, kd), positive=True)
        self.n_void += n_void
        self.n_images += 1

    def compute(self, curves: bool = True) -> dict:
        """The metrics dict: ``auroc``, ``ap``, ``fpr95`` (floats in [0, 1], NaN if undefined),
        ``fpr95_definition``, ``fpr95_by_definition``, pixel counts, ``threshold_tpr95`` (the
        highest score threshold flagging >= 95 % of anomalous pixels, with its TPR/FPR/precision),
        ``best_f1`` (threshold maximising pixel F1), ``exact``, ``error_bound`` (0 where exact),
        ``mode``, ``n_images``, and, with ``curves=True``, ``curves`` (ROC and PR vertices)."""
        out = metrics_from_table(self.counts.positive_table(), self.fpr95, curves)
        out["n_void_pixels"] = self.n_void
        out["n_images"] = self.n_images
        c = self.counts
        out["mode"] = "exact" if self.exact else f"streaming (max_cells={c.max_cells}, key bits dropped={c.shift})"
        bound = out["error_bound"]
        if bound and max(bound.values()) > self.tolerance:
            warnings.warn(
                f"streaming metrics are only certified to within {max(bound.values()):.2g} (tolerance "
                f"{self.tolerance:g}); raise max_cells or use exact mode",
                stacklevel=2,
            )
        return out


def anomaly_metrics(scores: np.ndarray, labels: np.ndarray, fpr95: str = "pebal", curves: bool = False) -> dict:
    """Exact pixel AUROC / AP / FPR95 of one array pair (any equal shapes); see :class:`AnomalyMetrics`."""
    m = AnomalyMetrics(exact=True, fpr95=fpr95)
    m.update(scores, labels)
    return m.compute(curves=curves)
