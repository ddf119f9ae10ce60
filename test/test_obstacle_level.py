"""Obstacle-level counts (:mod:`pebal_core.alarms.frame_counts`) against brute-force references:
8-connected components by a plain flood fill, void and ego pixels handled as documented."""

from __future__ import annotations

import numpy as np
import pytest
from np_reference import brute_obstacle_counts

from pebal_core.alarms.frame import FrameContext
from pebal_core.alarms.frame_counts import ObstacleCounts, ThresholdSweep, count_frame, frame_evidence
from pebal_core.alarms.operating_point import OperatingPoint
from pebal_core.alarms.pipeline import AlarmPipeline


def chain(trainids, score, threshold, ego=None, region="all", min_pixels=1, min_fraction=0.002):
    """The alarm chain of one still at a point with these settings."""
    point = OperatingPoint(threshold, region=region, min_pixels=min_pixels, region_min_fraction=min_fraction)
    return AlarmPipeline(sequence=False).process(FrameContext(trainids, score, point, ego_mask=ego))


@pytest.mark.parametrize("seed", range(40))
def test_counts_match_a_flood_fill_reference(seed):
    rng = np.random.default_rng(seed)
    h, w = 18, 26
    # blobby labels: anomaly, inlier and void patches
    labels = np.zeros((h, w), np.uint8)
    for _ in range(rng.integers(1, 6)):
        y, x, s = rng.integers(0, h), rng.integers(0, w), rng.integers(1, 5)
        labels[max(0, y - s) : y + s, max(0, x - s) : x + s] = 1
    labels[rng.random((h, w)) < 0.08] = 255
    labels[rng.random((h, w)) < 0.05] = 1
    score = rng.normal(0, 1, (h, w)).astype(np.float32) + 1.5 * (labels == 1)
    ego = np.zeros((h, w), bool)
    if seed % 2:
        ego[h - rng.integers(1, 5) :, :] = True
    min_pixels, min_visible = int(rng.integers(1, 5)), int(rng.integers(1, 6))
    used = ego if seed % 2 else None
    frame = chain(np.zeros((h, w), np.uint8), score, 0.8, used, min_pixels=min_pixels)
    got = count_frame(frame, labels, min_visible, used)
    expected = brute_obstacle_counts(labels, score, 0.8, ego, min_pixels, min_visible)
    assert (
        len(got.labelled),
        got.detected,
        got.reported,
        len(got.false_alarms),
        got.inlier_region,
        got.flagged_region,
    ) == expected


def test_void_ego_and_region_by_hand():
    labels = np.zeros((12, 20), np.uint8)
    labels[2, 2] = labels[3, 3] = 1  # diagonal neighbours: one obstacle of 2 px
    labels[2, 10] = labels[2, 12] = 1  # separated by a void pixel: two obstacles of 1 px
    labels[2, 11] = 255
    labels[9:, :] = 255  # the bonnet: void in the labels
    score = np.full(labels.shape, -5.0, np.float32)
    score[2:4, 2:4] = 1.0  # on the diagonal obstacle
    score[9:12, 5:9] = 1.0  # on the bonnet (void only): a false alarm without the ego mask
    score[5, 15] = 1.0  # one inlier pixel alarms
    frame = chain(np.zeros(labels.shape, np.uint8), score, 0.0)
    got = count_frame(frame, labels, min_visible=1)
    assert [o.pixels for o in got.labelled] == [2, 1, 1]
    assert [o.detected for o in got.labelled] == [True, False, False]
    assert got.labelled[0].box == (2, 2, 3, 3)
    assert got.reported == 3 and len(got.false_alarms) == 2  # the bonnet blob and the inlier pixel
    inlier = int((labels == 0).sum())
    assert (got.inlier_region, got.flagged_region) == (inlier, 2 + 1)  # (2,3), (3,2) and (5,15)
    # with the ego mask the bonnet blob is gone, and ego pixels leave the pixel counts
    ego = np.zeros(labels.shape, bool)
    ego[9:, :] = True
    ego[5, 15] = True
    frame = chain(np.zeros(labels.shape, np.uint8), score, 0.0, ego)
    got = count_frame(frame, labels, 1, ego)
    assert got.reported == 1 and got.false_alarms == () and got.detected == 1
    assert (got.inlier_region, got.flagged_region) == (inlier - 1, 2)
    # the drivable region limits the pixel counts to the predicted road (rows 0..5 here)
    trainids = np.full(labels.shape, 8, np.uint8)
    trainids[:6, :] = 0
    frame = chain(trainids, score, 0.0, ego, region="drivable")
    got = count_frame(frame, labels, 1, ego)
    region_inlier = int(((labels == 0) & frame.region).sum())
    assert frame.region[:6].sum() == 6 * 20 - 1 and not frame.region[6:].any()
    assert (got.inlier_region, got.flagged_region) == (region_inlier, 2)


@pytest.mark.parametrize("seed", range(10))
def test_threshold_sweep_counts_as_the_chain_does(seed):
    rng = np.random.default_rng(100 + seed)
    h, w = 30, 40
    labels = np.zeros((h, w), np.uint8)
    for _ in range(4):
        y, x, s = rng.integers(0, h), rng.integers(0, w), rng.integers(1, 4)
        labels[max(0, y - s) : y + s, max(0, x - s) : x + s] = 1
    labels[rng.random((h, w)) < 0.1] = 255
    score = rng.normal(0, 1, (h, w)).astype(np.float32) + (labels == 1)
    ego = np.zeros((h, w), bool)
    ego[-4:, :] = True
    trainids = np.zeros((h, w), np.uint8)
    trainids[:, : w // 3] = 8  # a left third that is no road
    for threshold in (-0.5, 0.5, 1.2, 2.5):
        frame = chain(trainids, score, threshold, ego, region="drivable", min_pixels=3, min_fraction=0.0)
        sweep = ThresholdSweep(score, labels, frame.region, min_pixels=3, min_visible=2)
        got = count_frame(frame, labels, 2, ego)
        assert sweep.at(threshold) == (got.detected, len(got.false_alarms))
        assert sweep.labelled == len(got.labelled)


def test_running_totals_and_rates():
    labels = np.zeros((10, 10), np.uint8)
    labels[1:3, 1:3] = 1
    hit = np.full(labels.shape, -5.0, np.float32)
    hit[1:3, 1:3] = 1.0
    miss = np.full(labels.shape, -5.0, np.float32)
    miss[6:8, 6:8] = 1.0
    counts = ObstacleCounts(min_visible=1)
    trainids = np.zeros(labels.shape, np.uint8)
    per_frame = [counts.update(chain(trainids, score, 0.0), labels) for score in (hit, miss, miss)]
    s = counts.summary()
    assert (s["frames"], s["obstacles"], s["detected"], s["false_alarms"]) == (3, 3, 1, 2)
    assert s["detection_rate"] == pytest.approx(1 / 3) and s["false_alarms_per_frame"] == pytest.approx(2 / 3)
    assert s["pixel_fpr_region"] == pytest.approx(8 / (3 * 96))
    assert per_frame[1].false_alarms == (0,) and per_frame[0].detected == 1
    frame = chain(np.zeros(labels.shape, np.uint8), miss, 0.0)
    evidence = frame_evidence("x.png", per_frame[1], frame)
    assert evidence == {
        "name": "x.png",
        "labelled": 1,
        "detected": 0,
        "missed": [{"box": [1, 1, 2, 2], "pixels": 4}],
        "false_alarms": [{"box": [6, 6, 7, 7], "pixels": 4, "score": 1.0}],
    }
    with pytest.raises(ValueError, match="differ in size"):
        counts.update(chain(np.zeros((5, 5), np.uint8), np.zeros((5, 5), np.float32), 0.0), labels)
