"""The PEBAL objective: pixel-wise abstention (PAL), energy margins (EBM), smoothness, sparsity.

Inputs everywhere: ``logits`` float ``B x 20 x H x W`` (19 Cityscapes trainIds + abstention
channel 19) and ``targets`` int64 ``B x H x W`` with trainIds 0..18, ``ANOMALY_ID`` (254) for
pasted outlier pixels and ``VOID_ID`` (255) for ignored pixels. Notation: ``p`` = softmax over
all 20 channels, ``lse`` = logsumexp over the 19 inlier logits, free energy ``E = -lse``.

Terms (DESIGN §4; :class:`~pebal_core.config.LossConfig` selects them):

Penalty ``a`` (Eq. 5)
    ``a = lse^2``, the energy-biased abstention penalty; the reference implementation blurs it
    with the 7x7 sigma-1 Gaussian of :func:`pebal_core.scoring.smooth` (``smooth_penalty``).
    ``abstention="fixed"`` uses a constant ``a = fixed_penalty`` (Deep Gambler, reward 4.5).
    ``a`` keeps its gradient, as in the reference; it is floored at 1e-12 so that a pixel with
    ``lse == 0`` gives a large finite loss instead of ``-inf``.
PAL (Eq. 3)
    ``-log(p_y + p_19 / a)`` on inlier pixels. Anomalous pixels: ``paper`` uses the abstention
    class as their label, ``-log(p_19 + p_19 / a)``; ``reference`` uses
    ``-ood_weight * mean_c log(max(p_c + p_19 / a, 1e-7))`` over the 19 inlier channels ``c``.
EBM (Eqs. 6, 7)
    ``max(0, E - m_in)^2`` on inlier pixels, ``max(0, m_out - E)^2`` on anomalous pixels.
Regulariser (Eq. 8)
    Smoothness of ``E`` between 4-neighbours and sparsity of ``E`` (see the variants).
``abstention="ce"``
    Replaces PAL by cross-entropy over the 20 channels with anomalous pixels labelled 19
    (the "CE + extra class" rows of the paper's ablation).

The two variants:

``paper`` (Eqs. 2-8; sums over pixels taken as means, so that weights do not depend on the crop size)
    ``PAL + ebm_weight * EBM + reg``. PAL and EBM: mean over all non-void pixels of the batch.
    ``reg = smoothness_weight * mean |E_i - E_j|`` over 4-neighbour pairs of non-void pixels in
    images that contain anomalous pixels (D_out) ``+ sparsity_weight * mean |E|`` over
    anomalous pixels; weights 5e-4 and 3e-6. Penalty not smoothed.
``reference`` (the public implementation's arithmetic)
    PAL is computed separately for the images without and with anomalous pixels and summed:
    each is ``-mean`` over the image group's inlier pixels, the latter plus the
    ``ood_weight`` term above. ``EBM = 0.5 * (mean_in + mean_out)`` when the batch has
    anomalous pixels, else ``mean_in``. ``reg = 3e-6 * (sum of squared vertical + horizontal
    neighbour differences of E) / 2`` over the **whole** map (the one place where void pixels
    enter, as in the reference) ``+ 5e-4 * ||E_out||_2`` (L2 norm over the anomalous pixels,
    only when there are some). Total ``PAL_plain + PAL_mixed + ebm_weight * (EBM + reg)``.
    Deviation: an empty group contributes 0 where the reference would produce NaN.

Void pixels never contribute except in the reference smoothness term. Everything is computed
in log space (``log_softmax``, ``logaddexp``), so logits of magnitude 1e3 give finite losses
and gradients.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from pebal_core.config import LossConfig
from pebal_core.labels import ABSTENTION_CHANNEL, ANOMALY_ID, NUM_CLASSES, VOID_ID
from pebal_core.scoring import smooth

PENALTY_FLOOR = 1e-12
"""Smallest abstention penalty ``a`` used (guards ``p_19 / a`` where ``lse == 0``)."""
REFERENCE_LOG_CLAMP = math.log(1e-7)
"""The reference clamps ``p_c + p_19 / a`` at 1e-7 before the log on anomalous pixels."""


def _check(logits: torch.Tensor, targets: torch.Tensor) -> None:
    if logits.ndim != 4 or logits.shape[1] != NUM_CLASSES + 1:
        raise ValueError(f"expected logits B x {NUM_CLASSES + 1} x H x W, got {tuple(logits.shape)}")
    if targets.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(f"targets {tuple(targets.shape)} do not match logits {tuple(logits.shape)}")
    bad = (targets >= NUM_CLASSES) & (targets != ANOMALY_ID) & (targets != VOID_ID) | (targets < 0)
    if bool(bad.any()):
        raise ValueError(
            f"targets hold values {sorted(set(targets[bad].unique().tolist()))[:5]}; "
            f"expected trainIds 0..{NUM_CLASSES - 1}, {ANOMALY_ID} (anomaly) or {VOID_ID} (void)"
        )


def _mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over ``mask`` (0 when the mask is empty)."""
    return (values * mask).sum() / mask.sum().clamp_min(1)


def free_energy(logits: torch.Tensor) -> torch.Tensor:
    """``E = -logsumexp`` over the 19 inlier channels, ``B x H x W``, differentiable."""
    return -torch.logsumexp(logits[:, :NUM_CLASSES], dim=1)


def log_penalty(logits: torch.Tensor, smoothed: bool) -> torch.Tensor:
    """``log a`` with ``a = logsumexp(inlier logits)^2`` (optionally Gaussian-smoothed), ``B x H x W``."""
    lse = torch.logsumexp(logits[:, :NUM_CLASSES], dim=1)
    a = lse.square()
    if smoothed:
        a = smooth(a)
    return a.clamp_min(PENALTY_FLOOR).log()


def abstention_log_terms(logits: torch.Tensor, log_a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(log p_19, log(p_19 / a), log(p_c + p_19 / a) for c < 19)``, shapes ``B x H x W``,
    ``B x H x W``, ``B x 19 x H x W``; ``p`` is the softmax over all 20 channels."""
    log_p = torch.log_softmax(logits, dim=1)
    log_p19 = log_p[:, ABSTENTION_CHANNEL]
    log_abstain = log_p19 - log_a
    boosted = torch.logaddexp(log_p[:, :NUM_CLASSES], log_abstain.unsqueeze(1))
    return log_p19, log_abstain, boosted


def _boosted_target(boosted: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``log(p_y + p_19 / a)`` at each pixel's inlier label (other pixels: label 0, to be masked)."""
    index = torch.where(targets < NUM_CLASSES, targets, 0).unsqueeze(1)
    return boosted.gather(1, index).squeeze(1)


def ebm_terms(energy: torch.Tensor, m_in: float, m_out: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel EBM margins ``(max(0, E - m_in)^2, max(0, m_out - E)^2)``, unmasked, ``B x H x W``."""
    return F.relu(energy - m_in).square(), F.relu(m_out - energy).square()


def reference_smoothness(energy: torch.Tensor) -> torch.Tensor:
    """Reference smoothness (unweighted): ``(sum dv^2 + sum dh^2) / 2`` over the whole ``B x H x W`` map."""
    dv = energy[:, 1:, :] - energy[:, :-1, :]
    dh = energy[:, :, 1:] - energy[:, :, :-1]
    return (dv.square().sum() + dh.square().sum()) / 2


def paper_smoothness(energy: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean ``|E_i - E_j|`` over 4-neighbour pairs whose two pixels are both ``valid`` (0 if none)."""
    dv = (energy[:, 1:, :] - energy[:, :-1, :]).abs()
    dh = (energy[:, :, 1:] - energy[:, :, :-1]).abs()
    mv = valid[:, 1:, :] & valid[:, :-1, :]
    mh = valid[:, :, 1:] & valid[:, :, :-1]
    return ((dv * mv).sum() + (dh * mh).sum()) / (mv.sum() + mh.sum()).clamp_min(1)


class PebalLoss(nn.Module):
    """The total training objective of one batch (see the module docstring).

    ``forward(logits, targets)`` returns ``(total, terms)``: ``total`` a scalar tensor to
    backpropagate, ``terms`` the unweighted parts (``pal`` or ``ce``, ``ebm``, ``smoothness``,
    ``sparsity``; only those switched on) as detached scalars for logging.
    """

    def __init__(self, cfg: LossConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or LossConfig()

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        _check(logits, targets)
        cfg = self.cfg
        targets = targets.long()
        anomaly = targets == ANOMALY_ID
        inlier = targets < NUM_CLASSES
        terms: dict[str, torch.Tensor] = {}
        if cfg.abstention == "ce":
            ce_targets = torch.where(anomaly, ABSTENTION_CHANNEL, targets)
            main = F.cross_entropy(logits, ce_targets, ignore_index=VOID_ID, reduction="sum")
            main = main / (inlier | anomaly).sum().clamp_min(1)
            terms["ce"] = main
        elif cfg.variant == "paper":
            main = self._paper_pal(logits, targets, inlier, anomaly)
            terms["pal"] = main
        else:
            main = self._reference_pal(logits, targets, inlier, anomaly)
            terms["pal"] = main
        if not (cfg.ebm or cfg.regularizer):
            return main, {k: v.detach() for k, v in terms.items()}

        energy = free_energy(logits)
        extra = torch.zeros((), dtype=logits.dtype, device=logits.device)
        has_anomaly = anomaly.any()
        if cfg.ebm:
            e_in, e_out = ebm_terms(energy, cfg.m_in, cfg.m_out)
            if cfg.variant == "paper":
                ebm = (e_in * inlier + e_out * anomaly).sum() / (inlier | anomaly).sum().clamp_min(1)
            else:
                mean_in = _mean(e_in, inlier)
                ebm = torch.where(has_anomaly, 0.5 * (mean_in + _mean(e_out, anomaly)), mean_in)
            terms["ebm"] = ebm
            extra = extra + ebm
        if cfg.regularizer:
            if cfg.variant == "paper":
                mixed = anomaly.flatten(1).any(1).view(-1, 1, 1)
                smoothness = paper_smoothness(energy, (inlier | anomaly) & mixed)
                sparsity = _mean(energy.abs(), anomaly)
            else:
                smoothness = reference_smoothness(energy)
                sparsity = torch.linalg.vector_norm(energy * anomaly)  # 0 (and 0 gradient) if none
            terms["smoothness"] = smoothness
            terms["sparsity"] = sparsity
            reg = cfg.resolved_smoothness_weight() * smoothness + cfg.resolved_sparsity_weight() * sparsity
        else:
            reg = None
        if cfg.variant == "paper":
            total = main + cfg.ebm_weight * extra + (reg if reg is not None else 0.0)
        else:
            total = main + cfg.ebm_weight * (extra + (reg if reg is not None else 0.0))
        return total, {k: v.detach() for k, v in terms.items()}

    def _log_penalty(self, logits: torch.Tensor) -> torch.Tensor:
        if self.cfg.abstention == "fixed":
            shape = (logits.shape[0], *logits.shape[2:])
            return torch.full(shape, math.log(self.cfg.fixed_penalty), dtype=logits.dtype, device=logits.device)
        return log_penalty(logits, self.cfg.resolved_smooth_penalty())

    def _paper_pal(self, logits, targets, inlier, anomaly) -> torch.Tensor:
        log_p19, log_abstain, boosted = abstention_log_terms(logits, self._log_penalty(logits))
        per_pixel = torch.where(anomaly, torch.logaddexp(log_p19, log_abstain), _boosted_target(boosted, targets))
        return -(per_pixel * (inlier | anomaly)).sum() / (inlier | anomaly).sum().clamp_min(1)

    def _reference_pal(self, logits, targets, inlier, anomaly) -> torch.Tensor:
        _, _, boosted = abstention_log_terms(logits, self._log_penalty(logits))
        in_term = _boosted_target(boosted, targets)
        mixed = anomaly.flatten(1).any(1).view(-1, 1, 1)
        plain_in = inlier & ~mixed
        mixed_in = inlier & mixed
        pal_plain = -_mean(in_term, plain_in)
        out = boosted.clamp_min(REFERENCE_LOG_CLAMP)
        n_out = anomaly.sum() * NUM_CLASSES
        out_mean = (out * anomaly.unsqueeze(1)).sum() / n_out.clamp_min(1)
        pal_mixed = -(_mean(in_term, mixed_in) + self.cfg.ood_weight * out_mean)
        return pal_plain + pal_mixed


def inlier_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the 19 inlier channels, mean over pixels with a trainId (``pretrain``).

    Pixels labelled 254 or 255 are ignored; extra channels (abstention) are not used.
    """
    targets = targets.long()
    ignore = targets >= NUM_CLASSES
    return F.cross_entropy(logits[:, :NUM_CLASSES], targets.masked_fill(ignore, -100), ignore_index=-100)
