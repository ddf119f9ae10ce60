"""The item contract every dataset in ``pebal_core.data`` follows.

``dataset[i]`` returns a dict:

``image``
    ``uint8 H x W x 3`` RGB numpy array (not normalised; the model's
    :class:`~pebal_core.preprocessing.Normalization` is applied later).
``label``
    ``uint8 H x W`` numpy array. Segmentation (training) datasets: Cityscapes trainIds 0..18,
    ``ANOMALY_ID`` (254) for pasted outlier pixels, ``VOID_ID`` (255) ignored. Anomaly
    (evaluation) datasets: 0 = inlier, 1 = anomaly, 255 = void.
``name``
    a string identifying the sample (relative path stem), for reports and file names.

Datasets may add keys (``is_ood`` for AnomalyMix batches, ``camera`` for LostAndFound frames).
A missing or malformed dataset raises :class:`DatasetError` naming the path and what was
expected there.
"""

from __future__ import annotations

import os
from pathlib import Path


class DatasetError(FileNotFoundError):
    """A dataset folder is missing or does not have the expected layout."""


def require_dir(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a Path if it is a directory, else a :class:`DatasetError` explaining ``what``."""
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"{what}: directory {path} does not exist")
    return path

