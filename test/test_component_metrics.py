"""SegmentMeIfYouCan component metrics on hand-drawn maps whose sIoU / PPV / F1 are worked out by hand."""

from fractions import Fraction as Fr

import numpy as np
import pytest

from pebal_core.component_metrics import (
    ANOMALY_TRACK,
    OBSTACLE_TRACK,
    ComponentMetrics,
    ComponentSizes,
    frame_components,
)

NO_FILTER = ComponentSizes(segsize=1, instsize=1)


def case_touching():
    """GT A (4 px) half covered by X (4 px); GT B (3 px) inside Y (4 px); Z = two diagonal
    background pixels (one component under 8-connectivity); W lies on void (ignored)."""
    lab = np.zeros((10, 10), np.uint8)
    lab[1:3, 1:3] = 1  # A
    lab[7, 4:7] = 1  # B
    lab[9, :] = 255
    pred = np.zeros((10, 10), bool)
    pred[1:3, 2:4] = True  # X: overlaps A in column 2 (2 px)
    pred[7, 3:7] = True  # Y: B plus one inlier pixel
    pred[4, 8] = pred[5, 9] = True  # Z: diagonal neighbours
    pred[9, 0:3] = True  # W: void
    return pred, lab


def case_shared_prediction():
    """One predicted component P (8 px) touches GT A and GT C (4 px each) in 2 px each."""
    lab = np.zeros((6, 10), np.uint8)
    lab[1:3, 1:3] = 1  # A
    lab[1:3, 5:7] = 1  # C
    pred = np.zeros((6, 10), bool)
    pred[1:3, 2:6] = True
    return pred, lab


def test_siou_and_ppv_of_touching_components():
    siou, ppv = frame_components(*case_touching(), sizes=NO_FILTER)
    # sIoU(A) = 2 / (4 + 4 - 2 - 0), sIoU(B) = 3 / (4 + 3 - 3 - 0)
    assert sorted(siou) == pytest.approx([1 / 3, 3 / 4])
    # PPV: X 2/4, Y 3/4, Z 0/2; W on void is no component; Z is one component (8-connectivity)
    assert sorted(ppv) == pytest.approx([0.0, 0.5, 0.75])


def test_prediction_shared_by_two_gt_components_is_adjusted():
    siou, ppv = frame_components(*case_shared_prediction(), sizes=NO_FILTER)
    # sIoU(A) = |A ∩ P| / (|P| + |A| - |A ∩ P| - |P ∩ C|) = 2 / (8 + 4 - 2 - 2) = 1/4, same for C;
    # a plain IoU would give 2 / 10
    assert siou == pytest.approx([0.25, 0.25])
    assert ppv == pytest.approx([0.5])


def test_size_filters_drop_small_predictions_and_void_small_ground_truth():
    lab = np.zeros((8, 8), np.uint8)
    lab[0:2, 0:2] = 1  # E: 4 px, kept
    lab[5, 5:7] = 1  # D: 2 px < instsize 3 -> void
    pred = np.zeros((8, 8), bool)
    pred[0, 0:2] = True  # R: 2 px < segsize 3 -> deleted, so E is missed
    pred[5, 5:8] = True  # Q: 3 px kept; 2 of them lie on voided D, 1 on inlier
    siou, ppv = frame_components(pred, lab, ComponentSizes(segsize=3, instsize=3))
    assert siou.tolist() == [0.0]
    assert ppv.tolist() == [0.0]  # Q counts only its non-void pixel, which is an inlier


def test_dataset_f1_over_sIoU_thresholds_by_hand():
    m = ComponentMetrics(NO_FILTER)
    m.update(*case_touching())
    m.update(*case_shared_prediction())
    r = m.compute()
    # GT sIoU: 1/3, 3/4, 1/4, 1/4; predicted PPV: 1/2, 3/4, 0, 1/2
    assert r["n_gt_components"] == 4 and r["n_pred_components"] == 4
    assert r["siou"] == pytest.approx((Fr(1, 3) + Fr(3, 4) + Fr(1, 4) + Fr(1, 4)) / 4)
    assert r["ppv"] == pytest.approx((Fr(1, 2) + Fr(3, 4) + 0 + Fr(1, 2)) / 4)
    # tau = .25: TP 4 FN 0 FP 1; .30: TP 2 FN 2 FP 1; .35-.50: TP 1 FN 3 FP 1; .55-.75: TP 1 FN 3 FP 3
    assert r["tp"] == [4, 2] + [1] * 9
    assert r["fn"] == [0, 2] + [3] * 9
    assert r["fp"] == [1] * 6 + [3] * 5
    f1 = [Fr(8, 9), Fr(4, 7)] + [Fr(1, 3)] * 4 + [Fr(1, 4)] * 5
    assert r["f1"] == pytest.approx([float(x) for x in f1])
    assert r["f1_mean"] == pytest.approx(float(sum(f1) / 11))


def test_track_presets_and_shape_check():
    assert (ANOMALY_TRACK.segsize, ANOMALY_TRACK.instsize) == (500, 100)
    assert (OBSTACLE_TRACK.segsize, OBSTACLE_TRACK.instsize) == (50, 10)
    # with the ObstacleTrack filters every component of the touching case is too small
    siou, ppv = frame_components(*case_touching(), sizes=OBSTACLE_TRACK)
    assert siou.size == 0 and ppv.size == 0
    with pytest.raises(ValueError, match="must be equal"):
        frame_components(np.zeros((2, 3), bool), np.zeros((3, 2), np.uint8))
