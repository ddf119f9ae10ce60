"""Obstacle-level numbers of a real model on the real single-frame test sets, with per-image evidence.

Every image of FS Lost & Found (``FS_LostFound_full``) and RoadObstacle21 runs through the model at
its recorded input size and through ``pebal eval``'s obstacle-level chain
(:class:`pebal_core.evaluate.ObstacleLevel`) at the model's stored default operating point, each
image on its own (no persistence): labelled obstacles detected, false-alarm obstacles per image,
pixel FPR in the region (docs/alarms.md). The ego-vehicle mask varies, so that each number says
which mask produced it:

* FS Lost & Found: the **fold masks** of ``benchmarks/real_ego_masks.py`` (each image judged with
  the mask estimated from the other half of the frames), and for comparison no mask, the point's
  own mask (``cityscapes``, the hold-out camera's) and the shipped ``lostandfound`` mask (made from
  all 30 frames). Also counted: reported obstacles on the labelled bonnet (the pixels void in every
  label map, connected to the bottom row, outside the 20-px rectification wedges at the sides).
* RoadObstacle21 (1920x1080, a camera that shows no part of its car; the estimate on its frames
  finds none): without a mask.

These are test sets: the operating point was chosen on the fs_static hold-out before, and nothing
here is chosen on them. Writes ``--out/obstacle_level.json`` (totals and per image: the obstacles
missed and the false alarms, boxes in pixels) and ``--picture`` (overlays of the frames with the
most missed obstacles and false alarms: the node's overlay with the mask hatched, missed labelled
obstacles boxed green).

    python benchmarks/real_ego_masks.py   # the fold masks, first
    python benchmarks/real_obstacle_level.py [--realdata ../shared/realdata] [--model default]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from pebal_core.alarms.ego_estimate import mask_from_labels
from pebal_core.data.anomaly_sets import build_anomaly_dataset
from pebal_core.evaluate import EvalOptions, ObstacleLevel, predictor_for, score_item
from pebal_core.fileio import atomic_write, atomic_write_text
from pebal_core.images import read_label
from pebal_core.model_store import resolve_model
from pebal_core.models.checkpoint import load_model
from pebal_core.runtime import recorded_input_size
from pebal_core.visualize import alarm_overlay, caption

ROOT = Path(__file__).resolve().parents[1]
SIDE_MARGIN = 20
"""Columns at each side left out of the labelled bonnet (as in ``real_ego_masks.py``)."""
TILE_WIDTH = 640
MISSED_COLOR = (0, 255, 0)


def evidence_tile(frame, alarms, image: dict, rgb: np.ndarray) -> np.ndarray:
    """The node's overlay of one image with its missed labelled obstacles boxed green, captioned."""
    out = alarm_overlay(replace(frame, rgb=rgb), alarms)  # rgb at the label size (the predictor protocol)
    thickness = max(2, out.shape[0] // 256)
    for missed in image["missed"]:
        u0, v0, u1, v1 = missed["box"]
        cv2.rectangle(out, (u0 - 6, v0 - 6), (u1 + 6, v1 + 6), MISSED_COLOR, thickness)
    h = round(out.shape[0] * TILE_WIDTH / out.shape[1])
    small = cv2.resize(out, (TILE_WIDTH, h), interpolation=cv2.INTER_AREA)
    text = f"{image['name']}: {image['detected']}/{image['labelled']} found, {len(image['false_alarms'])} false"
    return caption(small, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--realdata", type=Path, default=ROOT.parent / "shared" / "realdata", help="realdata folder")
    parser.add_argument("--model", default="default", help="model file or shipped name (default)")
    parser.add_argument("--masks", type=Path, default=ROOT / "runs" / "ego_masks", help="real_ego_masks.py --out")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "obstacle_level", help="JSON output folder")
    parser.add_argument("--picture", type=Path, default=ROOT / "docs" / "real_obstacle_evidence.png")
    args = parser.parse_args(argv)
    vd = args.realdata / "Validation_Dataset"
    model = load_model(resolve_model(args.model)).eval()
    size = recorded_input_size(model.checkpoint_metadata)
    options = EvalOptions(input_size=size, methods=("pebal",), progress=False)
    predictor = predictor_for(model, options)
    folds = [args.masks / f"lostandfound_fold{i}.png" for i in (0, 1)]
    for path in folds:
        if not path.is_file():
            raise SystemExit(f"{path} is missing: run benchmarks/real_ego_masks.py first")
    bonnet = mask_from_labels(
        (read_label(p) for p in sorted((vd / "FS_LostFound_full" / "labels_masks").glob("*.png"))),
        side_margin=SIDE_MARGIN,
    )
    fold = "fold masks (each image: the mask from the other half of the frames)"
    variants = {  # label -> (stored point, ego mask: None = the fold masks)
        "FS_LostFound_full": {
            fold: ("", None),
            "no mask": ("", "none"),
            "the point's own (cityscapes)": ("", ""),
            "lostandfound (all 30 frames)": ("", "lostandfound"),
            f"{fold}, at the fpr:0.01 point": ("fpr:0.01", None),
            f"{fold}, at the obstacles:1 point": ("obstacles:1", None),
        },
        "RoadObsticle21": {
            "no mask": ("", "none"),
            "no mask, at the fpr:0.01 point": ("fpr:0.01", "none"),
            "no mask, at the obstacles:1 point": ("obstacles:1", "none"),
        },
    }
    results, tiles = {}, []
    for name, masks in variants.items():
        dataset = build_anomaly_dataset(f"validation/{name}", vd)
        order = sorted(dataset[i]["name"] for i in range(len(dataset)))
        fold_of = {n: i % 2 for i, n in enumerate(order)}  # as real_ego_masks.py splits the frames
        levels = {}
        for label, (policy, spec) in masks.items():
            specs = [str(folds[0]), str(folds[1])] if spec is None else [spec]
            levels[label] = [ObstacleLevel(model, replace(options, policy=policy, ego_mask=m)) for m in specs]
        shown = []
        on_bonnet = {label: [] for label in masks}
        for i in tqdm(range(len(dataset)), desc=name, unit="img"):
            item = dataset[i]
            scored = score_item(predictor, item, ("pebal",), options, trainids=True)
            for label, level in levels.items():
                counter = level[fold_of[item["name"]]] if len(level) == 2 else level[0]
                frame, alarms = counter.update(item["name"], scored)
                if name == "FS_LostFound_full":
                    hits = [o.index for o in alarms.obstacles if bonnet[alarms.components == o.index + 1].any()]
                    if hits:
                        on_bonnet[label].append({"name": item["name"], "obstacles": len(hits)})
                if label == next(iter(masks)):
                    image = counter.images[-1]
                    problems = len(image["missed"]) + len(image["false_alarms"])
                    shown.append((problems, i, image, counter.resolved.point.ego_mask or "none"))
        results[name] = {}
        for label, level in levels.items():
            merged = [r.report() for r in level]
            totals = {k: sum(m[k] for m in merged) for k in ("frames", "obstacles", "detected", "reported")}
            totals["false_alarms"] = sum(m["false_alarms"] for m in merged)
            inlier = sum(r.counts.inlier_region for r in level)
            flagged = sum(r.counts.flagged_region for r in level)
            results[name][label] = {
                **totals,
                "detection_rate": totals["detected"] / totals["obstacles"],
                "false_alarms_per_frame": totals["false_alarms"] / totals["frames"],
                "pixel_fpr_region": flagged / inlier if inlier else None,
                "point": merged[0]["point"],
                "ego_masks": [m["point"]["ego_mask"] or "none" for m in merged],
                "images_without_ego_mask": sum((m["images_without_ego_mask"] for m in merged), []),
                "per_image": sorted(sum((m["per_image"] for m in merged), []), key=lambda r: r["name"]),
                **({"bonnet_obstacles": on_bonnet[label]} if name == "FS_LostFound_full" else {}),
            }
        # the pictures: the images with the most missed obstacles and false alarms under the first variant
        for _, i, image, mask in sorted(shown, key=lambda t: (-t[0], t[1]))[: 4 if name == "FS_LostFound_full" else 2]:
            item = dataset[i]
            scored = score_item(predictor, item, ("pebal",), options, trainids=True)
            frame, alarms = ObstacleLevel(model, replace(options, ego_mask=mask)).update(item["name"], scored)
            tiles.append(evidence_tile(frame, alarms, image, item["image"]))

    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "obstacle_level.json", json.dumps(results, indent=2) + "\n")
    print(
        "| set | ego mask | images | labelled obstacles detected | false-alarm obstacles / image | "
        "pixel FPR in region % | images with an obstacle on the bonnet |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, rows in results.items():
        for label, r in rows.items():
            bonnet_frames = len(r["bonnet_obstacles"]) if "bonnet_obstacles" in r else "–"
            fpr = "–" if r["pixel_fpr_region"] is None else f"{100 * r['pixel_fpr_region']:.3f}"
            found = f"{r['detected']} / {r['obstacles']} ({100 * r['detection_rate']:.1f} %)"
            print(
                f"| {name} | {label} | {r['frames']} | {found} | {r['false_alarms_per_frame']:.2f} | {fpr} "
                f"| {bonnet_frames} |"
            )
    for name, rows in results.items():
        for label, r in rows.items():
            print(f"{name}, {label}: threshold {r['point']['threshold']:.4f} ({r['point']['policy']})")
    rows = []
    for pair in (tiles[i : i + 2] for i in range(0, len(tiles) - 1, 2)):
        height = max(t.shape[0] for t in pair)
        rows.append(np.concatenate([np.pad(t, ((0, height - t.shape[0]), (0, 0), (0, 0))) for t in pair], axis=1))
    ok, data = cv2.imencode(".png", cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR))
    with atomic_write(args.picture) as tmp:
        tmp.write_bytes(data.tobytes())
    print(f"-> {args.out / 'obstacle_level.json'}, {args.picture}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
