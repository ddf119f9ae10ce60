"""Images people look at: colour heat maps of anomaly scores and tinted overlays.

All inputs and outputs are numpy arrays; RGB images are ``uint8 H x W x 3``.
"""

from __future__ import annotations

import cv2
import numpy as np

ANOMALY_TINT = (255, 0, 0)
"""RGB colour blended over anomalous pixels in overlays."""


def heatmap(score: np.ndarray, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """Map a float score ``H x W`` to an RGB image (OpenCV 'turbo' colour map: blue low, red high).

    ``vmin``/``vmax`` default to the 1st/99th percentiles of the finite scores.
    """
    s = np.asarray(score, dtype=np.float32)
    finite = s[np.isfinite(s)]
    if finite.size == 0:
        return np.zeros((*s.shape, 3), dtype=np.uint8)
    lo = float(np.percentile(finite, 1)) if vmin is None else vmin
    hi = float(np.percentile(finite, 99)) if vmax is None else vmax
    norm = np.clip((np.nan_to_num(s, nan=lo) - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    bgr = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def overlay(
    rgb: np.ndarray, mask: np.ndarray, color: tuple[int, int, int] = ANOMALY_TINT, alpha: float = 0.55
) -> np.ndarray:
    """The image with pixels where ``mask`` is true blended towards ``color`` by ``alpha``."""
    if rgb.shape[:2] != mask.shape:
        raise ValueError(f"image {rgb.shape[:2]} and mask {mask.shape} differ in size")
    # A blended channel depends only on (value, channel): tabulate the float32 blend for all 256
    # values, apply it with a look-up table and copy it in under the mask (per frame this is
    # several times faster than blending the masked pixels with fancy indexing; same result).
    levels = np.arange(256, dtype=np.float32)[:, None]
    table = (levels * (1.0 - alpha) + np.asarray(color, dtype=np.float32) * alpha).round().astype(np.uint8)
    rgb = np.ascontiguousarray(rgb, dtype=np.uint8)
    out = rgb.copy()
    return cv2.copyTo(cv2.LUT(rgb, table.reshape(256, 1, 3)), np.asarray(mask).astype(np.uint8), out)
