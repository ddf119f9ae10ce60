"""The PEBAL objective: pixel-wise abstention (PAL), energy margins (EBM), smoothness, sparsity.

Inputs everywhere: ``logits`` float ``B x 20 x H x W`` (19 Cityscapes trainIds + abstention
channel 19) and ``targets`` int64 ``B x H x W`` with trainIds 0..18, ``ANOMALY_ID`` (254) for
pasted outlier pixels and ``VOID_ID`` (255) for ignored pixels. Notation: ``p`` = softmax over
all 20 channels, ``lse`` = logsumexp over the 19 inlier logits, free energy ``E = -lse``.

Terms (equation numbers of the PEBAL paper, Tian et al., ECCV 2022; :class:`~pebal_core.config.LossConfig`
selects them):

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
    ``max(0, E - m_in)^2`` on inlier pixels (unclassed ones included), ``max(0, m_out - E)^2`` on
    anomalous pixels.
Regulariser (Eq. 8)
    Smoothness of ``E`` between 4-neighbours and sparsity of ``E`` (see the variants).
``abstention="ce"``
    Replaces PAL by cross-entropy over the 20 channels with anomalous pixels labelled 19
    (the "CE + extra class" rows of the paper's ablation).
Distillation (not in the paper; ``distill_weight`` > 0 and teacher logits given)
    ``KL(q_teacher || q)`` of the 19-way inlier softmax ``q``, mean over the non-anomalous pixels
    (void included). The 19-way softmax does not change when all inlier logits shift together,
    so this keeps the base network's segmentation while leaving the energy ``E`` (the logits'
    common level) to PAL and EBM. Added as ``distill_weight * KL`` to the total.

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

Void pixels never contribute except in the reference smoothness term and, through the 7x7
blur, in the smoothed penalty of their neighbours. Everything is computed in log space from one
``logsumexp`` over the inlier channels (``log p_c = x_c - logaddexp(lse, x_19)``, ``logaddexp``
for the sums), so logits of magnitude 1e3 give finite losses and gradients, and no full-size
softmax is materialised.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn

from pebal_core.config import LossConfig
from pebal_core.labels import ABSTENTION_CHANNEL, ANOMALY_ID, NUM_CLASSES, UNCLASSED_ID, VOID_ID
from pebal_core.scoring import GAUSSIAN_SIZE, exp_, gaussian_kernel1d, lse_from_shifted, separable_correlate

PENALTY_FLOOR = 1e-12
"""Smallest abstention penalty ``a`` used (guards ``p_19 / a`` where ``lse == 0``)."""
REFERENCE_LOG_CLAMP = math.log(1e-7)
"""The reference clamps ``p_c + p_19 / a`` at 1e-7 before the log on anomalous pixels."""


def _check(logits: torch.Tensor, targets: torch.Tensor) -> None:
    if logits.ndim != 4 or logits.shape[1] != NUM_CLASSES + 1:
        raise ValueError(f"expected logits B x {NUM_CLASSES + 1} x H x W, got {tuple(logits.shape)}")
    if targets.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(f"targets {tuple(targets.shape)} do not match logits {tuple(logits.shape)}")
    special = (targets == ANOMALY_ID) | (targets == VOID_ID) | (targets == UNCLASSED_ID)
    bad = (targets >= NUM_CLASSES) & ~special | (targets < 0)
    if bool(bad.any()):
        raise ValueError(
            f"targets hold values {sorted(set(targets[bad].unique().tolist()))[:5]}; "
            f"expected trainIds 0..{NUM_CLASSES - 1}, {ANOMALY_ID} (anomaly), {UNCLASSED_ID} (unclassed inlier) "
            f"or {VOID_ID} (void)"
        )


def _mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over ``mask`` (0 when the mask is empty)."""
    return (values * mask).sum() / mask.sum().clamp_min(1)


@dataclasses.dataclass
class PixelTerms:
    """Per-pixel quantities every term is built from, all ``B x H x W`` and differentiable.

    One ``logsumexp`` over the 19 inlier channels serves everything: ``lse20 = logaddexp(lse,
    x_19)`` and ``log p_c = x_c - lse20``, so no full-size softmax is materialised (the loss is
    memory-bound at full resolution; see ``benchmarks/bench_finetune.py``).
    """

    lse: torch.Tensor
    """logsumexp of the 19 inlier logits (``-E``)."""
    lse20: torch.Tensor
    """logsumexp of all 20 logits."""
    x_target: torch.Tensor
    """Logit of each pixel's label (channel 19 for anomalous pixels, 0 for void and unclassed ones)."""
    x19: torch.Tensor
    """Abstention logit."""

    @classmethod
    def of(cls, logits: torch.Tensor, targets: torch.Tensor) -> PixelTerms:
        index = torch.where(targets == ANOMALY_ID, ABSTENTION_CHANNEL, torch.where(targets < NUM_CLASSES, targets, 0))
        lse, x19, x_target = _PixelLogits.apply(logits, index)
        return cls(lse, torch.logaddexp(lse, x19), x_target, x19)

    @property
    def energy(self) -> torch.Tensor:
        return -self.lse

    @property
    def log_p19(self) -> torch.Tensor:
        return self.x19 - self.lse20

    @property
    def log_p_target(self) -> torch.Tensor:
        return self.x_target - self.lse20


class _PixelLogits(torch.autograd.Function):
    """``(logsumexp of the 19 inlier logits, x_19, x_index)`` of ``B x 20 x H x W`` logits, each ``B x H x W``.

    The same values as ``torch.logsumexp``, a slice and ``gather`` (``exp`` evaluated by
    :func:`pebal_core.scoring.exp_`, several times faster on the CPU), but the backward pass writes one
    gradient buffer, ``softmax_19 * g_lse`` on the inlier channels plus the slice and gather
    gradients, instead of one zero-filled full-size buffer per output.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, index: torch.Tensor):
        inl = logits[:, :NUM_CLASSES]
        top = inl.amax(dim=1, keepdim=True)
        lse = lse_from_shifted(top, inl - top)
        x19 = logits[:, ABSTENTION_CHANNEL].clone()
        x_index = logits.gather(1, index.unsqueeze(1)).squeeze(1)
        ctx.save_for_backward(logits, lse, index)
        return lse, x19, x_index

    @staticmethod
    def backward(ctx, g_lse: torch.Tensor, g_x19: torch.Tensor, g_index: torch.Tensor):
        logits, lse, index = ctx.saved_tensors
        grad = torch.empty_like(logits)
        inl = grad[:, :NUM_CLASSES]
        torch.sub(logits[:, :NUM_CLASSES], lse.unsqueeze(1), out=inl)
        exp_(inl).mul_(g_lse.unsqueeze(1))
        grad[:, ABSTENTION_CHANNEL] = g_x19
        grad.scatter_add_(1, index.unsqueeze(1), g_index.unsqueeze(1))
        return grad, None


class _GaussianCorrelate(torch.autograd.Function):
    """:func:`~pebal_core.scoring.separable_correlate` with the 7-tap Gaussian, with its adjoint
    (the same correlation of the zero-padded gradient: the taps are symmetric) as backward."""

    @staticmethod
    def forward(ctx, padded: torch.Tensor) -> torch.Tensor:
        return separable_correlate(padded, gaussian_kernel1d().tolist())

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        full = GAUSSIAN_SIZE - 1
        return separable_correlate(F.pad(grad, (full, full, full, full)), gaussian_kernel1d().tolist())


def smooth_differentiable(a: torch.Tensor) -> torch.Tensor:
    """:func:`pebal_core.scoring.smooth` (7x7 sigma-1 Gaussian, reflect border) of ``B x H x W``
    maps with a cheap backward pass (autograd through the padding, the adjoint for the blur)."""
    pad = GAUSSIAN_SIZE // 2
    padded = F.pad(a.unsqueeze(1), (pad, pad, pad, pad), mode="reflect").squeeze(1)
    return _GaussianCorrelate.apply(padded)


def log_penalty(lse: torch.Tensor, smoothed: bool) -> torch.Tensor:
    """``log a`` with ``a = lse^2`` (optionally Gaussian-smoothed, per image), ``B x H x W``.

    ``lse``: logsumexp of the 19 inlier logits, ``B x H x W``.
    """
    a = lse.square()
    if smoothed:
        a = smooth_differentiable(a)
    return a.clamp_min(PENALTY_FLOOR).log()


def reference_outlier_term(
    logits: torch.Tensor, px: PixelTerms, log_abstain: torch.Tensor, anomaly: torch.Tensor
) -> torch.Tensor:
    """Mean over anomalous pixels and the 19 inlier channels of ``log(max(p_c + p_19 / a, 1e-7))`` (0 if none)."""
    if not bool(anomaly.any()):
        return logits.new_zeros(())
    x = logits[:, :NUM_CLASSES].permute(0, 2, 3, 1)[anomaly]  # N x 19
    log_pc = x - px.lse20[anomaly].unsqueeze(1)
    boosted = torch.logaddexp(log_pc, log_abstain[anomaly].unsqueeze(1))
    return boosted.clamp_min(REFERENCE_LOG_CLAMP).mean()


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

    def forward(
        self, logits: torch.Tensor, targets: torch.Tensor, teacher: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``teacher``: the base network's logits ``B x >=19 x H x W`` for the distillation term
        (required when ``distill_weight`` > 0, ignored otherwise)."""
        total, terms = self._pebal(logits, targets)
        if self.cfg.distill_weight > 0:
            if teacher is None:
                raise ValueError("distill_weight > 0 needs the teacher's logits")
            kl = distillation(logits, teacher, targets.long() != ANOMALY_ID)
            terms["distill"] = kl.detach()
            total = total + self.cfg.distill_weight * kl
        return total, terms

    def _pebal(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        _check(logits, targets)
        cfg = self.cfg
        targets = targets.long()
        anomaly = targets == ANOMALY_ID
        inlier = targets < NUM_CLASSES
        px = PixelTerms.of(logits, targets)
        terms: dict[str, torch.Tensor] = {}
        if cfg.abstention == "ce":
            main = _mean(-px.log_p_target, inlier | anomaly)
            terms["ce"] = main
        elif cfg.variant == "paper":
            main = self._paper_pal(px, inlier, anomaly)
            terms["pal"] = main
        else:
            main = self._reference_pal(logits, px, inlier, anomaly)
            terms["pal"] = main
        if not (cfg.ebm or cfg.regularizer):
            return main, {k: v.detach() for k, v in terms.items()}

        energy = px.energy
        extra = logits.new_zeros(())
        has_anomaly = anomaly.any()
        if cfg.ebm:
            e_in, e_out = ebm_terms(energy, cfg.m_in, cfg.m_out)
            low = inlier | (targets == UNCLASSED_ID)  # pixels whose energy the margin keeps low
            if cfg.variant == "paper":
                ebm = (e_in * low + e_out * anomaly).sum() / (low | anomaly).sum().clamp_min(1)
            else:
                mean_in = _mean(e_in, low)
                ebm = torch.where(has_anomaly, 0.5 * (mean_in + _mean(e_out, anomaly)), mean_in)
            terms["ebm"] = ebm
            extra = extra + ebm
        reg = logits.new_zeros(())
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
        if cfg.variant == "paper":
            total = main + cfg.ebm_weight * extra + reg
        else:
            total = main + cfg.ebm_weight * (extra + reg)
        return total, {k: v.detach() for k, v in terms.items()}

    def _log_abstain(self, px: PixelTerms) -> torch.Tensor:
        """``log(p_19 / a)`` with the configured penalty."""
        if self.cfg.abstention == "fixed":
            return px.log_p19 - math.log(self.cfg.fixed_penalty)
        return px.log_p19 - log_penalty(px.lse, self.cfg.resolved_smooth_penalty())

    def _paper_pal(self, px: PixelTerms, inlier: torch.Tensor, anomaly: torch.Tensor) -> torch.Tensor:
        # log(p_y + p_19 / a) with y = 19 on anomalous pixels (x_target holds x_19 there)
        per_pixel = torch.logaddexp(px.log_p_target, self._log_abstain(px))
        return -_mean(per_pixel, inlier | anomaly)

    def _reference_pal(
        self, logits: torch.Tensor, px: PixelTerms, inlier: torch.Tensor, anomaly: torch.Tensor
    ) -> torch.Tensor:
        log_abstain = self._log_abstain(px)
        in_term = torch.logaddexp(px.log_p_target, log_abstain)
        mixed = anomaly.flatten(1).any(1).view(-1, 1, 1)
        pal_plain = -_mean(in_term, inlier & ~mixed)
        out_mean = reference_outlier_term(logits, px, log_abstain, anomaly)
        pal_mixed = -(_mean(in_term, inlier & mixed) + self.cfg.ood_weight * out_mean)
        return pal_plain + pal_mixed


def distillation(logits: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over ``mask`` (``B x H x W`` bool) of ``KL(softmax(teacher_19) || softmax(logits_19))``,
    the 19-way inlier softmax of ``B x C x H x W`` logits (C >= 19); 0 when the mask is empty."""
    log_q = torch.log_softmax(logits[:, :NUM_CLASSES], dim=1)
    log_t = torch.log_softmax(teacher[:, :NUM_CLASSES].detach(), dim=1)
    kl = (log_t.exp() * (log_t - log_q)).sum(dim=1)
    return _mean(kl, mask)


def inlier_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over the 19 inlier channels, mean over pixels with a trainId (``pretrain``).

    Pixels labelled 254 or 255 are ignored; extra channels (abstention) are not used. Computed
    as ``logsumexp - x_y`` (no full-size log-softmax).
    """
    targets = targets.long()
    valid = targets < NUM_CLASSES
    inl = logits[:, :NUM_CLASSES]
    x_y = inl.gather(1, torch.where(valid, targets, 0).unsqueeze(1)).squeeze(1)
    return _mean(torch.logsumexp(inl, dim=1) - x_y, valid)
