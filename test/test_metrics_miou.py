"""Inlier mIoU against scikit-learn's confusion matrix and a brute-force IoU."""

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion

from pebal_core.metrics import confusion_matrix, mean_iou


def test_confusion_matrix_matches_sklearn_and_ignores_void():
    rng = np.random.default_rng(0)
    label = rng.integers(0, 19, (60, 70)).astype(np.uint8)
    label[rng.random(label.shape) < 0.2] = 255
    label[rng.random(label.shape) < 0.05] = 254
    pred = rng.integers(0, 19, label.shape).astype(np.uint8)
    conf = confusion_matrix(pred, label)
    keep = label < 19
    expected = sk_confusion(label[keep], pred[keep], labels=list(range(19)))
    np.testing.assert_array_equal(conf, expected)


def test_mean_iou_brute_force_and_absent_classes():
    label = np.array([[0, 0, 1, 1], [2, 2, 255, 1]], dtype=np.uint8)
    pred = np.array([[0, 1, 1, 1], [2, 0, 5, 1]], dtype=np.uint8)
    miou, iou = mean_iou(confusion_matrix(pred, label))
    # class 0: TP 1 (0,0); FP 1 (1,1 pred 0 where gt 2); FN 1 (0,1) -> 1/3
    # class 1: TP 3; FP 1 (0,1); FN 0 -> 3/4 ; class 2: TP 1, FN 1 -> 1/2
    assert np.isclose(iou[0], 1 / 3) and np.isclose(iou[1], 3 / 4) and np.isclose(iou[2], 1 / 2)
    assert np.isnan(iou[3:]).all()  # never seen in gt or (counted) prediction
    assert np.isclose(miou, (1 / 3 + 3 / 4 + 1 / 2) / 3)


def test_mean_iou_over_ground_truth_classes_only():
    label = np.array([[0, 0, 1, 1], [2, 2, 255, 1]], dtype=np.uint8)
    pred = np.array([[0, 1, 1, 1], [2, 4, 5, 1]], dtype=np.uint8)  # class 4 predicted, absent from the GT
    conf = confusion_matrix(pred, label)
    miou_any, iou = mean_iou(conf)
    miou_gt, iou_gt = mean_iou(conf, average_over="gt")
    np.testing.assert_array_equal(iou, iou_gt)  # the per-class IoU does not depend on the average
    # class 0: TP 1, FP 0, FN 1 -> 1/2; class 1: TP 3, FP 1 -> 3/4; class 2: TP 1, FN 1 -> 1/2; class 4: 0/1
    assert iou[4] == 0.0 and np.isnan(iou[5])  # pred 5 sits on a void pixel: not counted
    assert np.isclose(miou_gt, (1 / 2 + 3 / 4 + 1 / 2) / 3)
    assert np.isclose(miou_any, (1 / 2 + 3 / 4 + 1 / 2 + 0) / 4)
    assert np.isnan(mean_iou(np.zeros((19, 19)), average_over="gt")[0])
    with pytest.raises(ValueError, match="average_over must be one of gt_or_pred, gt"):
        mean_iou(conf, average_over="present")
