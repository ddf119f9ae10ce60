"""The shipped default model on real Cityscapes frames: a labels picture and an overlay picture.

For every ``cityscapes_frames/fullres_unlabeled/*.png`` of the real-data folder (Cityscapes
validation frames, 2048x1024, no labels), the default model (``Predictor.default()``) runs at the
input size its metadata records, and this script writes

* ``docs/real_cityscapes_labels.png``: per frame, the camera image and the predicted trainIds in
  the Cityscapes palette;
* ``docs/real_cityscapes_overlay.png``: per frame, the pixels at or above the threshold of the
  model's operating point tinted red (every pixel, no region: the node's ``anomaly_mask``) and
  the anomaly score as a heat map (both pictures as 256-colour PNGs);

and prints, per frame, the share of pixels of the main classes, the share flagged, and the
agreement of the labels with the pretrained ESPNet's (``--pretrained``, the base network). Rerun
it (``make real-pictures``) whenever the default model changes.

    python benchmarks/real_frame_pictures.py [--realdata ../shared/realdata] [--out docs]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from pebal_core.alarms.operating_point import resolve_operating_point
from pebal_core.images import read_rgb
from pebal_core.labels import CLASS_NAMES, colorize
from pebal_core.model_store import model_path
from pebal_core.models.checkpoint import read_checkpoint
from pebal_core.runtime import Predictor
from pebal_core.visualize import heatmap, overlay

ROOT = Path(__file__).resolve().parents[1]
FRAMES = Path("cityscapes_frames/fullres_unlabeled")
PRETRAINED = Path("models/espnet_p2q8_cityscapes_sacmehta/espnet_p_2_q_8.safetensors")
PANEL_WIDTH = 640
"""Width of each panel in the pictures (pixels)."""
SHOWN_CLASSES = ("road", "sidewalk", "building", "vegetation", "sky", "car", "person")


def _panel(rgb: np.ndarray, caption: str) -> Image.Image:
    pic = Image.fromarray(rgb)
    pic = pic.resize((PANEL_WIDTH, round(pic.height * PANEL_WIDTH / pic.width)), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(pic)
    box = draw.textbbox((0, 0), caption)
    draw.rectangle((3, 3, box[2] + 9, box[3] + 9), fill="black")
    draw.text((6, 6), caption, fill="white")
    return pic


def _grid(rows: list[list[Image.Image]], path: Path) -> None:
    width = max(sum(p.width for p in row) for row in rows)
    height = sum(max(p.height for p in row) for row in rows)
    canvas = Image.new("RGB", (width, height), "white")
    y = 0
    for row in rows:
        x = 0
        for pic in row:
            canvas.paste(pic, (x, y))
            x += pic.width
        y += max(p.height for p in row)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    canvas.quantize(256).save(tmp, format="PNG", optimize=True)
    os.replace(tmp, path)


def main() -> None:
    default_realdata = Path(os.environ.get("REALDATA", ROOT.parent / "shared" / "realdata"))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--realdata", type=Path, default=default_realdata, help=f"(default {default_realdata})")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="folder of the two pictures (default docs/)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    files = sorted((args.realdata / FRAMES).glob("*.png"))
    if not files:
        raise SystemExit(f"no frames under {args.realdata / FRAMES}")
    size = read_checkpoint(model_path()).metadata.get("input_size")
    size = tuple(size) if size else None
    model = Predictor.default(input_size=size)
    pretrained = Predictor.from_checkpoint(args.realdata / PRETRAINED, arch="espnet_p2q8", input_size=size)
    threshold = resolve_operating_point(model.metadata).point.threshold
    print(f"default model {model_path().name} ({model.model_id}), input {size}, threshold {threshold:.4g}")
    print("| frame | " + " | ".join(f"{c} %" for c in SHOWN_CLASSES) + " | flagged % | agrees with pretrained % |")
    print("|---|" + "---:|" * (len(SHOWN_CLASSES) + 2))
    label_rows, overlay_rows = [], []
    for file in files:
        rgb = read_rgb(file)
        labels, score = model.predict(rgb)
        base, _ = pretrained.predict(rgb)
        alarm = score >= threshold
        share = np.bincount(labels.ravel(), minlength=len(CLASS_NAMES)) / labels.size
        cells = [f"{100 * share[CLASS_NAMES.index(c)]:.1f}" for c in SHOWN_CLASSES]
        stem = file.name.replace("_leftImg8bit.png", "")
        cells += [f"{100 * alarm.mean():.1f}", f"{100 * (labels == base).mean():.1f}"]
        print(f"| {stem} | " + " | ".join(cells) + " |")
        label_rows.append([_panel(rgb, f"{stem}: camera"), _panel(colorize(labels), "default model: labels")])
        overlay_rows.append(
            [
                _panel(overlay(rgb, alarm), f"score >= threshold {threshold:.3g}: {100 * alarm.mean():.1f} % flagged"),
                _panel(heatmap(score), "anomaly score (higher = more anomalous)"),
            ]
        )
    _grid(label_rows, args.out / "real_cityscapes_labels.png")
    _grid(overlay_rows, args.out / "real_cityscapes_overlay.png")
    print(f"wrote {args.out / 'real_cityscapes_labels.png'} and {args.out / 'real_cityscapes_overlay.png'}")


if __name__ == "__main__":
    main()
