"""PEBAL against the uncertainty baselines on the synthetic world (the project's table).

Rows: MSP, MaxLogit, entropy and energy computed on the *pretrained* model (what a team has
before fine-tuning), and PEBAL (smoothed free energy) on the *fine-tuned* model; columns: AUROC /
AP / FPR95 (reference-PEBAL definition, %) on both synthetic Fishyscapes splits (test anomaly
families never used for outlier exposure), plus inlier mIoU on the synthetic Cityscapes val split
before and after fine-tuning. Targets: mIoU >= 70 %; PEBAL AP at least 15 points above
the best baseline and PEBAL FPR95 at most half of the best baseline's, on each split; mIoU drop
from fine-tuning <= 1 point.

    python benchmarks/bench_synthetic.py --world runs/world --pretrained pre.safetensors \\
        --finetuned pebal.safetensors [--json out.json]

``make synthetic-model`` runs it on the models it trains.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pebal_core.data.anomaly_sets import build_anomaly_dataset
from pebal_core.data.cityscapes import Cityscapes
from pebal_core.evaluate import EvalOptions, evaluate, inlier_confusion
from pebal_core.fileio import atomic_write_text
from pebal_core.metrics import mean_iou
from pebal_core.models.checkpoint import load_model
from pebal_core.scoring import BASELINES

SPLITS = ("LostAndFound", "Static")
NAMES = {"msp": "MSP", "maxlogit": "MaxLogit", "entropy": "Entropy", "energy": "Energy", "pebal": "PEBAL"}


def measure(world: Path, pretrained: Path, finetuned: Path, progress: bool = True) -> dict:
    """Every number of the table, as a dict (fractions, not %)."""
    options = EvalOptions(progress=progress)
    models = {"pretrained": load_model(pretrained), "finetuned": load_model(finetuned)}
    val = Cityscapes(world / "cityscapes", "val")
    out: dict = {"miou": {}, "splits": {}}
    for key, model in models.items():
        out["miou"][key] = mean_iou(inlier_confusion(model, val, options, desc=f"mIoU {key}"))[0]
    for split in SPLITS:
        data = build_anomaly_dataset("synthetic", world, split=split)
        base = evaluate(models["pretrained"], data, EvalOptions(methods=BASELINES, progress=progress))
        tuned = evaluate(models["finetuned"], data, EvalOptions(methods=("pebal",), progress=progress))
        rows = {m: base["methods"][m] for m in BASELINES} | {"pebal": tuned["methods"]["pebal"]}
        out["splits"][split] = {m: {k: r[k] for k in ("auroc", "ap", "fpr95")} for m, r in rows.items()}
        out["splits"][split]["threshold_tpr95"] = tuned.get("score_threshold")
    return out


def checks(result: dict) -> list[tuple[str, bool]]:
    """The project's targets for this table, each as (description, met)."""
    miou = result["miou"]
    items = [
        (f"inlier mIoU of the fine-tuned model {100 * miou['finetuned']:.1f} % >= 70 %", miou["finetuned"] >= 0.70),
        (
            f"mIoU drop {100 * (miou['pretrained'] - miou['finetuned']):.2f} points <= 1",
            miou["pretrained"] - miou["finetuned"] <= 0.01,
        ),
    ]
    for split, rows in result["splits"].items():
        best_ap = max(rows[m]["ap"] for m in BASELINES)
        best_fpr = min(rows[m]["fpr95"] for m in BASELINES)
        ap, fpr = rows["pebal"]["ap"], rows["pebal"]["fpr95"]
        items.append(
            (f"{split}: PEBAL AP {100 * ap:.1f} >= best baseline {100 * best_ap:.1f} + 15", ap >= best_ap + 0.15)
        )
        items.append(
            (f"{split}: PEBAL FPR95 {100 * fpr:.1f} <= best baseline {100 * best_fpr:.1f} / 2", fpr <= best_fpr / 2)
        )
    return items


def markdown(result: dict) -> str:
    """The table as Markdown (values in %)."""
    head = "| score (model) | " + " | ".join(f"{s} AUROC / AP / FPR95" for s in SPLITS) + " |"
    lines = [head, "|---|" + "---|" * len(SPLITS)]
    for m in (*BASELINES, "pebal"):
        model = "fine-tuned" if m == "pebal" else "pretrained"
        cells = []
        for split in SPLITS:
            r = result["splits"][split][m]
            cells.append(f"{100 * r['auroc']:.2f} / {100 * r['ap']:.2f} / {100 * r['fpr95']:.2f}")
        lines.append(f"| {NAMES[m]} ({model}) | " + " | ".join(cells) + " |")
    miou = result["miou"]
    lines.append("")
    lines.append(
        f"Inlier mIoU on the synthetic Cityscapes val split: {100 * miou['pretrained']:.2f} % before "
        f"fine-tuning, {100 * miou['finetuned']:.2f} % after."
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", type=Path, required=True, help="`pebal synth` output folder")
    parser.add_argument("--pretrained", type=Path, required=True, help="19-class pretrained model")
    parser.add_argument("--finetuned", type=Path, required=True, help="PEBAL fine-tuned 20-class model")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    parser.add_argument("--markdown", type=Path, help="also write the table (and the checks) here")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    result = measure(args.world, args.pretrained, args.finetuned, progress=not args.no_progress)
    lines = [markdown(result), ""]
    met = True
    for text, ok in checks(result):
        lines.append(f"- {'PASS' if ok else 'FAIL'}: {text}")
        met &= ok
    report = "\n".join(lines)
    print(report)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if args.markdown:
        atomic_write_text(args.markdown, report + "\n")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
