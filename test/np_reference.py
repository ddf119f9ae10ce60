"""Independent float64 numpy references shared by the tests (no project code imported)."""

from __future__ import annotations

from collections import deque

import numpy as np


def np_lse(x: np.ndarray, axis: int = 1) -> np.ndarray:
    """logsumexp along ``axis`` (float64, max-shifted)."""
    m = x.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def np_softmax(x: np.ndarray, axis: int = 1) -> np.ndarray:
    return np.exp(x - np.expand_dims(np_lse(x, axis), axis))


def np_gaussian_blur(img: np.ndarray) -> np.ndarray:
    """torchvision ``GaussianBlur(7, sigma=1)`` on one H x W map: 2-D 7x7 kernel, reflect border."""
    x = np.linspace(-3.0, 3.0, 7)
    k1 = np.exp(-0.5 * x**2)
    k1 /= k1.sum()
    k2 = np.outer(k1, k1)
    p = np.pad(img, 3, mode="reflect")
    h, w = img.shape
    out = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            out[i, j] = (p[i : i + 7, j : j + 7] * k2).sum()
    return out


def flood_components(mask: np.ndarray) -> list[set[tuple[int, int]]]:
    """8-connected components of a bool map, by breadth-first flood fill (no scipy)."""
    h, w = mask.shape
    seen = np.zeros_like(mask, bool)
    components = []
    for y in range(h):
        for x in range(w):
            if not mask[y, x] or seen[y, x]:
                continue
            seen[y, x] = True
            queue, pixels = deque([(y, x)]), set()
            while queue:
                cy, cx = queue.popleft()
                pixels.add((cy, cx))
                for dy in (-1, 0, 1):
                    for dx in (-1, 0, 1):
                        ny, nx = cy + dy, cx + dx
                        if 0 <= ny < h and 0 <= nx < w and mask[ny, nx] and not seen[ny, nx]:
                            seen[ny, nx] = True
                            queue.append((ny, nx))
            components.append(pixels)
    return components


def brute_obstacle_counts(labels, score, threshold, ego, min_pixels, min_visible, allowed=None):
    """Obstacle-level counts of one still by brute force: labelled obstacles (anomaly components of
    ``min_visible`` px), those a reported alarm component (``score >= threshold`` off ``ego`` and
    inside ``allowed``, ``min_pixels`` px) overlaps, the reported components, those on no anomaly
    pixel (void counts as no anomaly), inlier pixels off ``ego`` inside ``allowed`` and those
    alarming: ``(labelled, detected, reported, false alarms, inlier, flagged)``."""
    ego = np.zeros(labels.shape, bool) if ego is None else ego
    allowed = np.ones(labels.shape, bool) if allowed is None else allowed
    alarm = (score >= threshold) & ~ego & allowed
    reported = [c for c in flood_components(alarm) if len(c) >= min_pixels]
    anomaly = {(int(y), int(x)) for y, x in zip(*np.nonzero(labels == 1), strict=True)}
    truth = [c for c in flood_components(labels == 1) if len(c) >= min_visible]
    kept = set().union(*reported) if reported else set()
    detected = sum(1 for c in truth if c & kept)
    false_alarms = sum(1 for c in reported if not c & anomaly)
    inlier = (labels == 0) & ~ego & allowed
    return len(truth), detected, len(reported), false_alarms, int(inlier.sum()), int((inlier & alarm).sum())
