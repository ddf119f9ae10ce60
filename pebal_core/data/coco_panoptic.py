"""COCO objects with pixel-exact masks from the COCO 2018 panoptic format, for outlier exposure.

::

    <root>/<split>/<image_id:012d>.jpg
    <root>/annotations/panoptic_<split>.json
    <root>/annotations/panoptic_<split>/<image_id:012d>.png    (RGB; segment id = R + 256 G + 65536 B)

Each ``annotations`` entry of the JSON names its PNG (``file_name``) and lists its segments
(``segments_info``: ``id``, ``category_id``, ``iscrowd``, ``bbox`` [x, y, w, h], ``area``); the
``categories`` entries say whether a category is a countable object (``isthing``). One item per
usable segment: a thing (``isthing`` 1), not a crowd region, whose category is not a Cityscapes
class (``exclude``, by category name; e.g. person, car, bicycle, as PEBAL removes the COCO
categories that exist in Cityscapes), and whose bounding box is at least ``min_size`` pixels on
both sides. Stuff segments (road, sky, walls, ...) are never outliers.

Items follow :mod:`pebal_core.data.base` and :class:`~pebal_core.data.coco.CocoOutliers`:
``image`` RGB uint8 (the whole COCO image), ``label`` uint8 with ``ANOMALY_ID`` (254) on the
segment's pixels and ``VOID_ID`` (255) elsewhere, ``name`` ``coco/<stem>/<segment id>``, and
``category`` (the COCO category name). AnomalyMix pastes the segment's pixels only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from pebal_core.data.base import DatasetError, require_dir
from pebal_core.data.coco import outlier_sample
from pebal_core.images import read_rgb
from pebal_core.labels import COCO_CITYSCAPES_LIKE


def segment_ids(png_rgb: np.ndarray) -> np.ndarray:
    """Panoptic segment ids ``R + 256 G + 65536 B`` of an RGB ``H x W x 3`` uint8 PNG, int64 ``H x W``."""
    rgb = png_rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


@dataclass(frozen=True)
class PanopticSegment:
    """One usable object: its image, its panoptic PNG, its segment id and category name."""

    image: Path
    png: Path
    segment_id: int
    category: str


class CocoPanopticObjects(Dataset):
    """Thing segments of a COCO panoptic split as outlier objects (see the module docstring).

    Args:
        root: the folder holding ``<split>/`` and ``annotations/``.
        split: e.g. ``train2017`` or ``val2017``.
        exclude: category names that are Cityscapes classes (never used as outliers).
        min_size: smallest bounding-box side in pixels of a usable segment.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train2017",
        exclude: Sequence[str] = COCO_CITYSCAPES_LIKE,
        min_size: int = 0,
    ) -> None:
        self.root = require_dir(root, "COCO panoptic root (expected <split>/ and annotations/ inside)")
        self.split = split
        image_dir = require_dir(self.root / split, f"COCO images of split {split!r}")
        png_dir = require_dir(self.root / "annotations" / f"panoptic_{split}", "COCO panoptic PNGs")
        path = self.root / "annotations" / f"panoptic_{split}.json"
        if not path.is_file():
            raise DatasetError(f"COCO panoptic annotation file {path} does not exist")
        data = json.loads(path.read_text())
        if "segments_info" not in (data.get("annotations") or [{}])[0]:
            raise DatasetError(f"{path} is not a COCO panoptic file (annotations without segments_info)")
        categories = {c["id"]: c for c in data["categories"]}
        names = {c["name"] for c in categories.values()}
        unknown = sorted(set(exclude) - names)
        if unknown:
            raise DatasetError(f"exclude names categories {unknown} that {path} does not have")
        images = {im["id"]: im for im in data["images"]}
        self.items: list[PanopticSegment] = []
        for ann in data["annotations"]:
            info = images.get(ann["image_id"])
            if info is None:
                raise DatasetError(
                    f"{path}: annotation {ann['file_name']} names image id {ann['image_id']}, not listed"
                )
            image, png = image_dir / info["file_name"], png_dir / ann["file_name"]
            for seg in ann["segments_info"]:
                cat = categories[seg["category_id"]]
                if not cat["isthing"] or seg.get("iscrowd", 0) or cat["name"] in exclude:
                    continue
                if min(seg["bbox"][2], seg["bbox"][3]) < min_size:
                    continue
                self.items.append(PanopticSegment(image, png, int(seg["id"]), cat["name"]))
        if not self.items:
            raise DatasetError(
                f"no usable thing segment in {path} (after excluding {list(exclude)}, min_size {min_size})"
            )
        missing = sorted({str(p) for it in self.items for p in (it.image, it.png) if not p.is_file()})
        if missing:
            raise DatasetError(f"{len(missing)} file(s) named by {path} are missing, e.g. {missing[0]}")

    def __len__(self) -> int:
        return len(self.items)

    def object_mask(self, index: int) -> np.ndarray:
        """Boolean ``H x W`` mask of segment ``index``."""
        item = self.items[index]
        mask = segment_ids(read_rgb(item.png)) == item.segment_id
        if not mask.any():
            raise DatasetError(f"segment {item.segment_id} listed for {item.png} has no pixel in that PNG")
        return mask

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        sample = outlier_sample(item.image, self.object_mask(index), f"the panoptic PNG {item.png}")
        return {
            **sample,
            "name": f"coco/{item.image.stem}/{item.segment_id}",
            "category": item.category,
        }
