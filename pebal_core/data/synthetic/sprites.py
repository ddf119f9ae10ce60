"""Billboard sprites: small RGB + mask (+ label) images drawn in metric local coordinates.

A sprite stands on the ground at its anchor: local coordinates are metres with ``a`` to the
right of the anchor and ``b`` up from the ground. :class:`Painter` draws into a canvas at
``px_per_m`` pixels per metre with 2x supersampling and returns a :class:`Sprite` whose soft
``alpha`` comes from the supersampled coverage (edges are anti-aliased, like real photographs).
Everything a sprite looks like is fixed by its parameters, so drawing the same parameters at
another scale gives the same object, larger or smaller (the ego-motion sequences rely on this).
"""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np

from pebal_core.data.synthetic.textures import tile_noise

SUPERSAMPLE = 2
"""Supersampling factor of small sprites (large ones, above ``_SUPERSAMPLE_MAX_PX`` output pixels, use 1)."""
_SUPERSAMPLE_MAX_PX = 40_000
_SHIFT = 4  # sub-pixel bits for cv2 polygon drawing
_ONE = 1 << _SHIFT


@dataclasses.dataclass
class Sprite:
    """A rendered billboard.

    ``rgb`` float32 ``h x w x 3`` (premultiplied by nothing: the colour of covered pixels),
    ``alpha`` float32 ``h x w`` coverage in [0, 1], ``labels`` uint8 ``h x w`` Cityscapes labelIds
    of covered pixels (0 where uncovered; all 0 for anomalies), ``anchor`` the ``(col, row)`` pixel
    position (float) of the local origin, i.e. the ground contact point.
    """

    rgb: np.ndarray
    alpha: np.ndarray
    labels: np.ndarray
    anchor: tuple[float, float]

    @property
    def mask(self) -> np.ndarray:
        """Pixels that belong to the object (coverage of at least one half)."""
        return self.alpha >= 0.5


class Painter:
    """Draws polygons and ellipses given in metres into a supersampled sprite canvas.

    Args:
        extent: ``(a_min, a_max, b_min, b_max)`` of the drawing in metres (b up).
        px_per_m: output resolution in pixels per metre.
        clip: optional window in the same units outside which nothing is needed (the part of a
            large sprite that falls outside the image); the canvas covers only the intersection.
    """

    def __init__(
        self,
        extent: tuple[float, float, float, float],
        px_per_m: float,
        clip: tuple[float, float, float, float] | None = None,
    ) -> None:
        a0, a1, b0, b1 = extent
        if clip is not None:
            a0, a1 = max(a0, clip[0]), max(min(a1, clip[1]), max(a0, clip[0]) + 1e-3)
            b0, b1 = max(b0, clip[2]), max(min(b1, clip[3]), max(b0, clip[2]) + 1e-3)
        area = (a1 - a0) * (b1 - b0) * px_per_m**2
        self.ss = ss = SUPERSAMPLE if area < _SUPERSAMPLE_MAX_PX else 1
        self.s = px_per_m * ss
        self.a0, self.b1 = a0, b1
        self.w = max(2, int(np.ceil((a1 - a0) * self.s)) + 2 * ss)
        self.h = max(2, int(np.ceil((b1 - b0) * self.s)) + 2 * ss)
        self.w += (-self.w) % ss
        self.h += (-self.h) % ss
        self.rgb = np.zeros((self.h, self.w, 3), np.float32)
        self.cover = np.zeros((self.h, self.w), np.uint8)  # 0 = empty, else labelId + 1
        self.px_per_m = px_per_m

    @property
    def labels(self) -> np.ndarray:
        """LabelIds drawn so far (0 where nothing is drawn)."""
        return np.where(self.cover > 0, self.cover - 1, 0).astype(np.uint8)

    def to_px(self, pts: np.ndarray) -> np.ndarray:
        """Metric ``(n, 2)`` (a, b) points -> supersampled canvas pixel coordinates (float)."""
        pts = np.asarray(pts, np.float64).reshape(-1, 2)
        return np.stack([(pts[:, 0] - self.a0) * self.s + self.ss, (self.b1 - pts[:, 1]) * self.s + self.ss], 1)

    def _fixed(self, pts: np.ndarray) -> np.ndarray:
        return np.round(self.to_px(pts) * _ONE).astype(np.int32)

    def polygon(self, pts, colour, label: int = 0, erase: bool = False) -> None:
        """Fill a polygon (metric points); ``erase`` cuts it out of the sprite (holes).

        ``colour=None`` marks coverage and label only (for regions coloured afterwards).
        """
        fixed = self._fixed(pts)
        if erase:
            cv2.fillPoly(self.cover, [fixed], 0, cv2.LINE_8, _SHIFT)
            return
        if colour is not None:
            cv2.fillPoly(self.rgb, [fixed], tuple(float(c) for c in colour), cv2.LINE_8, _SHIFT)
        cv2.fillPoly(self.cover, [fixed], int(label) + 1, cv2.LINE_8, _SHIFT)

    def ellipse(self, centre, axes, colour, label: int = 0, angle_deg: float = 0.0, erase: bool = False) -> None:
        """Fill an ellipse with metric centre and semi-axes (a, b), rotated by ``angle_deg``."""
        n = int(np.clip((axes[0] + axes[1]) * self.s * 1.5, 8, 40))
        t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
        ca, sa = np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))
        x = axes[0] * np.cos(t)
        y = axes[1] * np.sin(t)
        pts = np.stack([centre[0] + ca * x - sa * y, centre[1] + sa * x + ca * y], 1)
        self.polygon(pts, colour, label, erase)

    def rect(self, a0: float, b0: float, a1: float, b1: float, colour, label: int = 0, erase: bool = False) -> None:
        """Fill an axis-aligned rectangle ``[a0, a1] x [b0, b1]`` (metres)."""
        self.polygon([(a0, b0), (a1, b0), (a1, b1), (a0, b1)], colour, label, erase)

    def segment(self, p0, p1, width: float, colour, label: int = 0) -> None:
        """A thick straight stroke of ``width`` metres from ``p0`` to ``p1``."""
        p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
        d = p1 - p0
        n = np.array([-d[1], d[0]]) / max(np.hypot(*d), 1e-9) * width / 2
        self.polygon([p0 + n, p1 + n, p1 - n, p0 - n], colour, label)

    def local_grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Metric (a, b) coordinates of every supersampled canvas pixel, float32 ``h x w`` each."""
        cols = (np.arange(self.w, dtype=np.float32) - self.ss) / self.s + self.a0
        rows = self.b1 - (np.arange(self.h, dtype=np.float32) - self.ss) / self.s
        return np.broadcast_to(cols[None, :], (self.h, self.w)), np.broadcast_to(rows[:, None], (self.h, self.w))

    def modulate(self, factor: np.ndarray, where: np.ndarray | None = None) -> None:
        """Multiply the canvas colour by ``factor`` (``h x w`` or ``h x w x 3``), optionally masked."""
        f = factor if factor.ndim == 3 else factor[..., None]
        if where is None:
            self.rgb *= f
        else:
            self.rgb[where] *= f[where]

    def finish(self) -> Sprite:
        """Downsample to the output resolution: colour averaged over covered samples, alpha = coverage."""
        ss = self.ss
        cover = (self.cover > 0).astype(np.float32)
        if ss == 1:
            return Sprite(
                np.clip(self.rgb, 0.0, 1.0),
                cover,
                self.labels,
                (-self.a0 * self.px_per_m + 1.0, self.b1 * self.px_per_m + 1.0),
            )
        w, h = self.w // ss, self.h // ss
        alpha = cv2.resize(cover, (w, h), interpolation=cv2.INTER_AREA)
        rgb = cv2.resize(self.rgb * cover[..., None], (w, h), interpolation=cv2.INTER_AREA)
        rgb = np.clip(rgb / np.maximum(alpha, 1e-6)[..., None], 0.0, 1.0)
        labels = self.labels[ss // 2 :: ss, ss // 2 :: ss][:h, :w].copy()
        labels[alpha < 0.5] = 0
        # supersampled pixel centre c maps to output coordinate (c - 0.5 * (ss - 1)) / ss
        off = 1.0 - 0.5 * (ss - 1) / ss
        anchor = ((-self.a0) * self.px_per_m + off, self.b1 * self.px_per_m + off)
        return Sprite(rgb.astype(np.float32), alpha, labels, anchor)


_TILES: dict[int, np.ndarray] = {}


def metric_noise(seed: int, a: np.ndarray, b: np.ndarray, cell_m: float) -> np.ndarray:
    """Smooth noise in [0, 1] as a function of metric coordinates (features ``cell_m`` apart).

    Unlike :func:`normalised_noise` the pattern does not depend on the canvas, so a clipped or
    rescaled drawing of the same object shows the same texture in the same place.
    """
    tile = _TILES.get(seed)
    if tile is None:
        tile = _TILES[seed] = tile_noise(np.random.default_rng(seed), 64, 8, 3)
        if len(_TILES) > 256:
            _TILES.pop(next(iter(_TILES)))
    k = 8.0 / cell_m
    fa, fb = a * k, b * k
    ia, ib = np.floor(fa), np.floor(fb)
    wa, wb = (fa - ia).astype(np.float32), (fb - ib).astype(np.float32)
    ia, ib = ia.astype(np.int64) % 64, ib.astype(np.int64) % 64
    ja, jb = (ia + 1) % 64, (ib + 1) % 64
    top = tile[ib, ia] * (1 - wa) + tile[ib, ja] * wa
    bot = tile[jb, ia] * (1 - wa) + tile[jb, ja] * wa
    return top * (1 - wb) + bot * wb  # bilinear


def normalised_noise(seed: int, shape: tuple[int, int], cells: int = 8) -> np.ndarray:
    """Noise in [0, 1] on a fixed ``cells``-sized grid resized to ``shape``: the same pattern at any scale."""
    rng = np.random.default_rng(seed)
    grid = rng.random((cells, cells), dtype=np.float32)
    fine = rng.random((cells * 4, cells * 4), dtype=np.float32)
    h, w = shape
    a = cv2.resize(grid, (max(w, 1), max(h, 1)), interpolation=cv2.INTER_CUBIC)
    b = cv2.resize(fine, (max(w, 1), max(h, 1)), interpolation=cv2.INTER_LINEAR)
    return np.clip(0.7 * a + 0.3 * b, 0.0, 1.0)
