"""Road-obstacle outlier exposure: objects pasted onto the road of inlier frames, sized by the ground plane.

AnomalyMix (:mod:`pebal_core.data.anomalymix`, the paper's recipe) pastes an object anywhere in
the frame at its COCO size. The obstacles a car has to see lie **on the road**, and most of them
are small and far away. This module pastes objects where and how such obstacles appear; the same
code serves real frames (CamVid, Cityscapes) and the synthetic world (whose camera is known).

Where
    The object's contact point (the centre of its bottom edge) is a road pixel of the host: label
    trainId 0, from ground truth or, for unlabelled frames, from the base network's own prediction
    written as a label. The contact row is drawn uniformly among the road rows at which the object
    would be at least ``min_pixels`` tall, so far (small) objects are as frequent as near ones;
    the column uniformly among that row's road pixels; at least half of the object's bottom edge
    must lie on road (else another draw).
Size
    A flat ground seen by a level pinhole camera at height ``h`` (m) above it: the ground point at
    distance ``Z`` is imaged at row ``v = v_h + f h / Z`` (``v_h`` the horizon row, ``f`` the
    focal length in pixels), and an upright object of height ``H`` standing there spans
    ``f H / Z`` rows, so its height in pixels is ``H (v - v_h) / h`` whatever the focal length
    (:meth:`GroundPlane.size_px`). The object's height in metres is drawn log-uniformly from
    ``height_m``; its width follows its own aspect ratio (clipped to 1:4 .. 4:1). The horizon and the camera height come
    from the camera (:meth:`GroundPlane.from_camera`, the synthetic world) or from the frame's own
    road extent (:meth:`GroundPlane.from_road`: the topmost road row as horizon, ``camera_height``
    as configured). The topmost road row lies at or below the true horizon, so on a road that ends
    before the horizon the objects come out smaller, never larger.
How
    Brightness matched to the surroundings (the object's mean luminance scaled to the host's
    around the contact point, times a random contrast factor), a contact shadow (a blurred
    ellipse under the object, darkening the road by ``shadow`` of its brightness), soft edges
    (the mask feathered by a Gaussian of ``feather_px`` pixels; alpha compositing). Label:
    ``ANOMALY_ID`` where the alpha is at least 0.5, the host's label elsewhere (the shadow is road).
Objects
    A COCO object (its mask, panoptic or instance) or, with probability ``texture``, a textured
    crop: a random window of the object's image, cut to a random convex polygon, kept only if its
    luminance varies (standard deviation at least :data:`MIN_TEXTURE_STD`).

Every random draw comes from the ``numpy.random.Generator`` the caller passes, so a sample is a
function of its seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from pebal_core.labels import ANOMALY_ID

ROAD_TRAIN_ID = 0
"""Cityscapes trainId of road: where obstacles are pasted."""
MIN_TEXTURE_STD = 8.0
"""Smallest luminance standard deviation (0..255 scale) of a textured-crop object."""
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
"""ITU-R BT.601 luma weights of R, G, B."""


@dataclass(frozen=True)
class GroundPlane:
    """A flat road seen by a level camera: the horizon row (px) and the camera height (m)."""

    horizon_row: float
    camera_height: float

    def __post_init__(self) -> None:
        if not (self.camera_height > 0 and math.isfinite(self.camera_height)):
            raise ValueError(f"camera_height must be a positive number of metres, got {self.camera_height}")

    def size_px(self, size_m: float | np.ndarray, row: float | np.ndarray) -> float | np.ndarray:
        """Image size (px) of ``size_m`` metres standing on the ground at image row ``row``:
        ``size_m (row - horizon) / height`` (0 at or above the horizon)."""
        return size_m * np.maximum(np.asarray(row, dtype=np.float64) - self.horizon_row, 0.0) / self.camera_height

    @classmethod
    def from_camera(cls, camera) -> GroundPlane:
        """From a camera with ``horizon_row()`` and height ``z`` above the ground (the synthetic
        world's :class:`~pebal_core.data.synthetic.camera.Camera`)."""
        return cls(float(camera.horizon_row()), float(camera.z))

    @classmethod
    def from_road(cls, road: np.ndarray, camera_height: float, min_pixels: int = 3) -> GroundPlane | None:
        """From the frame's own road extent: the topmost row with at least ``min_pixels`` road
        pixels as the horizon (bool ``H x W`` ``road``); None when no row has that many."""
        rows = np.flatnonzero(road.sum(axis=1) >= min_pixels)
        if rows.size == 0:
            return None
        return cls(float(rows[0]), camera_height)


@dataclass(frozen=True)
class RoadPaste:
    """How objects are pasted onto the road (see the module docstring). Lengths in metres, sizes in pixels
    of the host frame as pasted (before any training augmentation).

    Attributes:
        height_m: range of the object's real height, drawn log-uniformly.
        camera_height: camera height above the road for :meth:`GroundPlane.from_road`.
        objects: range of the number of objects per frame (inclusive).
        min_pixels: smallest object height; far rows where it would be smaller are not used.
        max_fraction: largest object height as a fraction of the frame height.
        min_road_pixels: a host needs at least this many road pixels.
        texture: probability that an object is a textured crop instead of a COCO object.
        feather_px: range of the Gaussian sigma of the soft edge.
        contrast: range of the object's luminance relative to its surroundings (log-uniform).
        shadow: range of the darkening at the centre of the contact shadow (0 = none).
    """

    height_m: tuple[float, float] = (0.15, 1.0)
    camera_height: float = 1.2
    objects: tuple[int, int] = (1, 3)
    min_pixels: int = 10
    max_fraction: float = 0.4
    min_road_pixels: int = 200
    texture: float = 0.2
    feather_px: tuple[float, float] = (0.4, 1.0)
    contrast: tuple[float, float] = (0.5, 1.6)
    shadow: tuple[float, float] = (0.2, 0.6)

    def __post_init__(self) -> None:
        if not 0 < self.height_m[0] <= self.height_m[1]:
            raise ValueError(f"height_m must be a range 0 < min <= max, got {list(self.height_m)}")
        if not 1 <= self.objects[0] <= self.objects[1]:
            raise ValueError(f"objects must be a range 1 <= min <= max, got {list(self.objects)}")
        if self.camera_height <= 0 or self.min_pixels < 1 or not 0 < self.max_fraction <= 1:
            raise ValueError("camera_height must be > 0, min_pixels >= 1 and max_fraction in (0, 1]")
        if not 0 <= self.texture <= 1:
            raise ValueError(f"texture is a probability, got {self.texture}")
        if not 0 < self.contrast[0] <= self.contrast[1] or not 0 <= self.shadow[0] <= self.shadow[1] < 1:
            raise ValueError("contrast must be a range 0 < min <= max, shadow a range 0 <= min <= max < 1")


@dataclass(frozen=True)
class Obstacle:
    """One pasted object: its contact point ``(row, col)``, size ``(h, w)`` in pixels, and its
    real height ``height_m`` (metres)."""

    row: int
    col: int
    h: int
    w: int
    height_m: float


def luminance(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma of ``... x 3`` RGB values, float32 on the input's scale."""
    return rgb.astype(np.float32) @ LUMA


def object_patch(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The bounding box of ``mask`` cut from ``image``: ``(patch H x W x 3, bool mask H x W)``; None if empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return image[y0:y1, x0:x1], mask[y0:y1, x0:x1]


def random_polygon_mask(h: int, w: int, rng: np.random.Generator, vertices: tuple[int, int] = (5, 9)) -> np.ndarray:
    """A random convex polygon filling most of an ``h x w`` box: the convex hull of ``vertices``
    points spread around the inscribed ellipse (angles and radii jittered); bool ``h x w``."""
    n = int(rng.integers(vertices[0], vertices[1] + 1))
    angles = (np.arange(n) + rng.uniform(-0.35, 0.35, n)) * (2 * np.pi / n) + rng.uniform(0, 2 * np.pi)
    radius = rng.uniform(0.7, 1.0, n)
    pts = np.stack([(w - 1) / 2 * (1 + radius * np.cos(angles)), (h - 1) / 2 * (1 + radius * np.sin(angles))], 1)
    mask = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(pts).astype(np.int32)), 1)
    return mask.astype(bool)


def texture_patch(image: np.ndarray, rng: np.random.Generator, tries: int = 5) -> tuple[np.ndarray, np.ndarray] | None:
    """A textured crop of ``image``: a random window (sides 10-40 % of the shorter image side),
    cut to :func:`random_polygon_mask`; None when no window of ``tries`` is textured enough."""
    ih, iw = image.shape[:2]
    for _ in range(tries):
        side = rng.uniform(0.1, 0.4) * min(ih, iw)
        aspect = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
        h = int(np.clip(round(side / math.sqrt(aspect)), 4, ih))
        w = int(np.clip(round(side * math.sqrt(aspect)), 4, iw))
        y, x = int(rng.integers(0, ih - h + 1)), int(rng.integers(0, iw - w + 1))
        patch = image[y : y + h, x : x + w]
        mask = random_polygon_mask(h, w, rng)
        if luminance(patch[mask]).std() >= MIN_TEXTURE_STD:
            return patch, mask
    return None


def place_on_road(
    road: np.ndarray, ground: GroundPlane, aspect: float, settings: RoadPaste, rng: np.random.Generator, tries: int = 10
) -> Obstacle | None:
    """Draw an object's height and contact point on the road (see the module docstring).

    Args:
        road: bool ``H x W``, the host's road pixels.
        ground: the host's ground plane.
        aspect: the object's width / height.

    Returns:
        The placement, or None when no draw of ``tries`` fits (too little road, or the object
        would be too small everywhere).
    """
    height, width = road.shape
    counts = road.sum(axis=1)
    rows = np.arange(height)
    lo, hi = np.log(settings.height_m[0]), np.log(settings.height_m[1])
    for _ in range(tries):
        size_m = float(np.exp(rng.uniform(lo, hi)))
        h_px = ground.size_px(size_m, rows)
        ok = (counts > 0) & (h_px >= settings.min_pixels) & (h_px <= settings.max_fraction * height)
        ok &= rows + 1 - np.round(h_px) >= 0  # the whole object inside the frame vertically
        candidates = np.flatnonzero(ok)
        if candidates.size == 0:
            continue
        row = int(candidates[rng.integers(candidates.size)])
        cols = np.flatnonzero(road[row])
        col = int(cols[rng.integers(cols.size)])
        h = max(1, int(round(h_px[row])))
        w = max(1, int(round(h * aspect)))
        x0, x1 = max(0, col - w // 2), min(width, col - w // 2 + w)
        if x1 <= x0 or road[row, x0:x1].mean() < 0.5:
            continue
        return Obstacle(row, col, h, w, size_m)
    return None


def _feathered_alpha(mask: np.ndarray, sigma: float) -> tuple[np.ndarray, int]:
    """``mask`` (bool ``h x w``, not empty) blurred by a Gaussian of ``sigma`` px and scaled to a
    maximum of 1, padded by the blur's reach: ``(alpha float32 (h + 2p) x (w + 2p), p)``."""
    p = int(math.ceil(3 * sigma))
    padded = np.pad(mask.astype(np.float32), p)
    if sigma > 0:
        padded = cv2.GaussianBlur(padded, (2 * p + 1, 2 * p + 1), sigma, borderType=cv2.BORDER_CONSTANT)
        padded /= padded.max()  # a mask a few pixels wide keeps an opaque core
    return padded, p


def _contact_shadow(shape: tuple[int, int], obstacle: Obstacle) -> np.ndarray:
    """Shadow weight in ``[0, 1]`` (float32 ``H x W``): an ellipse under the object's bottom edge,
    half-axes 0.6 of its width and 0.15 of its height (at least 1.5 px), blurred."""
    weight = np.zeros(shape, np.float32)
    axes = (max(1, round(0.6 * obstacle.w)), max(1, round(max(1.5, 0.15 * obstacle.h))))
    cv2.ellipse(weight, (obstacle.col, obstacle.row), axes, 0, 0, 360, 1.0, -1)
    k = 2 * max(1, axes[1] // 2) + 1
    return cv2.GaussianBlur(weight, (k, k), 0)


def paste_on_road(
    image: np.ndarray,
    label: np.ndarray,
    patch: np.ndarray,
    patch_mask: np.ndarray,
    obstacle: Obstacle,
    settings: RoadPaste,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Composite one object into copies of ``(image, label)`` at ``obstacle`` (see the module docstring).

    Args:
        image, label: the host, RGB uint8 ``H x W x 3`` and trainIds uint8 ``H x W``.
        patch, patch_mask: the object's pixels and bool mask (same ``h x w``, any size: resized
            to ``obstacle.h x obstacle.w``).

    Returns:
        ``(image, label)``: label ``ANOMALY_ID`` exactly where the object's alpha is >= 0.5; the
        host's label everywhere else; image pixels change only under the alpha and the shadow.
        None (nothing pasted) when no pixel of the object with alpha >= 0.5 lies inside the host.
    """
    h, w = obstacle.h, obstacle.w
    shrink = h < patch.shape[0]
    obj = cv2.resize(patch, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR).astype(np.float32)
    coverage = cv2.resize(
        patch_mask.astype(np.float32), (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
    )
    m = coverage >= min(0.5, float(coverage.max()))  # a thin mask shrunk below half a pixel keeps its densest pixels
    sigma = float(rng.uniform(*settings.feather_px))
    contrast = float(np.exp(rng.uniform(np.log(settings.contrast[0]), np.log(settings.contrast[1]))))
    darkening = float(rng.uniform(*settings.shadow))
    alpha, p = _feathered_alpha(m, sigma)
    obj = np.pad(obj, ((p, p), (p, p), (0, 0)), mode="edge")

    out = image.astype(np.float32)
    top, left = obstacle.row - h + 1 - p, obstacle.col - w // 2 - p  # patch origin in the host
    H, W = label.shape
    y0, x0, y1, x1 = max(0, top), max(0, left), min(H, top + alpha.shape[0]), min(W, left + alpha.shape[1])
    a = alpha[y0 - top : y1 - top, x0 - left : x1 - left, None]
    if not (a >= 0.5).any():
        return None
    o = obj[y0 - top : y1 - top, x0 - left : x1 - left]
    ring = image[max(0, obstacle.row - 2 * h) : min(H, obstacle.row + h), max(0, x0 - w) : min(W, x1 + w)]
    gain = float(np.clip(contrast * luminance(ring).mean() / max(luminance(obj[alpha >= 0.5]).mean(), 1.0), 0.2, 5))
    if darkening > 0:
        out *= 1 - darkening * _contact_shadow((H, W), obstacle)[..., None]
    out[y0:y1, x0:x1] = a * np.clip(o * gain, 0, 255) + (1 - a) * out[y0:y1, x0:x1]
    out_label = label.copy()
    out_label[y0:y1, x0:x1][a[..., 0] >= 0.5] = ANOMALY_ID
    return np.clip(np.round(out), 0, 255).astype(np.uint8), out_label


def paste_obstacles(
    image: np.ndarray,
    label: np.ndarray,
    objects: list[tuple[np.ndarray, np.ndarray]],
    settings: RoadPaste,
    rng: np.random.Generator,
    ground: GroundPlane | None = None,
) -> tuple[np.ndarray, np.ndarray, list[Obstacle]]:
    """Paste each ``(image, bool mask)`` of ``objects`` onto the road of ``(image, label)``.

    Each entry is an outlier image with its object mask (the object is cut from it), or, with
    probability ``settings.texture``, the source of a :func:`texture_patch`. ``ground``: the
    host's ground plane (default: :meth:`GroundPlane.from_road` of its label). Objects that find
    no place are skipped; the returned list says which were pasted (possibly none: then the
    host is returned unchanged).
    """
    road = label == ROAD_TRAIN_ID
    if road.sum() < settings.min_road_pixels:
        return image, label, []
    ground = ground if ground is not None else GroundPlane.from_road(road, settings.camera_height)
    if ground is None:
        return image, label, []
    placed: list[Obstacle] = []
    for obj_image, obj_mask in objects:
        cut = texture_patch(obj_image, rng) if rng.random() < settings.texture else object_patch(obj_image, obj_mask)
        if cut is None:
            continue
        patch, mask = cut
        aspect = float(np.clip(mask.shape[1] / mask.shape[0], 0.25, 4.0))
        where = place_on_road(road, ground, aspect, settings, rng)
        if where is None:
            continue
        pasted = paste_on_road(image, label, patch, mask, where, settings, rng)
        if pasted is None:
            continue
        image, label = pasted
        road = label == ROAD_TRAIN_ID
        placed.append(where)
    return image, label, placed
