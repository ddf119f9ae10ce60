"""The ego-vehicle mask estimate written to disk: the mask PNG and a picture to check it by eye.

:func:`estimate_and_save` is what ``pebal mask estimate`` and ``pebal_bag mask`` run; the
estimate itself is :mod:`pebal_core.alarms.ego_estimate`, the picture
:func:`pebal_core.visualize.ego_mask_picture`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from pebal_core.alarms.ego_estimate import (
    PICTURE_FRAMES,
    EgoEstimate,
    EstimateSettings,
    estimate_ego_mask,
    spread_indices,
)
from pebal_core.alarms.ego_mask import write_ego_mask
from pebal_core.fileio import atomic_write
from pebal_core.visualize import ego_mask_picture


def save_estimate(
    estimate: EgoEstimate,
    out: str | os.PathLike,
    picture: str | os.PathLike,
    names: list[str] | None = None,
    width: int = 1024,
) -> None:
    """Write the mask of ``estimate`` (PNG, 255 = own vehicle) and a picture to check it by eye
    (:func:`~pebal_core.visualize.ego_mask_picture`: the median of the frames and the examples,
    captioned with ``names``, the mask hatched; each ``width`` pixels wide); both atomically."""
    if not estimate.mask.any():
        raise ValueError("the estimate found no ego-vehicle pixels; there is no mask to write")
    h, w = estimate.mask.shape
    median = estimate.statistics.median
    if median.shape[:2] != (h, w):
        median = cv2.resize(median, (w, h), interpolation=cv2.INTER_LINEAR)
    write_ego_mask(out, estimate.mask)
    picture = Path(picture)
    drawn = ego_mask_picture(median, estimate.mask, estimate.examples, names, width)
    ok, data = cv2.imencode(picture.suffix or ".jpg", cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"cannot encode the picture {picture} (use a .jpg or .png name)")
    with atomic_write(picture) as tmp:
        tmp.write_bytes(data.tobytes())


def estimate_and_save(
    frames: Iterable[np.ndarray],
    names: list[str],
    out: str | os.PathLike,
    picture: str | os.PathLike | None = None,
    settings: EstimateSettings = EstimateSettings(),
    force: bool = False,
    picture_width: int = 1024,
) -> str:
    """Estimate the mask of ``frames`` (their ``names`` for the report), write it to ``out`` (a
    ``.png``) and its picture (default ``<out>_picture.jpg``), return what was found as text.
    ``pebal mask estimate`` (frames from files) and ``pebal_bag mask`` (frames from a recording)
    both run this.

    Raises:
        FileExistsError: ``out`` exists and not ``force``.
        ValueError: ``out`` is no ``.png``, the frames are unfit (:func:`estimate_ego_mask`), or no
            ego-vehicle pixel was found (nothing is written then).
    """
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise ValueError(f"the mask must be written as a .png file (lossless), got {out}")
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists; pass --force to overwrite it or choose another output file")
    picture = Path(picture) if picture is not None else out.with_name(f"{out.stem}_picture.jpg")
    shown = spread_indices(len(names), PICTURE_FRAMES)
    estimate = estimate_ego_mask(frames, settings, keep=shown)
    h, w = estimate.mask.shape
    if not estimate.mask.any():
        raise ValueError(
            f"no ego-vehicle pixels found in {estimate.statistics.frames} frames of {w}x{h} (no persistent outline "
            "touches the image border): the camera sees no part of its car, or the frames are too few or come "
            "from several cameras; nothing written (leave the ego mask unset)"
        )
    save_estimate(estimate, out, picture, [names[i] for i in shown], picture_width)
    rows = np.flatnonzero(estimate.mask.any(axis=1))
    return "\n".join(
        (
            f"ego mask from {estimate.statistics.frames} frames of {w}x{h}: {100 * estimate.fraction:.2f} % of the "
            f"image, rows {rows.min()}-{rows.max()} -> {out}",
            f"picture (median of the frames; {', '.join(names[i] for i in shown)}) -> {picture}",
            f"use it: pebal_node -p alarms.ego_mask:={out}   |   pebal predict ... --ego-mask {out}",
        )
    )
