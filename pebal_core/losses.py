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

Structure: each term is a small :class:`LossTerm` object with a ``name`` (the key the training
log prints); :func:`pebal_objective` builds a :class:`TermSum` of them from the configuration,
the variant (:data:`LOSS_VARIANTS`) choosing each term's arithmetic and how the terms are
summed, the abstention (:data:`ABSTENTIONS`) choosing the main term. ``pretrain`` sums the one
term :class:`InlierCrossEntropy`.

Void pixels never contribute except in the reference smoothness term and, through the 7x7
blur, in the smoothed penalty of their neighbours. Everything is computed in log space from one
``logsumexp`` over the inlier channels (``log p_c = x_c - logaddexp(lse, x_19)``, ``logaddexp``
for the sums), so logits of magnitude 1e3 give finite losses and gradients, and no full-size
softmax is materialised.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from pebal_core.config import LossConfig
from pebal_core.labels import ABSTENTION_CHANNEL, ANOMALY_ID, NUM_CLASSES, UNCLASSED_ID, VOID_ID
from pebal_core.registry import Registry
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


# ----------------------------------------------------------------------------- terms
@dataclasses.dataclass
class LossInputs:
    """One batch as every term sees it: ``logits`` ``B x C x H x W``, ``targets`` int64 ``B x H x W``,
    optional ``teacher`` logits; the per-pixel quantities are computed once, on first use."""

    logits: torch.Tensor
    targets: torch.Tensor
    teacher: torch.Tensor | None = None

    @functools.cached_property
    def anomaly(self) -> torch.Tensor:
        return self.targets == ANOMALY_ID

    @functools.cached_property
    def inlier(self) -> torch.Tensor:
        return self.targets < NUM_CLASSES

    @functools.cached_property
    def px(self) -> PixelTerms:
        return PixelTerms.of(self.logits, self.targets)

    @functools.cached_property
    def energy(self) -> torch.Tensor:
        """Free energy ``E = -lse``, ``B x H x W`` (one tensor shared by every term that uses it)."""
        return self.px.energy

    @functools.cached_property
    def mixed(self) -> torch.Tensor:
        """``B x 1 x 1`` bool: the images that contain anomalous pixels (D_out)."""
        return self.anomaly.flatten(1).any(1).view(-1, 1, 1)


class LossTerm:
    """A named part of the objective: ``term(inputs)`` is its unweighted value, a scalar tensor.

    ``name`` is the key under which the training log reports it.
    """

    name: str = ""

    def __call__(self, x: LossInputs) -> torch.Tensor:
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class EnergyPenalty:
    """``log(p_19 / a)`` with ``a = lse^2`` (Eq. 5), optionally Gaussian-smoothed per image."""

    smoothed: bool

    def log_abstain(self, px: PixelTerms) -> torch.Tensor:
        return px.log_p19 - log_penalty(px.lse, self.smoothed)


@dataclasses.dataclass(frozen=True)
class FixedPenalty:
    """``log(p_19 / a)`` with a constant ``a`` (Deep Gambler)."""

    value: float

    def log_abstain(self, px: PixelTerms) -> torch.Tensor:
        return px.log_p19 - math.log(self.value)


Penalty = EnergyPenalty | FixedPenalty


class ExtraClassCrossEntropy(LossTerm):
    """``ce``: cross-entropy over the 20 channels, anomalous pixels labelled 19 (replaces PAL)."""

    name = "ce"

    def __call__(self, x: LossInputs) -> torch.Tensor:
        return _mean(-x.px.log_p_target, x.inlier | x.anomaly)


@dataclasses.dataclass(frozen=True)
class PaperPAL(LossTerm):
    """``pal`` (Eq. 3): mean over inlier and anomalous pixels of ``-log(p_y + p_19 / a)``, with
    ``y = 19`` on anomalous pixels."""

    penalty: Penalty
    name = "pal"

    def __call__(self, x: LossInputs) -> torch.Tensor:
        # x_target holds x_19 on anomalous pixels
        per_pixel = torch.logaddexp(x.px.log_p_target, self.penalty.log_abstain(x.px))
        return -_mean(per_pixel, x.inlier | x.anomaly)


@dataclasses.dataclass(frozen=True)
class ReferencePAL(LossTerm):
    """``pal`` as the reference computes it: the images without and with anomalous pixels separately,
    the latter with the ``ood_weight`` outlier term."""

    penalty: Penalty
    ood_weight: float
    name = "pal"

    def __call__(self, x: LossInputs) -> torch.Tensor:
        log_abstain = self.penalty.log_abstain(x.px)
        in_term = torch.logaddexp(x.px.log_p_target, log_abstain)
        pal_plain = -_mean(in_term, x.inlier & ~x.mixed)
        out_mean = reference_outlier_term(x.logits, x.px, log_abstain, x.anomaly)
        pal_mixed = -(_mean(in_term, x.inlier & x.mixed) + self.ood_weight * out_mean)
        return pal_plain + pal_mixed


def _low_energy(x: LossInputs) -> torch.Tensor:
    """Pixels whose energy the inlier margin keeps low: inliers, unclassed ones included."""
    return x.inlier | (x.targets == UNCLASSED_ID)


@dataclasses.dataclass(frozen=True)
class PaperEBM(LossTerm):
    """``ebm`` (Eqs. 6, 7): both margins, mean over inlier and anomalous pixels together."""

    m_in: float
    m_out: float
    name = "ebm"

    def __call__(self, x: LossInputs) -> torch.Tensor:
        e_in, e_out = ebm_terms(x.energy, self.m_in, self.m_out)
        low = _low_energy(x)
        return (e_in * low + e_out * x.anomaly).sum() / (low | x.anomaly).sum().clamp_min(1)


@dataclasses.dataclass(frozen=True)
class ReferenceEBM(LossTerm):
    """``ebm`` as the reference: ``0.5 * (mean_in + mean_out)`` when the batch has anomalous
    pixels, else ``mean_in``."""

    m_in: float
    m_out: float
    name = "ebm"

    def __call__(self, x: LossInputs) -> torch.Tensor:
        has_anomaly = x.anomaly.any()
        e_in, e_out = ebm_terms(x.energy, self.m_in, self.m_out)
        mean_in = _mean(e_in, _low_energy(x))
        return torch.where(has_anomaly, 0.5 * (mean_in + _mean(e_out, x.anomaly)), mean_in)


class PaperSmoothness(LossTerm):
    """``smoothness`` (Eq. 8): mean ``|E_i - E_j|`` over neighbour pairs of non-void pixels of D_out images."""

    name = "smoothness"

    def __call__(self, x: LossInputs) -> torch.Tensor:
        return paper_smoothness(x.energy, (x.inlier | x.anomaly) & x.mixed)


class PaperSparsity(LossTerm):
    """``sparsity`` (Eq. 8): mean ``|E|`` over anomalous pixels."""

    name = "sparsity"

    def __call__(self, x: LossInputs) -> torch.Tensor:
        return _mean(x.energy.abs(), x.anomaly)


class ReferenceSmoothness(LossTerm):
    """``smoothness`` as the reference: half the sum of squared neighbour differences over the whole map."""

    name = "smoothness"

    def __call__(self, x: LossInputs) -> torch.Tensor:
        return reference_smoothness(x.energy)


class ReferenceSparsity(LossTerm):
    """``sparsity`` as the reference: the L2 norm of ``E`` over anomalous pixels (0, with 0 gradient, if none)."""

    name = "sparsity"

    def __call__(self, x: LossInputs) -> torch.Tensor:
        return torch.linalg.vector_norm(x.energy * x.anomaly)


class Distillation(LossTerm):
    """``distill``: :func:`distillation` from the teacher's logits over the non-anomalous pixels."""

    name = "distill"

    def __call__(self, x: LossInputs) -> torch.Tensor:
        if x.teacher is None:
            raise ValueError("distill_weight > 0 needs the teacher's logits")
        return distillation(x.logits, x.teacher, x.targets != ANOMALY_ID)


class InlierCrossEntropy(LossTerm):
    """``ce`` of ``pretrain``: :func:`inlier_cross_entropy`."""

    name = "ce"

    def __call__(self, x: LossInputs) -> torch.Tensor:
        return inlier_cross_entropy(x.logits, x.targets)


# ----------------------------------------------------------------------------- sums of terms
@dataclasses.dataclass(frozen=True)
class TermSum:
    """``sum(weight * part)`` in order, ``weight`` None meaning the part itself; a part is a
    :class:`LossTerm` or a nested :class:`TermSum` (a weight applied to a group, as the reference's
    ``ebm_weight * (EBM + reg)``). Floating-point order: left to right, groups first."""

    parts: tuple[tuple[float | None, LossTerm | TermSum], ...]

    def evaluate(self, x: LossInputs, values: dict[str, torch.Tensor]) -> torch.Tensor:
        """The weighted sum; every term's unweighted value goes into ``values`` under its name."""
        total = None
        for weight, part in self.parts:
            if isinstance(part, TermSum):
                value = part.evaluate(x, values)
            else:
                value = part(x)
                values[part.name] = value
            weighted = value if weight is None else weight * value
            total = weighted if total is None else total + weighted
        return total

    def names(self) -> list[str]:
        """The names of the terms, in evaluation order."""
        return [n for _, p in self.parts for n in (p.names() if isinstance(p, TermSum) else [p.name])]

    def __call__(self, x: LossInputs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``(total, terms)``: the sum to backpropagate and each term's value, detached, by name."""
        values: dict[str, torch.Tensor] = {}
        total = self.evaluate(x, values)
        return total, {k: v.detach() for k, v in values.items()}


@dataclasses.dataclass(frozen=True)
class LossVariant:
    """How a variant (``LossConfig.variant``) computes PAL, EBM and the regulariser, and how it sums them."""

    pal: Callable[[Penalty, LossConfig], LossTerm]
    ebm: type[PaperEBM | ReferenceEBM]
    smoothness: type[LossTerm]
    sparsity: type[LossTerm]
    regularizer_inside_ebm_weight: bool
    """True: ``main + ebm_weight * (EBM + reg)`` (reference); False: ``main + ebm_weight * EBM + reg`` (paper)."""

    def parts(self, main: LossTerm, cfg: LossConfig) -> tuple[tuple[float | None, LossTerm | TermSum], ...]:
        ebm = ((None, self.ebm(cfg.m_in, cfg.m_out)),) if cfg.ebm else ()
        reg: tuple = ()
        if cfg.regularizer:
            weights = (cfg.resolved_smoothness_weight(), cfg.resolved_sparsity_weight())
            reg = ((None, TermSum(((weights[0], self.smoothness()), (weights[1], self.sparsity())))),)
        if not (ebm or reg):
            return ((None, main),)
        if self.regularizer_inside_ebm_weight:
            return ((None, main), (cfg.ebm_weight, TermSum((*ebm, *reg))))
        return ((None, main), *((cfg.ebm_weight, t) for _, t in ebm), *reg)


LOSS_VARIANTS: Registry[LossVariant] = Registry("loss variant")
"""``LossConfig.variant`` -> :class:`LossVariant` (see the module docstring)."""
LOSS_VARIANTS.register(
    "reference",
    LossVariant(
        lambda penalty, cfg: ReferencePAL(penalty, cfg.ood_weight),
        ReferenceEBM,
        ReferenceSmoothness,
        ReferenceSparsity,
        True,
    ),
)
LOSS_VARIANTS.register(
    "paper", LossVariant(lambda penalty, cfg: PaperPAL(penalty), PaperEBM, PaperSmoothness, PaperSparsity, False)
)

ABSTENTIONS: Registry[Callable[[LossConfig, LossVariant], LossTerm]] = Registry("abstention")
"""``LossConfig.abstention`` -> the main term of a variant: PAL with a penalty, or cross-entropy."""
ABSTENTIONS.register("energy", lambda cfg, v: v.pal(EnergyPenalty(cfg.resolved_smooth_penalty()), cfg))
ABSTENTIONS.register("fixed", lambda cfg, v: v.pal(FixedPenalty(cfg.fixed_penalty), cfg))
ABSTENTIONS.register("ce", lambda cfg, v: ExtraClassCrossEntropy())


def pebal_objective(cfg: LossConfig) -> TermSum:
    """The terms of ``cfg`` and how they are summed: the main term (PAL or CE), then EBM and the
    regulariser as the variant sums them, then the distillation term."""
    variant = LOSS_VARIANTS[cfg.variant]
    parts = variant.parts(ABSTENTIONS[cfg.abstention](cfg, variant), cfg)
    if cfg.distill_weight > 0:
        parts = (*parts, (cfg.distill_weight, Distillation()))
    return TermSum(parts)


class PebalLoss(nn.Module):
    """The total training objective of one batch (see the module docstring), :func:`pebal_objective` of ``cfg``.

    ``forward(logits, targets)`` returns ``(total, terms)``: ``total`` a scalar tensor to
    backpropagate, ``terms`` the unweighted parts (``pal`` or ``ce``, ``ebm``, ``smoothness``,
    ``sparsity``, ``distill``; only those switched on) as detached scalars for logging.
    """

    def __init__(self, cfg: LossConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or LossConfig()
        self.objective = pebal_objective(self.cfg)

    def forward(
        self, logits: torch.Tensor, targets: torch.Tensor, teacher: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``teacher``: the base network's logits ``B x >=19 x H x W`` for the distillation term
        (required when ``distill_weight`` > 0, ignored otherwise)."""
        _check(logits, targets)
        return self.objective(LossInputs(logits, targets.long(), teacher))


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
