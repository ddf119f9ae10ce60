"""Estimating the ego-vehicle mask of a camera from its frames (``pebal mask estimate``).

The own car stays where it is in the image while the scene changes from frame to frame. Given
frames of *different scenes* from one camera (a folder of images, or a recording sampled a few
seconds apart), the mask is the part of the image that

1. is cut off from the changing scene by **persistent edges**: edges that lie at the same place
   with the same orientation in every frame (the outline of the bonnet and of its star, a
   windscreen frame, the edge of a rectification border), and
2. is **connected to the image border** (a car part enters the picture from its edge).

A polished bonnet does not look the same in every frame (it mirrors the sky and the scene, and
exposure changes), so its pixel colours alone are no sign; its outline is. The steps, at a working
size of at most ``work_side`` pixels on the long side:

* **Statistics** (:func:`frame_statistics`): the per-pixel median image; ``change``, the median
  over frames of the mean absolute colour difference from it (8-bit units); and ``coherence``:
  per frame the gradient of the grey image (Gaussian sigma 1, Sobel), divided by the frame's
  median gradient magnitude, then ``|sum of gradients| / (sum of |gradients| + n)`` over the
  ``n`` frames (the ``+ n``, one typical gradient per frame, keeps an edge that one frame has and
  the others lack from counting as persistent), with the value of ``n`` random directions
  (``0.886 / sqrt(n)``) mapped to 0: near 1 = the same strong edge in every frame, 0 = nothing
  persistent.
* **Cut** (:func:`_min_cut`): a minimum s-t cut of the 4-connected pixel grid. The image border
  is tied to the *car* side (``border_capacity`` per border pixel), pixels whose ``change`` is
  above the frames' median to the *scene* side (``scene_capacity``); a link between neighbours
  costs ``edge_weight * (1 - coherence)**2 + 1``, so cutting along a persistent edge is cheap
  and anywhere else dear. Where no persistent outline separates a border strip from the scene,
  the cheapest cut is the border links themselves and the mask stays empty.
* **Finish**: the car side's components that touch the border; persistent structures
  (``coherence >= structure_coherence``) within ``attach_distance`` pixels of them (a star
  standing on the bonnet, whose ring shows the road through it and whose stem may show no
  persistent edge) joined; holes filled; parts thinner than ``2 * thin + 1``
  pixels removed (a morphological opening: spurs of lane markings and other scene edges that touch
  the outline); ``margin`` pixels added all round (the
  edge pixels mix car and scene: the gradient operator spreads an edge over about two pixels on
  each side); components below ``min_fraction`` of the image dropped; resized to the frames'
  size.

Limits: frames of one place (a parked car, a traffic jam) make the whole scene persistent; frames
from several cameras or a moving camera mount blur the outline away. :func:`estimate_ego_mask`
refuses too few frames (:data:`MIN_FRAMES`) and frames that hardly differ.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy import ndimage, sparse
from scipy.sparse.csgraph import breadth_first_order, maximum_flow

from pebal_core.component_metrics import EIGHT_CONNECTED

MIN_FRAMES = 8
"""Fewest frames an estimate is made from."""
DAMPING = 0.1
MIN_CHANGE = 2.0
"""Frames whose median per-pixel change (8-bit units) is below this are one scene, not several."""
PICTURE_FRAMES = 3
"""Frames shown in the picture beside the median image."""


@dataclass(frozen=True)
class EstimateSettings:
    """The estimator's parameters (module docstring; pixel sizes at the working size)."""

    work_side: int = 1024
    edge_weight: float = 100.0
    border_capacity: float = 10.0
    scene_capacity: float = 50.0
    structure_coherence: float = 0.4
    attach_distance: int = 6
    thin: int = 2
    margin: int = 2
    min_fraction: float = 0.0005


@dataclass
class FrameStatistics:
    """Per-pixel statistics of a set of frames at the working size (module docstring).

    Attributes:
        median: ``uint8 h x w x 3`` per-pixel median RGB image.
        change: ``float32 h x w`` median absolute colour difference from ``median`` (8-bit units).
        coherence: ``float32 h x w`` persistent-edge strength, 0..1.
        frames: number of frames.
        size: ``(H, W)`` of the frames themselves.
    """

    median: np.ndarray
    change: np.ndarray
    coherence: np.ndarray
    frames: int
    size: tuple[int, int]


@dataclass
class EgoEstimate:
    """:func:`estimate_ego_mask`'s result: ``mask`` (bool ``H x W`` at the frames' size, True = own
    vehicle; may be empty), the statistics it was made from and the ``examples`` frames (RGB, full
    size) kept for the picture."""

    mask: np.ndarray
    statistics: FrameStatistics
    examples: list[np.ndarray] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        return float(self.mask.mean())


def working_size(size: tuple[int, int], work_side: int) -> tuple[int, int]:
    """``(h, w)`` a frame of ``size`` ``(H, W)`` is analysed at: the long side at most ``work_side``."""
    h, w = size
    scale = min(1.0, work_side / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def frame_statistics(frames: Iterable[np.ndarray], work_side: int = EstimateSettings.work_side) -> FrameStatistics:
    """Median image, change and coherence of RGB ``uint8 H x W x 3`` frames of one size."""
    small, size = [], None
    sum_x = sum_y = sum_mag = None
    for frame in frames:
        frame = np.asarray(frame)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"frames must be RGB uint8 H x W x 3, got {frame.dtype} {frame.shape}")
        if size is None:
            size = frame.shape[:2]
        elif frame.shape[:2] != size:
            raise ValueError(
                f"frames of one camera share one size: got {frame.shape[1]}x{frame.shape[0]} after "
                f"{size[1]}x{size[0]}; estimate one mask per camera"
            )
        h, w = working_size(size, work_side)
        x = frame if (h, w) == size else cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
        small.append(x)
        grey = cv2.GaussianBlur(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).astype(np.float32), (0, 0), 1.0)
        gx = cv2.Sobel(grey, cv2.CV_32F, 1, 0)
        gy = cv2.Sobel(grey, cv2.CV_32F, 0, 1)
        mag = np.hypot(gx, gy)
        scale = float(np.median(mag)) + 1e-3
        if sum_x is None:
            sum_x, sum_y, sum_mag = np.zeros_like(gx), np.zeros_like(gy), np.zeros_like(mag)
        sum_x += gx / scale
        sum_y += gy / scale
        sum_mag += mag / scale
    if size is None:
        raise ValueError("no frames given")
    stack = np.stack(small)
    median = np.median(stack, axis=0)
    change = np.median(np.abs(stack.astype(np.float32) - median).mean(axis=-1), axis=0).astype(np.float32)
    n = len(small)
    raw = np.hypot(sum_x, sum_y) / (sum_mag + DAMPING * n)
    noise = min(0.886 / np.sqrt(n), 0.99)
    coherence = np.clip((raw - noise) / (1.0 - noise), 0.0, 1.0).astype(np.float32)
    return FrameStatistics(median.round().astype(np.uint8), change, coherence, n, tuple(size))


def _min_cut(source: np.ndarray, sink: np.ndarray, right: np.ndarray, down: np.ndarray) -> np.ndarray:
    """The source side (bool ``h x w``) of a minimum cut of the 4-connected grid.

    ``source`` / ``sink``: int64 ``h x w`` capacities of each pixel's link to the terminals;
    ``right`` (``h x w-1``) and ``down`` (``h-1 x w``): capacities between neighbours, both ways.
    """
    h, w = source.shape
    n = h * w
    s, t = n, n + 1
    index = np.arange(n).reshape(h, w)
    tails = [index[:, :-1], index[:, 1:], index[:-1, :], index[1:, :]]
    heads = [index[:, 1:], index[:, :-1], index[1:, :], index[:-1, :]]
    caps = [right, right, down, down]
    for cap, mask, tail_of, head_of in ((source, source > 0, s, None), (sink, sink > 0, None, t)):
        pixels = index[mask]
        tails.append(np.full(pixels.size, tail_of) if tail_of is not None else pixels)
        heads.append(pixels if head_of is None else np.full(pixels.size, head_of))
        caps.append(cap[mask])
    row = np.concatenate([a.ravel() for a in tails])
    col = np.concatenate([a.ravel() for a in heads])
    cap = np.concatenate([a.ravel() for a in caps]).astype(np.int32)
    graph = sparse.csr_matrix((cap, (row, col)), shape=(n + 2, n + 2))
    flow = maximum_flow(graph, s, t, method="dinic").flow
    residual = (graph - flow).tocsr()
    residual.data = (residual.data > 0).astype(np.int8)
    residual.eliminate_zeros()
    reached = breadth_first_order(residual, s, directed=True, return_predecessors=False)
    side = np.zeros(n + 2, bool)
    side[reached] = True
    return side[:n].reshape(h, w)


def _disc(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def _touching(mask: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """The 8-connected components of ``mask`` that contain a pixel of ``seeds``."""
    labelled, _ = ndimage.label(mask, structure=EIGHT_CONNECTED)
    keep = np.unique(labelled[seeds & mask])
    return np.isin(labelled, keep[keep > 0])


def mask_from_statistics(stats: FrameStatistics, settings: EstimateSettings = EstimateSettings()) -> np.ndarray:
    """The ego mask (bool, at the working size) of :func:`frame_statistics` (module docstring)."""
    coherence, change = stats.coherence, stats.change
    h, w = coherence.shape
    border = np.zeros((h, w), bool)
    border[0], border[-1], border[:, 0], border[:, -1] = True, True, True, True
    right = np.maximum(coherence[:, :-1], coherence[:, 1:])
    down = np.maximum(coherence[:-1, :], coherence[1:, :])
    right = np.round(settings.edge_weight * (1.0 - right) ** 2).astype(np.int64) + 1
    down = np.round(settings.edge_weight * (1.0 - down) ** 2).astype(np.int64) + 1
    source = np.where(border, round(settings.border_capacity), 0).astype(np.int64)
    sink = np.where(change > np.median(change), round(settings.scene_capacity), 0).astype(np.int64)
    car = _touching(_min_cut(source, sink, right, down), border)
    if not car.any():
        return car
    structure = coherence >= settings.structure_coherence
    near = cv2.dilate(car.astype(np.uint8), _disc(settings.attach_distance)) > 0
    car |= _touching(structure, near)
    car = ndimage.binary_fill_holes(car).astype(np.uint8)
    if settings.thin > 0:
        car = cv2.morphologyEx(car, cv2.MORPH_OPEN, _disc(settings.thin))
    if settings.margin > 0:
        car = cv2.dilate(car, _disc(settings.margin))
    car = car > 0
    labelled, n = ndimage.label(car, structure=EIGHT_CONNECTED)
    sizes = np.bincount(labelled.ravel(), minlength=n + 1)
    small = np.flatnonzero(sizes < settings.min_fraction * car.size)
    car[np.isin(labelled, small[small > 0])] = False
    return car


def estimate_ego_mask(
    frames: Iterable[np.ndarray], settings: EstimateSettings = EstimateSettings(), keep: Iterable[int] = ()
) -> EgoEstimate:
    """The ego mask of a camera from RGB ``uint8 H x W x 3`` frames of different scenes (module docstring).

    ``frames`` may be a generator: only the working-size copies and the frames at the indices
    ``keep`` (returned as ``examples``, for the picture) are held in memory.

    Raises:
        ValueError: fewer than :data:`MIN_FRAMES` frames, frames of different sizes, or frames that
            hardly differ (one scene).
    """
    keep, examples = set(keep), []

    def kept(stream: Iterable[np.ndarray]) -> Iterable[np.ndarray]:
        for i, frame in enumerate(stream):
            if i in keep:
                examples.append(np.asarray(frame))
            yield frame

    stats = frame_statistics(kept(frames), settings.work_side)
    if stats.frames < MIN_FRAMES:
        raise ValueError(
            f"estimating an ego mask needs at least {MIN_FRAMES} frames of different scenes, got {stats.frames}"
        )
    typical = float(np.median(stats.change))
    if typical < MIN_CHANGE:
        raise ValueError(
            f"the {stats.frames} frames hardly differ (median change {typical:.1f} of 255): they show one scene, "
            "so everything looks persistent; give frames of different places (e.g. one every few seconds of driving)"
        )
    small = mask_from_statistics(stats, settings)
    height, width = stats.size
    if small.shape != (height, width):
        small = cv2.resize(small.astype(np.float32), (width, height), interpolation=cv2.INTER_LINEAR) >= 0.5
    return EgoEstimate(small, stats, examples)


def mask_from_labels(labels: Iterable[np.ndarray], void: int = 255, side_margin: int = 0) -> np.ndarray:
    """The ego mask that label maps of one camera mark: the pixels labelled ``void`` in **every**
    map that are 8-connected, through such pixels, to the bottom image row (bool ``H x W``).

    Datasets label the recording car void (Cityscapes, Fishyscapes, LostAndFound); pixels void in
    every frame and reaching the bottom edge are the bonnet (and whatever border strips join it).
    ``side_margin`` leaves out that many columns at the left and right edges first, so that
    slanted rectification wedges there neither count nor join other void pixels to the bonnet.
    """
    always = None
    for lab in labels:
        lab = np.asarray(lab)
        if always is not None and lab.shape != always.shape:
            raise ValueError(f"label maps of one camera share one size: got {lab.shape} after {always.shape}")
        always = lab == void if always is None else always & (lab == void)
    if always is None:
        raise ValueError("no label maps given")
    return bottom_connected(always, side_margin)


def bottom_connected(mask: np.ndarray, side_margin: int = 0) -> np.ndarray:
    """The 8-connected components of ``mask`` (bool ``H x W``) that reach the bottom row, after
    leaving out ``side_margin`` columns at the left and right edges: the bonnet part of a mask."""
    mask = np.array(mask, dtype=bool)
    if side_margin > 0:
        mask[:, :side_margin] = False
        mask[:, -side_margin:] = False
    bottom = np.zeros_like(mask)
    bottom[-1] = True
    return _touching(mask, bottom)


def spread_indices(total: int, count: int) -> list[int]:
    """At most ``count`` indices of ``range(total)``, evenly spread (first and last included)."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if total <= count:
        return list(range(total))
    if count == 1:
        return [0]
    return sorted({round(i * (total - 1) / (count - 1)) for i in range(count)})
