"""Cityscapes in its official on-disk layout (Cordts et al. 2016).

::

    <root>/leftImg8bit/<split>/<city>/<city>_<seq:06d>_<frame:06d>_leftImg8bit.png
    <root>/gtFine/<split>/<city>/<city>_<seq:06d>_<frame:06d>_gtFine_labelTrainIds.png
                                                      (and/or ..._gtFine_labelIds.png)

``labelTrainIds`` files (written by ``cityscapesscripts``' ``createTrainIdLabelImgs``) hold
trainIds 0..18 and 255 (trees of pseudo-labelled frames may also hold ``UNCLASSED_ID``, 253);
``labelIds`` files hold the 34 official ids and are mapped with the
official table (:func:`pebal_core.labels.label_ids_to_train_ids`). Items follow
:mod:`pebal_core.data.base`: ``image`` RGB uint8, ``label`` trainIds/255 uint8, ``name``
``<city>/<city>_<seq>_<frame>``.

Options of :class:`Cityscapes`: ``size`` resizes every frame on reading (image area-averaged,
label nearest neighbour), e.g. to the 512x1024 a real-time network runs at; ``ego_vehicle="inlier"``
labels the recording car's bonnet (labelId 1, read from the ``_gtFine_labelIds.png`` file) with
``UNCLASSED_ID`` instead of void, so that fine-tuning keeps its anomaly score low: the anomaly
benchmarks recorded with such a car (Fishyscapes, LostAndFound) count the bonnet as inlier.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
from torch.utils.data import Dataset

from pebal_core.data.base import DatasetError, require_dir
from pebal_core.images import read_label, read_rgb
from pebal_core.labels import EGO_VEHICLE_LABEL_ID, NUM_CLASSES, UNCLASSED_ID, VOID_ID, label_ids_to_train_ids

IMAGE_SUFFIX = "_leftImg8bit.png"
LABEL_SUFFIXES = {"trainIds": "_gtFine_labelTrainIds.png", "labelIds": "_gtFine_labelIds.png"}
LabelKind = Literal["auto", "trainIds", "labelIds"]

_VALID_TRAIN_ID = np.zeros(256, dtype=bool)
_VALID_TRAIN_ID[:NUM_CLASSES] = True
_VALID_TRAIN_ID[VOID_ID] = True
_VALID_TRAIN_ID[UNCLASSED_ID] = True  # pseudo-labelled trees: inlier pixels without a class


@dataclass(frozen=True)
class CityscapesSample:
    """One frame: its image file, label file, label encoding and name."""

    image: Path
    label: Path
    kind: str
    name: str


def find_samples(root: str | os.PathLike, split: str = "train", labels: LabelKind = "auto") -> list[CityscapesSample]:
    """Every frame of ``split`` with its label file, sorted by name.

    ``labels``: ``trainIds`` or ``labelIds`` require that encoding; ``auto`` takes
    ``labelTrainIds`` where present, else ``labelIds``.

    Raises:
        DatasetError: naming the missing directory, or the first frames without a label file and
            the file names that were expected.
    """
    if labels not in ("auto", *LABEL_SUFFIXES):
        raise ValueError(f"labels must be auto, trainIds or labelIds, got {labels!r}")
    root = require_dir(root, "Cityscapes root (expected leftImg8bit/ and gtFine/ inside)")
    image_dir = require_dir(root / "leftImg8bit" / split, f"Cityscapes images of split {split!r}")
    label_dir = require_dir(root / "gtFine" / split, f"Cityscapes gtFine labels of split {split!r}")
    images = sorted(image_dir.glob(f"*/*{IMAGE_SUFFIX}"))
    if not images:
        raise DatasetError(
            f"no Cityscapes images in {image_dir}: expected <city>/<city>_<seq>_<frame>{IMAGE_SUFFIX} files"
        )
    kinds = ("trainIds", "labelIds") if labels == "auto" else (labels,)
    samples, missing = [], []
    for image in images:
        city = image.parent.name
        stem = image.name[: -len(IMAGE_SUFFIX)]
        candidates = [(kind, label_dir / city / f"{stem}{LABEL_SUFFIXES[kind]}") for kind in kinds]
        found = next(((kind, path) for kind, path in candidates if path.is_file()), None)
        if found is None:
            missing.append(" or ".join(str(path) for _, path in candidates))
            continue
        samples.append(CityscapesSample(image, found[1], found[0], f"{city}/{stem}"))
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise DatasetError(
            f"{len(missing)} of {len(images)} Cityscapes images in {image_dir} have no label file; "
            f"expected {'; '.join(missing[:3])}{more}"
        )
    return samples


def read_sample(sample: CityscapesSample) -> tuple[np.ndarray, np.ndarray]:
    """``(image RGB uint8 H x W x 3, label trainIds/255 uint8 H x W)`` of one frame."""
    image = read_rgb(sample.image)
    raw = read_label(sample.label)
    if raw.shape != image.shape[:2]:
        raise DatasetError(
            f"label {sample.label} is {raw.shape[1]}x{raw.shape[0]} but image {sample.image} is "
            f"{image.shape[1]}x{image.shape[0]}; expected the same size"
        )
    if sample.kind == "labelIds":
        return image, label_ids_to_train_ids(raw)
    if not _VALID_TRAIN_ID[raw].all():
        bad = sorted(set(np.unique(raw[~_VALID_TRAIN_ID[raw]]).tolist()))
        raise DatasetError(
            f"{sample.label} holds values {bad[:6]}; a labelTrainIds file holds trainIds 0..18, 255 (void) "
            f"and, in pseudo-labelled trees, {UNCLASSED_ID} (an inlier without a class) "
            "(use labels: labelIds for *_gtFine_labelIds.png files)"
        )
    return image, raw


class Cityscapes(Dataset):
    """Cityscapes frames of one split (see the module docstring for layout, item format and options).

    Args:
        root, split, labels: where the frames are and which label files to read.
        size: ``(height, width)`` every frame is resized to, or None for the stored size.
        ego_vehicle: ``void`` (the trainId convention) or ``inlier`` (``UNCLASSED_ID``).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        labels: LabelKind = "auto",
        size: tuple[int, int] | None = None,
        ego_vehicle: Literal["void", "inlier"] = "void",
    ) -> None:
        if ego_vehicle not in ("void", "inlier"):
            raise ValueError(f"ego_vehicle must be void or inlier, got {ego_vehicle!r}")
        self.root = Path(root)
        self.split = split
        self.samples = find_samples(root, split, labels)
        self.size = size
        self.ego_vehicle = ego_vehicle
        if ego_vehicle == "inlier":
            missing = [str(p) for p in map(label_ids_path, self.samples) if not p.is_file()]
            if missing:
                raise DatasetError(
                    f"ego_vehicle: inlier needs the _gtFine_labelIds.png files (labelId {EGO_VEHICLE_LABEL_ID} marks "
                    f"the ego vehicle); {len(missing)} missing, e.g. {missing[0]}"
                )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        image, label = read_sample(sample)
        if self.ego_vehicle == "inlier":
            ids = read_label(label_ids_path(sample))
            label = np.where(ids == EGO_VEHICLE_LABEL_ID, np.uint8(UNCLASSED_ID), label)
        if self.size is not None and tuple(self.size) != image.shape[:2]:
            h, w = self.size
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)
            label = cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST)
        return {"image": image, "label": label, "name": sample.name}


def label_ids_path(sample: CityscapesSample) -> Path:
    """The ``_gtFine_labelIds.png`` file of ``sample`` (beside its label file)."""
    if sample.kind == "labelIds":
        return sample.label
    name = sample.label.name[: -len(LABEL_SUFFIXES[sample.kind])]
    return sample.label.with_name(name + LABEL_SUFFIXES["labelIds"])
