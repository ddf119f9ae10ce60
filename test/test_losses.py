"""Every PEBAL loss term, both variants and the ablation switches, against float64 hand computations.

The hand computations work in probability space with numpy loops over explicit formulas
(``docs/training.md``, "Paper versus reference"), independently of the log-space implementation under test.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from np_reference import np_gaussian_blur, np_lse, np_softmax

from pebal_core.config import LossConfig
from pebal_core.losses import PebalLoss, inlier_cross_entropy

H, W = 6, 7


def batch(seed: int = 0, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """3 images: 0 plain, 1 with anomalous pixels, 2 plain with many void pixels.

    Logits put the free energy around -12..-3 so that both EBM margins are active somewhere; one
    anomalous pixel has a channel with p_c + p_19 / a far below 1e-7 (the reference's clamp).
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 2.0, (3, 20, H, W)) + rng.uniform(2.0, 9.0, (3, 1, H, W))
    t = rng.integers(0, 19, (3, H, W))
    t[1, 1:4, 2:5] = 254
    t[1, 0, 0] = 255
    t[2, :, :3] = 255
    x[1, 19, 1:4, 2:5] += 3.0
    x[1, :19, 2, 3] = 40.0  # a very confident anomalous pixel ...
    x[1, 5, 2, 3] = -60.0  # ... with one channel far below the clamp
    x[1, 19, 2, 3] = -60.0
    x *= scale
    return x.astype(np.float32), t


def as_torch(x: np.ndarray, t: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(x).requires_grad_(), torch.from_numpy(t).long()


def hand_terms(x32: np.ndarray, t: np.ndarray, cfg: LossConfig) -> dict[str, float]:
    """The loss of ``docs/training.md``, pixel by pixel in float64 probability space."""
    x = x32.astype(np.float64)
    p = np_softmax(x, 1)
    lse = np_lse(x[:, :19], 1)
    energy = -lse
    if cfg.abstention == "fixed":
        a = np.full(lse.shape, cfg.fixed_penalty)
    else:
        a = lse**2
        if cfg.resolved_smooth_penalty():
            a = np.stack([np_gaussian_blur(a[b]) for b in range(a.shape[0])])
    inl = t < 19
    out = t == 254
    low = inl | (t == 253)  # the EBM inlier margin also holds unclassed inliers (no class: no PAL)
    mixed = out.reshape(len(t), -1).any(1)
    res: dict[str, float] = {}
    if cfg.abstention == "ce":
        vals = [
            -np.log(p[b, 19 if t[b, i, j] == 254 else t[b, i, j], i, j])
            for b, i, j in zip(*np.nonzero(inl | out), strict=True)
        ]
        res["main"] = float(np.mean(vals))
    elif cfg.variant == "paper":
        vals = []
        for b, i, j in zip(*np.nonzero(inl | out), strict=True):
            y = 19 if out[b, i, j] else t[b, i, j]
            vals.append(-np.log(p[b, y, i, j] + p[b, 19, i, j] / a[b, i, j]))
        res["main"] = float(np.mean(vals))
    else:
        plain_vals, mixed_vals, out_vals = [], [], []
        for b, i, j in zip(*np.nonzero(inl), strict=True):
            v = np.log(p[b, t[b, i, j], i, j] + p[b, 19, i, j] / a[b, i, j])
            (mixed_vals if mixed[b] else plain_vals).append(v)
        for b, i, j in zip(*np.nonzero(out), strict=True):
            for c in range(19):
                out_vals.append(np.log(max(p[b, c, i, j] + p[b, 19, i, j] / a[b, i, j], 1e-7)))
        res["main"] = -np.mean(plain_vals) - (np.mean(mixed_vals) + cfg.ood_weight * np.mean(out_vals))
    e_in = np.maximum(0, energy - cfg.m_in) ** 2
    e_out = np.maximum(0, cfg.m_out - energy) ** 2
    if cfg.variant == "paper":
        res["ebm"] = (e_in[low].sum() + e_out[out].sum()) / (low | out).sum()
        valid = (inl | out) & mixed[:, None, None]
        diffs = []
        for b, i, j in zip(*np.nonzero(valid), strict=True):
            if i + 1 < H and valid[b, i + 1, j]:
                diffs.append(abs(energy[b, i + 1, j] - energy[b, i, j]))
            if j + 1 < W and valid[b, i, j + 1]:
                diffs.append(abs(energy[b, i, j + 1] - energy[b, i, j]))
        res["smoothness"] = float(np.mean(diffs))
        res["sparsity"] = float(np.abs(energy[out]).mean())
    else:
        res["ebm"] = 0.5 * (e_in[low].mean() + e_out[out].mean()) if out.any() else e_in[low].mean()
        sq = sum((energy[b, i + 1, j] - energy[b, i, j]) ** 2 for b in range(3) for i in range(H - 1) for j in range(W))
        sq += sum(
            (energy[b, i, j + 1] - energy[b, i, j]) ** 2 for b in range(3) for i in range(H) for j in range(W - 1)
        )
        res["smoothness"] = sq / 2
        res["sparsity"] = float(np.sqrt((energy[out] ** 2).sum()))
    reg = cfg.resolved_smoothness_weight() * res["smoothness"] + cfg.resolved_sparsity_weight() * res["sparsity"]
    ebm = res["ebm"] if cfg.ebm else 0.0
    reg = reg if cfg.regularizer else 0.0
    if cfg.variant == "paper":
        res["total"] = res["main"] + cfg.ebm_weight * ebm + reg
    else:
        res["total"] = res["main"] + cfg.ebm_weight * (ebm + reg)
    return res


CONFIGS = {
    "reference": LossConfig(),
    "paper": LossConfig(variant="paper"),
    "reference_unsmoothed_penalty": LossConfig(smooth_penalty=False),
    "paper_smoothed_penalty": LossConfig(variant="paper", smooth_penalty=True),
    "reference_fixed_penalty": LossConfig(abstention="fixed"),
    "paper_fixed_penalty": LossConfig(variant="paper", abstention="fixed"),
    "ce_extra_class": LossConfig(abstention="ce", ebm=False, regularizer=False),
    "reference_no_ebm": LossConfig(ebm=False),
    "reference_no_reg": LossConfig(regularizer=False),
    "paper_no_reg": LossConfig(variant="paper", regularizer=False),
    "custom_weights": LossConfig(ebm_weight=0.01, m_in=-10, m_out=-4, ood_weight=0.3, smoothness_weight=1e-3),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_total_and_terms_match_hand_computation(name):
    cfg = CONFIGS[name]
    x, t = batch()
    expected = hand_terms(x, t, cfg)
    total, terms = PebalLoss(cfg)(*as_torch(x, t))
    np.testing.assert_allclose(total.item(), expected["total"], rtol=2e-5, atol=1e-6)
    key = "ce" if cfg.abstention == "ce" else "pal"
    np.testing.assert_allclose(terms[key].item(), expected["main"], rtol=2e-5, atol=1e-6)
    if cfg.ebm:
        np.testing.assert_allclose(terms["ebm"].item(), expected["ebm"], rtol=2e-5, atol=1e-6)
    else:
        assert "ebm" not in terms
    if cfg.regularizer:
        for k in ("smoothness", "sparsity"):
            np.testing.assert_allclose(terms[k].item(), expected[k], rtol=2e-5, atol=1e-6, err_msg=k)
    else:
        assert "smoothness" not in terms and "sparsity" not in terms


@pytest.mark.parametrize("name", ["reference", "paper", "reference_fixed_penalty"])
def test_unclassed_inliers_count_in_the_energy_margin_only(name):
    """Label 253 (the ego vehicle's bonnet): EBM inlier margin yes, PAL no (it has no class)."""
    cfg = CONFIGS[name]
    x, t = batch(3)
    t[0, 2:5, :4] = 253
    t[2, 0, 3:] = 253
    x[0, :19, 2:5, :4] -= 6.0  # high energy there: the margin is active on the unclassed pixels
    total, terms = PebalLoss(cfg)(*as_torch(x, t))
    ref = hand_terms(x, t, cfg)
    assert total.item() == pytest.approx(ref["total"], rel=2e-5)
    assert terms["ebm"].item() == pytest.approx(ref["ebm"], rel=2e-5)
    assert terms["pal"].item() == pytest.approx(ref["main"], rel=2e-5)
    as_void = t.copy()
    as_void[t == 253] = 255
    assert PebalLoss(cfg)(*as_torch(x, as_void))[1]["pal"].item() == pytest.approx(terms["pal"].item(), rel=1e-6)
    assert PebalLoss(cfg)(*as_torch(x, as_void))[1]["ebm"].item() != pytest.approx(terms["ebm"].item(), rel=1e-3)


def test_the_reference_clamp_is_active_in_the_fixture():
    x, t = batch()
    p = np_softmax(x.astype(np.float64), 1)
    a = np_lse(x.astype(np.float64)[:, :19], 1) ** 2
    assert t[1, 2, 3] == 254 and p[1, 5, 2, 3] + p[1, 19, 2, 3] / a[1, 2, 3] < 1e-7


def test_variants_and_switches_change_the_value():
    x, t = batch()
    totals = {name: PebalLoss(cfg)(*as_torch(x, t))[0].item() for name, cfg in CONFIGS.items()}
    assert len({round(v, 6) for v in totals.values()}) == len(totals)


def test_batch_without_anomalies():
    x, t = batch()
    x, t = x[[0, 2]], t[[0, 2]]
    for cfg in (LossConfig(), LossConfig(variant="paper"), LossConfig(abstention="fixed")):
        total, terms = PebalLoss(cfg)(*as_torch(x, t))
        expected = hand_terms_no_anomaly(x, t, cfg)
        np.testing.assert_allclose(total.item(), expected, rtol=2e-5)
        assert terms["sparsity"].item() == 0.0
        total.backward()  # the zero sparsity norm has a zero (not NaN) gradient


def hand_terms_no_anomaly(x32: np.ndarray, t: np.ndarray, cfg: LossConfig) -> float:
    """Without anomalous pixels: PAL over inliers + EBM_in (+ reference smoothness); no sparsity."""
    x = x32.astype(np.float64)
    p = np_softmax(x, 1)
    lse = np_lse(x[:, :19], 1)
    a = np.full(lse.shape, cfg.fixed_penalty) if cfg.abstention == "fixed" else lse**2
    if cfg.abstention == "energy" and cfg.resolved_smooth_penalty():
        a = np.stack([np_gaussian_blur(a[b]) for b in range(len(a))])
    inl = t < 19
    b, i, j = np.nonzero(inl)
    pal = -np.mean(np.log(p[b, t[b, i, j], i, j] + p[b, 19, i, j] / a[b, i, j]))
    ebm = np.mean(np.maximum(0, -lse[inl] - cfg.m_in) ** 2)
    if cfg.variant == "paper":
        return pal + cfg.ebm_weight * ebm  # smoothness only on images with anomalies
    energy = -lse
    sq = ((energy[:, 1:] - energy[:, :-1]) ** 2).sum() + ((energy[:, :, 1:] - energy[:, :, :-1]) ** 2).sum()
    return pal + cfg.ebm_weight * (ebm + cfg.resolved_smoothness_weight() * sq / 2)


VOID_FREE = {
    "paper": LossConfig(variant="paper"),
    "reference_raw_penalty_no_reg": LossConfig(smooth_penalty=False, regularizer=False),
    "reference_fixed_no_reg": LossConfig(abstention="fixed", regularizer=False),
    "ce_extra_class": CONFIGS["ce_extra_class"],
    "paper_fixed_penalty": CONFIGS["paper_fixed_penalty"],
}


@pytest.mark.parametrize("name", list(VOID_FREE))
def test_void_pixels_never_contribute(name):
    """Except through the reference smoothness term and the smoothed penalty (both by design)."""
    cfg = VOID_FREE[name]
    x, t = batch()
    y = x.copy()
    rng = np.random.default_rng(9)
    void = t == 255
    y[:, :][np.broadcast_to(void[:, None], y.shape)] = rng.normal(0, 50, int(void.sum()) * 20).astype(np.float32)
    a = PebalLoss(cfg)(*as_torch(x, t))[0].item()
    b = PebalLoss(cfg)(*as_torch(y, t))[0].item()
    assert a == pytest.approx(b, rel=1e-6)


def test_reference_smoothness_sees_void_pixels_as_the_reference_does():
    x, t = batch()
    y = x.copy()
    y[2, :, 0, 0] += 5.0  # (2, 0, 0) is void
    cfg = LossConfig(smooth_penalty=False)
    assert PebalLoss(cfg)(*as_torch(x, t))[1]["smoothness"] != PebalLoss(cfg)(*as_torch(y, t))[1]["smoothness"]


@pytest.mark.parametrize("name", list(CONFIGS))
def test_finite_loss_and_gradient_for_logits_of_magnitude_1e3(name):
    x, t = batch(seed=3, scale=150.0)  # |logits| up to ~1e3 (and 6e3 at the planted pixel)
    assert np.abs(x).max() >= 1e3
    logits, targets = as_torch(x, t)
    total, terms = PebalLoss(CONFIGS[name])(logits, targets)
    total.backward()
    assert torch.isfinite(total) and all(torch.isfinite(v) for v in terms.values())
    assert torch.isfinite(logits.grad).all()


def test_energy_penalty_with_zero_logsumexp_is_finite():
    x = np.full((1, 20, 8, 8), -np.log(19.0), dtype=np.float32)  # lse over 19 channels == 0 exactly-ish
    t = np.zeros((1, 8, 8), dtype=np.int64)
    logits, targets = as_torch(x, t)
    total, _ = PebalLoss(LossConfig(smooth_penalty=False))(logits, targets)
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(logits.grad).all()


def test_bad_targets_and_shapes_are_refused():
    x, t = batch()
    logits, targets = as_torch(x, t)
    with pytest.raises(ValueError, match="expected trainIds"):
        PebalLoss()(logits, targets.masked_fill(targets == 3, 100))
    with pytest.raises(ValueError, match="do not match"):
        PebalLoss()(logits, targets[:, :-1])
    with pytest.raises(ValueError, match="x 20 x"):
        PebalLoss()(logits[:, :19], targets)


def test_inlier_cross_entropy_ignores_anomaly_and_void():
    x, t = batch()
    x64 = x.astype(np.float64)[:, :19]
    p = np_softmax(x64, 1)
    b, i, j = np.nonzero(t < 19)
    expected = -np.mean(np.log(p[b, t[b, i, j], i, j]))
    got = inlier_cross_entropy(torch.from_numpy(x), torch.from_numpy(t))
    np.testing.assert_allclose(got.item(), expected, rtol=1e-5)


def test_loss_config_validation():
    with pytest.raises(ValueError, match="fixed_penalty"):
        LossConfig(fixed_penalty=0)
    with pytest.raises(ValueError, match="ebm_weight"):
        dataclasses.replace(LossConfig(), ebm_weight=-1)


@pytest.mark.parametrize("name", ["reference", "paper", "ce_extra_class", "reference_fixed_penalty"])
def test_analytic_gradient_matches_finite_differences(name):
    """The fused per-pixel autograd function and everything after it, checked by gradcheck in float64."""
    rng = np.random.default_rng(11)
    x = torch.from_numpy(rng.normal(0.0, 2.0, (2, 20, 8, 9)) + 4.0).requires_grad_()
    t = torch.from_numpy(rng.integers(0, 19, (2, 8, 9)))
    t[1, 2:5, 3:6] = 254
    t[0, 0, :4] = 255
    loss = PebalLoss(CONFIGS[name])
    assert torch.autograd.gradcheck(lambda z: loss(z, t)[0], (x,), eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)
