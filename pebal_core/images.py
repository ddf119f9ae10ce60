"""Reading and writing image and label files (OpenCV underneath, RGB order at the interface).

Images are ``uint8 H x W x 3`` RGB; label maps are ``uint8 H x W`` (PNG, single channel).
Every failure raises ``OSError`` naming the file.
"""

from __future__ import annotations

import os

import cv2
import numpy as np


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file (png, jpg, webp, ...) as RGB ``uint8 H x W x 3``."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f"cannot read image {path} (missing, unreadable or not an image)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_label(path: str | os.PathLike) -> np.ndarray:
    """Read a single-channel label PNG as ``uint8 H x W`` (values kept as stored)."""
    lab = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if lab is None:
        raise OSError(f"cannot read label image {path} (missing, unreadable or not an image)")
    if lab.ndim == 3:
        raise OSError(f"label image {path} has {lab.shape[2]} channels; expected a single-channel PNG")
    if lab.dtype != np.uint8:
        raise OSError(f"label image {path} is {lab.dtype}; expected 8-bit values")
    return lab


def write_rgb(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write an RGB ``uint8 H x W x 3`` image; the format follows the suffix."""
    if not cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write image {path}")


def write_label(path: str | os.PathLike, labels: np.ndarray) -> None:
    """Write a ``uint8 H x W`` label map as a lossless single-channel PNG."""
    if labels.dtype != np.uint8 or labels.ndim != 2:
        raise ValueError(f"labels must be uint8 H x W, got {labels.dtype} {labels.shape}")
    if not cv2.imwrite(str(path), labels):
        raise OSError(f"could not write label image {path}")
