"""Rewrite a model's operating points in the layout the current code writes; weights unchanged.

A model file may keep its points' alarm settings once, in the document's ``source`` (region,
smallest obstacle), beside a bare ``score_threshold`` (and its ``score_threshold_source``); the
reader (:class:`pebal_core.alarms.operating_point.StoredPoints`) reads that layout too. This
script reads such a model's points and writes them back through the one writer
(:func:`pebal_core.operating_point_selection.write_operating_points`): every point with its
settings, the image size its smallest obstacle was counted at (``--image-size``: the size of the
validation images the points were chosen on, which that layout does not record), and none of the
bare-threshold entries. Hold-out thresholds kept under ``score_threshold_best_f1`` /
``score_threshold_tpr95`` move to ``holdout_thresholds`` (where ``benchmarks/real_model.py`` records
them). The tensors are copied bit for bit (checked before the file is replaced).

    python benchmarks/migrate_operating_points.py pebal_core/assets/real_espnet_pebal.safetensors --image-size 1024 2048
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
from safetensors import safe_open

from pebal_core.alarms.operating_point import METADATA_KEY, StoredPoints
from pebal_core.models.checkpoint import copy_with_metadata, read_checkpoint
from pebal_core.operating_point_selection import write_operating_points

HOLDOUT_KEYS = {"score_threshold_best_f1": "best_f1", "score_threshold_tpr95": "tpr95"}
"""Older metadata entry -> its name under ``holdout_thresholds``."""


def tensor_bytes(path: str | os.PathLike) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    """``{name: (dtype, shape, raw bytes)}`` of every tensor of a ``.safetensors`` file."""
    out = {}
    with safe_open(str(path), "pt") as f:
        for name in f.keys():
            t = f.get_tensor(name).contiguous()
            out[name] = (str(t.dtype), tuple(t.shape), t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return out


def migrate(src: str | os.PathLike, dst: str | os.PathLike, image_size: tuple[int, int] | None) -> Path:
    """Write ``src`` to ``dst`` with its operating points in the current layout (module docstring)."""
    meta = read_checkpoint(src).metadata
    stored = StoredPoints.from_metadata(meta)
    if not meta.get(METADATA_KEY):
        raise SystemExit(f"{src} stores no operating points to migrate")
    points = {name: replace(p, image_size=image_size) for name, p in stored.points.items()}
    source = {k: v for k, v in stored.source.items() if k not in ("region", "include_sidewalk", "min_pixels")}
    images = (meta.get("score_threshold_source") or {}).get("images")
    if isinstance(images, str):  # the hold-out's description, where the root was a temporary folder
        source["dataset_root"] = images
    stored = replace(stored, points=points, source=source)
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "staged.safetensors"
        holdout = {new: meta[old] for old, new in HOLDOUT_KEYS.items() if old in meta}
        if holdout:
            copy_with_metadata(src, staged, {"holdout_thresholds": holdout}, remove=tuple(HOLDOUT_KEYS))
        else:
            shutil.copy(src, staged)
        written = write_operating_points(staged, Path(tmp) / "out.safetensors", stored, meta.get("input_size"))
        if tensor_bytes(written) != tensor_bytes(src):
            raise SystemExit(f"the weights of {src} changed on the way; nothing written")
        os.replace(shutil.copy(written, Path(dst).with_suffix(".partial")), dst)
    return Path(dst)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="the model file, rewritten in place")
    parser.add_argument(
        "--image-size", type=int, nargs=2, metavar=("H", "W"), help="size of the images the points were chosen on"
    )
    args = parser.parse_args(argv)
    migrate(args.model, args.model, tuple(args.image_size) if args.image_size else None)
    stored = StoredPoints.from_metadata(read_checkpoint(args.model).metadata)
    print(f"{args.model}: {stored.points[stored.default].describe()}; weights unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main())
