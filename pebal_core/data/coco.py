"""COCO images as outlier-exposure sources, from either of the two layouts people have on disk.

``instances`` (the official release, read with pycocotools)::

    <root>/<split>/<image_id:012d>.jpg
    <root>/annotations/instances_<split>.json      (polygon or RLE instance masks)

Images that contain an instance of an excluded category (default: the COCO categories that are
Cityscapes classes, :data:`pebal_core.labels.COCO_CITYSCAPES_LIKE`), images smaller than
``min_size`` in either dimension, and images without any instance are skipped; the outlier mask
is the union of all instance masks (crowd regions included), as Meta-OoD prepares it.

``ood_seg`` (prepared by Meta-OoD's ``prepare_coco_segmentation.py``, which applied the same
exclusion and a minimum size of 480)::

    <root>/<split>/<image_id:012d>.jpg
    <root>/annotations/ood_seg_<split>/<image_id:012d>.png     (254 = outlier object, 0 = background)

Items follow :mod:`pebal_core.data.base`: ``image`` RGB uint8, ``label`` uint8 with
``ANOMALY_ID`` (254) on object pixels and ``VOID_ID`` (255) elsewhere (the background of a COCO
image is no Cityscapes class), ``name`` ``coco/<image file stem>``.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from torch.utils.data import Dataset

from pebal_core.data.base import DatasetError, require_dir
from pebal_core.images import read_label, read_rgb
from pebal_core.labels import ANOMALY_ID, COCO_CITYSCAPES_LIKE, VOID_ID

CocoFormat = Literal["auto", "instances", "ood_seg"]
META_OOD_MIN_SIZE = 480
"""Meta-OoD keeps COCO images whose height and width are both at least this many pixels."""


def detect_format(root: Path, split: str) -> str:
    """``ood_seg`` if the Meta-OoD PNG folder exists, else ``instances`` if the JSON exists."""
    if (root / "annotations" / f"ood_seg_{split}").is_dir():
        return "ood_seg"
    if (root / "annotations" / f"instances_{split}.json").is_file():
        return "instances"
    raise DatasetError(
        f"COCO root {root} has neither annotations/ood_seg_{split}/ (Meta-OoD masks) nor "
        f"annotations/instances_{split}.json (pycocotools instances); expected one of them"
    )


def _load_coco_api(path: Path):
    from pycocotools.coco import COCO

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            api = COCO(str(path))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path} is not valid JSON ({e}); expected a COCO instances file") from e
    except (AssertionError, KeyError, TypeError) as e:
        raise DatasetError(
            f"{path} is not a COCO instances file (expected 'images', 'annotations' and 'categories'; "
            f"pycocotools said {type(e).__name__}: {e})"
        ) from e
    if "categories" not in api.dataset or "images" not in api.dataset:
        raise DatasetError(f"{path} is not a COCO instances file: 'images' or 'categories' is missing")
    return api


class CocoOutliers(Dataset):
    """COCO outlier images with their object masks (see the module docstring).

    Args:
        root: COCO root folder.
        split: ``train2017`` (images folder name and annotation suffix).
        format: ``instances``, ``ood_seg`` or ``auto`` (the Meta-OoD PNGs when present).
        exclude: category names whose images are skipped (``instances`` only; the PNGs were
            filtered when they were prepared).
        min_size: minimum image height and width (``instances`` only).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train2017",
        format: CocoFormat = "auto",
        exclude: Sequence[str] = COCO_CITYSCAPES_LIKE,
        min_size: int = META_OOD_MIN_SIZE,
    ) -> None:
        self.root = require_dir(root, "COCO root (expected <split>/ and annotations/ inside)")
        self.split = split
        self.format = detect_format(self.root, split) if format == "auto" else format
        self.image_dir = require_dir(self.root / split, f"COCO images of split {split!r}")
        self.api = None
        if self.format == "ood_seg":
            self._index_ood_seg()
        elif self.format == "instances":
            self._index_instances(list(exclude), min_size)
        else:
            raise ValueError(f"format must be auto, instances or ood_seg, got {format!r}")

    def _index_ood_seg(self) -> None:
        mask_dir = require_dir(self.root / "annotations" / f"ood_seg_{self.split}", "Meta-OoD COCO masks")
        masks = sorted(mask_dir.glob("*.png"))
        if not masks:
            raise DatasetError(f"no <image_id>.png masks in {mask_dir} (expected Meta-OoD's ood_seg layout)")
        images = [self.image_dir / f"{m.stem}.jpg" for m in masks]
        missing = [str(p) for p in images if not p.is_file()]
        if missing:
            raise DatasetError(
                f"{len(missing)} of {len(masks)} masks in {mask_dir} have no image; expected e.g. {missing[0]}"
            )
        self.items = list(zip(images, masks, strict=True))

    def _index_instances(self, exclude: list[str], min_size: int) -> None:
        path = self.root / "annotations" / f"instances_{self.split}.json"
        if not path.is_file():
            raise DatasetError(f"COCO instances file {path} does not exist")
        api = _load_coco_api(path)
        names = {c["name"]: c["id"] for c in api.dataset["categories"]}
        unknown = sorted(set(exclude) - set(names))
        if unknown:
            raise DatasetError(
                f"coco_exclude names categories {unknown} that {path} does not have; "
                f"its categories are: {', '.join(sorted(names))}"
            )
        excluded_images = {img for name in exclude for img in api.getImgIds(catIds=[names[name]])}
        on_disk = {p.name for p in self.image_dir.glob("*.jpg")}
        self.items = []
        for image_id in sorted(api.imgs):
            info = api.imgs[image_id]
            if image_id in excluded_images or not api.imgToAnns.get(image_id):
                continue
            if info["height"] < min_size or info["width"] < min_size or info["file_name"] not in on_disk:
                continue
            self.items.append((self.image_dir / info["file_name"], image_id))
        if not self.items:
            raise DatasetError(
                f"no usable outlier image in {self.image_dir} with {path}: every image is missing on disk, "
                f"smaller than {min_size} px, without instances or contains an excluded category ({exclude})"
            )
        self.api = api

    def __len__(self) -> int:
        return len(self.items)

    def object_mask(self, index: int) -> np.ndarray:
        """Boolean ``H x W`` union of the outlier objects of item ``index``."""
        source = self.items[index][1]
        if self.format == "ood_seg":
            raw = read_label(source)
            if not np.isin(raw, (0, ANOMALY_ID)).all():
                bad = sorted(set(np.unique(raw).tolist()) - {0, ANOMALY_ID})
                raise DatasetError(f"{source} holds values {bad[:6]}; a Meta-OoD mask holds only 0 and {ANOMALY_ID}")
            return raw == ANOMALY_ID
        info = self.api.imgs[source]
        mask = np.zeros((info["height"], info["width"]), dtype=bool)
        with warnings.catch_warnings():  # pycocotools 2.0.x on numpy 2 warns about its own __array__
            warnings.filterwarnings("ignore", message=".*__array__ implementation", category=DeprecationWarning)
            for ann in self.api.imgToAnns[source]:
                mask |= self.api.annToMask(ann).astype(bool)
        return mask

    def __getitem__(self, index: int) -> dict:
        image_path = self.items[index][0]
        sample = outlier_sample(image_path, self.object_mask(index), f"the mask of {image_path}")
        return {**sample, "name": f"coco/{image_path.stem}"}


def outlier_sample(image_path: Path, mask: np.ndarray, mask_source: str) -> dict:
    """``{"image": uint8 H x W x 3 RGB, "label": uint8 H x W}`` of one outlier-exposure source image:
    ``ANOMALY_ID`` on the object ``mask`` (bool ``H x W``), ``VOID_ID`` elsewhere. ``mask_source``
    names where the mask came from, for the error when its size differs from the image's."""
    image = read_rgb(image_path)
    if mask.shape != image.shape[:2]:
        raise DatasetError(
            f"{mask_source} is {mask.shape[1]}x{mask.shape[0]} but the image is "
            f"{image.shape[1]}x{image.shape[0]}; expected the same size"
        )
    return {"image": image, "label": np.where(mask, np.uint8(ANOMALY_ID), np.uint8(VOID_ID))}
