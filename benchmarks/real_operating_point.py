"""Store the alarm operating points of a real-data model, chosen on the fs_static hold-out.

``make real-model`` ships the model without operating points (``benchmarks/real_model.py``); this
step runs ``pebal threshold`` on the same fixed hold-out, Fishyscapes Static validation images
0-14 (Cityscapes frames with pasted objects; none of the test sets), all 15 of them, frames
without anomaly pixels included (they count false alarms), and stores in the model (through the
one writer, :func:`pebal_core.operating_point_selection.write_operating_points`; weights unchanged)
every policy (``tpr95``, ``fpr:<x>``, ``fa:<x>``, ``obstacles:<x>``) with the settings it was chosen
with: the drivable region, obstacles of at least ``--min-pixels`` pixels at the hold-out's
2048x1024 (320 px there is the 20 px of a 256x512 frame), the persistence filter for sequences,
and the hold-out camera's ego-vehicle mask (``--ego-mask``, the shipped ``cityscapes`` mask: the
Cityscapes car's bonnet, star and rectification border, which the fs_static labels mark void), so
the recording car never counts as a false alarm while choosing.

The default, ``obstacles:0.5``, is chosen by what a driver experiences: of the candidate
thresholds, the one that detects the most labelled obstacles on the hold-out while raising at
most 0.5 false-alarm obstacles per frame (obstacles counted as ``pebal eval`` counts them,
docs/alarms.md). Every stored point also records its obstacle counts on the hold-out (the table
this script prints).

    python benchmarks/real_operating_point.py --model pebal_core/assets/real_espnet_pebal.safetensors
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from pebal_core.alarms.operating_point import StoredPoints
from pebal_core.models.checkpoint import read_checkpoint
from pebal_core.operating_point_selection import write_operating_points

ROOT = Path(__file__).resolve().parents[1]
HOLDOUT = range(15)
"""fs_static images of the hold-out (by their number)."""
POLICIES = (
    "tpr95",
    "fpr:0.01",
    "fpr:0.001",
    "fa:1",
    "fa:0.3",
    "fa:0.1",
    "obstacles:1",
    "obstacles:0.5",
    "obstacles:0.1",
)


def holdout_tree(realdata: Path, dst: Path) -> Path:
    """A Validation_Dataset-layout folder ``dst/fs_static`` of symbolic links to the hold-out images."""
    src = realdata / "Validation_Dataset" / "fs_static"
    for sub in ("images", "labels_masks"):
        (dst / "fs_static" / sub).mkdir(parents=True)
    for i in HOLDOUT:
        image = next((src / "images").glob(f"{i}.*"))
        os.symlink(image, dst / "fs_static" / "images" / image.name)
        os.symlink(src / "labels_masks" / f"{i}.png", dst / "fs_static" / "labels_masks" / f"{i}.png")
    return dst


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="the real-data model; rewritten in place")
    parser.add_argument("--realdata", type=Path, default=ROOT.parent / "shared" / "realdata", help="realdata folder")
    parser.add_argument("--default", default="obstacles:0.5", help="the model's default point (obstacles:0.5)")
    parser.add_argument("--min-pixels", type=int, default=320, help="smallest false-alarm obstacle (320 px)")
    parser.add_argument("--ego-mask", default="cityscapes", help="ego-vehicle mask of the hold-out camera (cityscapes)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tree = holdout_tree(args.realdata, Path(tmp) / "holdout")
        points = Path(tmp) / "points.safetensors"
        cmd = [sys.executable, "-m", "pebal_core.cli", "threshold", "--model", str(args.model),
               "--dataset", "validation/fs_static", "--root", str(tree), "--keep-all-images",
               "--min-pixels", str(args.min_pixels), "--default", args.default, "--write", str(points),
               "--ego-mask", args.ego_mask]  # fmt: skip
        for policy in POLICIES:
            cmd += ["--policy", policy]
        subprocess.run(cmd, check=True)
        meta = read_checkpoint(points).metadata
        stored = StoredPoints.from_metadata(meta)
        images = f"Validation_Dataset/fs_static {HOLDOUT.start}-{HOLDOUT.stop - 1} (the fixed hold-out)"
        stored = replace(stored, source={**stored.source, "dataset_root": images})
        out = Path(tmp) / "model.safetensors"
        write_operating_points(args.model, out, stored, meta.get("input_size"))
        os.replace(shutil.copy(out, args.model.with_suffix(".tmp")), args.model)  # atomic on one file system
    print(f"{args.model}: {stored.points[stored.default].describe()} on the fs_static hold-out")
    return 0


if __name__ == "__main__":
    sys.exit(main())
