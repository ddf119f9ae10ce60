"""Registry of the anomaly evaluation datasets: ``build_anomaly_dataset(name, root, **options)``.

========================  ==================================================  =========================
name                      dataset (module)                                    root
========================  ==================================================  =========================
``fs_lost_and_found``     Fishyscapes LostAndFound validation (fishyscapes)   folder holding ``LostAndFound/``
``fs_static``             Fishyscapes Static validation (fishyscapes)         folder holding ``Static/``
``lost_and_found``        LostAndFound, test protocol (lostandfound)          LostAndFound folder
``road_anomaly``          Road Anomaly (road_anomaly)                         folder holding ``frames/``
``validation/<SET>``      a Validation_Dataset set (validation_dataset)       ``Validation_Dataset`` folder
``synthetic``             the project's generated Fishyscapes-style set       ``pebal synth`` output (or its
                          (fishyscapes layout under ``fishyscapes/``)         ``fishyscapes/`` folder)
========================  ==================================================  =========================

Options: ``lost_and_found``: ``split`` (``test``), ``non_hazards`` (``void``);
``validation/<SET>``: ``skip_without_anomaly`` (True); ``synthetic``: ``split`` (default: the
only split folder present). Every dataset yields ``{"image", "label" (0/1/255), "name", ...}``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from pebal_core.data.base import DatasetError

if TYPE_CHECKING:  # the dataset modules import torch; load them only when a dataset is built
    from pebal_core.data.anomaly_pairs import AnomalyPairs
    from pebal_core.data.fishyscapes import FishyscapesDataset

VALIDATION_SETS = ("RoadAnomaly", "RoadAnomaly21", "RoadObsticle21", "fs_static", "FS_LostFound_full")
"""The sets of the ``Validation_Dataset`` bundle (folder names, ``RoadObsticle21`` sic; ``docs/data_sources.md``)."""
ANOMALY_DATASETS = (
    "fs_lost_and_found",
    "fs_static",
    "lost_and_found",
    "road_anomaly",
    *(f"validation/{s}" for s in VALIDATION_SETS),
    "synthetic",
)
"""Names :func:`build_anomaly_dataset` accepts (``validation/`` takes any set folder name)."""


def _synthetic(root: Path, split: str | None = None) -> FishyscapesDataset:
    from pebal_core.data.fishyscapes import FishyscapesDataset, fishyscapes_splits

    base = root / "fishyscapes" if (root / "fishyscapes").is_dir() else root
    if split is None:
        splits = fishyscapes_splits(base)
        if len(splits) != 1:
            raise DatasetError(
                f"synthetic set at {base}: expected exactly one split folder with original/ and labels/, "
                f"found {splits or 'none'}; pass split=<name> (on the command line: --split <name>)"
            )
        split = splits[0]
    return FishyscapesDataset(base, split)


def build_anomaly_dataset(name: str, root: str | os.PathLike, **options) -> AnomalyPairs:
    """The evaluation dataset ``name`` (see the module table) read from ``root``."""
    from pebal_core.data.fishyscapes import FishyscapesDataset
    from pebal_core.data.lostandfound import LostAndFoundDataset
    from pebal_core.data.road_anomaly import RoadAnomalyDataset
    from pebal_core.data.validation_dataset import ValidationDataset

    root = Path(root)
    if name == "fs_lost_and_found":
        return FishyscapesDataset(root, "LostAndFound", **options)
    if name == "fs_static":
        return FishyscapesDataset(root, "Static", **options)
    if name == "lost_and_found":
        return LostAndFoundDataset(root, **options)
    if name == "road_anomaly":
        return RoadAnomalyDataset(root, **options)
    if name.startswith("validation/") and len(name) > len("validation/"):
        return ValidationDataset(root, name.split("/", 1)[1], **options)
    if name == "synthetic":
        return _synthetic(root, **options)
    raise ValueError(f"unknown anomaly dataset {name!r}; choose from {', '.join(ANOMALY_DATASETS)}")
