"""Calibration images for post-training int8 quantisation (TensorRT engines, OpenVINO int8 models).

Calibration shows the quantiser the range of every activation on real inputs, so the images
should be the camera's own kind of frames (inliers: ordinary road scenes). Each image is fed the
way the runtime feeds a camera frame: RGB, resized to the network size with OpenCV bilinear (the
``predictor`` resize protocol, :mod:`pebal_core.protocols`), uint8 ``1 x 3 x H x W``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pebal_core.images import read_rgb
from pebal_core.protocols import resize_image
from pebal_core.sources import IMAGE_SUFFIXES


def calibration_files(folder: str | os.PathLike, limit: int | None = None) -> list[Path]:
    """Image files for INT8 calibration in ``folder`` (recursively), sorted; at most ``limit``, evenly spread."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"calibration image folder not found: {folder}")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in the calibration folder {folder}")
    if limit is not None and len(files) > limit:
        idx = np.linspace(0, len(files) - 1, limit).round().astype(int)
        files = [files[i] for i in idx]
    return files


def calibration_batch(path: str | os.PathLike, size: tuple[int, int]) -> np.ndarray:
    """One calibration input: the RGB image resized to ``(H, W)`` (bilinear, as the runtime does), uint8 ``1x3xHxW``."""
    rgb = resize_image(read_rgb(path), tuple(size), "predictor")
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))[None]
