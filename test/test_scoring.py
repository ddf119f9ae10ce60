"""The energy-score head against independent float64 numpy references on tiny tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from np_reference import np_gaussian_blur, np_lse

from pebal_core.scoring import (
    BASELINES,
    METHODS,
    EnergyScoreHead,
    all_scores,
    free_energy,
    inlier_labels,
    labels_and_score,
    score_map,
    smooth,
)


def logits_np(shape=(2, 20, 9, 11), scale=3.0, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, scale, shape)


def t32(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(a.astype(np.float32))


def test_free_energy_is_minus_logsumexp_of_19_inlier_channels():
    x = logits_np()
    x[:, 19] = 1e4  # the abstention channel must be ignored
    expected = -np_lse(x[:, :19].astype(np.float32).astype(np.float64))
    got = free_energy(t32(x))
    assert got.dtype == torch.float32 and got.shape == (2, 9, 11)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-6, atol=1e-5)


def test_baselines_match_hand_computed_values():
    x = logits_np(seed=1)
    x64 = x.astype(np.float32).astype(np.float64)
    inl = x64[:, :19]
    p = np.exp(inl - np_lse(inl)[:, None])
    p20 = np.exp(x64 - np_lse(x64)[:, None])
    expected = {
        "energy": -np_lse(inl),
        "msp": 1.0 - p.max(axis=1),
        "maxlogit": -inl.max(axis=1),
        "entropy": -(p * np.log(p)).sum(axis=1) / np.log(19),
        "abstention": p20[:, 19],
        "pebal": np.stack([np_gaussian_blur(-np_lse(inl)[b]) for b in range(2)]),
    }
    scores = all_scores(t32(x))
    assert set(scores) == set(METHODS) and set(BASELINES) <= set(METHODS)
    for name, value in expected.items():
        np.testing.assert_allclose(scores[name].numpy(), value, rtol=1e-5, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(score_map(t32(x), name).numpy(), value, rtol=1e-5, atol=1e-5, err_msg=name)


def test_scores_are_higher_for_more_anomalous_pixels():
    confident = np.zeros((1, 20, 1, 1))
    confident[0, 3] = 12.0
    flat = np.zeros((1, 20, 1, 1))
    x = t32(np.concatenate([confident, flat], axis=3))
    for name in ("energy", "msp", "maxlogit", "entropy"):
        s = score_map(x, name)[0, 0]
        assert s[1] > s[0], name


def test_smooth_equals_numpy_2d_gaussian_with_reflect_padding():
    e = np.random.default_rng(2).normal(0, 5, (3, 8, 13))
    got = smooth(t32(e)).numpy()
    expected = np.stack([np_gaussian_blur(e[b].astype(np.float32).astype(np.float64)) for b in range(3)])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(smooth(t32(e[0])).numpy(), expected[0], rtol=1e-5, atol=1e-5)  # H x W input


def test_smooth_preserves_a_constant_map_and_rejects_too_small_maps():
    np.testing.assert_allclose(smooth(torch.full((1, 5, 6), -7.5)).numpy(), -7.5, rtol=1e-6)
    with pytest.raises(ValueError, match="too small"):
        smooth(torch.zeros(1, 3, 10))


def test_inlier_labels_equal_argmax_with_lowest_index_on_ties():
    x = np.round(logits_np(seed=3, scale=1.0))  # integer logits: many exact ties
    x[:, 19] = 99.0
    x[0, :19, 0, 0] = 5.0  # all 19 tied -> 0
    x[0, 7, 1, 1] = x[0, 12, 1, 1] = 50.0  # tie between 7 and 12 -> 7
    expected = np.argmax(x[:, :19], axis=1)  # numpy returns the first maximum
    got = inlier_labels(t32(x))
    assert got.dtype == torch.uint8
    np.testing.assert_array_equal(got.numpy(), expected)
    assert got[0, 0, 0] == 0 and got[0, 1, 1] == 7


def test_labels_and_score_is_the_fused_equivalent():
    x = t32(logits_np(seed=4))
    labels, score = labels_and_score(x)
    np.testing.assert_array_equal(labels.numpy(), np.argmax(x.numpy()[:, :19], axis=1))
    np.testing.assert_allclose(score.numpy(), score_map(x, "pebal").numpy(), rtol=1e-6, atol=1e-6)
    _, raw = labels_and_score(x, smoothing=False)
    np.testing.assert_allclose(raw.numpy(), -np_lse(x.numpy().astype(np.float64)[:, :19]), rtol=1e-6, atol=1e-5)
    head_labels, head_score = EnergyScoreHead()(x)
    assert torch.equal(head_labels, labels) and torch.equal(head_score, score)


def test_stable_for_logits_of_magnitude_1e3():
    x = logits_np(seed=5, scale=1.0) * 1e3
    scores = all_scores(t32(x))
    for name, s in scores.items():
        assert torch.isfinite(s).all(), name
    x64 = x.astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(scores["energy"].numpy(), -np_lse(x64[:, :19]), rtol=1e-6)
    labels, score = labels_and_score(t32(x))
    assert torch.isfinite(score).all()
    np.testing.assert_array_equal(labels.numpy(), np.argmax(x64[:, :19], axis=1))


def test_bad_shapes_and_methods_are_refused():
    with pytest.raises(ValueError, match="C >= 19"):
        free_energy(torch.zeros(1, 5, 4, 4))
    with pytest.raises(ValueError, match="unknown score method"):
        score_map(torch.zeros(1, 20, 4, 4), "nope")
    with pytest.raises(ValueError, match="20-channel"):
        score_map(torch.zeros(1, 19, 4, 4), "abstention")
    assert "abstention" not in all_scores(torch.zeros(1, 19, 8, 8))


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning", "ignore::FutureWarning")
@pytest.mark.parametrize("dynamo", [False, True])
def test_head_exports_to_onnx_with_the_same_result(tmp_path, dynamo):
    ort = pytest.importorskip("onnxruntime")
    x = t32(logits_np(shape=(1, 20, 12, 16), seed=6, scale=4.0))
    x[0, 4, 0, 0] = x[0, 9, 0, 0] = 80.0  # a tie
    path = tmp_path / "head.onnx"
    torch.onnx.export(EnergyScoreHead().eval(), (x,), str(path), dynamo=dynamo)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    labels, score = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    np.testing.assert_array_equal(labels, np.argmax(x.numpy()[:, :19], axis=1))
    np.testing.assert_allclose(score, score_map(x, "pebal").numpy(), rtol=1e-5, atol=1e-5)
