"""Fishyscapes validation sets (Blum et al., IJCV 2021): ``LostAndFound`` and ``Static``.

On-disk layout, as the PEBAL reference loader (``code/dataset/data_loader.py``) reads it::

    <root>/<Split>/original/<name>.png      RGB image (any of .png/.jpg/.webp accepted)
    <root>/<Split>/labels/<name>.png        uint8 labels: 0 = inlier, 1 = anomaly, 255 = void

with ``<Split>`` in ``LostAndFound`` (real LostAndFound frames, 100 validation images) and
``Static`` (Cityscapes val frames with pasted objects, 30 images). Meta-OoD's older loader keeps
image and label side by side (``<root>/<Split>/<name>.jpg`` + ``<name>.png``); that layout is
accepted too. The project's synthetic Fishyscapes-style set (``pebal synth``) uses the first
layout under ``<synth out>/fishyscapes/``.
"""

from __future__ import annotations

import os
from pathlib import Path

from pebal_core.data.anomaly_pairs import AnomalyPairs, Sample, pairs_by_stem, require_samples
from pebal_core.data.base import require_dir

SPLITS = ("LostAndFound", "Static")


def fishyscapes_splits(root: str | os.PathLike) -> list[str]:
    """Split folders under ``root`` that hold an ``original/`` image folder (sorted)."""
    root = require_dir(root, "Fishyscapes root")
    return sorted(p.name for p in root.iterdir() if (p / "original").is_dir())


class FishyscapesDataset(AnomalyPairs):
    """One Fishyscapes split; items ``{"image", "label" (0/1/255), "name"}``.

    Args:
        root: the folder holding the split folders.
        split: ``LostAndFound``, ``Static`` or any split folder of a Fishyscapes-style tree.
    """

    def __init__(self, root: str | os.PathLike, split: str = "LostAndFound") -> None:
        root = Path(root)
        split_dir = require_dir(root / split, f"Fishyscapes split {split!r} (expected <root>/{split}/original/)")
        originals = split_dir / "original"
        if originals.is_dir():
            labels = require_dir(split_dir / "labels", f"Fishyscapes {split} labels")
            samples = pairs_by_stem(originals, labels, f"Fishyscapes {split}")
        else:  # Meta-OoD layout: <name>.jpg (or .webp) next to its <name>.png label
            samples = []
            for label in sorted(split_dir.glob("*.png")):
                image = next(
                    (p for p in (label.with_suffix(e) for e in (".jpg", ".jpeg", ".webp")) if p.is_file()), None
                )
                if image is not None:
                    samples.append(Sample(image, label, label.stem))
        expected = f"{split_dir}/original/<name>.png with labels in {split_dir}/labels/<name>.png"
        super().__init__(require_samples(samples, split_dir, expected), None, f"Fishyscapes {split} at {split_dir}")
        self.split = split
