"""The ablation behind the real default model: paste mode, fine-tuned block, base network.

Each run is ``benchmarks/real_model.py --run NAME --stages train,select`` with the recipe's
configuration and a few overrides (:data:`RUNS`); every run is judged on the hold-out data only
(the fs_static hold-out, the road hold-out, CamVid val: ``real_model.py``'s ``select`` stage),
so nothing here reads a test set. Runs are resumable, and skipped once their ``chosen.json``
exists; ``--runs`` picks some (``--runs`` without names: none, only the table). ``--doc``
rewrites the table between the ``real_ablation`` markers of ``docs/real_data_results.md`` from the
finished runs' ``chosen.json``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/real_ablation.py --out runs/ablation --doc docs/real_data_results.md
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import real_model

from pebal_core.fileio import replace_between_markers

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Run:
    """One ablation run: its name, base network, configuration file and ``key=value`` overrides."""

    name: str
    arch: str
    what: str
    config: str | None = None
    overrides: tuple[str, ...] = field(default_factory=tuple)


PSEUDO = (
    "data.extra_inliers=[{cityscapes: ../shared/realdata/cityscapes_gtfine_8, split: train, size: [512, 1024], "
    "repeat: 10, ego_vehicle: inlier, in_memory: true}, "
    "{cityscapes: '@pseudo_inliers', split: train, repeat: 10, in_memory: true}]"
)
"""The recipe's inliers and the 12 pseudo-labelled Cityscapes frames (``real_model.build_pseudo_inliers``)."""

DECODER = ("model.finetune=decoder", "optim.stage_lr_scale=1.0")
"""The decoder block only (the recipe trains the encoder's last stage too)."""

RUNS = (
    Run("paper_camvid_decoder", "espnet_p2q8", "CamVid only, paper paste, COCO train+val, margins -9 / -4",
        "config/realdata_camvid_espnet.yaml"),
    Run("paper_decoder", "espnet_p2q8", "CamVid + Cityscapes-8, paper paste", overrides=("data.paste=paper", *DECODER)),
    Run("both_decoder", "espnet_p2q8", "CamVid + Cityscapes-8, paper + road paste (1:1)",
        overrides=("data.paste=both", *DECODER)),
    Run("road_decoder", "espnet_p2q8", "CamVid + Cityscapes-8, road paste", overrides=DECODER),
    Run("road_last_stage", "espnet_p2q8", "as road_decoder, + the encoder's last stage at the same rate",
        overrides=("optim.stage_lr_scale=1.0",)),
    Run("road_last_stage_slow", "espnet_p2q8", "the recipe: as road_decoder, + the encoder's last stage at a "
        "tenth of the rate"),
    Run("road_pseudo_decoder", "espnet_p2q8", "as road_decoder, + 12 pseudo-labelled Cityscapes frames",
        overrides=(PSEUDO, *DECODER)),
)  # fmt: skip
"""The runs, in the order they are trained."""


def run_args(run: Run, args: argparse.Namespace, stages: str) -> list[str]:
    argv = ["--arch", run.arch, "--out", args.out, "--run", run.name, "--realdata", args.realdata, "--stages", stages]
    if run.config:
        argv += ["--config", str(ROOT / run.config)]
    if run.overrides:
        argv += ["--set", *run.overrides]
    return argv


def table(args: argparse.Namespace) -> str:
    """The ablation table (markdown) of the finished runs."""
    lines = [
        "| run | base | what | steps | chosen | fs_static hold-out AP / FPR95 | road hold-out AP / FPR95 "
        "| CamVid val mIoU | train wall, min |",
        "|---|---|---|---:|---|---:|---:|---:|---:|",
    ]
    for run in RUNS:
        d = Path(args.out) / run.arch / run.name
        if not (d / "chosen.json").is_file():
            continue
        sel = json.loads((d / "chosen.json").read_text())
        rows = sel["rows"]
        pick = sel["chosen"] or sel["best_without_inlier_floor"]
        chosen = rows[pick]
        note = "" if sel["chosen"] else " (none within the inlier floor; best by the hold-outs)"
        base = rows["base"]
        wall = json.loads((d / "train_wall.json").read_text())["seconds"] if (d / "train_wall.json").is_file() else []
        steps = max(int(n.split("_")[1]) for n in rows if n.startswith("step_"))
        if run is RUNS[0]:
            lines.append(
                f"| pretrained | {run.arch} | smoothed energy, no fine-tuning | 0 | – | "
                f"{cell(base, 'fs_static_holdout')} | {cell(base, 'road_holdout')} | "
                f"{100 * base['camvid_val']['miou']:.2f} | – |"
            )
        lines.append(
            f"| {run.name} | {run.arch} | {run.what} | {steps} | {pick.replace('step_', 'step ')}{note} | "
            f"{cell(chosen, 'fs_static_holdout')} | {cell(chosen, 'road_holdout')} | "
            f"{100 * chosen['camvid_val']['miou']:.2f} | {sum(wall) / 60:.0f} |"
        )
    return "\n".join(lines)


def cell(row: dict, key: str) -> str:
    r = row[key]["pebal"]
    return f"{100 * r['ap']:.2f} / {100 * r['fpr95']:.2f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/ablation", help="working folder of the runs")
    p.add_argument("--realdata", default=str(real_model.DEFAULT_REALDATA), help="the realdata folder")
    p.add_argument("--runs", nargs="*", default=None, help="names of the runs to do (default all)")
    p.add_argument("--doc", type=Path, default=None, help="rewrite this document's real_ablation section")
    args = p.parse_args(argv)
    for run in RUNS:
        if args.runs is not None and run.name not in args.runs:
            continue
        if (Path(args.out) / run.arch / run.name / "chosen.json").is_file():
            continue
        print(f"== {run.name}: {run.what}", file=sys.stderr, flush=True)
        real_model.main(run_args(run, args, "train,select"))
    text = table(args)
    print(text)
    if args.doc:
        replace_between_markers(args.doc, "<!-- real_ablation:begin -->", "<!-- real_ablation:end -->", [text])
    return 0


if __name__ == "__main__":
    sys.exit(main())
