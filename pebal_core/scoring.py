"""The energy-score head: per-pixel inlier labels and anomaly scores from logits.

All functions take logits ``B x C x H x W`` with ``C >= 19``: channels 0..18 are the Cityscapes
trainIds, channel 19 (when present) is PEBAL's abstention class. Every score follows one
convention: **higher = more anomalous**. Scores are float32 ``B x H x W``.

Scores (``METHODS``), all computed over the 19 inlier channels unless stated:

``pebal``
    Inlier free energy ``E = -logsumexp(logits[:19])``, then the 7x7, sigma-1 Gaussian blur of
    :func:`smooth` (the reference implementation's evaluation score).
``energy``
    The same free energy without smoothing (the energy baseline of Liu et al. 2020).
``msp``
    ``1 - max softmax`` (maximum softmax probability baseline, Hendrycks & Gimpel 2017).
``maxlogit``
    ``-max logit`` (Hendrycks et al. 2022).
``entropy``
    Entropy of the 19-way softmax divided by ``log 19`` (in [0, 1]).
``abstention``
    Softmax over all 20 channels, probability of channel 19 (the "void"/abstention class).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pebal_core.labels import ABSTENTION_CHANNEL, NUM_CLASSES

METHODS = ("pebal", "energy", "msp", "maxlogit", "entropy", "abstention")
BASELINES = ("msp", "maxlogit", "entropy", "energy")
"""The uncertainty baselines of the paper's tables (computed on the same logits)."""

GAUSSIAN_SIZE = 7
GAUSSIAN_SIGMA = 1.0


def gaussian_kernel1d(size: int = GAUSSIAN_SIZE, sigma: float = GAUSSIAN_SIGMA) -> torch.Tensor:
    """Normalised 1-D Gaussian taps at integer offsets ``-(size//2) .. size//2`` (float32)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).float()


def _inliers(logits: torch.Tensor) -> torch.Tensor:
    if logits.ndim != 4 or logits.shape[1] < NUM_CLASSES:
        raise ValueError(f"expected logits B x C x H x W with C >= {NUM_CLASSES}, got {tuple(logits.shape)}")
    return logits[:, :NUM_CLASSES]


_LOG2E = 1.0 / math.log(2.0)


def exp_(x: torch.Tensor) -> torch.Tensor:
    """``exp(x)`` in place, computed as ``exp2(x * log2 e)``: PyTorch's CPU kernels evaluate
    ``exp2`` several times faster than ``exp``; equal to ``torch.exp`` to float32 rounding."""
    return x.mul_(_LOG2E).exp2_()


def _energy_and_top(inl: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(max, inl - max)`` over the channels: the one full-size temporary of the head.

    The shifted logits are ``<= 0`` and exactly 0 at every maximal channel (``x - y == 0`` iff
    ``x == y`` for finite floats), which :func:`_first_max` uses for the labels before
    :func:`lse_from_shifted` overwrites them.
    """
    top = inl.amax(dim=1, keepdim=True)
    return top, inl - top


def _first_max(shifted: torch.Tensor) -> torch.Tensor:
    """Index of the first maximum along dim 1, from the 19 shifted inlier logits ``x - max(x)``.

    ``19 - max_c((x_c - max >= 0) * (19 - c))`` as ``uint8`` ``B x H x W``: a compare with a
    scalar and reductions over channels, several times faster on the CPU than ``argmax`` over
    the channel axis of an NCHW tensor. While ONNX export traces it, ``argmax`` (which also
    keeps the first index on ties) is written out instead: TensorRT has no uint8 arithmetic.
    """
    if torch.onnx.is_in_onnx_export():
        return shifted.argmax(dim=1).to(torch.uint8)
    weights = torch.arange(NUM_CLASSES, 0, -1, dtype=torch.uint8, device=shifted.device).view(1, -1, 1, 1)
    return NUM_CLASSES - (shifted >= 0).to(torch.uint8).mul_(weights).amax(dim=1)


def lse_from_shifted(top: torch.Tensor, shifted: torch.Tensor) -> torch.Tensor:
    """``logsumexp`` over dim 1 given ``top = max`` and ``shifted = x - top`` (overwritten).

    ``exp(d)`` is :func:`exp_` (``exp2`` based); the result agrees with ``torch.logsumexp`` to
    float32 rounding.
    During ONNX export (which has no ``exp2`` operator) the graph uses ``exp`` on the shifted
    logits: the max-shifted form written out, because TensorRT imports ONNX ``ReduceLogSumExp``
    as ``log(sum(exp(x)))``, which overflows in FP16 for logits above ~11.
    """
    if torch.onnx.is_in_onnx_export():
        return shifted.exp_().sum(dim=1).log_().add_(top.squeeze(1))
    return exp_(shifted).sum(dim=1).log_().add_(top.squeeze(1))


def free_energy(logits: torch.Tensor) -> torch.Tensor:
    """Inlier free energy ``-logsumexp`` over channels 0..18: ``B x H x W``, higher = more anomalous.

    Computed as ``-(max + log(sum(exp(x - max))))`` (the arithmetic of ``torch.logsumexp``), so
    it is finite for any finite logits, however large. Logits must be finite.
    """
    top, shifted = _energy_and_top(_inliers(logits))
    return lse_from_shifted(top, shifted).neg_()


def separable_correlate(padded: torch.Tensor, taps: list[float]) -> torch.Tensor:
    """Valid 2-D correlation of ``B x (H + n - 1) x (W + n - 1)`` maps with ``outer(taps, taps)``.

    Two 1-D passes of shifted multiply-adds (cheaper than single-channel convolutions on the
    CPU); returns ``B x H x W``. For symmetric taps its adjoint is itself applied to the
    zero-padded gradient, which :mod:`pebal_core.losses` uses for a cheap backward pass.
    """
    n = len(taps)
    h, w = padded.shape[-2] - n + 1, padded.shape[-1] - n + 1
    rows = padded[:, :, 0:w] * taps[0]
    for i in range(1, n):
        rows = rows.add_(padded[:, :, i : i + w], alpha=taps[i])
    y = rows[:, 0:h] * taps[0]
    for i in range(1, n):
        y = y.add_(rows[:, i : i + h], alpha=taps[i])
    return y


def smooth(score: torch.Tensor, size: int = GAUSSIAN_SIZE, sigma: float = GAUSSIAN_SIGMA) -> torch.Tensor:
    """Separable Gaussian blur of a ``B x H x W`` (or ``H x W``) map, reflect-padded.

    Equals torchvision's ``GaussianBlur(7, sigma=1)`` used by the reference implementation:
    the same taps and ``reflect`` border (mirror without repeating the edge pixel); the 2-D
    kernel is the outer product of the 1-D one, applied as two 1-D passes
    (:func:`separable_correlate`). ``H`` and ``W`` must exceed ``size // 2``.
    """
    squeeze = score.ndim == 2
    x = score.unsqueeze(0) if squeeze else score
    if x.ndim != 3:
        raise ValueError(f"expected a B x H x W or H x W map, got shape {tuple(score.shape)}")
    h, w = x.shape[-2:]
    pad = size // 2
    if h <= pad or w <= pad:
        raise ValueError(f"map {h}x{w} is too small for reflect padding by {pad} pixels")
    p = F.pad(x.unsqueeze(1), (pad, pad, pad, pad), mode="reflect").squeeze(1)
    y = separable_correlate(p, gaussian_kernel1d(size, sigma).tolist())
    return y.squeeze(0) if squeeze else y


def inlier_labels(logits: torch.Tensor) -> torch.Tensor:
    """Argmax over the 19 inlier channels as ``uint8`` ``B x H x W`` (lowest index wins ties)."""
    top, shifted = _energy_and_top(_inliers(logits))
    return _first_max(shifted)


def score_map(logits: torch.Tensor, method: str = "pebal") -> torch.Tensor:
    """Anomaly score ``B x H x W`` (float32, higher = more anomalous) by name; see ``METHODS``."""
    if method == "pebal":
        return smooth(free_energy(logits))
    if method == "energy":
        return free_energy(logits)
    if method == "abstention":
        if logits.shape[1] <= ABSTENTION_CHANNEL:
            raise ValueError("the abstention score needs a 20-channel model (channel 19)")
        return torch.softmax(logits[:, : ABSTENTION_CHANNEL + 1], dim=1)[:, ABSTENTION_CHANNEL]
    inl = _inliers(logits)
    if method == "maxlogit":
        return -inl.amax(dim=1)
    logp = torch.log_softmax(inl, dim=1)
    if method == "msp":
        return 1.0 - logp.amax(dim=1).exp()
    if method == "entropy":
        return -(logp.exp() * logp).sum(dim=1) / math.log(NUM_CLASSES)
    raise ValueError(f"unknown score method {method!r}; choose from {', '.join(METHODS)}")


def all_scores(logits: torch.Tensor, methods: tuple[str, ...] = METHODS) -> dict[str, torch.Tensor]:
    """Every requested score map for the same logits (one forward pass, many methods)."""
    usable = [m for m in methods if m != "abstention" or logits.shape[1] > ABSTENTION_CHANNEL]
    return {m: score_map(logits, m) for m in usable}


def labels_and_score(logits: torch.Tensor, smoothing: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """The runtime head: ``(labels uint8 B x H x W, PEBAL score float32 B x H x W)``.

    Equal to ``(inlier_labels(logits), score_map(logits, "pebal"))`` but fused: one max over
    the inlier channels and one full-size temporary serve both outputs (the head is
    memory-bound; see ``benchmarks/bench_scoring.py``). ``smoothing=False`` returns the raw free
    energy (cheaper, slightly noisier).
    """
    top, shifted = _energy_and_top(_inliers(logits))
    labels = _first_max(shifted)
    energy = lse_from_shifted(top, shifted).neg_()
    return labels, (smooth(energy) if smoothing else energy)


def nonfinite_pixels(score: np.ndarray) -> int:
    """Pixels of a score map (any shape) that are NaN or infinite.

    A sound model never gives them; a broken one (normalisation std 0, overflowing weights, a
    faulty backend) gives them silently, and ``score >= threshold`` is False there: an alarm that
    can never fire. The node and ``pebal predict`` count them per image and report them.
    """
    return int(score.size - np.count_nonzero(np.isfinite(score)))


class EnergyScoreHead(nn.Module):
    """:func:`labels_and_score` as a module, so that export can fuse it behind the network."""

    def __init__(self, smoothing: bool = True) -> None:
        super().__init__()
        self.smoothing = smoothing

    def forward(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return labels_and_score(logits, self.smoothing)
