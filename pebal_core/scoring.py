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


def free_energy(logits: torch.Tensor) -> torch.Tensor:
    """Inlier free energy ``-logsumexp`` over channels 0..18: ``B x H x W``, higher = more anomalous.

    While ONNX export traces it, the max-shifted form ``-(m + log sum exp(x - m))`` is written
    out: TensorRT imports ONNX ``ReduceLogSumExp`` as ``log(sum(exp(x)))``, which overflows in
    FP16 for logits above ~11. Eager results are unaffected.
    """
    inl = _inliers(logits)
    if torch.onnx.is_in_onnx_export():
        top = inl.amax(dim=1, keepdim=True)
        return -(top.squeeze(1) + (inl - top).exp().sum(dim=1).log())
    return -torch.logsumexp(inl, dim=1)


def smooth(score: torch.Tensor, size: int = GAUSSIAN_SIZE, sigma: float = GAUSSIAN_SIGMA) -> torch.Tensor:
    """Separable Gaussian blur of a ``B x H x W`` (or ``H x W``) map, reflect-padded.

    Equals torchvision's ``GaussianBlur(7, sigma=1)`` used by the reference implementation:
    the same taps and ``reflect`` border (mirror without repeating the edge pixel); the 2-D
    kernel is the outer product of the 1-D one, applied as two 1-D passes.
    """
    squeeze = score.ndim == 2
    x = score.unsqueeze(0) if squeeze else score
    if x.ndim != 3:
        raise ValueError(f"expected a B x H x W or H x W map, got shape {tuple(score.shape)}")
    pad = size // 2
    k = gaussian_kernel1d(size, sigma).to(device=x.device, dtype=x.dtype)
    y = F.pad(x.unsqueeze(1), (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, size))
    y = F.conv2d(y, k.view(1, 1, size, 1))
    y = y.squeeze(1)
    return y.squeeze(0) if squeeze else y


def inlier_labels(logits: torch.Tensor) -> torch.Tensor:
    """Argmax over the 19 inlier channels as ``uint8`` ``B x H x W`` (lowest index wins ties).

    Computed as ``19 - max_c((x_c == max) * (19 - c))``: vectorised reductions that are several
    times faster on the CPU than ``argmax`` over the channel axis of an NCHW tensor. While ONNX
    export traces it, ``argmax`` is written out instead (ONNX ``ArgMax`` also keeps the first
    index on ties; TensorRT has no uint8 arithmetic).
    """
    inl = _inliers(logits)
    if torch.onnx.is_in_onnx_export():
        return inl.argmax(dim=1).to(torch.uint8)
    top = inl.amax(dim=1, keepdim=True)
    weights = torch.arange(NUM_CLASSES, 0, -1, dtype=torch.uint8, device=inl.device).view(1, -1, 1, 1)
    return NUM_CLASSES - ((inl == top).to(torch.uint8) * weights).amax(dim=1)


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

    ``smoothing=False`` returns the raw free energy (cheaper, slightly noisier).
    """
    energy = free_energy(logits)
    return inlier_labels(logits), (smooth(energy) if smoothing else energy)


class EnergyScoreHead(nn.Module):
    """:func:`labels_and_score` as a module, so that export can fuse it behind the network."""

    def __init__(self, smoothing: bool = True) -> None:
        super().__init__()
        self.smoothing = smoothing

    def forward(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return labels_and_score(logits, self.smoothing)
