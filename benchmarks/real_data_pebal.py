"""PEBAL on a real model: fine-tune the real Cityscapes ENet's final block, measure it on real anomalies.

Steps (each skipped with ``--resume`` when its output exists):

1. **Inlier tree** (:func:`realdata_inliers.build_inlier_tree`): the real
   Cityscapes frames of ``realdata`` (20 fs_static images with their pasted objects and void made
   void, ``frankfurt_000000_000576``) at 1024x512 in the Cityscapes layout, with the pretrained
   ENet's own predictions as targets (pseudo-labels); 10 fs_static images with pasted objects are
   held out as the validation set, ``frankfurt_000000_000294`` (the labelled frame) for mIoU.
2. **Outlier exposure**: ``pebal synth --parts coco`` (synthetic OE objects; the real COCO is not
   available here).
3. **Training**, once per candidate learning rate: ``pebal train --config
   config/realdata_pebal_enet.yaml data.cityscapes=... data.coco=... out_dir=... optim.lr=LR``
   (a subprocess: the project's trainer, unchanged).
4. **Selection** on the held-out fs_static images only (``validation/fs_static_holdout``, real
   pasted-object labels): the candidate with the highest AP of the PEBAL score. The four test sets
   are not read before this choice is made.
5. **Test**: the pretrained ENet and the selected model on RoadAnomaly, RoadAnomaly21,
   RoadObsticle21 and FS_LostFound_full with the course protocol (``--resize-protocol course``,
   FPR95 ``ood_metrics``), every score from one forward pass; inlier mIoU on the labelled frame
   before and after (realdata README §2 protocol, ``mean_iou(average_over="gt")``).
6. The tables replace the section between the markers in ``--doc``.

Regenerate (about an hour on the 2-core CPU machine)::

    .venv/bin/python benchmarks/real_data_pebal.py --doc docs/real_data_results.md

``--no-test`` stops after the selection (what was used while choosing settings);
``--train-overrides KEY=VALUE ...`` passes extra keys to every ``pebal train`` (smoke runs).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from real_data_baselines import DEFAULT_REALDATA, RESOLUTIONS, cached_evaluation, eval_options, prevalence
from real_data_baselines import SET_TITLES as BASELINE_SET_TITLES
from realdata_inliers import (
    ENET_CHECKPOINT,
    FS_STATIC_HOLDOUT,
    HOLDOUT_SET,
    build_inlier_tree,
    labelled_frame_miou,
)

from pebal_core.evaluate import METHOD_NAMES
from pebal_core.fileio import atomic_write_text, replace_between_markers
from pebal_core.models.checkpoint import load_model
from pebal_core.scoring import METHODS

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "realdata_pebal_enet.yaml"
TEST_SETS = ("RoadAnomaly21", "RoadObsticle21", "FS_LostFound_full", "RoadAnomaly")
SET_TITLES = {**BASELINE_SET_TITLES, HOLDOUT_SET: "fs_static hold-out (10)"}
LEARNING_RATES = (1e-5, 1e-4, 1e-3)
OE_SEED = 0
BEGIN, END = "<!-- real_data_pebal:begin -->", "<!-- real_data_pebal:end -->"


def run_dir(out: Path, lr: float) -> Path:
    return out / "runs" / f"lr{lr:g}"


def build_inputs(args: argparse.Namespace) -> dict:
    """Steps 1-2: the inlier tree and the OE objects; returns the tree's manifest."""
    tree = args.out / "tree"
    if not (tree / "manifest.json").is_file():
        enet = args.realdata / ENET_CHECKPOINT
        print("== building the inlier tree", flush=True)
        build_inlier_tree(
            args.realdata, tree, load_model(enet, arch="enet"), model_file=enet, progress=not args.no_progress
        )
    oe = args.out / "oe"
    if not (oe / "coco").is_dir():
        print("== synthetic outlier-exposure objects", flush=True)
        pebal = [sys.executable, "-m", "pebal_core.cli"]
        subprocess.run(
            [*pebal, "synth", "--out", str(oe), "--seed", str(OE_SEED), "--parts", "coco", "--quiet"], check=True
        )
    return json.loads((tree / "manifest.json").read_text())


def train_command(args: argparse.Namespace, lr: float) -> list[str]:
    """The ``pebal train`` command of one candidate (as a shell-ready argument list)."""
    return [
        "pebal",
        "train",
        "--config",
        str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config),
        f"model.base={args.realdata / ENET_CHECKPOINT}",
        f"data.cityscapes={args.out / 'tree' / 'cityscapes'}",
        f"data.coco={args.out / 'oe' / 'coco'}",
        f"out_dir={run_dir(args.out, lr)}",
        f"optim.lr={lr:g}",
        *args.train_overrides,
    ]


def train_candidates(args: argparse.Namespace) -> dict[float, dict]:
    """Step 3: one ``pebal train`` per learning rate (resumed / skipped when already done)."""
    runs = {}
    for lr in args.lrs:
        model = run_dir(args.out, lr) / "model.safetensors"
        seconds = None
        if not model.is_file():
            cmd = train_command(args, lr)
            print("== " + " ".join(cmd), flush=True)
            t0 = time.perf_counter()
            extra = ["--no-progress"] if args.no_progress else []
            subprocess.run([sys.executable, "-m", "pebal_core.cli", *cmd[1:], *extra], cwd=ROOT, check=True)
            seconds = time.perf_counter() - t0
            atomic_write_text(run_dir(args.out, lr) / "train_seconds.txt", f"{seconds:.1f}\n")
        timing = run_dir(args.out, lr) / "train_seconds.txt"
        if seconds is None and timing.is_file():
            seconds = float(timing.read_text())
        history = [json.loads(line) for line in (run_dir(args.out, lr) / "history.jsonl").read_text().splitlines()]
        runs[lr] = {"model": model, "seconds": seconds, "last": history[-1]}
    return runs


def evaluate_to(args: argparse.Namespace, checkpoint: Path, dataset: str, root: Path, out: Path, res: str) -> dict:
    """One ``pebal eval`` run at resolution ``res`` (course protocol), cached with ``--resume``."""
    arch = "enet" if checkpoint.suffix == ".pth" else None
    return cached_evaluation(
        checkpoint, dataset, root, out, eval_options(res, not args.no_progress), arch, args.resume
    )


def cell(r: dict) -> str:
    return f"{100 * r['ap']:.2f} / {100 * r['fpr95']:.2f} / {100 * r['auroc']:.2f}"


def selection_table(pre: dict, candidates: dict[float, dict], miou: dict, chosen: float) -> list[str]:
    md = [
        f"Validation set: fs_static images {', '.join(map(str, FS_STATIC_HOLDOUT))} (held out of training; "
        f"{pre['n_images']} images, anomaly px {prevalence(pre):.3f} %), 512x1024, course protocol. "
        "Cells AP / FPR95 / AUROC in %.",
        "",
        "| model | PEBAL score (smoothed energy) | best other score of the same model | mIoU 20-way / 19-way | "
        "last PAL / EBM | train time |",
        "|---|---|---|---|---|---:|",
    ]
    rows = [("pretrained ENet", pre, miou["pretrained"], None)] + [
        (f"lr {lr:g}" + (" (selected)" if lr == chosen else ""), c["holdout"], miou[lr], c)
        for lr, c in candidates.items()
    ]
    for name, report, m, c in rows:
        methods = report["methods"]
        other = max((k for k in methods if k != "pebal"), key=lambda k: methods[k]["ap"])
        losses = f"{c['last']['pal']:.3f} / {c['last']['ebm']:.3f}" if c else "–"
        seconds = f"{c['seconds']:.0f} s" if c and c["seconds"] else "–"
        md.append(
            f"| {name} | {cell(methods['pebal'])} | {METHOD_NAMES[other]}: {cell(methods[other])} | "
            f"{m['miou_20']:.2f} / {m['miou_19']:.2f} | {losses} | {seconds} |"
        )
    return md


def test_tables(tests: dict, chosen: float) -> tuple[list[str], list[str]]:
    """The full table per resolution, and the PEBAL vs best-baseline summary."""
    full, summary = [], []
    for res, by_model in tests.items():
        pre, fin = by_model["pretrained"], by_model["pebal"]
        sets = list(pre)
        full += [
            f"#### {res} input",
            "",
            "| model | score | " + " | ".join(SET_TITLES[s] for s in sets) + " |",
            "|---|---|" + "---:|" * len(sets),
            "| | images used / anomaly px % | "
            + " | ".join(f"{pre[s]['n_images']} / {prevalence(pre[s]):.3f}" for s in sets)
            + " |",
        ]
        for tag, reports in (("pretrained ENet", pre), (f"PEBAL ENet (lr {chosen:g})", fin)):
            for m in METHODS:
                if m in reports[sets[0]]["methods"]:
                    full.append(
                        f"| {tag} | {METHOD_NAMES[m]} | "
                        + " | ".join(cell(reports[s]["methods"][m]) for s in sets)
                        + " |"
                    )
        full += ["", "Cells: AP / FPR95 (ood_metrics) / AUROC, in %.", ""]
        summary += [
            f"#### {res} input: fine-tuned PEBAL score vs the best pretrained baseline",
            "",
            "| set | PEBAL AP | best baseline AP | PEBAL FPR95 | best baseline FPR95 |",
            "|---|---:|---:|---:|---:|",
        ]
        for s in sets:
            p = fin[s]["methods"]["pebal"]
            base = pre[s]["methods"]
            best_ap = max(base, key=lambda k: base[k]["ap"])
            best_fpr = min(base, key=lambda k: base[k]["fpr95"])
            ap_cell = f"{100 * base[best_ap]['ap']:.2f} ({METHOD_NAMES[best_ap]})"
            fpr_cell = f"{100 * base[best_fpr]['fpr95']:.2f} ({METHOD_NAMES[best_fpr]})"
            summary.append(
                f"| {SET_TITLES[s]} | {100 * p['ap']:.2f} | {ap_cell} | {100 * p['fpr95']:.2f} | {fpr_cell} |"
            )
        summary.append("")
    return full, summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--realdata", type=Path, default=DEFAULT_REALDATA, help="realdata folder (default ../shared/realdata)"
    )
    p.add_argument("--out", type=Path, default=Path("real_data_pebal_out"), help="tree, OE objects, runs, reports")
    p.add_argument("--config", type=Path, default=CONFIG, help="pebal train configuration (default %(default)s)")
    p.add_argument("--lrs", type=float, nargs="+", default=LEARNING_RATES, help="candidate learning rates")
    p.add_argument("--resolutions", nargs="+", choices=tuple(RESOLUTIONS), default=("512x1024",))
    p.add_argument("--sets", nargs="+", choices=TEST_SETS, default=TEST_SETS)
    p.add_argument("--train-overrides", nargs="*", default=[], metavar="KEY=VALUE", help="extra pebal train keys")
    p.add_argument("--resume", action="store_true", help="reuse finished steps found in --out")
    p.add_argument("--no-test", action="store_true", help="stop after selecting on the validation set")
    p.add_argument("--doc", type=Path, help="Markdown file whose marked section receives the tables")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if not (args.realdata / "Validation_Dataset").is_dir():
        p.error(f"{args.realdata}/Validation_Dataset not found; pass --realdata")
    args.out, args.realdata = args.out.resolve(), args.realdata.resolve()
    if args.out.exists() and not args.resume:
        p.error(f"{args.out} exists: pass --resume to reuse it, or remove it")

    t0 = time.perf_counter()
    manifest = build_inputs(args)
    candidates = train_candidates(args)
    pretrained = args.realdata / ENET_CHECKPOINT
    holdout_root = args.out / "tree" / "validation"
    dataset = f"validation/{HOLDOUT_SET}"
    pre_holdout = evaluate_to(args, pretrained, dataset, holdout_root, args.out / "val" / "pretrained", "512x1024")
    for lr, c in candidates.items():
        c["holdout"] = evaluate_to(args, c["model"], dataset, holdout_root, args.out / "val" / f"lr{lr:g}", "512x1024")
    chosen = max(candidates, key=lambda lr: candidates[lr]["holdout"]["methods"]["pebal"]["ap"])
    miou = {"pretrained": labelled_frame_miou(load_model(pretrained, arch="enet"), args.realdata)}
    for lr, c in candidates.items():
        miou[lr] = labelled_frame_miou(load_model(c["model"]), args.realdata)
    print(f"selected lr {chosen:g} on {HOLDOUT_SET}", flush=True)
    selection = selection_table(pre_holdout, candidates, miou, chosen)
    print("\n".join(selection))
    if args.no_test:
        return 0

    tests: dict = {}
    val_root = args.realdata / "Validation_Dataset"
    for res in args.resolutions:
        for tag, ckpt in (("pretrained", pretrained), ("pebal", candidates[chosen]["model"])):
            for s in args.sets:
                out = args.out / "test" / tag / res / s
                tests.setdefault(res, {}).setdefault(tag, {})[s] = evaluate_to(
                    args, ckpt, f"validation/{s}", val_root, out, res
                )
    full, summary = test_tables(tests, chosen)
    wall = time.perf_counter() - t0
    n_void = sum(f["void_share"] for f in manifest["train"]) / len(manifest["train"])
    before, after = miou["pretrained"], miou[chosen]
    generated = [
        "### Selection on the held-out fs_static images",
        "",
        *selection,
        "",
        f"Selected: **lr {chosen:g}** (highest PEBAL-score AP on the hold-out). Training tree: "
        f"{len(manifest['train'])} frames at {manifest['size'][1]}x{manifest['size'][0]}, {100 * n_void:.1f} % "
        "of their pixels void on average (pasted objects, Cityscapes void, the model's own void predictions).",
        "",
        "### Test sets",
        "",
        *summary,
        "Inlier mIoU on the labelled frame `frankfurt_000000_000294` (held out of training; realdata README "
        '§2 protocol, mean over ground-truth classes, `mean_iou(average_over="gt")`): '
        f"20-way argmax {before['miou_20']:.2f} % before, {after['miou_20']:.2f} % after; 19-way (inlier) argmax "
        f"{before['miou_19']:.2f} % before, {after['miou_19']:.2f} % after. Pixel accuracy (20-way) "
        f"{before['acc_20']:.2f} % / {after['acc_20']:.2f} %.",
        "",
        *full,
        f"Wall time of this invocation: {wall:.0f} s"
        + (" (steps reused from an earlier invocation with --resume)." if args.resume else "."),
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
