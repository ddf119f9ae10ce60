"""The shipped ego-vehicle masks, made from the real frames, and how well masks transfer between cameras.

Writes

* ``pebal_core/assets/ego_mask_lostandfound.png``: ``pebal mask estimate`` on the 30 FS Lost &
  Found frames (pixels only, no labels), with its picture ``docs/ego_mask_lostandfound.jpg``;
* ``pebal_core/assets/ego_mask_cityscapes.png``: the Cityscapes recording car as the fs_static
  labels mark it (:func:`~pebal_core.alarms.ego_estimate.mask_from_labels`: void in all 30 label
  maps, connected to the bottom row), because the estimate finds no outline on Cityscapes frames
  (below); fs_static is the hold-out the default operating point is chosen on;
* ``--out``/``lostandfound_fold{0,1}.png``: the masks the obstacle-level numbers of the FS Lost &
  Found frames are measured with, each estimated from the *other* half of the frames (fold 0 =
  even positions in name order, fold 1 = odd), so no frame is judged with a mask its own pixels
  made;

and prints (and writes as ``--out``/``ego_masks.json``) what each mask covers of the labelled
bonnets: the FS Lost & Found bonnet (void in every label map, outside the 20-pixel rectification
wedges at the sides, connected to the bottom row) and the Cityscapes one.

    python benchmarks/real_ego_masks.py [--realdata ../shared/realdata] [--out runs/ego_masks]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from pebal_core.alarms.ego_estimate import (
    bottom_connected,
    estimate_and_save,
    estimate_ego_mask,
    mask_from_labels,
)
from pebal_core.alarms.ego_mask import shipped_mask_path, write_ego_mask
from pebal_core.fileio import atomic_write_text
from pebal_core.images import read_label, read_rgb

ROOT = Path(__file__).resolve().parents[1]
SIDE_MARGIN = 20
"""Columns at each side left out of the LostAndFound bonnet (rectification wedges of up to 19 px)."""


def compare(mask: np.ndarray, truth: np.ndarray) -> dict:
    """IoU of ``mask``'s bottom-connected part with ``truth`` and the share of ``truth`` covered."""
    bonnet = bottom_connected(mask, SIDE_MARGIN)
    return {
        "fraction": float(mask.mean()),
        "bonnet_iou": float((bonnet & truth).sum() / max(1, (bonnet | truth).sum())),
        "truth_covered": float((mask & truth).sum() / max(1, truth.sum())),
    }


def frames(files: list[Path]):
    return (read_rgb(f) for f in files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--realdata", type=Path, default=ROOT.parent / "shared" / "realdata", help="realdata folder")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "ego_masks", help="fold masks and JSON")
    args = parser.parse_args(argv)
    vd = args.realdata / "Validation_Dataset"
    laf = vd / "FS_LostFound_full"
    laf_files = sorted((laf / "images").glob("*.png"))
    laf_truth = mask_from_labels(
        (read_label(p) for p in sorted((laf / "labels_masks").glob("*.png"))), side_margin=SIDE_MARGIN
    )
    fs_static = vd / "fs_static"
    cityscapes = mask_from_labels(read_label(p) for p in sorted((fs_static / "labels_masks").glob("*.png")))
    args.out.mkdir(parents=True, exist_ok=True)
    rows = {}

    print("estimating the LostAndFound mask from all 30 frames (the shipped 'lostandfound')")
    shipped = shipped_mask_path("lostandfound")
    names = [f.name for f in laf_files]
    picture = ROOT / "docs" / "ego_mask_lostandfound.jpg"
    print(estimate_and_save(frames(laf_files), names, shipped, picture, force=True, picture_width=640))
    rows["lostandfound: estimate, all 30 FS Lost & Found frames"] = compare(read_label(shipped) > 0, laf_truth)

    for fold in (0, 1):
        other = [f for i, f in enumerate(laf_files) if i % 2 != fold]
        mask = estimate_ego_mask(frames(other)).mask
        write_ego_mask(args.out / f"lostandfound_fold{fold}.png", mask)
        rows[f"fold {fold}: estimate from the 15 frames of the other fold"] = compare(mask, laf_truth)

    write_ego_mask(shipped_mask_path("cityscapes"), cityscapes)
    rows["cityscapes: fs_static labels (void in all 30, bottom-connected)"] = compare(cityscapes, laf_truth)

    city_files = sorted((fs_static / "images").glob("*.jpg"))
    city_files += sorted((args.realdata / "cityscapes_frames" / "fullres_unlabeled").glob("*.png"))
    city_files += sorted((args.realdata / "cityscapes_gtfine_8" / "leftImg8bit").rglob("*.png"))
    estimate = estimate_ego_mask(frames(city_files)).mask
    city_iou = float((estimate & cityscapes).sum() / max(1, (estimate | cityscapes).sum()))
    rows[f"estimate, {len(city_files)} Cityscapes frames"] = {
        **compare(estimate, laf_truth),
        "cityscapes_iou": city_iou,
    }

    road_obstacle = sorted((vd / "RoadObsticle21" / "images").iterdir())
    no_car = estimate_ego_mask(frames(road_obstacle)).mask
    rows["estimate, 30 RoadObstacle21 frames"] = {"fraction": float(no_car.mean())}

    print("\n| mask | share of the frame % | IoU with the LostAndFound bonnet | LostAndFound bonnet covered % |")
    print("|---|---:|---:|---:|")
    for name, r in rows.items():
        iou = f"{r['bonnet_iou']:.3f}" if "bonnet_iou" in r else "–"
        covered = f"{100 * r['truth_covered']:.1f}" if "truth_covered" in r else "–"
        print(f"| {name} | {100 * r['fraction']:.2f} | {iou} | {covered} |")
    print(f"\nCityscapes-frame estimate vs the Cityscapes labels: IoU {city_iou:.3f}")
    atomic_write_text(args.out / "ego_masks.json", json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
