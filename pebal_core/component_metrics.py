"""Component-level anomaly metrics as SegmentMeIfYouCan defines them (sIoU, PPV, mean F1).

Per image, with labels 0 = inlier, 1 = anomaly, 255 = void and a binary prediction mask
(``score >= threshold``; SegmentMeIfYouCan uses the pixel-level best-F1 threshold):

1. Predicted pixels on void are dropped. Ground-truth components (anomaly pixels) and predicted
   components are found with **8-connectivity** (``scipy.ndimage.label`` with a 3x3 structure).
2. Predicted components with fewer than ``thresh_segsize`` pixels are deleted; ground-truth
   components with fewer than ``thresh_instsize`` pixels become void (AnomalyTrack 500 / 100,
   ObstacleTrack 50 / 10). From here on only non-void pixels count.
3. For a ground-truth component ``k`` let ``P(k)`` be the union of the predicted components that
   touch it. ``sIoU(k) = |k ∩ P(k)| / (|P(k)| + |k| - |k ∩ P(k)| - |P(k) ∩ other GT components|)``
   (0 when nothing touches it).
4. For a predicted component ``p``: ``PPV(p) = |p ∩ GT| / |p|``.
5. Over the whole dataset, for every ``tau`` in ``linspace(0.25, 0.75, 11)``: TP = #GT components
   with sIoU >= tau, FN = #GT components with sIoU < tau, FP = #predicted components with
   PPV < tau; ``F1_tau = 2TP / (2TP + FN + FP)``; ``mean F1`` = mean of F1_tau over tau.
   ``sIoU`` and ``PPV`` reported are the means over all components of the dataset.

This follows ``road_anomaly_benchmark/metrics/instance_segmentation.py`` of the
SegmentMeIfYouCan benchmark, with one documented difference: the prediction mask is
``score >= threshold`` here (the benchmark thresholds with ``>`` on its binned curve).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage, sparse

from pebal_core.labels import EVAL_ANOMALY, EVAL_VOID

SIOU_THRESHOLDS = np.linspace(0.25, 0.75, 11)
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class ComponentSizes:
    """Size filters in pixels: predicted components below ``segsize`` are dropped, ground-truth
    components below ``instsize`` become void."""

    segsize: int
    instsize: int


ANOMALY_TRACK = ComponentSizes(segsize=500, instsize=100)
OBSTACLE_TRACK = ComponentSizes(segsize=50, instsize=10)


def frame_components(
    prediction: np.ndarray, labels: np.ndarray, sizes: ComponentSizes = ANOMALY_TRACK
) -> tuple[np.ndarray, np.ndarray]:
    """``(sIoU of each ground-truth component, PPV of each predicted component)`` of one image.

    Args:
        prediction: bool ``H x W``, True where the method flags an anomaly.
        labels: uint8 ``H x W``, 0 = inlier, 1 = anomaly, 255 = void.
        sizes: component size filters.
    """
    prediction = np.asarray(prediction, dtype=bool)
    labels = np.asarray(labels)
    if prediction.shape != labels.shape or labels.ndim != 2:
        raise ValueError(f"prediction {prediction.shape} and labels {labels.shape} must be equal H x W maps")
    gt_cc, n_gt = ndimage.label(labels == EVAL_ANOMALY, structure=EIGHT_CONNECTED)
    pred_cc, n_pred = ndimage.label(prediction & (labels != EVAL_VOID), structure=EIGHT_CONNECTED)
    if n_pred:
        size = np.bincount(pred_cc.ravel(), minlength=n_pred + 1)
        small = size < sizes.segsize
        small[0] = False
        pred_cc[small[pred_cc]] = 0
    roi = labels != EVAL_VOID
    if n_gt:
        size = np.bincount(gt_cc.ravel(), minlength=n_gt + 1)
        small = size < sizes.instsize
        small[0] = False
        roi &= ~small[gt_cc]
    g, p = gt_cc[roi].astype(np.int64), pred_cc[roi].astype(np.int64)
    # overlap counts M[g, p] between GT component g and predicted component p (0 = none)
    m = sparse.coo_matrix((np.ones(g.size, np.int64), (g, p)), shape=(n_gt + 1, n_pred + 1)).tocsr()
    m.sum_duplicates()
    gt_present = np.flatnonzero(np.asarray(m[1:].sum(axis=1)).ravel()) + 1
    pred_size = np.asarray(m.sum(axis=0)).ravel()
    pred_on_gt = np.asarray(m[1:].sum(axis=0)).ravel()  # pixels of p on any GT component
    siou = np.empty(gt_present.size)
    for i, k in enumerate(gt_present):
        row = m.getrow(k)
        touching = row.indices[(row.indices > 0) & (row.data > 0)]
        size_k = row.sum()
        if touching.size == 0:
            siou[i] = 0.0
            continue
        overlap = row[0, touching].toarray().ravel()
        intersection = overlap.sum()
        union_p = pred_size[touching].sum()
        other_gt = (pred_on_gt[touching] - overlap).sum()
        siou[i] = intersection / (union_p + size_k - intersection - other_gt)
    pred_present = np.flatnonzero(pred_size[1:]) + 1
    ppv = pred_on_gt[pred_present] / pred_size[pred_present]
    return siou, ppv


class ComponentMetrics:
    """SegmentMeIfYouCan component metrics accumulated over a dataset (see the module docstring)."""

    def __init__(self, sizes: ComponentSizes = ANOMALY_TRACK, siou_thresholds: np.ndarray = SIOU_THRESHOLDS) -> None:
        self.sizes = sizes
        self.taus = np.asarray(siou_thresholds, dtype=np.float64)
        self.siou: list[np.ndarray] = []
        self.ppv: list[np.ndarray] = []

    def update(self, prediction: np.ndarray, labels: np.ndarray) -> None:
        siou, ppv = frame_components(prediction, labels, self.sizes)
        self.siou.append(siou)
        self.ppv.append(ppv)

    def compute(self) -> dict:
        """``siou`` (mean over GT components), ``ppv`` (mean over predicted components),
        ``f1_mean``, and per threshold ``tau``: ``tp``, ``fn``, ``fp``, ``f1`` lists."""
        siou = np.concatenate(self.siou) if self.siou else np.zeros(0)
        ppv = np.concatenate(self.ppv) if self.ppv else np.zeros(0)
        tp = np.array([(siou >= t).sum() for t in self.taus])
        fn = np.array([(siou < t).sum() for t in self.taus])
        fp = np.array([(ppv < t).sum() for t in self.taus])
        with np.errstate(invalid="ignore", divide="ignore"):
            f1 = np.where(2 * tp + fn + fp > 0, 2 * tp / (2 * tp + fn + fp), np.nan)
        return {
            "siou": float(siou.mean()) if siou.size else float("nan"),
            "ppv": float(ppv.mean()) if ppv.size else float("nan"),
            "f1_mean": float(np.mean(f1)),
            "tau": self.taus.tolist(),
            "tp": tp.tolist(),
            "fn": fn.tolist(),
            "fp": fp.tolist(),
            "f1": f1.tolist(),
            "n_gt_components": int(siou.size),
            "n_pred_components": int(ppv.size),
            "segsize": self.sizes.segsize,
            "instsize": self.sizes.instsize,
        }
