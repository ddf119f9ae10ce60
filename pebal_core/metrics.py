"""Evaluation metrics.

Inlier segmentation quality
---------------------------
:func:`confusion_matrix` accumulates an ``N x N`` int64 matrix (rows = ground truth, columns =
prediction) over pixels whose ground truth is a class (< N); void (255) and anomaly (254) pixels
are skipped. :func:`mean_iou` gives per-class IoU = TP / (TP + FP + FN) and their mean over the
classes that occur (in the ground truth or the prediction); classes with no pixel in either are
NaN and left out of the mean (the Cityscapes convention on subsets).
"""

from __future__ import annotations

import numpy as np

from pebal_core.labels import NUM_CLASSES


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


def mean_iou(conf: np.ndarray) -> tuple[float, np.ndarray]:
    """``(mIoU, per-class IoU)`` from a confusion matrix; absent classes are NaN and excluded."""
    conf = np.asarray(conf, dtype=np.float64)
    tp = np.diag(conf)
    denom = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(denom > 0, tp / denom, np.nan)
    return (float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")), iou
