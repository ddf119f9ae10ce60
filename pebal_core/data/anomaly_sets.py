"""The anomaly evaluation datasets by name (:data:`ANOMALY_DATASETS`): ``build_anomaly_dataset(name, root, **options)``.

========================  ==================================================  =========================
name                      dataset (module)                                    root
========================  ==================================================  =========================
``fs_lost_and_found``     Fishyscapes LostAndFound validation (fishyscapes)   folder holding ``LostAndFound/``
``fs_static``             Fishyscapes Static validation (fishyscapes)         folder holding ``Static/``
``lost_and_found``        LostAndFound, test protocol (lostandfound)          LostAndFound folder
``road_anomaly``          Road Anomaly (road_anomaly)                         folder holding ``frames/``
``validation/<SET>``      a Validation_Dataset set, any set folder name       ``Validation_Dataset`` folder
                          (validation_dataset)
``synthetic``             the project's generated Fishyscapes-style set       ``pebal synth`` output (or its
                          (fishyscapes layout under ``fishyscapes/``)         ``fishyscapes/`` folder)
========================  ==================================================  =========================

Options: ``lost_and_found``: ``split`` (``test``), ``non_hazards`` (``void``);
``validation/<SET>``: ``skip_without_anomaly`` (True); ``synthetic``: ``split`` (default: the
only split folder present). Every dataset yields ``{"image", "label" (0/1/255), "name", ...}``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from pebal_core.data.anomaly_pairs import AnomalyPairs
from pebal_core.data.base import DatasetError
from pebal_core.data.fishyscapes import FishyscapesDataset, fishyscapes_splits
from pebal_core.data.lostandfound_dataset import LostAndFoundDataset
from pebal_core.data.road_anomaly import RoadAnomalyDataset
from pebal_core.data.validation_dataset import ValidationDataset
from pebal_core.registry import Registry

VALIDATION_SETS = ("RoadAnomaly", "RoadAnomaly21", "RoadObsticle21", "fs_static", "FS_LostFound_full")
"""The sets of the ``Validation_Dataset`` bundle (folder names, ``RoadObsticle21`` sic; ``docs/data_sources.md``)."""
SET_FAMILY = "/<SET>"
"""How a registered name marks a family of sets: ``validation/<SET>`` takes the set's folder name."""

ANOMALY_DATASETS: Registry[Callable[..., AnomalyPairs]] = Registry("anomaly dataset")
"""Dataset name -> factory ``f(root, **options)`` (a family ``f(root, set_name, **options)``)."""


@ANOMALY_DATASETS.register("fs_lost_and_found")
def _fs_lost_and_found(root: Path, **options) -> FishyscapesDataset:
    return FishyscapesDataset(root, "LostAndFound", **options)


@ANOMALY_DATASETS.register("fs_static")
def _fs_static(root: Path, **options) -> FishyscapesDataset:
    return FishyscapesDataset(root, "Static", **options)


ANOMALY_DATASETS.register("lost_and_found", LostAndFoundDataset)
ANOMALY_DATASETS.register("road_anomaly", RoadAnomalyDataset)
ANOMALY_DATASETS.register("validation" + SET_FAMILY, ValidationDataset)


@ANOMALY_DATASETS.register("synthetic")
def _synthetic(root: Path, split: str | None = None) -> FishyscapesDataset:
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
    """The evaluation dataset ``name`` (see the module table) read from ``root``; an unknown name
    raises :class:`~pebal_core.registry.UnknownNameError` (a ``ValueError``) listing the names."""
    family, slash, set_name = name.partition("/")
    if slash and set_name:
        return ANOMALY_DATASETS[family + SET_FAMILY](Path(root), set_name, **options)
    return ANOMALY_DATASETS[name](Path(root), **options)
