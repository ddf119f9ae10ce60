"""Resize protocols and named evaluation presets: how an image reaches the network's input size,
how outputs come back, and which settings a published protocol fixes.

A *resize protocol* says how an RGB image is resized to the network size and at which resolution
anomaly metrics are computed; :data:`RESIZE_PROTOCOLS` names them:

``predictor``
    What the deployed :class:`~pebal_core.runtime.Predictor` does: the image is resized with
    OpenCV bilinear (:func:`resize_image`), the outputs are resized back to the image's (or the
    label's) size, labels nearest (:func:`resize_label_map`), scores bilinear
    (:func:`resize_score`). Metrics are computed at label resolution.
``course``
    The protocol of the published Cityscapes-ENet anomaly benchmarks: the evaluation recipe shared
    by the road-anomaly course projects whose tables the real-data tests check
    (``docs/data_sources.md``, ``docs/evaluation_protocols.md``): the image is resized with PIL's bilinear filter
    (antialiased when shrinking, as torchvision's ``Resize`` on a PIL image), the *label maps*
    are resized to the network size with PIL's nearest rule (:func:`resize_labels`), and the
    metrics are computed at network resolution.

At an image's own size both protocols are the same (nothing is resized).

The *network size* of an image without a fixed input size is its own size, scaled down (aspect
ratio kept) to at most :data:`MAX_NETWORK_PIXELS` pixels and
:data:`~pebal_core.onnx_contract.MAX_SIDE` pixels a side (:func:`bounded_size`), so that the cost
of a frame never grows with the camera's resolution.

An *evaluation protocol* (:data:`EVAL_PROTOCOLS`, ``pebal eval --protocol``) fixes the input
size, the resize protocol and the FPR95 definition of a published table.

This module depends only on numpy, OpenCV and (for ``course``) Pillow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from pebal_core.onnx_contract import MAX_SIDE

MAX_NETWORK_PIXELS = 1024 * 2048
"""Default bound on the network input of an image without a fixed input size: the Cityscapes frame
size (1024 x 2048), the largest size the shipped models are trained and evaluated at; larger network
inputs cost memory and time and gain nothing for them."""


@dataclass(frozen=True)
class ResizeProtocol:
    """How images are resized for the network and where metrics are computed.

    Attributes:
        name: the protocol's name (a key of :data:`RESIZE_PROTOCOLS`).
        pil_image_resize: resize images with PIL bilinear (else OpenCV bilinear).
        metrics_at_network_size: resize label maps to the network size (PIL nearest) and compute
            metrics there (else scores are resized back to the label size).
    """

    name: str
    pil_image_resize: bool
    metrics_at_network_size: bool


RESIZE_PROTOCOLS = {
    "predictor": ResizeProtocol("predictor", pil_image_resize=False, metrics_at_network_size=False),
    "course": ResizeProtocol("course", pil_image_resize=True, metrics_at_network_size=True),
}


def resize_protocol(name: str) -> ResizeProtocol:
    """The :class:`ResizeProtocol` called ``name`` (``ValueError`` naming the choices otherwise)."""
    if name not in RESIZE_PROTOCOLS:
        raise ValueError(f"resize protocol must be one of {', '.join(RESIZE_PROTOCOLS)}, got {name!r}")
    return RESIZE_PROTOCOLS[name]


def bounded_size(height: int, width: int, max_pixels: int = MAX_NETWORK_PIXELS) -> tuple[int, int]:
    """The network input for a ``height`` x ``width`` image without a fixed input size: its own
    size when it has at most ``max_pixels`` pixels and :data:`~pebal_core.onnx_contract.MAX_SIDE` a
    side, else both sides scaled by one factor and rounded down (aspect ratio kept within
    rounding, each side at least 1)."""
    scale = min(1.0, math.sqrt(max_pixels / (height * width)), MAX_SIDE / max(height, width))
    if scale == 1.0:
        return height, width
    h, w = max(1, math.floor(height * scale)), max(1, math.floor(width * scale))
    while h * w > max_pixels:  # floating-point rounding at the boundary
        if h >= w:
            h -= 1
        else:
            w -= 1
    return h, w


def resize_image(rgb: np.ndarray, size: tuple[int, int], protocol: str = "predictor") -> np.ndarray:
    """``rgb`` (uint8 ``H x W x 3``) resized to ``size`` = (height, width) as ``protocol`` does;
    returned unchanged when it already has that size."""
    if tuple(rgb.shape[:2]) == tuple(size):
        return rgb
    if resize_protocol(protocol).pil_image_resize:
        from PIL import Image  # pillow: the eval extra (a matplotlib dependency)

        return np.array(Image.fromarray(rgb).resize((size[1], size[0]), Image.BILINEAR))
    return cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def resize_labels(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A ground-truth label map (uint8 ``H x W``) resized to ``size`` = (height, width) with PIL's
    nearest rule (the source pixel under each target pixel centre; OpenCV ``INTER_NEAREST_EXACT``)."""
    if label.shape == tuple(size):
        return label
    return cv2.resize(label, (size[1], size[0]), interpolation=cv2.INTER_NEAREST_EXACT)


def resize_label_map(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Predicted trainIds (uint8 ``h x w``) brought to ``size`` = (height, width), OpenCV nearest
    (what the Predictor returns at the image size)."""
    if labels.shape == tuple(size):
        return labels
    return cv2.resize(labels, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)


def resize_score(score: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A float32 score map ``h x w`` brought to ``size`` = (height, width), OpenCV bilinear."""
    if score.shape == tuple(size):
        return score
    return cv2.resize(score, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


@dataclass(frozen=True)
class EvalProtocol:
    """A named set of ``pebal eval`` settings that reproduces a published table.

    Attributes:
        name: the ``--protocol`` value.
        input_size: (height, width) the network runs at; ``None`` = each image's own size.
        resize_protocol: a key of :data:`RESIZE_PROTOCOLS`.
        fpr95: the FPR95 definition (a key of ``pebal_core.metrics.FPR95_DEFINITIONS``).
        description: one line for ``--help`` and the report.
    """

    name: str
    input_size: tuple[int, int] | None
    resize_protocol: str
    fpr95: str
    description: str


EVAL_PROTOCOLS = {
    "paper": EvalProtocol(
        "paper",
        None,
        "predictor",
        "pebal",
        "the PEBAL paper's evaluation: native resolution, FPR95 as the reference implementation computes it",
    ),
    "course": EvalProtocol(
        "course",
        (512, 1024),
        "course",
        "ood_metrics",
        "the published Cityscapes-ENet benchmarks: 512x1024 with PIL bilinear, labels resized nearest, "
        "metrics at 512x1024, FPR95 of the ood_metrics package",
    ),
}
