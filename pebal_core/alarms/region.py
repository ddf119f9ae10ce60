"""The region of interest for alarms: the drivable area the camera sees.

An anomaly matters to a car where it can drive into it. Obstacle benchmarks evaluate only there:
LostAndFound's protocol scores the annotated free space and the obstacles on it, and
SegmentMeIfYouCan's obstacle track scores the road. At run time there is no annotation, so the
region comes from the model's own semantic prediction (Cityscapes trainIds, ``uint8 H x W``):

1. the **drivable classes**: road (trainId 0), optionally sidewalk (trainId 1);
2. road fragments smaller than ``min_fraction`` of the image are dropped (speckles on walls);
3. each remaining connected fragment (8-connectivity) is closed along rows and columns: a pixel
   lies in the region when the same fragment has pixels both to its left and right in its row,
   or both above and below it in its column. An obstacle standing on the road hides road pixels
   and is predicted as something else; it is surrounded by road on at least two opposite sides
   (road left and right of it, or nearer and farther road below and above it), so it stays in.
   Enclosed holes (``binary_fill_holes``) are a special case of this.

Large frames are processed on the labels subsampled (every ``s``-th pixel) to at most
:data:`MAX_SIDE` pixels on the long side and scaled back (nearest): the region's border is then
exact to ``s`` pixels, which is all a region of interest needs (2-megapixel frames: 4x less
work per side, about 10 ms instead of 40 here).

Pixels of the ego-vehicle mask (:mod:`~pebal_core.alarms.ego_mask`) are never drivable: they are
taken out before the fragments are found (a bonnet predicted as road joins nothing) and after
the closing (road on both sides of the star does not bring the star in).

An obstacle seen above the end of the visible road (no road on two opposite sides in any of its
rows or columns) is cut off; so is the upper part of a tall object whose rows reach above the
horizon. Frames without a predicted road have an empty region and raise no alarms.

:data:`REGIONS` names the choices of the ``alarm_region`` option: ``drivable`` (this region) and
``all`` (every pixel; the per-pixel mask of the paper).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from pebal_core.component_metrics import EIGHT_CONNECTED

ROAD_TRAIN_ID = 0
SIDEWALK_TRAIN_ID = 1
REGIONS = ("drivable", "all")
"""Values of the ``alarm_region`` option."""
DEFAULT_MIN_FRACTION = 0.002
"""Road fragments smaller than this fraction of the image are not drivable area."""
MAX_SIDE = 512
"""Longest side (pixels) the region is computed at; larger label maps are subsampled."""


def _spans(fragment: np.ndarray, axis: int) -> np.ndarray:
    """Pixels between the first and last pixel of ``fragment`` along ``axis`` (bool, same shape)."""
    n = fragment.shape[axis]
    present = fragment.any(axis=axis, keepdims=True)
    first = np.argmax(fragment, axis=axis, keepdims=True)
    last = n - 1 - np.argmax(np.flip(fragment, axis=axis), axis=axis, keepdims=True)
    index = np.arange(n).reshape((-1, 1) if axis == 0 else (1, -1))
    return present & (index >= first) & (index <= last)


def drivable_region(
    labels: np.ndarray,
    include_sidewalk: bool = False,
    min_fraction: float = DEFAULT_MIN_FRACTION,
    ego: np.ndarray | None = None,
) -> np.ndarray:
    """The drivable area of one frame (bool ``H x W``) from predicted trainIds (module docstring).

    Args:
        labels: ``uint8 H x W`` Cityscapes trainIds (0 road, 1 sidewalk, ...; 255 void).
        include_sidewalk: count sidewalk as drivable too.
        min_fraction: drop road fragments smaller than this fraction of the image.
        ego: bool ``H x W`` ego-vehicle mask (never drivable); None = no mask.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be an H x W trainId map, got shape {labels.shape}")
    if ego is not None and ego.shape != labels.shape:
        raise ValueError(f"ego mask {ego.shape} and labels {labels.shape} must be equal H x W maps")
    step = -(-max(labels.shape) // MAX_SIDE)  # ceil
    if step > 1:
        small_ego = None if ego is None else ego[::step, ::step]
        small = drivable_region(labels[::step, ::step], include_sidewalk, min_fraction, small_ego)
        rows = np.minimum(np.arange(labels.shape[0]) // step, small.shape[0] - 1)
        cols = np.minimum(np.arange(labels.shape[1]) // step, small.shape[1] - 1)
        region = small[rows[:, None], cols[None, :]]
        return region if ego is None else region & ~ego
    classes = (ROAD_TRAIN_ID, SIDEWALK_TRAIN_ID) if include_sidewalk else (ROAD_TRAIN_ID,)
    base = np.isin(labels, classes)
    if ego is not None:
        base &= ~ego
    fragments, n = ndimage.label(base, structure=EIGHT_CONNECTED)
    region = np.zeros(base.shape, dtype=bool)
    if n == 0:
        return region
    sizes = np.bincount(fragments.ravel(), minlength=n + 1)
    min_pixels = min_fraction * base.size
    for index, box in enumerate(ndimage.find_objects(fragments), start=1):
        if sizes[index] < min_pixels:
            continue
        fragment = fragments[box] == index
        region[box] |= _spans(fragment, 0) | _spans(fragment, 1)
    return region if ego is None else region & ~ego


def alarm_region(
    labels: np.ndarray,
    mode: str = "drivable",
    include_sidewalk: bool = False,
    min_fraction: float = DEFAULT_MIN_FRACTION,
    ego: np.ndarray | None = None,
) -> np.ndarray | None:
    """The region of ``mode`` (:data:`REGIONS`) for one frame, ego pixels left out; None for ``all``
    (no restriction by the region: the ego mask then applies on its own)."""
    if mode == "all":
        return None
    if mode != "drivable":
        raise ValueError(f"alarm region must be one of {', '.join(REGIONS)}, got {mode!r}")
    return drivable_region(labels, include_sidewalk, min_fraction, ego)
