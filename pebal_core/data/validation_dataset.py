"""The ``Validation_Dataset`` bundle of road-anomaly sets (provenance and terms: ``docs/data_sources.md``).

On-disk layout::

    <root>/<SET>/images/<N>.<ext>       RGB image (.png, .jpg or .webp)
    <root>/<SET>/labels_masks/<N>.png   uint8 labels, same <N>

Sets in the bundle: ``RoadAnomaly`` (labels {0, 2}: 2 = anomaly), ``RoadAnomaly21``,
``RoadObsticle21`` (sic), ``fs_static``, ``FS_LostFound_full`` (labels {0, 1, 255}).

The label handling of the published ``course`` protocol (``docs/data_sources.md``), reproduced
here: Road Anomaly's label 2 becomes 1, void 255 is kept (dropped by the metrics), and images
whose mask has no anomaly pixel are **skipped** (``skip_without_anomaly=True``, the default;
``fs_static`` has 10 such images). Skipping reads every label once when the dataset is built.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pebal_core.data.anomaly_pairs import AnomalyPairs, label_lut, pairs_by_stem, require_samples
from pebal_core.data.base import DatasetError, require_dir
from pebal_core.labels import EVAL_ANOMALY, EVAL_INLIER

ROAD_ANOMALY_LUT = label_lut({0: EVAL_INLIER, 1: EVAL_ANOMALY, 2: EVAL_ANOMALY})
"""2 -> 1; 0, 1 kept; every other value is void (the ``course`` protocol counts only 0 and 1)."""


def validation_sets(root: str | os.PathLike) -> list[str]:
    """Set folders under ``root`` that hold ``images/`` (sorted)."""
    root = require_dir(root, "Validation_Dataset root")
    return sorted(p.name for p in root.iterdir() if (p / "images").is_dir())


class ValidationDataset(AnomalyPairs):
    """One set of the bundle; items ``{"image", "label" (0/1/255), "name"}``.

    Args:
        root: the ``Validation_Dataset`` folder.
        subset: set folder name (``RoadAnomaly``, ``RoadAnomaly21``, ...).
        skip_without_anomaly: drop images whose mask holds no anomaly pixel (published protocol).
    """

    def __init__(self, root: str | os.PathLike, subset: str, skip_without_anomaly: bool = True) -> None:
        set_dir = Path(root) / subset
        if not set_dir.is_dir():
            found = validation_sets(root) if Path(root).is_dir() else []
            raise DatasetError(
                f"Validation_Dataset set {subset!r}: directory {set_dir} does not exist "
                f"(sets found under {root}: {', '.join(found) or 'none'})"
            )
        images = require_dir(set_dir / "images", f"Validation_Dataset {subset} images")
        masks = require_dir(set_dir / "labels_masks", f"Validation_Dataset {subset} masks")
        samples = pairs_by_stem(images, masks, f"Validation_Dataset {subset}", f"{subset}/")
        expected = "images/<N>.<ext> with labels_masks/<N>.png"
        lut = ROAD_ANOMALY_LUT if subset == "RoadAnomaly" else None
        super().__init__(require_samples(samples, set_dir, expected), lut, f"Validation_Dataset {subset} at {set_dir}")
        self.subset = subset
        if skip_without_anomaly:
            keep = [np.any(self.read_label(i) == EVAL_ANOMALY) for i in range(len(self.samples))]
            self.skipped = [sample.name for sample, kept in zip(self.samples, keep, strict=True) if not kept]
            self.samples = [sample for sample, kept in zip(self.samples, keep, strict=True) if kept]

    skip_reason = "no anomaly pixel in the mask"

    @property
    def n_skipped(self) -> int:
        """How many images were skipped for having no anomaly pixel."""
        return len(self.skipped)
