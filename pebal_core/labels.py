"""Cityscapes label conventions used everywhere in the project.

Training labels are Cityscapes *trainIds*: 0..18 for the 19 evaluated classes, ``VOID_ID`` (255)
for pixels that never contribute to a loss or a metric, ``ANOMALY_ID`` (254) for pasted
outlier-exposure objects (the reference implementation's ``ood_ind``), and ``UNCLASSED_ID`` (253)
for pixels that are normal parts of the scene without a Cityscapes class (the recording car's own
bonnet): the energy terms treat them as inliers, the class terms ignore them. A PEBAL model has
``NUM_CLASSES + 1 = 20`` output channels; channel ``ABSTENTION_CHANNEL`` (19) is the abstention
(anomaly) class.

Anomaly *evaluation* labels use a different, benchmark-wide convention: 0 = inlier,
1 = anomaly, 255 = void (Fishyscapes, SegmentMeIfYouCan, LostAndFound protocol).

The table below is the official one from ``cityscapesscripts.helpers.labels`` (the test suite
cross-checks it); it is copied here so that the runtime does not depend on that package.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

NUM_CLASSES = 19
"""Number of inlier (Cityscapes trainId) classes."""
ABSTENTION_CHANNEL = NUM_CLASSES
"""Index of the extra abstention/anomaly logit channel of a PEBAL model."""
ANOMALY_ID = 254
"""Training label of pasted outlier-exposure pixels (AnomalyMix)."""
VOID_ID = 255
"""Training/evaluation label of ignored pixels."""
UNCLASSED_ID = 253
"""Training label of inlier pixels without a class (the ego vehicle's bonnet): low energy, no class target."""
EGO_VEHICLE_LABEL_ID = 1
"""Cityscapes labelId of the ego vehicle (the recording car's bonnet; trainId void)."""

EVAL_INLIER = 0
EVAL_ANOMALY = 1
EVAL_VOID = 255

COCO_CITYSCAPES_LIKE = ("person", "bicycle", "car", "motorcycle", "bus", "truck", "traffic light", "stop sign")
"""COCO categories that are Cityscapes classes: images containing any of them are no outliers
(Meta-OoD's ``prepare_coco_segmentation.py`` exclusion list)."""


class Label(NamedTuple):
    """One row of the Cityscapes label table (field names as in cityscapesscripts)."""

    name: str
    id: int
    train_id: int
    category: str
    color: tuple[int, int, int]


LABELS: tuple[Label, ...] = (
    Label("unlabeled", 0, 255, "void", (0, 0, 0)),
    Label("ego vehicle", 1, 255, "void", (0, 0, 0)),
    Label("rectification border", 2, 255, "void", (0, 0, 0)),
    Label("out of roi", 3, 255, "void", (0, 0, 0)),
    Label("static", 4, 255, "void", (0, 0, 0)),
    Label("dynamic", 5, 255, "void", (111, 74, 0)),
    Label("ground", 6, 255, "void", (81, 0, 81)),
    Label("road", 7, 0, "flat", (128, 64, 128)),
    Label("sidewalk", 8, 1, "flat", (244, 35, 232)),
    Label("parking", 9, 255, "flat", (250, 170, 160)),
    Label("rail track", 10, 255, "flat", (230, 150, 140)),
    Label("building", 11, 2, "construction", (70, 70, 70)),
    Label("wall", 12, 3, "construction", (102, 102, 156)),
    Label("fence", 13, 4, "construction", (190, 153, 153)),
    Label("guard rail", 14, 255, "construction", (180, 165, 180)),
    Label("bridge", 15, 255, "construction", (150, 100, 100)),
    Label("tunnel", 16, 255, "construction", (150, 120, 90)),
    Label("pole", 17, 5, "object", (153, 153, 153)),
    Label("polegroup", 18, 255, "object", (153, 153, 153)),
    Label("traffic light", 19, 6, "object", (250, 170, 30)),
    Label("traffic sign", 20, 7, "object", (220, 220, 0)),
    Label("vegetation", 21, 8, "nature", (107, 142, 35)),
    Label("terrain", 22, 9, "nature", (152, 251, 152)),
    Label("sky", 23, 10, "sky", (70, 130, 180)),
    Label("person", 24, 11, "human", (220, 20, 60)),
    Label("rider", 25, 12, "human", (255, 0, 0)),
    Label("car", 26, 13, "vehicle", (0, 0, 142)),
    Label("truck", 27, 14, "vehicle", (0, 0, 70)),
    Label("bus", 28, 15, "vehicle", (0, 60, 100)),
    Label("caravan", 29, 255, "vehicle", (0, 0, 90)),
    Label("trailer", 30, 255, "vehicle", (0, 0, 110)),
    Label("train", 31, 16, "vehicle", (0, 80, 100)),
    Label("motorcycle", 32, 17, "vehicle", (0, 0, 230)),
    Label("bicycle", 33, 18, "vehicle", (119, 11, 32)),
    Label("license plate", -1, -1, "vehicle", (0, 0, 142)),
)

TRAIN_LABELS: tuple[Label, ...] = tuple(
    sorted((lab for lab in LABELS if 0 <= lab.train_id < NUM_CLASSES), key=lambda lab: lab.train_id)
)
CLASS_NAMES: tuple[str, ...] = tuple(lab.name for lab in TRAIN_LABELS)
"""Names of trainIds 0..18, in order."""

PALETTE = np.zeros((256, 3), dtype=np.uint8)
"""RGB colour of every uint8 label value: trainIds get the Cityscapes colours, ANOMALY_ID is
bright orange, everything else (void included) is black."""
for _lab in TRAIN_LABELS:
    PALETTE[_lab.train_id] = _lab.color
PALETTE[ANOMALY_ID] = (255, 128, 0)

ID_TO_TRAIN_ID = np.full(256, VOID_ID, dtype=np.uint8)
"""Lookup table mapping a Cityscapes ``labelIds`` value (0..33) to its trainId (255 if ignored)."""
for _lab in LABELS:
    if _lab.id >= 0:
        ID_TO_TRAIN_ID[_lab.id] = _lab.train_id if 0 <= _lab.train_id < NUM_CLASSES else VOID_ID


def colorize(labels: np.ndarray) -> np.ndarray:
    """Map a ``uint8`` label image (H x W, trainIds) to its RGB palette image (H x W x 3, uint8)."""
    labels = np.asarray(labels)
    if labels.dtype != np.uint8:
        raise TypeError(f"colorize expects uint8 labels, got {labels.dtype}")
    return np.take(PALETTE, labels, axis=0)  # same as PALETTE[labels], about 10x faster


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Convert a Cityscapes ``*_gtFine_labelIds.png`` array (uint8, H x W) to trainIds."""
    return ID_TO_TRAIN_ID[np.asarray(label_ids, dtype=np.uint8)]
