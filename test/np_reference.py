"""Independent float64 numpy references shared by the tests (no project code imported)."""

from __future__ import annotations

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
