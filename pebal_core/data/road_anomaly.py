"""Road Anomaly (Lis et al., ICCV 2019): 60 web images of unusual objects on roads.

On-disk layout of the published archive (``RoadAnomaly_jpg``)::

    <root>/frames/<name>.jpg                          RGB image (.png/.webp accepted too)
    <root>/frames/<name>.labels/labels_semantic.png   uint8 labels

Raw labels (the dataset's labelling tool): 0 = background, 1 = road, 2 = anomaly. The whole-image
anomaly protocol used by PEBAL and the SegmentMeIfYouCan / ``Validation_Dataset`` conversions
(``docs/data_sources.md``): values >= 2
-> 1 (anomaly), 0 and 1 -> 0 (inlier), 255 -> void.
"""

from __future__ import annotations

import os
from pathlib import Path

from pebal_core.data.anomaly_pairs import AnomalyPairs, Sample, image_files, label_lut, require_samples
from pebal_core.data.base import DatasetError, require_dir
from pebal_core.labels import EVAL_ANOMALY, EVAL_INLIER, EVAL_VOID

ROAD_ANOMALY_LUT = label_lut({0: EVAL_INLIER, 1: EVAL_INLIER, 255: EVAL_VOID}, default=EVAL_ANOMALY)


class RoadAnomalyDataset(AnomalyPairs):
    """Road Anomaly; items ``{"image", "label" (0/1/255), "name"}``."""

    def __init__(self, root: str | os.PathLike) -> None:
        frames = require_dir(Path(root) / "frames", "Road Anomaly frames folder (<root>/frames/<name>.jpg)")
        samples = []
        for image in image_files(frames):
            label = frames / f"{image.stem}.labels" / "labels_semantic.png"
            if not label.is_file():
                raise DatasetError(f"Road Anomaly: image {image} has no label file {label}")
            samples.append(Sample(image, label, image.stem))
        expected = "<name>.jpg images with <name>.labels/labels_semantic.png"
        super().__init__(require_samples(samples, frames, expected), ROAD_ANOMALY_LUT, f"Road Anomaly at {root}")
