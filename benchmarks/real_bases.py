"""Inlier quality of the zoo's real Cityscapes bases: what a PEBAL fine-tuning of each must keep.

For every base of ``real_data_baselines.MODELS`` (the realdata checkpoints, loaded by ``arch``):

* **CamVid test** (233 frames, native 480x360 through the Predictor, zero-padded to the model's
  size divisor), mIoU over the 9 classes that map one-to-one onto Cityscapes trainIds
  (``pebal_core.data.camvid.camvid_miou``), the inlier-cost measure of docs/real_data_results.md;
* **the 8 real Cityscapes frames** of ``cityscapes_gtfine_8`` (train frames every base saw) at the
  course protocol's 512x1024 through the Predictor, labels compared at full resolution: pixel
  accuracy (void excluded) and mIoU over the classes present in the ground truth.

Each base's numbers go to ``--out/<arch>.json`` (``--resume`` reuses them); the Markdown table is
printed and, with ``--doc``, written between the ``real_bases`` markers::

    .venv/bin/python benchmarks/real_bases.py --doc docs/real_data_results.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from real_data_baselines import DEFAULT_REALDATA, MODELS

from pebal_core.data.camvid import CamVid, camvid_miou
from pebal_core.data.cityscapes import Cityscapes
from pebal_core.evaluate import EvalOptions, inlier_confusion
from pebal_core.fileio import replace_between_markers
from pebal_core.metrics import mean_iou
from pebal_core.models.checkpoint import load_model

CITYSCAPES_SIZE = (512, 1024)
BEGIN, END = "<!-- real_bases:begin -->", "<!-- real_bases:end -->"


def measure(arch: str, realdata: Path, progress: bool) -> dict:
    """CamVid test mIoU (9 classes) and the 8 Cityscapes frames' accuracy / mIoU of one base, in %."""
    model = load_model(realdata / MODELS[arch], arch=arch).eval()
    t0 = time.perf_counter()
    camvid = inlier_confusion(model, CamVid(realdata / "camvid", "test"), EvalOptions(progress=progress), "CamVid")
    miou, per_class = camvid_miou(camvid)
    frames = Cityscapes(realdata / "cityscapes_gtfine_8", "train")
    conf = inlier_confusion(model, frames, EvalOptions(input_size=CITYSCAPES_SIZE, progress=progress), "Cityscapes")
    return {
        "arch": arch,
        "checkpoint": MODELS[arch],
        "camvid_test_miou": 100 * miou,
        "camvid_test_per_class": {k: 100 * v for k, v in per_class.items()},
        "cityscapes8_pixel_accuracy": 100 * float(np.trace(conf) / conf.sum()),
        "cityscapes8_miou": 100 * mean_iou(conf, average_over="gt")[0],
        "cityscapes8_size": list(CITYSCAPES_SIZE),
        "seconds": time.perf_counter() - t0,
    }


def table(rows: list[dict]) -> list[str]:
    classes = list(rows[0]["camvid_test_per_class"])
    return [
        "| base | CamVid test mIoU (9 classes) | "
        + " | ".join(classes)
        + " | Cityscapes 8 frames: pixel acc. | mIoU (classes in GT) |",
        "|---|" + "---:|" * (len(classes) + 3),
        *(
            f"| {r['arch']} | {r['camvid_test_miou']:.2f} | "
            + " | ".join(f"{r['camvid_test_per_class'][c]:.2f}" for c in classes)
            + f" | {r['cityscapes8_pixel_accuracy']:.2f} | {r['cityscapes8_miou']:.2f} |"
            for r in rows
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--realdata", type=Path, default=DEFAULT_REALDATA, help="realdata folder (default ../shared/realdata)"
    )
    p.add_argument("--out", type=Path, default=Path("real_bases_out"), help="per-base results go here")
    p.add_argument("--models", nargs="+", choices=tuple(MODELS), default=tuple(MODELS))
    p.add_argument("--resume", action="store_true", help="reuse <out>/<arch>.json files")
    p.add_argument("--doc", type=Path, help="Markdown file whose marked section receives the table")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if not (args.realdata / "camvid").is_dir():
        p.error(f"{args.realdata}/camvid not found; pass --realdata")
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for arch in args.models:
        path = args.out / f"{arch}.json"
        if not (args.resume and path.is_file()):
            print(f"== {arch}", flush=True)
            path.write_text(json.dumps(measure(arch, args.realdata, not args.no_progress), indent=2) + "\n")
        rows.append(json.loads(path.read_text()))
    seconds = sum(r["seconds"] for r in rows)
    generated = [
        *table(rows),
        "",
        f"CamVid: native 480x360 through the Predictor, per-class IoU in %. Cityscapes: the 8 train frames of "
        f"`cityscapes_gtfine_8` at {CITYSCAPES_SIZE[0]}x{CITYSCAPES_SIZE[1]}, labels at 2048x1024, void excluded. "
        f"Evaluation time {seconds:.0f} s (torch {torch.__version__}, CPU).",
    ]
    print("\n".join(generated))
    if args.doc is not None:
        try:
            replace_between_markers(args.doc, BEGIN, END, generated)
        except ValueError as e:
            raise SystemExit(str(e)) from None
        print(f"updated {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
