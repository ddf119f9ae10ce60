"""Frames of a camera that sees its own car: a reflective bonnet with a star under random scenes.

For the ego-mask tests (``test_ego_estimate.py``, ``test_bag_mask.py``); no project code.
"""

from __future__ import annotations

import cv2
import numpy as np

H, W = 240, 480


def bonnet_truth() -> np.ndarray:
    """Below a parabola from row 200 (centre) to row 224 (sides), plus a round star on top of it."""
    rows, cols = np.mgrid[0:H, 0:W]
    edge = 200 + 24 * ((cols - W / 2) / (W / 2)) ** 2
    truth = rows >= edge
    truth |= (rows - 186) ** 2 + (cols - W / 2) ** 2 <= 14**2
    return truth


def scene(rng: np.random.Generator) -> np.ndarray:
    """A random scene: a tilted gradient, 40 random boxes and discs, a random texture (real scenes
    are textured everywhere: asphalt, foliage, facades)."""
    rows, cols = np.mgrid[0:H, 0:W].astype(np.float32)
    a, b, c = rng.uniform(-0.3, 0.3, 2).tolist() + [rng.uniform(60, 190)]
    img = np.clip(c + a * rows + b * cols, 0, 255)[..., None] * rng.uniform(0.7, 1.0, 3)
    for _ in range(40):
        color = rng.uniform(0, 255, 3)
        x, y, s = rng.integers(0, W), rng.integers(0, H), rng.integers(8, 60)
        if rng.random() < 0.5:
            img[max(0, y - s) : y + s, max(0, x - s) : x + s] = color
        else:
            img[(rows - y) ** 2 + (cols - x) ** 2 <= s * s] = color
    texture = cv2.GaussianBlur(rng.normal(0, 1, (H, W)).astype(np.float32), (0, 0), 1.5)
    return img + 40 * texture[..., None]


def camera_frames(n: int, seed: int = 0, bonnet: bool = True) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = bonnet_truth()
    rows = np.mgrid[0:H, 0:W][0].astype(np.float32)
    frames = []
    for _ in range(n):
        img = scene(rng)
        if bonnet:
            # dark paint mirroring a changing sky: a smooth vertical gradient of random strength
            shine = rng.uniform(20, 90) * np.clip((224 - rows) / 40, 0, 1)
            paint = np.array([40.0, 40.0, 48.0]) + shine[..., None]
            img[truth] = paint[truth]
        img += rng.normal(0, 3, img.shape)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return frames
