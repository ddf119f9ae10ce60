"""Noise fields, colour sampling and surface patterns for the synthetic world (numpy + OpenCV).

Colours are float32 RGB in ``[0, 1]`` while rendering; images are converted to ``uint8`` only when
written. Every function draws its randomness from the ``numpy.random.Generator`` it is given, so a
seed fixes the output.
"""

from __future__ import annotations

import colorsys
import dataclasses

import cv2
import numpy as np


def _octave_sum(shape: tuple[int, int], octaves: int, cells, layer) -> np.ndarray:
    """Sum of ``octaves`` noise layers, each twice as fine and half as strong, stretched to ``[0, 1]``.

    ``layer(c)`` returns one float32 ``shape`` layer with ``c`` features across the shorter side
    (``c`` doubles each octave, starting at ``cells``).
    """
    out = np.zeros(shape, np.float32)
    total = 0.0
    amp = 1.0
    c = cells
    for _ in range(octaves):
        out += amp * layer(c)
        total += amp
        amp *= 0.5
        c *= 2
    out /= total
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / max(hi - lo, 1e-6)


def value_noise(rng: np.random.Generator, shape: tuple[int, int], cells: float, octaves: int = 3) -> np.ndarray:
    """Smooth noise in ``[0, 1]``, float32 ``shape``; ``cells`` = features across the shorter side.

    Sum of bicubically upsampled random grids, each octave twice as fine and half as strong.
    """
    h, w = shape

    def layer(c: float) -> np.ndarray:
        gh = max(2, int(round(c * h / min(h, w))) + 2)
        gw = max(2, int(round(c * w / min(h, w))) + 2)
        grid = rng.random((gh, gw), dtype=np.float32)
        return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)

    return _octave_sum((h, w), octaves, max(cells, 1.0), layer)


def tile_noise(rng: np.random.Generator, size: int, cells: int, octaves: int = 3) -> np.ndarray:
    """Seamlessly tileable noise in ``[0, 1]`` (``size x size`` float32), for world-space textures."""

    def layer(c: int) -> np.ndarray:
        grid = rng.random((c, c), dtype=np.float32)
        # wrap-pad then crop so the upsampled field tiles without a seam
        padded = np.pad(grid, 2, mode="wrap")
        big = cv2.resize(padded, ((c + 4) * size // c, (c + 4) * size // c), interpolation=cv2.INTER_CUBIC)
        off = 2 * size // c
        return big[off : off + size, off : off + size]

    return _octave_sum((size, size), octaves, max(int(cells), 1), layer)


def hsv_colour(
    rng: np.random.Generator, h: tuple[float, float], s: tuple[float, float], v: tuple[float, float]
) -> tuple[float, float, float]:
    """RGB in ``[0, 1]`` of a colour drawn uniformly from an HSV box (hue ``h`` in degrees, ``s``, ``v`` in [0, 1])."""
    return colorsys.hsv_to_rgb(rng.uniform(*h) / 360.0, rng.uniform(*s), rng.uniform(*v))


def palette_colour(rng: np.random.Generator, palette, jit: float, dtype=np.float64) -> np.ndarray:
    """A random entry of ``palette`` (RGB triples in [0, 1]) plus uniform jitter in ``[-jit, jit]`` per channel,
    clipped to ``[0, 1]``: shape ``(3,)``, the sum computed in ``dtype`` (float32 for colours the renderer
    uses directly, float64 for colours rounded into an object's JSON parameters)."""
    c = np.asarray(palette[int(rng.integers(len(palette)))], np.float32)
    return np.clip(c + rng.uniform(-jit, jit, 3).astype(dtype), 0, 1)


@dataclasses.dataclass(frozen=True)
class ColourFamily:
    """A box in HSV space: hue in degrees (``h_lo > h_hi`` wraps through 0/360), S and V in [0, 1]."""

    name: str
    h_lo: float
    h_hi: float
    s_lo: float
    s_hi: float
    v_lo: float
    v_hi: float

    def hue_intervals(self) -> list[tuple[float, float]]:
        """The hue range as one or two non-wrapping ``[lo, hi]`` intervals in degrees."""
        if self.h_lo <= self.h_hi:
            return [(self.h_lo, self.h_hi)]
        return [(self.h_lo, 360.0), (0.0, self.h_hi)]

    def contains(self, rgb: np.ndarray | tuple[float, float, float], tol: float = 1e-4) -> bool:
        """Whether an RGB colour in ``[0, 1]`` lies inside this family's HSV box."""
        h, s, v = colorsys.rgb_to_hsv(*(float(c) for c in rgb))
        hue = h * 360.0
        in_h = any(lo - tol <= hue <= hi + tol for lo, hi in self.hue_intervals())
        return in_h and self.s_lo - tol <= s <= self.s_hi + tol and self.v_lo - tol <= v <= self.v_hi + tol

    def disjoint(self, other: ColourFamily) -> bool:
        """True when the two HSV boxes share no colour (separated in hue, saturation or value)."""
        sep_s = self.s_hi < other.s_lo or other.s_hi < self.s_lo
        sep_v = self.v_hi < other.v_lo or other.v_hi < self.v_lo
        sep_h = not any(
            a_lo <= b_hi and b_lo <= a_hi for a_lo, a_hi in self.hue_intervals() for b_lo, b_hi in other.hue_intervals()
        )
        return sep_s or sep_v or sep_h

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """One RGB colour (float32 ``(3,)`` in [0, 1]) drawn uniformly from the HSV box."""
        span = self.h_hi - self.h_lo if self.h_lo <= self.h_hi else 360.0 - self.h_lo + self.h_hi
        hue = ((self.h_lo + rng.random() * span) % 360.0) / 360.0
        s = self.s_lo + rng.random() * (self.s_hi - self.s_lo)
        v = self.v_lo + rng.random() * (self.v_hi - self.v_lo)
        return np.array(colorsys.hsv_to_rgb(hue, s, v), np.float32)
