"""What every backend shares: the :class:`Backend` interface, its error, and the checks of a model file.

A backend runs one model on one device: ``run(rgb)`` takes a uint8 ``H x W x 3`` RGB image
already at the network size and returns ``(labels uint8 H x W, score float32 H x W)``: labels
are Cityscapes trainIds 0..18, the score is the PEBAL anomaly score (inlier free energy,
Gaussian-smoothed unless the model was exported without; higher = more anomalous).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch


class BackendError(RuntimeError):
    """A backend cannot run here: library or device missing, or the model file does not fit."""


class Backend:
    """An inference engine for one model at one device.

    Attributes:
        name: backend name (``torch``, ``onnxruntime``, ``openvino``, ``tensorrt``).
        metadata: the model's metadata (architecture, normalisation, score threshold, ...).
        input_size: the model's fixed network input ``(height, width)``, or ``None`` when any
            size runs.
        precision: the arithmetic the backend really runs (``fp32``, ``bf16``, ``int8``, ``fp16``).
        choice: set by the ``auto`` backend (:mod:`pebal_core.backends.auto`): how it chose this
            backend (``None`` when the backend was named).
    """

    name = "abstract"
    metadata: dict
    input_size: tuple[int, int] | None = None
    precision = "fp32"
    choice: dict | None = None

    def run(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``rgb`` uint8 ``H x W x 3`` (already at network size) -> ``(labels uint8, score float32)``."""
        raise NotImplementedError

    def logits(self, rgb: np.ndarray) -> torch.Tensor:
        """``1 x C x H x W`` float logits of ``rgb`` (at network size); only backends that keep them."""
        raise BackendError(
            f"the {self.name} backend returns labels and the PEBAL score only; scores other than 'pebal' "
            "and logits need the torch backend (backend='torch')"
        )

    def choice_summary(self) -> str:
        """How this backend was chosen: the ``auto`` measurement in one line, or that it was named."""
        return self.choice["summary"] if self.choice else "named, not measured"

    def describe(self) -> str:
        """One line for logs: backend, precision and how it was chosen."""
        return f"{self.name} {self.precision}" + (f" (auto: {self.choice['summary']})" if self.choice else "")


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def parse_device(device: str, kinds: tuple[str, ...]) -> tuple[str, int]:
    """``"cuda:1"`` -> ``("cuda", 1)``; ``"cpu"`` -> ``("cpu", 0)``; kind must be in ``kinds``."""
    kind, _, index = device.partition(":")
    if kind not in kinds or (index and not index.isdigit()):
        raise ValueError(f"unknown device {device!r} for this backend; use one of {', '.join(kinds)} (GPU: kind:N)")
    return kind, int(index or 0)


def check_smoothing(path: Path, baked: bool, wanted: bool) -> None:
    """Refuse a file exported with the score smoothing ``baked`` when ``wanted`` differs."""
    if bool(baked) != bool(wanted):
        raise ValueError(
            f"{path} was exported with score smoothing {'on' if baked else 'off'}, but smoothing="
            f"{wanted} was asked for; re-export it {'with' if baked else 'without'} --no-smoothing, "
            "or change the smoothing setting to match"
        )


def check_fixed_size(path: Path, fixed: tuple[int, int] | None, wanted: tuple[int, int] | None) -> None:
    """Refuse an ``input_size`` other than a fixed-size model's own."""
    if fixed is not None and wanted is not None and tuple(wanted) != tuple(fixed):
        raise ValueError(
            f"{path} has a fixed input of {fixed[0]}x{fixed[1]}, but input_size {wanted[0]}x{wanted[1]} was "
            "asked for; set input_size to the model's size (or leave it unset) or re-export with --dynamic"
        )


def image_nchw(rgb: np.ndarray) -> np.ndarray:
    """uint8 ``H x W x 3`` -> contiguous uint8 ``1 x 3 x H x W`` (the exported graphs' input)."""
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))[None]


def recorded_input_size(metadata: dict) -> tuple[int, int] | None:
    """The ``(height, width)`` a model's metadata records as its input size, or ``None``.

    ``input_size`` in a checkpoint's metadata is the network size its operating points were measured
    at (``pebal threshold --write``, ``pebal eval --write-threshold``); in an ONNX export's metadata
    it is the graph's fixed size, and a dynamic export carries the checkpoint's in
    ``checkpoint_metadata``."""
    for meta in (metadata, metadata.get("checkpoint_metadata") or {}):
        size = meta.get("input_size")
        if size:
            return tuple(int(v) for v in size)
    return None
