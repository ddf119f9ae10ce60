"""Pixel anomaly metrics against independent references: scikit-learn and brute-force FPR95.

Exact mode must equal scikit-learn's ``roc_auc_score`` / ``average_precision_score`` and the three
FPR@95TPR definitions (``docs/evaluation.md``) to 1e-9 on any input, ties included; streaming mode must
stay within the error bound it reports.
"""

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from pebal_core.metrics import FPR95_DEFINITIONS, AnomalyMetrics, anomaly_metrics
from pebal_core.score_counts import keys_to_scores, score_keys

TOL = 1e-9


# ----------------------------------------------------------------------------- references
def fpr95_pebal_reference(y: np.ndarray, s: np.ndarray) -> float:
    """The PEBAL reference FPR95 (``docs/evaluation.md``), step by step: stable descending sort,
    last index of every tie run, cut at full recall, reverse, append (recall 1, fps 0), nearest
    recall to 0.95."""
    order = np.argsort(s, kind="mergesort")[::-1]
    s, y = s[order], y[order]
    last_of_run = np.r_[np.flatnonzero(s[1:] != s[:-1]), y.size - 1]
    tps = np.cumsum(y, dtype=np.float64)[last_of_run]
    fps = 1 + last_of_run - tps
    recall = tps / tps[-1]
    cut = int(np.searchsorted(tps, tps[-1]))
    recall = np.r_[recall[cut::-1], 1.0]
    fps = np.r_[fps[cut::-1], 0.0]
    return fps[np.argmin(np.abs(recall - 0.95))] / np.sum(y == 0)


def fpr95_first_reaching_reference(y: np.ndarray, s: np.ndarray) -> float:
    """SMIYC by brute force: every distinct score as threshold (flag ``s >= t``), from the highest
    down; the FPR at the first one whose TPR >= 0.95."""
    pos, neg = np.sort(s[y == 1]), np.sort(s[y == 0])
    thresholds = np.unique(s)[::-1]
    tpr = (pos.size - np.searchsorted(pos, thresholds, side="left")) / pos.size
    fpr = (neg.size - np.searchsorted(neg, thresholds, side="left")) / neg.size
    return float(fpr[np.flatnonzero(tpr >= 0.95)[0]])


def fpr95_ood_metrics_reference(y: np.ndarray, s: np.ndarray) -> float:
    """``ood_metrics.fpr_at_95_tpr``: sklearn roc_curve, then its three branches."""
    fpr, tpr, _ = roc_curve(y, s)
    if np.all(tpr < 0.95):
        return 0.0
    if np.all(tpr >= 0.95):
        return float(min(fpr[tpr >= 0.95]))
    return float(np.interp(0.95, tpr, fpr))


REFERENCE_FPR95 = {
    "pebal": fpr95_pebal_reference,
    "smiyc": fpr95_first_reaching_reference,
    "ood_metrics": fpr95_ood_metrics_reference,
}


def assert_matches_references(result: dict, scores: np.ndarray, labels: np.ndarray) -> None:
    keep = labels.ravel() < 2
    y = labels.ravel()[keep].astype(np.int64)
    s = scores.ravel()[keep]
    assert result["n_anomaly_pixels"] == (y == 1).sum() and result["n_inlier_pixels"] == (y == 0).sum()
    assert abs(result["auroc"] - roc_auc_score(y, s)) <= TOL
    assert abs(result["ap"] - average_precision_score(y, s)) <= TOL
    for name in FPR95_DEFINITIONS:
        assert abs(result["fpr95_by_definition"][name] - REFERENCE_FPR95[name](y, s)) <= TOL, name


# ----------------------------------------------------------------------------- strategies
@st.composite
def scores_and_labels(draw, dtype=np.float32, max_size=160):
    """Scores drawn from a small pool (many ties, both signs, -0.0 and +0.0) and 0/1/255 labels
    with at least one inlier and one anomalous pixel."""
    n = draw(st.integers(2, max_size))
    pool = draw(
        st.lists(
            st.floats(-1e6, 1e6, allow_nan=False, width=32 if dtype == np.float32 else 64)
            | st.sampled_from([0.0, -0.0]),
            min_size=1,
            max_size=draw(st.integers(1, 40)),
        )
    )
    idx = draw(arrays(np.int64, n, elements=st.integers(0, len(pool) - 1)))
    scores = np.asarray(pool, dtype=dtype)[idx]
    labels = draw(arrays(np.uint8, n, elements=st.sampled_from([0, 0, 1, 255])))
    i = draw(st.integers(0, n - 1))
    labels[i] = 0
    labels[(i + 1 + draw(st.integers(0, n - 2))) % n] = 1
    return scores, labels


def has_both_classes(labels):
    return (labels == 0).any() and (labels == 1).any()


FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ----------------------------------------------------------------------------- keys
@FAST
@given(arrays(np.float32, st.integers(1, 200), elements=st.floats(allow_nan=False, allow_infinity=False, width=32)))
def test_keys_preserve_order_and_equality(x):
    k = score_keys(x)
    assert k.dtype == np.uint32
    i, j = np.triu_indices(x.size, 1) if x.size < 60 else (np.arange(x.size - 1), np.arange(1, x.size))
    assert np.array_equal(x[i] < x[j], k[i] < k[j])
    assert np.array_equal(x[i] == x[j], k[i] == k[j])
    back = keys_to_scores(k)
    assert np.array_equal(back, x + np.float32(0))  # -0.0 comes back as +0.0


def test_keys_of_float64_and_nonfinite_scores_rejected():
    x = np.array([-np.pi, -0.0, 0.0, 1e-300, 5.0])
    k = score_keys(x)
    assert k.dtype == np.uint64 and k[1] == k[2] and np.all(np.diff(k.astype(np.float64)[[0, 2, 3, 4]]) > 0)
    with pytest.raises(ValueError, match="NaN or infinite"):
        anomaly_metrics(np.array([0.1, np.nan], np.float32), np.array([0, 1], np.uint8))
    with pytest.raises(ValueError, match="NaN or infinite"):
        anomaly_metrics(np.array([0.1, np.inf]), np.array([0, 1], np.uint8))


# ----------------------------------------------------------------------------- exact mode
@FAST
@given(scores_and_labels())
def test_exact_equals_sklearn_and_fpr95_references_float32(data):
    scores, labels = data
    if has_both_classes(labels):
        assert_matches_references(anomaly_metrics(scores, labels), scores, labels)


@FAST
@given(scores_and_labels(dtype=np.float64))
def test_exact_equals_references_float64(data):
    scores, labels = data
    if has_both_classes(labels):
        assert_matches_references(anomaly_metrics(scores, labels), scores, labels)


@FAST
@given(scores_and_labels(), st.lists(st.integers(0, 160), max_size=4))
def test_updates_in_any_chunks_equal_one_call(data, cuts):
    scores, labels = data
    if not has_both_classes(labels):
        return
    m = AnomalyMetrics()
    bounds = [0, *sorted(c % (scores.size + 1) for c in cuts), scores.size]
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        m.update(scores[a:b], labels[a:b])
    chunked, whole = m.compute(curves=False), anomaly_metrics(scores, labels)
    for key in ("auroc", "ap", "fpr95"):
        assert chunked[key] == pytest.approx(whole[key], abs=1e-12)


def test_exact_at_scale_with_dense_rows_sparse_tails_and_ties():
    """Enough distinct scores per 4096-key block to exercise the dense rows, plus sparse tails,
    heavy ties (rounded scores) and anomalies on both sides, over several images."""
    rng = np.random.default_rng(7)
    m = AnomalyMetrics()
    all_s, all_l = [], []
    for shape in [(40, 300), (256, 300), (256, 300), (256, 300)]:  # the small first image stays sparse
        labels = rng.choice(np.array([0, 1, 255], np.uint8), size=shape, p=[0.85, 0.1, 0.05])
        scores = rng.normal(3.0, 0.01, labels.shape).astype(np.float32)  # narrow: dense blocks
        scores[labels == 1] += np.float32(0.006)
        scores[:, :40] = rng.normal(0, 50, (shape[0], 40)).astype(np.float32)  # wide: sparse tails
        scores[:, 40:60] = np.round(scores[:, 40:60], 1)  # ties across classes
        m.update(scores, labels)
        all_s.append(scores)
        all_l.append(labels)
    assert m.counts._block_of_slot.size > 0 and len(m.counts._sparse) > 0, "both storages used"
    result = m.compute()
    assert result["exact"] and result["error_bound"]["auroc"] == 0
    assert_matches_references(result, np.concatenate(all_s), np.concatenate(all_l))
    assert result["n_void_pixels"] == sum((lab == 255).sum() for lab in all_l)


def _distinct_positives_with_negatives(n_pos: int, negatives: dict[float, int]) -> tuple[np.ndarray, np.ndarray]:
    """Anomalous pixels at scores n_pos, n_pos-1, ..., 1 (recall steps of 1/n_pos) and inliers
    at the given scores (score -> count)."""
    scores = [float(v) for v in range(n_pos, 0, -1)] + [v for v, c in negatives.items() for _ in range(c)]
    labels = [1] * n_pos + [0] * sum(negatives.values())
    return np.array(scores, np.float32), np.array(labels, np.uint8)


@pytest.mark.parametrize(
    ("n_pos", "negatives", "case"),
    [
        # recall 47/50 and 48/50 are exactly equally far from 0.95 in float64: the reference keeps
        # the higher recall (it scans from full recall upwards)
        (50, {4.5: 3, 2.5: 5, 0.0: 10}, "equidistant recall levels"),
        # recall 19/20 == 0.95 exactly: np.interp returns the last point at TPR 0.95 (inliers up to
        # just above the next anomalous score)
        (20, {10.5: 2, 1.5: 4, 0.0: 5}, "TPR exactly 0.95"),
        (40, {38.5: 1, 2.5: 3, 1.5: 2, 0.5: 7}, "TPR exactly 0.95 twice over"),
    ],
)
def test_fpr95_tie_breaking_edge_cases_match_references(n_pos, negatives, case):
    scores, labels = _distinct_positives_with_negatives(n_pos, negatives)
    r = anomaly_metrics(scores, labels)
    assert_matches_references(r, scores, labels)
    # the definitions really disagree here, so each one's rule is exercised
    assert len(set(r["fpr95_by_definition"].values())) > 1, case


def test_threshold_tpr95_and_best_f1_are_operating_points():
    rng = np.random.default_rng(3)
    labels = (rng.random(5000) < 0.2).astype(np.uint8)
    scores = (rng.normal(0, 1, 5000) + 1.5 * labels).astype(np.float32)
    r = anomaly_metrics(scores, labels)
    t = r["threshold_tpr95"]
    flagged = scores >= t["score"]
    assert t["tpr"] == pytest.approx((flagged & (labels == 1)).sum() / (labels == 1).sum())
    assert t["fpr"] == pytest.approx((flagged & (labels == 0)).sum() / (labels == 0).sum())
    assert t["tpr"] >= 0.95 and ((scores > t["score"]) & (labels == 1)).sum() / (labels == 1).sum() < 0.95
    assert t["fpr"] == pytest.approx(r["fpr95_by_definition"]["smiyc"])
    # best F1 by brute force over every distinct threshold
    f1 = [
        2 * ((scores >= u) & (labels == 1)).sum() / ((scores >= u).sum() + (labels == 1).sum())
        for u in np.unique(scores)
    ]
    assert r["best_f1"]["f1"] == pytest.approx(max(f1))


def test_undefined_metrics_are_nan_and_bad_labels_are_explained():
    only_inliers = anomaly_metrics(np.arange(4, dtype=np.float32), np.zeros(4, np.uint8))
    assert np.isnan(only_inliers["auroc"]) and np.isnan(only_inliers["ap"]) and np.isnan(only_inliers["fpr95"])
    only_anomalies = anomaly_metrics(np.arange(4, dtype=np.float32), np.ones(4, np.uint8))
    assert only_anomalies["ap"] == 1.0 and np.isnan(only_anomalies["auroc"])
    with pytest.raises(ValueError, match=r"values \[2\].*Road Anomaly"):
        anomaly_metrics(np.zeros(3, np.float32), np.array([0, 1, 2], np.uint8))
    with pytest.raises(ValueError, match="shape"):
        anomaly_metrics(np.zeros(3, np.float32), np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match="same score dtype"):
        m = AnomalyMetrics()
        m.update(np.zeros(2, np.float32), np.array([0, 1], np.uint8))
        m.update(np.zeros(2, np.float64), np.array([0, 1], np.uint8))
    with pytest.raises(ValueError, match="unknown FPR95 definition"):
        AnomalyMetrics(fpr95="nearest")


def test_result_names_its_fpr95_definition():
    rng = np.random.default_rng(0)
    labels = (rng.random(999) < 0.3).astype(np.uint8)
    scores = rng.integers(0, 20, 999).astype(np.float32) + labels * 3
    for name in FPR95_DEFINITIONS:
        r = anomaly_metrics(scores, labels, fpr95=name)
        assert r["fpr95_definition"] == name and r["fpr95"] == r["fpr95_by_definition"][name]


# ----------------------------------------------------------------------------- streaming mode
@FAST
@given(scores_and_labels(max_size=400), st.integers(16, 80))
def test_streaming_stays_within_its_certified_bound(data, max_cells):
    scores, labels = data
    if not has_both_classes(labels):
        return
    exact = anomaly_metrics(scores, labels)
    m = AnomalyMetrics(exact=False, max_cells=max_cells)
    for part in range(0, scores.size, 50):
        m.update(scores[part : part + 50], labels[part : part + 50])
        assert m.counts.n_cells <= max_cells and m.counts._pending_size <= max_cells // 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = m.compute()
    bound = r["error_bound"]
    assert abs(r["auroc"] - exact["auroc"]) <= bound["auroc"] + 1e-12
    assert abs(r["ap"] - exact["ap"]) <= bound["ap"] + 1e-12
    for name in FPR95_DEFINITIONS:
        got, want = r["fpr95_by_definition"][name], exact["fpr95_by_definition"][name]
        assert abs(got - want) <= bound[f"fpr95_{name}"] + 1e-12, name
    if r["exact"]:
        assert r["auroc"] == pytest.approx(exact["auroc"], abs=1e-12)


def test_streaming_is_exact_while_distinct_scores_fit_and_bounded_after():
    rng = np.random.default_rng(5)
    few = AnomalyMetrics(exact=False, max_cells=256)
    many = AnomalyMetrics(exact=False, max_cells=4096)
    all_s, all_l = [], []
    for _ in range(30):
        labels = rng.choice(np.array([0, 1, 255], np.uint8), size=(64, 64), p=[0.8, 0.15, 0.05])
        scores = np.round(rng.normal(0, 3, labels.shape) + 2 * (labels == 1), 1).astype(np.float32)  # ~250 values
        few.update(scores, labels)
        many.update(rng.normal(0, 3, labels.shape).astype(np.float32), labels)  # 4096 pixels each
        assert many.counts.n_cells <= 4096 and many.counts._pending_size <= 2048
        all_s.append(scores)
        all_l.append(labels)
    r = few.compute()
    assert r["exact"] and few.counts.shift == 0 and max(r["error_bound"].values()) == 0
    assert_matches_references(r, np.concatenate(all_s), np.concatenate(all_l))
    assert many.counts.shift > 0  # 120k distinct scores were merged into <= 4096 cells
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert not many.compute()["exact"]


def test_streaming_warns_when_bound_exceeds_tolerance():
    rng = np.random.default_rng(1)
    labels = (rng.random(20000) < 0.5).astype(np.uint8)
    m = AnomalyMetrics(exact=False, max_cells=16, tolerance=1e-4)
    m.update(rng.normal(0, 1, 20000).astype(np.float32) + labels, labels)
    with pytest.warns(UserWarning, match="certified to within"):
        r = m.compute()
    assert r["error_bound"]["auroc"] > 1e-4 and r["mode"].startswith("streaming")


def test_curves_are_monotone_and_span_the_unit_square():
    rng = np.random.default_rng(2)
    labels = (rng.random(30000) < 0.1).astype(np.uint8)
    r = anomaly_metrics(rng.normal(0, 1, 30000).astype(np.float32) + labels, labels, curves=True)
    c = r["curves"]
    assert c["roc_fpr"][0] == 0 and c["roc_tpr"][-1] == 1 and np.all(np.diff(c["roc_fpr"]) >= 0)
    assert np.all(np.diff(c["roc_tpr"]) >= 0) and c["roc_fpr"].size <= 2000
    assert np.trapezoid(c["roc_tpr"], c["roc_fpr"]) == pytest.approx(r["auroc"], abs=2e-3)
    assert np.all(np.diff(c["pr_recall"]) >= 0) and np.all(np.diff(c["pr_threshold"]) <= 0)
