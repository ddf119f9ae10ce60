"""AnomalyMix: outlier objects cut from COCO images and pasted into inlier road scenes.

The reference implementation's recipe (``docs/training.md``): every epoch draws a fresh random subset of
outlier images, ``ratio`` (0.1) as many as there are inlier images, and appends them to the
inlier images. An appended sample is made by cutting the bounding box of the outlier image's
object mask (all objects together), and pasting its masked pixels at a uniformly random position
into a uniformly chosen inlier image; pasted pixels get the label ``ANOMALY_ID`` (254).
Plain and mixed samples are shuffled together, so batches hold both; ``is_ood`` says whether a
sample still shows anomalous pixels after augmentation (the reference's flag). The joint
augmentation (:mod:`pebal_core.data.transforms`) is applied after mixing.

Beyond the reference: the pasted object can be rescaled by a random factor from
``paste_scale`` (the reference keeps its COCO size: ``(1, 1)``), and an object larger than the
host image is shrunk to fit (the reference skips hosts that are not 1024x2048).

Road-obstacle outlier exposure (``paste``): ``paper`` pastes as above; ``road`` pastes 1-3
objects onto the road of the host, sized by the ground plane, with soft edges, matched
brightness and a contact shadow (:mod:`pebal_core.data.road_obstacles`; the first object is the
sample's outlier, the others are drawn from the whole outlier set); ``both`` makes each mixed
sample a road sample with probability ``road_fraction`` and a paper sample otherwise. A host with
too little road is replaced by another random inlier image (up to :data:`ROAD_HOST_TRIES`
draws); when none has road, the sample is pasted the paper's way. Mixed samples are named
``host+outlier`` either way; ``source`` says ``mixed`` (paper) or ``road``.

Determinism: item ``i`` of epoch ``e`` draws all its randomness from
``numpy.random.default_rng([seed, e, i])``, and the epoch's outlier subset from
``default_rng([seed, e])``, so a sample is identical whatever the loader workers or the order
of access (which makes resuming a run exact).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
from torch.utils.data import Dataset

from pebal_core.data.road_obstacles import ROAD_TRAIN_ID, RoadPaste, paste_obstacles
from pebal_core.labels import ANOMALY_ID

ROAD_HOST_TRIES = 8
"""Inlier images drawn for a road sample before falling back to the paper's paste."""

Transform = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]
MixMode = Literal["anomalymix", "whole", "none"]
PasteMode = Literal["paper", "road", "both"]


@dataclass(frozen=True)
class Placement:
    """Where an object was pasted: top-left corner ``(y, x)`` and size ``(h, w)`` in the host."""

    y: int
    x: int
    h: int
    w: int


def object_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Bounding box ``(y0, x0, y1, x1)`` (ends exclusive) of the True pixels, or None if there are none."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def paste_object(
    image: np.ndarray,
    label: np.ndarray,
    obj_image: np.ndarray,
    obj_mask: np.ndarray,
    rng: np.random.Generator,
    scale: tuple[float, float] = (1.0, 1.0),
) -> tuple[np.ndarray, np.ndarray, Placement | None]:
    """Paste the masked object of ``obj_image`` into a copy of ``(image, label)``.

    Args:
        image, label: the host, RGB uint8 ``H x W x 3`` and uint8 ``H x W``.
        obj_image, obj_mask: the outlier image and its boolean object mask (same size).
        rng: the source of the scale factor and the position.
        scale: range of the object's random rescaling factor.

    Returns:
        ``(image, label, placement)``: inside the placement, pixels under the (resized) mask
        are the object's pixels with label ``ANOMALY_ID``; every other pixel is the host's.
        ``placement`` is None (and the host is returned unchanged) when the mask is empty.
    """
    u_scale, u_y, u_x = rng.random(3)
    box = object_box(obj_mask)
    if box is None:
        return image, label, None
    y0, x0, y1, x1 = box
    patch = obj_image[y0:y1, x0:x1]
    patch_mask = obj_mask[y0:y1, x0:x1].astype(np.uint8)
    s = scale[0] + u_scale * (scale[1] - scale[0])
    h, w = y1 - y0, x1 - x0
    th, tw = max(1, round(h * s)), max(1, round(w * s))
    fit = min(1.0, image.shape[0] / th, image.shape[1] / tw)
    th, tw = max(1, int(th * fit)), max(1, int(tw * fit))
    if (th, tw) != (h, w):
        patch = cv2.resize(patch, (tw, th), interpolation=cv2.INTER_LINEAR)
        patch_mask = cv2.resize(patch_mask, (tw, th), interpolation=cv2.INTER_NEAREST)
    py = int(u_y * (image.shape[0] - th + 1))
    px = int(u_x * (image.shape[1] - tw + 1))
    out_image, out_label = image.copy(), label.copy()
    m = patch_mask.astype(bool)
    out_image[py : py + th, px : px + tw][m] = patch[m]
    out_label[py : py + th, px : px + tw][m] = ANOMALY_ID
    return out_image, out_label, Placement(py, px, th, tw)


def outlier_count(n_inliers: int, n_outliers: int, ratio: float) -> int:
    """Outlier samples per epoch: ``int(ratio * n_inliers)`` (at least 1 when ratio > 0), capped by availability."""
    if ratio <= 0 or n_outliers == 0:
        return 0
    return min(n_outliers, max(1, int(ratio * n_inliers)))


class AnomalyMix(Dataset):
    """Inlier samples followed by this epoch's outlier samples (see the module docstring).

    Args:
        inliers: a segmentation dataset (items with ``image``, ``label`` trainIds/255, ``name``).
        outliers: a dataset whose labels mark object pixels with ``ANOMALY_ID`` (e.g.
            :class:`~pebal_core.data.coco.CocoOutliers`), or None.
        mode: ``anomalymix`` pastes objects into inlier images; ``whole`` uses the outlier images
            themselves (objects 254, rest as labelled, void for COCO); ``none`` ignores outliers.
        ratio: outlier samples per inlier image and epoch.
        paste_scale: range of the random rescaling of a pasted object.
        transform: joint augmentation applied after mixing (e.g. :class:`JointTransform`).
        seed: base of every random draw.
        paste: ``paper``, ``road`` or ``both`` (see the module docstring).
        road: the road-paste settings (default :class:`~pebal_core.data.road_obstacles.RoadPaste`).
        road_fraction: with ``paste="both"``, the probability that a mixed sample is a road sample.

    Items: ``image``, ``label``, ``name`` (``host+outlier`` for mixed samples), ``is_ood``
    (bool: the final label has anomalous pixels) and ``source`` (``inlier``, ``mixed``, ``road``,
    ``outlier``).
    """

    def __init__(
        self,
        inliers: Dataset,
        outliers: Dataset | None = None,
        mode: MixMode = "anomalymix",
        ratio: float = 0.1,
        paste_scale: tuple[float, float] = (1.0, 1.0),
        transform: Transform | None = None,
        seed: int = 0,
        paste: PasteMode = "paper",
        road: RoadPaste | None = None,
        road_fraction: float = 0.5,
    ) -> None:
        if mode not in ("anomalymix", "whole", "none"):
            raise ValueError(f"mode must be anomalymix, whole or none, got {mode!r}")
        if paste not in ("paper", "road", "both"):
            raise ValueError(f"paste must be paper, road or both, got {paste!r}")
        if not 0 <= road_fraction <= 1:
            raise ValueError(f"road_fraction is a probability, got {road_fraction}")
        if len(inliers) == 0:
            raise ValueError("AnomalyMix needs at least one inlier image")
        self.inliers = inliers
        self.outliers = outliers if mode != "none" else None
        self.mode = mode
        self.ratio = ratio
        self.paste_scale = paste_scale
        self.transform = transform
        self.seed = seed
        self.paste = paste
        self.road = road if road is not None else RoadPaste()
        self.road_fraction = road_fraction
        n_out = len(self.outliers) if self.outliers is not None else 0
        self.n_outliers = outlier_count(len(inliers), n_out, ratio)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Select epoch ``epoch``'s outlier subset and random streams."""
        self.epoch = epoch
        if self.n_outliers:
            order = np.random.default_rng([self.seed, epoch]).permutation(len(self.outliers))
            self.subset = order[: self.n_outliers]
        else:
            self.subset = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.inliers) + self.n_outliers

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        rng = np.random.default_rng([self.seed, self.epoch, index])
        n_in = len(self.inliers)
        if index < n_in:
            item = self.inliers[index]
            image, label, name, source = item["image"], item["label"], item["name"], "inlier"
        else:
            obj = self.outliers[int(self.subset[index - n_in])]
            if self.mode == "whole":
                image, label, name, source = obj["image"], obj["label"], obj["name"], "outlier"
            else:
                road = self.paste == "road" or (self.paste == "both" and rng.random() < self.road_fraction)
                pasted = self._road_sample(obj, rng) if road else None
                if pasted is not None:
                    image, label, host_name = pasted
                    source = "road"
                else:
                    host = self.inliers[int(rng.integers(n_in))]
                    image, label, _ = paste_object(
                        host["image"], host["label"], obj["image"], obj["label"] == ANOMALY_ID, rng, self.paste_scale
                    )
                    host_name, source = host["name"], "mixed"
                name = f"{host_name}+{obj['name']}"
        if self.transform is not None:
            image, label = self.transform(image, label, rng)
        return {
            "image": image,
            "label": label,
            "name": name,
            "is_ood": bool((label == ANOMALY_ID).any()),
            "source": source,
        }

    def _road_sample(self, obj: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str] | None:
        """``(image, label, host name)`` with ``obj`` and further random outliers pasted onto the road of
        a random inlier image, or None when no drawn host takes an object."""
        n_in, settings = len(self.inliers), self.road
        n_objects = int(rng.integers(settings.objects[0], settings.objects[1] + 1))
        objects = [obj] + [self.outliers[int(rng.integers(len(self.outliers)))] for _ in range(n_objects - 1)]
        sources = [(o["image"], o["label"] == ANOMALY_ID) for o in objects]
        for _ in range(ROAD_HOST_TRIES):
            host = self.inliers[int(rng.integers(n_in))]
            if (host["label"] == ROAD_TRAIN_ID).sum() < settings.min_road_pixels:
                continue
            image, label, placed = paste_obstacles(host["image"], host["label"], sources, settings, rng)
            if placed:
                return image, label, host["name"]
        return None
