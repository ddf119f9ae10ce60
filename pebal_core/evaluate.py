"""Anomaly-segmentation evaluation: model + dataset -> scores -> metrics -> report.

One forward pass per image gives the logits; every score of :data:`pebal_core.scoring.METHODS`
is computed from them (``abstention`` only for models with the 20th channel) and fed to one
:class:`~pebal_core.metrics.AnomalyMetrics` per method (void pixels ignored). The report holds,
per method, AUROC / AP / FPR95 (all three FPR95 definitions, the chosen one marked), the score
threshold at 95 % TPR and the best-F1 operating point; optionally inlier mIoU (items carrying a
``semantic`` trainId map) and SegmentMeIfYouCan component metrics for the PEBAL score at its
best-F1 threshold.

Input pipeline (``resize_protocol="predictor"``, the default: what the deployed
:class:`~pebal_core.runtime.Predictor` does): the RGB image is normalised with the model's own
:class:`~pebal_core.preprocessing.Normalization`; with ``input_size`` the image is resized
(OpenCV bilinear) for the network and each score map is resized back to the label resolution
(bilinear), so a threshold measured here applies to the Predictor's output. At native
resolution, sizes that are not a multiple of ``size_multiple`` are padded (zeros after
normalisation, cropped away from the logits) or resized (``fit="resize"``).

``resize_protocol="course"`` reproduces the published course evaluations (DESIGN §4b,
realdata README §1/§5) whenever the image is resized: the image goes through PIL's bilinear
resize (antialiased, torchvision's ``Resize`` on a PIL image) and the label maps are resized to
the network size with PIL's nearest rule (pixel centres; OpenCV ``INTER_NEAREST_EXACT``), so
the metrics are computed at network resolution. At native resolution both protocols are the same.

Outputs of :func:`write_report`: ``results.json``, ``results.md`` (a table like the paper's
Table 3, values in %), ``roc.png`` and ``pr.png``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from pebal_core.component_metrics import ANOMALY_TRACK, OBSTACLE_TRACK, ComponentMetrics
from pebal_core.data.anomaly_pairs import identity_collate
from pebal_core.fileio import atomic_write, atomic_write_text
from pebal_core.labels import ABSTENTION_CHANNEL, NUM_CLASSES
from pebal_core.metrics import DEFAULT_MAX_CELLS, AnomalyMetrics, confusion_matrix, mean_iou
from pebal_core.models.base import SegmentationModel
from pebal_core.preprocessing import normalize_images
from pebal_core.scoring import METHODS, all_scores, inlier_labels

METHOD_NAMES = {
    "msp": "MSP",
    "maxlogit": "MaxLogit",
    "entropy": "Entropy",
    "energy": "Energy",
    "abstention": "Abstention (void channel)",
    "pebal": "PEBAL (smoothed energy)",
}
COMPONENT_TRACKS = {"anomaly": ANOMALY_TRACK, "obstacle": OBSTACLE_TRACK}
RESIZE_PROTOCOLS = ("predictor", "course")


@dataclass
class EvalOptions:
    """How to run an evaluation (the ``pebal eval`` options)."""

    input_size: tuple[int, int] | None = None
    """(height, width) the network runs at; None = each image's native size."""
    size_multiple: int = 8
    """Native-resolution inputs are brought to a multiple of this (1 = no constraint)."""
    fit: str = "pad"
    """``pad`` (zeros after normalisation, cropped from the logits) or ``resize``."""
    resize_protocol: str = "predictor"
    """Where an image is resized: ``predictor`` (OpenCV bilinear, scores resized back to the label
    size) or ``course`` (PIL bilinear, labels resized nearest to the network size); module docstring."""
    device: str = "cpu"
    workers: int = 0
    limit: int | None = None
    fpr95: str = "pebal"
    exact: bool = True
    max_cells: int = DEFAULT_MAX_CELLS
    methods: tuple[str, ...] = METHODS
    components: str | None = None
    """``anomaly`` or ``obstacle``: SegmentMeIfYouCan component metrics with that track's size filters."""
    progress: bool = True

    def __post_init__(self) -> None:
        if self.fit not in ("pad", "resize"):
            raise ValueError(f"fit must be 'pad' or 'resize', got {self.fit!r}")
        if self.resize_protocol not in RESIZE_PROTOCOLS:
            raise ValueError(
                f"resize_protocol must be one of {', '.join(RESIZE_PROTOCOLS)}, got {self.resize_protocol!r}"
            )
        if self.size_multiple < 1:
            raise ValueError(f"size_multiple must be >= 1, got {self.size_multiple}")
        unknown = set(self.methods) - set(METHODS)
        if unknown:
            raise ValueError(f"unknown score methods {sorted(unknown)}; choose from {', '.join(METHODS)}")
        if self.components is not None and self.components not in COMPONENT_TRACKS:
            raise ValueError(f"components must be one of {', '.join(COMPONENT_TRACKS)}, got {self.components!r}")


def network_size(h: int, w: int, options: EvalOptions) -> tuple[int, int]:
    """The (height, width) an ``h x w`` image is run at."""
    if options.input_size is not None:
        return tuple(options.input_size)
    m = options.size_multiple
    if options.fit == "resize":
        return max(m, round(h / m) * m), max(m, round(w / m) * m)
    return math.ceil(h / m) * m, math.ceil(w / m) * m


@torch.inference_mode()
def image_logits(model: SegmentationModel, rgb: np.ndarray, options: EvalOptions) -> torch.Tensor:
    """``1 x C x h x w`` logits of one RGB image, at network resolution (padding cropped away)."""
    h, w = rgb.shape[:2]
    nh, nw = network_size(h, w, options)
    pad = options.input_size is None and options.fit == "pad"
    if not pad and (nh, nw) != (h, w):
        rgb = resize_image(rgb, (nh, nw), options.resize_protocol)
    device = next(model.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).unsqueeze(0).to(device)
    x = normalize_images(x, model.normalization)
    if pad:
        return model.forward_padded(x, options.size_multiple)
    return model(x)


def resize_image(rgb: np.ndarray, size: tuple[int, int], protocol: str) -> np.ndarray:
    """``rgb`` (uint8 H x W x 3) resized to ``size`` = (height, width) the way ``protocol`` does."""
    if protocol == "course":  # PIL bilinear with its antialiasing filter when shrinking
        from PIL import Image  # pillow: the eval extra (a matplotlib dependency)

        return np.array(Image.fromarray(rgb).resize((size[1], size[0]), Image.BILINEAR))
    return cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def resize_labels(label: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A label map resized to ``size`` = (height, width) with PIL's nearest rule (pixel centres)."""
    if label.shape == size:
        return label
    return cv2.resize(label, (size[1], size[0]), interpolation=cv2.INTER_NEAREST_EXACT)


def _to_label_size(score: np.ndarray, shape: tuple[int, int], nearest: bool = False) -> np.ndarray:
    if score.shape == shape:
        return score
    interp = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.resize(score, (shape[1], shape[0]), interpolation=interp)


def inlier_confusion(
    model: SegmentationModel, dataset: Dataset, options: EvalOptions | None = None, desc: str = "inlier mIoU"
) -> np.ndarray:
    """``19 x 19`` confusion matrix of the model's inlier labels on a trainId-labelled dataset.

    ``dataset`` items carry ``label`` as Cityscapes trainIds (254/255 ignored), e.g.
    :class:`~pebal_core.data.cityscapes.Cityscapes`; images run as :func:`image_logits` runs them
    (native resolution by default). Feed the result to :func:`pebal_core.metrics.mean_iou`.
    """
    options = options or EvalOptions()
    conf = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    model.eval()
    n = len(dataset) if options.limit is None else min(options.limit, len(dataset))
    for i in tqdm(range(n), desc=desc, unit="img", disable=not options.progress, leave=False):
        item = dataset[i]
        pred = inlier_labels(image_logits(model, item["image"], options))[0].cpu().numpy()
        conf += confusion_matrix(_to_label_size(pred, item["label"].shape, nearest=True), item["label"])
    return conf


def evaluate(model: SegmentationModel, dataset: Dataset, options: EvalOptions) -> dict:
    """Run ``model`` over ``dataset`` and return the report dict (see the module docstring)."""
    model.eval()
    has_abstention = model.num_classes > ABSTENTION_CHANNEL
    methods = tuple(m for m in options.methods if m != "abstention" or has_abstention)
    metrics = {
        m: AnomalyMetrics(exact=options.exact, fpr95=options.fpr95, max_cells=options.max_cells) for m in methods
    }
    n = len(dataset) if options.limit is None else min(options.limit, len(dataset))
    if n == 0:
        raise ValueError(f"dataset {dataset!r} has no images to evaluate")
    subset = dataset if n == len(dataset) else torch.utils.data.Subset(dataset, range(n))
    loader = DataLoader(
        subset,
        batch_size=1,
        num_workers=options.workers,
        collate_fn=identity_collate,
        # forkserver, not fork: forking a process that runs threads can deadlock the child
        multiprocessing_context="forkserver" if options.workers else None,
    )
    conf = None
    cache = tempfile.mkdtemp(prefix="pebal_eval_") if options.components and "pebal" in methods else None
    t0 = time.perf_counter()
    try:
        for i, item in enumerate(tqdm(loader, total=n, desc="pebal eval", unit="img", disable=not options.progress)):
            label = item["label"]
            semantic = item.get("semantic")
            logits = image_logits(model, item["image"], options)
            if options.resize_protocol == "course":  # metrics at network resolution
                label = resize_labels(label, tuple(logits.shape[-2:]))
                semantic = None if semantic is None else resize_labels(semantic, tuple(logits.shape[-2:]))
            scores = all_scores(logits, methods)
            for m, score in scores.items():
                s = _to_label_size(score[0].float().cpu().numpy(), label.shape)
                metrics[m].update(s, label)
                if cache and m == "pebal":
                    np.save(os.path.join(cache, f"{i}_score.npy"), s)
                    np.save(os.path.join(cache, f"{i}_label.npy"), label)
            if semantic is not None:
                pred = _to_label_size(inlier_labels(logits)[0].cpu().numpy(), semantic.shape, nearest=True)
                c = confusion_matrix(pred, semantic, NUM_CLASSES)
                conf = c if conf is None else conf + c
        seconds = time.perf_counter() - t0
        results = {m: metrics[m].compute(curves=True) for m in methods}
        report = {
            "n_images": n,
            "seconds": seconds,
            "methods": results,
            "fpr95_definition": options.fpr95,
            "mode": results[methods[0]]["mode"],
        }
        if "pebal" in results and results["pebal"]["threshold_tpr95"] is not None:
            report["score_threshold"] = {"method": "pebal", **results["pebal"]["threshold_tpr95"]}
        if conf is not None:
            miou, per_class = mean_iou(conf)
            report["inlier_miou"] = {"miou": miou, "per_class_iou": per_class.tolist()}
        if cache and results["pebal"]["best_f1"] is not None:
            threshold = results["pebal"]["best_f1"]["score"]
            comp = ComponentMetrics(COMPONENT_TRACKS[options.components])
            for i in range(n):
                score = np.load(os.path.join(cache, f"{i}_score.npy"))
                comp.update(score >= threshold, np.load(os.path.join(cache, f"{i}_label.npy")))
            report["components"] = {"method": "pebal", "threshold": threshold, **comp.compute()}
    finally:
        if cache:
            shutil.rmtree(cache, ignore_errors=True)
    return report


# ----------------------------------------------------------------------------- report files
def _pct(x: float) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{100 * x:.2f}"


def markdown_table(report: dict) -> str:
    """The paper's Table 3 layout: one row per method, AUROC / AP / FPR95 in %."""
    d = report["fpr95_definition"]
    lines = [
        f"| Method | AUROC ↑ | AP ↑ | FPR95 ↓ ({d}) |",
        "|---|---:|---:|---:|",
    ]
    for m, r in report["methods"].items():
        lines.append(f"| {METHOD_NAMES.get(m, m)} | {_pct(r['auroc'])} | {_pct(r['ap'])} | {_pct(r['fpr95'])} |")
    return "\n".join(lines)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items() if k != "curves"}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def _plot(report: dict, path: Path, kind: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    for m, r in report["methods"].items():
        c = r.get("curves")
        if not c:
            continue
        name = METHOD_NAMES.get(m, m)
        if kind == "roc":
            ax.plot(c["roc_fpr"], c["roc_tpr"], label=f"{name} (AUROC {_pct(r['auroc'])})")
        else:
            ax.step(c["pr_recall"], c["pr_precision"], where="post", label=f"{name} (AP {_pct(r['ap'])})")
    if kind == "roc":
        ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
        ax.axhline(0.95, color="0.5", lw=0.8, ls=":")
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    else:
        ax.set(xlabel="recall", ylabel="precision", title="Precision-recall")
    ax.set(xlim=(0, 1), ylim=(0, 1.01))
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right" if kind == "roc" else "upper right", fontsize=8)
    fig.tight_layout()
    with atomic_write(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def write_report(report: dict, out_dir: str | os.PathLike, plots: bool = True) -> dict[str, Path]:
    """Write ``results.json``, ``results.md`` and (``plots``) ``roc.png`` / ``pr.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "results.json", "markdown": out / "results.md"}
    atomic_write_text(paths["json"], json.dumps(_jsonable(report), indent=2) + "\n")
    md = [f"# Anomaly segmentation: {report.get('dataset', '?')}", ""]
    md.append(
        f"{report['n_images']} images, {report['mode']} metrics, void pixels ignored; "
        f"FPR95 definition `{report['fpr95_definition']}`."
    )
    md += ["", markdown_table(report), ""]
    if "score_threshold" in report:
        t = report["score_threshold"]
        md.append(
            f"PEBAL score threshold at 95 % TPR: **{t['score']:.6g}** (flag score >= threshold; "
            f"TPR {_pct(t['tpr'])} %, FPR {_pct(t['fpr'])} %)."
        )
    if "inlier_miou" in report:
        md.append(f"Inlier mIoU: {_pct(report['inlier_miou']['miou'])} %.")
    if "components" in report:
        c = report["components"]
        md.append(
            f"Components (PEBAL score >= {c['threshold']:.6g}, segsize {c['segsize']}, instsize {c['instsize']}): "
            f"sIoU {_pct(c['siou'])} %, PPV {_pct(c['ppv'])} %, mean F1 {_pct(c['f1_mean'])} %."
        )
    atomic_write_text(paths["markdown"], "\n".join(md) + "\n")
    if plots:
        for kind in ("roc", "pr"):
            paths[kind] = out / f"{kind}.png"
            _plot(report, paths[kind], kind)
    return paths


def options_dict(options: EvalOptions) -> dict:
    """The options as plain JSON values, for the report."""
    d = asdict(options)
    d["methods"] = list(d["methods"])
    return d


# ----------------------------------------------------------------------------- checkpoints
def run_evaluation(
    checkpoint: str | os.PathLike,
    dataset_name: str,
    root: str | os.PathLike,
    options: EvalOptions,
    dataset_options: dict | None = None,
    arch: str | None = None,
) -> dict:
    """Load a checkpoint and a registered dataset, evaluate, and describe both in the report.

    ``arch`` names the architecture of a bare state_dict (e.g. the realdata ENet ``model_best.pth``);
    files in this project's format carry it in their metadata."""
    from pebal_core.data.anomaly_sets import build_anomaly_dataset
    from pebal_core.models.checkpoint import load_model

    device = torch.device(options.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA GPU; use --device cpu")
    dataset = build_anomaly_dataset(dataset_name, root, **(dataset_options or {}))
    model = load_model(checkpoint, arch=arch).to(device)
    report = evaluate(model, dataset, options)
    meta = model.checkpoint_metadata
    report.update(
        dataset=dataset_name,
        dataset_root=str(root),
        dataset_options=dataset_options or {},
        checkpoint=str(checkpoint),
        model={
            "arch": getattr(model, "arch", None),
            "arch_kwargs": dict(getattr(model, "arch_kwargs", {})),
            "num_classes": model.num_classes,
            "normalization": model.normalization.to_dict(),
            "sha256": meta.get("sha256"),
        },
        options=options_dict(options),
    )
    return report


def save_with_threshold(
    checkpoint: str | os.PathLike, dst: str | os.PathLike, report: dict, arch: str | None = None
) -> Path:
    """Copy ``checkpoint`` to ``dst`` with metadata ``score_threshold`` = the report's PEBAL score
    at 95 % TPR (the ROS node's alarm threshold) and ``score_threshold_source`` saying where it
    came from. Other metadata (training configuration, ...) is kept; float16 files stay float16.
    ``arch`` as in :func:`run_evaluation` (bare state_dicts)."""
    from pebal_core.models.checkpoint import copy_with_metadata

    if "score_threshold" not in report:
        raise ValueError("the evaluation produced no PEBAL threshold (no 'pebal' method or no anomalous pixels)")
    t = report["score_threshold"]
    meta = {"score_threshold": float(t["score"])}
    meta["score_threshold_source"] = {
        "dataset": report.get("dataset"),
        "dataset_options": report.get("dataset_options", {}),
        "n_images": report["n_images"],
        "tpr": t["tpr"],
        "fpr": t["fpr"],
        "rule": "score >= threshold flags >= 95% of the anomalous pixels (highest such threshold)",
        "evaluated_checkpoint_sha256": report.get("model", {}).get("sha256"),
    }
    return copy_with_metadata(checkpoint, dst, meta, arch=arch)
