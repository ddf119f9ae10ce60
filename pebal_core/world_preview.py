"""A contact sheet of a generated world: inlier scenes with their labels, OE objects, test anomalies.

Reads the files ``pebal synth`` wrote (so it shows what the loaders will see) and draws them with
matplotlib: Cityscapes val scenes beside their colourised trainIds, synthetic COCO images with
the outlier-exposure masks outlined, Fishyscapes images with the anomalies tinted, and the first,
middle and last frame of a LostAndFound-style sequence (the obstacle grows as the car approaches).
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import cv2
import numpy as np

from pebal_core.fileio import atomic_write
from pebal_core.images import read_label, read_rgb
from pebal_core.labels import ANOMALY_ID, EVAL_ANOMALY, colorize
from pebal_core.visualize import overlay


def _outline(rgb: np.ndarray, mask: np.ndarray, colour=(255, 255, 0)) -> np.ndarray:
    out = rgb.copy()
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, colour, 1)
    return out


def write_contact_sheet(
    root: str | os.PathLike, path: str | os.PathLike, manifest: dict | None = None, max_bytes: int = 500_000
) -> Path:
    """Draw the contact sheet of the world under ``root`` into the PNG ``path`` (palette PNG, small).

    Parts that were not generated are left out of the sheet.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    root, path = Path(root), Path(path)
    if manifest is None:
        manifest = json.loads((root / "world.json").read_text(encoding="utf-8"))
    panels: list[tuple[np.ndarray, str]] = []
    cs = root / "cityscapes"
    if cs.is_dir():
        for img in sorted((cs / "leftImg8bit" / "val").rglob("*_leftImg8bit.png"))[:6]:
            lab = Path(
                str(img).replace("leftImg8bit", "gtFine", 1).replace("_leftImg8bit.png", "_gtFine_labelTrainIds.png")
            )
            panels.append((read_rgb(img), "Cityscapes val"))
            panels.append((colorize(read_label(lab)), "labelTrainIds"))
    coco = root / "coco"
    if coco.is_dir():
        objects = manifest.get("parts", {}).get("coco", {}).get("objects", [])
        for jpg in sorted((coco / "train2017").glob("*.jpg"))[:2]:
            mask = read_label(coco / "annotations" / "ood_seg_train2017" / (jpg.stem + ".png")) == ANOMALY_ID
            fams = sorted({o["family"] for o in objects if o["image_id"] == int(jpg.stem)})
            panels.append((_outline(read_rgb(jpg), mask), "COCO (OE): " + ", ".join(fams)))
    fs = root / "fishyscapes"
    if fs.is_dir():
        for split in ("Static", "LostAndFound"):
            recs = manifest.get("parts", {}).get("fishyscapes", {}).get(split, {}).get("objects", [])
            for img in sorted((fs / split / "original").glob("*.png"))[:1]:
                lab = read_label(fs / split / "labels" / img.name)
                fams = sorted({r["family"] for r in recs if r["name"] == img.stem and r["pixels"] > 0})
                panels.append(
                    (
                        overlay(read_rgb(img), lab == EVAL_ANOMALY, (255, 128, 0), 0.6),
                        f"Fishyscapes {split}: " + ", ".join(fams),
                    )
                )
    laf = root / "lostandfound"
    if laf.is_dir():
        seqs = sorted((laf / "leftImg8bit" / "test").iterdir())
        if seqs:
            frames = sorted(seqs[0].glob("*_leftImg8bit.png"))
            for k in sorted({0, len(frames) // 2, len(frames) - 1}):
                img = frames[k]
                ids = read_label(
                    str(img).replace("leftImg8bit", "gtCoarse", 1).replace("_leftImg8bit.png", "_gtCoarse_labelIds.png")
                )
                panels.append((_outline(read_rgb(img), ids >= 2, (255, 128, 0)), f"LostAndFound seq, frame {k}"))
    if not panels:
        raise FileNotFoundError(f"{root} holds no generated world parts to preview")
    cols = 4
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 3.2, rows * 1.85), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (img, title) in zip(axes.ravel(), panels, strict=False):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(title, fontsize=7)
    fig.suptitle(f"pebal synth --seed {manifest.get('seed')} (world v{manifest.get('version')})", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    sheet = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    colours = 256
    while True:
        data = io.BytesIO()
        sheet.quantize(colours, method=Image.Quantize.MEDIANCUT).save(data, format="PNG", optimize=True)
        if data.tell() <= max_bytes or colours <= 32:
            break
        colours //= 2
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as tmp:
        tmp.write_bytes(data.getvalue())
    return path
