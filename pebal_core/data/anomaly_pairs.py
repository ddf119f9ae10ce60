"""Image / label pair datasets for anomaly evaluation (the base of every ``pebal eval`` dataset).

Each dataset module (Fishyscapes, LostAndFound, Road Anomaly, the ``Validation_Dataset`` bundle)
only finds its files and says how its raw label values map to the evaluation convention
(0 = inlier, 1 = anomaly, 255 = void, see :mod:`pebal_core.data.base`); loading, mapping and
checking happen here, identically for all of them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pebal_core.data.base import DatasetError
from pebal_core.images import read_label, read_rgb
from pebal_core.labels import EVAL_ANOMALY, EVAL_INLIER, EVAL_VOID

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")


def label_lut(mapping: Mapping[int, int], default: int = EVAL_VOID) -> np.ndarray:
    """A 256-entry uint8 lookup table: raw label value -> evaluation label (others -> ``default``)."""
    lut = np.full(256, default, np.uint8)
    for raw, value in mapping.items():
        lut[raw] = value
    return lut


_IDENTITY_ALLOWED = (EVAL_INLIER, EVAL_ANOMALY, EVAL_VOID)


def image_files(directory: Path) -> list[Path]:
    """Image files directly in ``directory``, sorted by name (numeric stems in numeric order)."""
    files = [p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(files, key=lambda p: (0, int(p.stem), "") if p.stem.isdigit() else (1, 0, p.stem))


def pairs_by_stem(images: Path, labels: Path, what: str, name: str = "") -> list[Sample]:
    """A :class:`Sample` per image of ``images`` (:func:`image_files` order) with the label
    ``labels/<stem>.png``, named ``<name><stem>``; a missing label raises ``DatasetError``
    naming ``what`` and the file."""
    samples = []
    for image in image_files(images):
        label = labels / f"{image.stem}.png"
        if not label.is_file():
            raise DatasetError(f"{what}: image {image} has no label file {label}")
        samples.append(Sample(image, label, f"{name}{image.stem}"))
    return samples


@dataclass(frozen=True)
class Sample:
    """One evaluation image: file paths, a name for reports, and extra item entries."""

    image: Path
    label: Path
    name: str
    extra: dict = field(default_factory=dict)


class AnomalyPairs:
    """A list of :class:`Sample` read as ``{"image", "label", "name", **extra}`` items.

    A map-style dataset (``len`` and indexing), which ``torch.utils.data.DataLoader`` reads like
    a ``Dataset`` subclass; it does not import torch, so listing and reading evaluation sets
    (``pebal_bag convert``) runs without it.

    Args:
        samples: the image/label files.
        lut: raw label value -> evaluation label (``label_lut``); ``None`` = labels already 0/1/255
            (any other value is an error).
        description: what the dataset is, for error messages and ``repr``.
    """

    skip_reason: str | None = None
    """Why :attr:`skipped` images were left out (``None`` for datasets that keep every image)."""

    def __init__(self, samples: Iterable[Sample], lut: np.ndarray | None, description: str) -> None:
        self.samples = list(samples)
        self.lut = lut
        self.description = description
        self.skipped: list[str] = []
        """Names of the images found but left out (reported by ``pebal eval``)."""

    def __len__(self) -> int:
        return len(self.samples)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.description}, {len(self)} images)"

    def lut_for(self, index: int) -> np.ndarray | None:
        """The raw -> evaluation label table of sample ``index`` (the dataset's by default)."""
        return self.lut

    def read_label(self, index: int) -> np.ndarray:
        """The evaluation label map (0/1/255) of sample ``index``; malformed files raise DatasetError."""
        sample = self.samples[index]
        try:
            raw = read_label(sample.label)
        except OSError as e:
            raise DatasetError(f"{self.description}: {e}") from e
        lut = self.lut_for(index)
        if lut is None:
            bad = np.setdiff1d(np.unique(raw), _IDENTITY_ALLOWED)
            if bad.size:
                raise DatasetError(
                    f"{self.description}: label file {sample.label} holds values {bad[:8].tolist()}; "
                    "expected 0 (inlier), 1 (anomaly) or 255 (void)"
                )
            return raw
        return lut[raw]

    def __getitem__(self, index: int) -> dict:
        sample = self.samples[index]
        try:
            image = read_rgb(sample.image)
        except OSError as e:
            raise DatasetError(f"{self.description}: {e}") from e
        label = self.read_label(index)
        if label.shape != image.shape[:2]:
            raise DatasetError(
                f"{self.description}: label {sample.label} is {label.shape[1]}x{label.shape[0]} but image "
                f"{sample.image} is {image.shape[1]}x{image.shape[0]}; they must have the same size"
            )
        return {"image": image, "label": label, "name": sample.name, **sample.extra}


def require_samples(samples: list[Sample], where: str | os.PathLike, expected: str) -> list[Sample]:
    """``samples`` unless empty, in which case a DatasetError says what was expected where."""
    if not samples:
        raise DatasetError(f"no images found in {where}; expected {expected}")
    return samples


def identity_collate(batch: list[dict]) -> dict:
    """DataLoader collate for ``batch_size=1`` over images of any size: the item itself."""
    return batch[0]
