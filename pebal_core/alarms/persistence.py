"""A k-of-n temporal filter with hysteresis for alarm masks, in image space or on the ground grid.

A real obstacle stays put from frame to frame; most false alarms of a per-pixel detector flicker.
:class:`Persistence` keeps the binary alarm masks of the newest ``n`` frames it was given (image
pixels or grid cells, any 2-D shape) and lets a pixel alarm only when it has support:

* **support** ``c_t(p)``: in how many of the newest ``n`` masks (this one included) an alarm lies
  within ``radius`` pixels (cells) of ``p`` (each mask dilated by a ``(2 radius + 1)`` square);
* **state** ``on_t(p)``: turns on when ``c_t(p) >= k``; once on, stays on while
  ``c_t(p) >= k_off`` (``k_off <= k``; hysteresis: a confirmed obstacle survives a missed frame
  and needs less support to go on being shown, a new one needs ``k`` of ``n``);
* **output**: the alarms of the current mask where the state is on. What is shown is always
  this frame's pixels, never a stale copy, so nothing lingers after an obstacle is gone.

With the defaults ``k = 2, n = 3, k_off = 1`` a one-frame flicker never fires, an obstacle fires
on its second frame in a row (or two of three), and a confirmed obstacle is shown in every frame
that detects it.

**Moving camera.** The filter has no ego-motion: it compares masks at the same pixels (cells).
An obstacle that moves up to ``radius`` pixels (cells) per frame keeps its support; one that
moves faster (close to the car, fast driving, turning) loses it and is shown late. On the ground
grid (``base_footprint`` moves with the car) a static obstacle approaches by speed / frame rate
per frame: 0.2 m cells, 10 Hz and ``radius`` 3 cover 6 m/s.

**Dropped frames.** ``n`` counts frames the filter received, not camera frames: a dropped frame
makes the window reach further back in time and the motion between two masks larger. When the
gap between two stamps exceeds ``max_gap`` seconds (a stalled camera, a restarted bag) or the mask
shape changes, the history is cleared: the first frames after it need ``k`` frames again.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class PersistenceConfig:
    """Parameters of :class:`Persistence` (see the module docstring).

    Attributes:
        k: frames of support (of the newest ``n``) for an alarm to turn on.
        n: window length in received frames (1 with k 1 = no filtering).
        k_off: support below which a pixel that is on turns off (``1 <= k_off <= k``).
        radius: dilation radius in pixels (cells) when counting support (motion tolerance).
        max_gap: seconds between stamps after which the history is cleared (<= 0: never).
    """

    k: int = 2
    n: int = 3
    k_off: int = 1
    radius: int = 4
    max_gap: float = 0.5

    def __post_init__(self) -> None:
        if not 1 <= self.k <= self.n:
            raise ValueError(f"persistence needs 1 <= k <= n, got k={self.k}, n={self.n}")
        if not 1 <= self.k_off <= self.k:
            raise ValueError(f"persistence needs 1 <= k_off <= k, got k_off={self.k_off}, k={self.k}")
        if self.radius < 0:
            raise ValueError(f"persistence radius must be >= 0 pixels, got {self.radius}")
        if not math.isfinite(self.max_gap):
            raise ValueError(f"persistence max_gap must be a finite number of seconds, got {self.max_gap}")

    @property
    def active(self) -> bool:
        """False when the filter passes every mask unchanged (``k == n == 1``)."""
        return self.n > 1 or self.k > 1


class Persistence:
    """The filter's state for one stream of masks (one camera, or one ground grid)."""

    def __init__(self, config: PersistenceConfig | None = None) -> None:
        self.config = config or PersistenceConfig()
        r = self.config.radius
        self._kernel = np.ones((2 * r + 1, 2 * r + 1), np.uint8) if r > 0 else None
        self.reset()

    def reset(self) -> None:
        """Forget all frames (the next ``k - 1`` frames cannot fire)."""
        self._history: deque[np.ndarray] = deque(maxlen=self.config.n)
        self._support: np.ndarray | None = None
        self._on: np.ndarray | None = None
        self._stamp: float | None = None

    def _spread(self, mask: np.ndarray) -> np.ndarray:
        m = mask.astype(np.uint8)
        return cv2.dilate(m, self._kernel) if self._kernel is not None else m

    def update(self, mask: np.ndarray, stamp: float | None = None) -> np.ndarray:
        """The filtered alarms (bool, ``mask``'s shape) after adding ``mask`` taken at ``stamp`` (s)."""
        mask = np.asarray(mask, dtype=bool)
        if mask.ndim != 2:
            raise ValueError(f"persistence filters 2-D masks, got shape {mask.shape}")
        c = self.config
        gap = stamp is not None and self._stamp is not None and c.max_gap > 0 and abs(stamp - self._stamp) > c.max_gap
        if gap or (self._support is not None and self._support.shape != mask.shape):
            self.reset()
        if stamp is not None:
            self._stamp = stamp
        if not c.active:
            return mask
        spread = self._spread(mask)
        if self._support is None:
            self._support = np.zeros(mask.shape, np.int16)
            self._on = np.zeros(mask.shape, bool)
        if len(self._history) == c.n:
            self._support -= self._history[0]
        self._history.append(spread)
        self._support += spread
        self._on = np.where(self._on, self._support >= c.k_off, self._support >= c.k)
        return mask & self._on
