"""Anomaly-segmentation evaluation: model + dataset -> scores -> metrics -> report.

One forward pass per image gives the logits; every score of :data:`pebal_core.scoring.METHODS`
is computed from them (``abstention`` only for models with the 20th channel) and fed to one
:class:`~pebal_core.metrics.AnomalyMetrics` per method (void pixels ignored). The report holds,
per method, AUROC / AP / FPR95 (all three FPR95 definitions, the chosen one marked), the score
threshold at 95 % TPR and the best-F1 operating point; optionally inlier mIoU (items carrying a
``semantic`` trainId map) and SegmentMeIfYouCan component metrics for the PEBAL score at its
best-F1 threshold.

Input pipeline: every image goes through a :class:`~pebal_core.runtime.Predictor` (torch
backend), the same code the ROS node runs, so a threshold measured here applies to the node's
output: the model's own normalisation, zero padding to the model's ``size_divisor`` at native
resolution, and with ``input_size`` the image resized for the network as the resize protocol
says (:mod:`pebal_core.protocols`): ``predictor`` (default) resizes with OpenCV bilinear and
brings every score map back to the label resolution (bilinear); ``course`` resizes with PIL
bilinear and brings the label maps to the network size (PIL nearest), so the metrics are
computed at network resolution. At native resolution both protocols are the same. Named
presets (``pebal eval --protocol``) are :data:`pebal_core.protocols.EVAL_PROTOCOLS`.

Images a dataset leaves out (``Validation_Dataset`` sets skip images without an anomaly pixel)
are listed in the report (``skipped_images``: count, reason and names).

Obstacle level (``obstacle_level``, on by default): the PEBAL score goes through the node's alarm
chain at the model's stored operating point (:func:`~pebal_core.alarms.operating_point.resolve_operating_point`:
its threshold, region, smallest obstacle scaled to the image size, ego-vehicle mask; each image on
its own, no persistence) and :mod:`pebal_core.alarms.frame_counts` counts, against the labels,
the labelled obstacles detected, the false-alarm obstacles per frame and the pixel FPR in the
region; the report's ``obstacle_level`` entry holds them, the point they were counted at and, per
image, the obstacles missed and the false alarms (boxes). Images the ego mask does not fit (another
aspect ratio) run without it, as in the node, and are listed.

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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from pebal_core.alarms.ego_mask import cached_ego_mask, mask_for_frame
from pebal_core.alarms.frame import FrameContext
from pebal_core.alarms.frame_counts import DEFAULT_MIN_VISIBLE, ObstacleCounts, frame_evidence
from pebal_core.alarms.operating_point import OperatingPoint, resolve_operating_point
from pebal_core.alarms.pipeline import AlarmFrame, AlarmPipeline
from pebal_core.component_metrics import ANOMALY_TRACK, OBSTACLE_TRACK, ComponentMetrics
from pebal_core.data.anomaly_pairs import AnomalyPairs, identity_collate
from pebal_core.data.anomaly_sets import build_anomaly_dataset
from pebal_core.devices import torch_device
from pebal_core.fileio import atomic_write, atomic_write_text
from pebal_core.labels import ABSTENTION_CHANNEL, NUM_CLASSES
from pebal_core.metrics import DEFAULT_MAX_CELLS, AnomalyMetrics, confusion_matrix, mean_iou
from pebal_core.models.base import SegmentationModel
from pebal_core.models.checkpoint import load_model
from pebal_core.protocols import RESIZE_PROTOCOLS, resize_label_map, resize_labels, resize_protocol
from pebal_core.runtime import Predictor, recorded_input_size
from pebal_core.scoring import METHODS

METHOD_NAMES = {
    "msp": "MSP",
    "maxlogit": "MaxLogit",
    "entropy": "Entropy",
    "energy": "Energy",
    "abstention": "Abstention (void channel)",
    "pebal": "PEBAL (smoothed energy)",
}
COMPONENT_TRACKS = {"anomaly": ANOMALY_TRACK, "obstacle": OBSTACLE_TRACK}
SKIPPED_LISTED = 20
"""Skipped image names printed and written to ``results.md`` (``results.json`` lists all)."""


@dataclass
class EvalOptions:
    """How to run an evaluation (the ``pebal eval`` options)."""

    input_size: tuple[int, int] | None = None
    """(height, width) the network runs at; None = each image's native size (padded to the
    model's ``size_divisor``)."""
    resize_protocol: str = "predictor"
    """Where an image is resized: ``predictor`` (OpenCV bilinear, scores resized back to the label
    size) or ``course`` (PIL bilinear, labels resized nearest to the network size); module docstring."""
    protocol: str | None = None
    """The named preset these options came from (``pebal eval --protocol``), for the report."""
    device: str = "cpu"
    workers: int = 0
    limit: int | None = None
    fpr95: str = "pebal"
    exact: bool = True
    max_cells: int = DEFAULT_MAX_CELLS
    methods: tuple[str, ...] = METHODS
    components: str | None = None
    """``anomaly`` or ``obstacle``: SegmentMeIfYouCan component metrics with that track's size filters."""
    obstacle_level: bool = True
    """Count obstacles at the model's operating point (the ``obstacle_level`` report entry)."""
    policy: str = ""
    """The model's stored operating point the obstacles are counted at (``""`` = its default)."""
    ego_mask: str | None = None
    """Ego-vehicle mask the alarms run with (:func:`pebal_core.alarms.ego_mask.load_ego_mask`;
    ``"none"`` = no mask); None = the operating point's own."""
    min_visible: int = DEFAULT_MIN_VISIBLE
    """Smallest labelled obstacle counted (pixels of the label maps as compared)."""
    progress: bool = True

    def __post_init__(self) -> None:
        if self.resize_protocol not in RESIZE_PROTOCOLS:
            raise ValueError(
                f"resize_protocol must be one of {', '.join(RESIZE_PROTOCOLS)}, got {self.resize_protocol!r}"
            )
        unknown = set(self.methods) - set(METHODS)
        if unknown:
            raise ValueError(f"unknown score methods {sorted(unknown)}; choose from {', '.join(METHODS)}")
        if self.components is not None and self.components not in COMPONENT_TRACKS:
            raise ValueError(f"components must be one of {', '.join(COMPONENT_TRACKS)}, got {self.components!r}")


def predictor_for(model: SegmentationModel, options: EvalOptions) -> Predictor:
    """The :class:`~pebal_core.runtime.Predictor` an evaluation runs ``model`` through."""
    return Predictor.from_model(model, options.input_size, options.resize_protocol)


@dataclass
class ScoredItem:
    """One dataset item as :func:`evaluate` scores it.

    Attributes:
        scores: ``{method: float32 h x w}`` at the resolution the metrics are computed at (the
            label's own for the ``predictor`` protocol, the network's for ``course``).
        label: the evaluation label map (0/1/255) at that resolution.
        semantic: the item's ``semantic`` trainId map at that resolution (``None`` without one).
        semantic_pred: the predicted trainIds at the size of ``semantic`` (``None`` without one).
        network_size: ``(height, width)`` the network ran at.
        trainids: the predicted trainIds at the size of ``label`` (for the alarm region; ``None``
            unless asked for).
    """

    scores: dict[str, np.ndarray]
    label: np.ndarray
    semantic: np.ndarray | None
    semantic_pred: np.ndarray | None
    network_size: tuple[int, int]
    trainids: np.ndarray | None = None


def score_item(
    predictor: Predictor, item: dict, methods: tuple[str, ...], options: EvalOptions, trainids: bool = False
) -> ScoredItem:
    """Scores (and, for items with a ``semantic`` map or with ``trainids``, labels) of one dataset
    item, one forward pass."""
    label, semantic = item["label"], item.get("semantic")
    if resize_protocol(options.resize_protocol).metrics_at_network_size:
        size = predictor.network_size(item["image"].shape[:2])
        label = resize_labels(label, size)
        semantic = None if semantic is None else resize_labels(semantic, size)
    want = semantic is not None or trainids
    pred = predictor.scores(item["image"], methods, labels=want, output_size=label.shape)
    labels = None if semantic is None else resize_label_map(pred.labels, semantic.shape)
    return ScoredItem(pred.scores, label, semantic, labels, pred.network_size, pred.labels if trainids else None)


def inlier_confusion(
    model: SegmentationModel, dataset: Dataset, options: EvalOptions | None = None, desc: str = "inlier mIoU"
) -> np.ndarray:
    """``19 x 19`` confusion matrix of the model's inlier labels on a trainId-labelled dataset.

    ``dataset`` items carry ``label`` as Cityscapes trainIds (``ANOMALY_ID``/``VOID_ID``
    ignored), e.g. :class:`~pebal_core.data.cityscapes.Cityscapes`; images run through the
    Predictor as in :func:`evaluate` (native resolution by default), labels compared at the label
    resolution. Feed the result to :func:`pebal_core.metrics.mean_iou`.
    """
    options = options or EvalOptions()
    conf = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    predictor = predictor_for(model, options)
    n = len(dataset) if options.limit is None else min(options.limit, len(dataset))
    for i in tqdm(range(n), desc=desc, unit="img", disable=not options.progress, leave=False):
        item = dataset[i]
        pred = predictor.scores(item["image"], (), labels=True, output_size=item["label"].shape).labels
        conf += confusion_matrix(pred, item["label"])
    return conf


def evaluate(model: SegmentationModel, dataset: Dataset, options: EvalOptions) -> dict:
    """Run ``model`` over ``dataset`` and return the report dict (see the module docstring)."""
    predictor = predictor_for(model, options)
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
    network_sizes: set[tuple[int, int]] = set()
    cache = tempfile.mkdtemp(prefix="pebal_eval_") if options.components and "pebal" in methods else None
    obstacles = ObstacleLevel(model, options) if options.obstacle_level and "pebal" in methods else None
    t0 = time.perf_counter()
    try:
        for i, item in enumerate(tqdm(loader, total=n, desc="pebal eval", unit="img", disable=not options.progress)):
            scored = score_item(predictor, item, methods, options, trainids=obstacles is not None)
            if obstacles is not None:
                obstacles.update(str(item.get("name", i)), scored)
            network_sizes.add(scored.network_size)
            for m, score in scored.scores.items():
                metrics[m].update(score, scored.label)
                if cache and m == "pebal":
                    np.save(os.path.join(cache, f"{i}_score.npy"), score)
                    np.save(os.path.join(cache, f"{i}_label.npy"), scored.label)
            if scored.semantic is not None:
                c = confusion_matrix(scored.semantic_pred, scored.semantic, NUM_CLASSES)
                conf = c if conf is None else conf + c
        seconds = time.perf_counter() - t0
        results = {m: metrics[m].compute(curves=True) for m in methods}
        report = {
            "n_images": n,
            "seconds": seconds,
            "methods": results,
            "fpr95_definition": options.fpr95,
            "mode": results[methods[0]]["mode"],
            "input_size": None if options.input_size is None else list(options.input_size),
            "network_sizes": [list(size) for size in sorted(network_sizes)],
            "skipped_images": skipped_images(dataset),
        }
        if "pebal" in results and results["pebal"]["threshold_tpr95"] is not None:
            report["score_threshold"] = {"method": "pebal", **results["pebal"]["threshold_tpr95"]}
        if conf is not None:
            miou, per_class = mean_iou(conf)
            report["inlier_miou"] = {"miou": miou, "per_class_iou": per_class.tolist()}
        if obstacles is not None:
            report["obstacle_level"] = obstacles.report()
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


class ObstacleLevel:
    """The obstacle-level counts of an evaluation (module docstring): one :class:`AlarmPipeline`
    for stills at the model's resolved operating point, :class:`ObstacleCounts` over the images."""

    def __init__(self, model: SegmentationModel, options: EvalOptions) -> None:
        overrides = {} if options.ego_mask is None else {"ego_mask": options.ego_mask}
        self.resolved = resolve_operating_point(getattr(model, "checkpoint_metadata", {}), options.policy, overrides)
        self.mask = cached_ego_mask(self.resolved.point.ego_mask)
        self.chain = AlarmPipeline(sequence=False)
        self.counts = ObstacleCounts(options.min_visible)
        self.images: list[dict] = []
        self.pixels: set[int] = set()
        self.unfit: list[str] = []

    def update(self, name: str, scored: ScoredItem) -> tuple[FrameContext, AlarmFrame]:
        """Count one image (its PEBAL score, predicted trainIds and labels at the compared size) and
        return its context and alarms. An image the ego mask does not fit (another aspect ratio)
        runs without the mask, as in the node, and is listed."""
        score, label = scored.scores["pebal"], scored.label
        ego, why = mask_for_frame(self.mask, label.shape)
        if why:
            self.unfit.append(name)
        frame = FrameContext(scored.trainids, score, self.resolved.point, ego_mask=ego)
        alarms = self.chain.process(frame)
        counted = self.counts.update(alarms, label, ego)
        self.pixels.add(self.resolved.point.min_pixels_at(label.shape))
        self.images.append(frame_evidence(name, counted, alarms))
        return frame, alarms

    def report(self) -> dict:
        """The ``obstacle_level`` report entry: the point, how it was resolved, the totals and rates
        (:meth:`ObstacleCounts.summary`), the smallest obstacle used and the per-image evidence."""
        return {
            "point": self.resolved.point.to_dict(),
            "point_origin": self.resolved.origin,
            "point_warning": self.resolved.warning(),
            **self.counts.summary(),
            "min_pixels": sorted(self.pixels),
            "images_without_ego_mask": self.unfit,
            "per_image": self.images,
        }


def obstacle_line(report: dict) -> str | None:
    """One sentence with the obstacle-level numbers of a report (``None`` without them)."""
    o = report.get("obstacle_level")
    if not o:
        return None
    point = OperatingPoint.from_dict(o["point"])
    rate = "–" if o["detection_rate"] is None else f"{100 * o['detection_rate']:.1f} %"
    fpr = "–" if o["pixel_fpr_region"] is None else f"{100 * o['pixel_fpr_region']:.3f} %"
    return (
        f"Obstacle level at {point.describe()} (single images): {o['detected']} of {o['obstacles']} labelled "
        f"obstacles (>= {o['min_visible']} px) detected ({rate}), {o['false_alarms_per_frame']:.2f} false-alarm "
        f"obstacles per image, pixel FPR in the region {fpr}."
        + (
            f" The ego mask does not fit {len(o['images_without_ego_mask'])} images (another aspect ratio): they ran "
            "without it."
            if o.get("images_without_ego_mask")
            else ""
        )
    )


def skipped_images(dataset: Dataset) -> dict:
    """What a dataset left out when it was built: ``{"count", "reason", "names"}`` (0, ``None``
    and no names when it left out nothing)."""
    base = dataset.dataset if isinstance(dataset, torch.utils.data.Subset) else dataset
    names = list(getattr(base, "skipped", ()))
    return {"count": len(names), "reason": getattr(base, "skip_reason", None) if names else None, "names": names}


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


def skipped_line(report: dict) -> str | None:
    """One sentence naming the images the dataset skipped (``None`` when it skipped none)."""
    s = report.get("skipped_images") or {}
    if not s.get("count"):
        return None
    shown = ", ".join(s["names"][:SKIPPED_LISTED]) + (", ..." if s["count"] > SKIPPED_LISTED else "")
    return f"Skipped {s['count']} images ({s['reason']}): {shown}."


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
    skipped = skipped_line(report)
    if skipped:
        md.append(skipped)
    if "components" in report:
        c = report["components"]
        md.append(
            f"Components (PEBAL score >= {c['threshold']:.6g}, segsize {c['segsize']}, instsize {c['instsize']}): "
            f"sIoU {_pct(c['siou'])} %, PPV {_pct(c['ppv'])} %, mean F1 {_pct(c['f1_mean'])} %."
        )
    if obstacle_line(report):
        md.append(obstacle_line(report))
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
    d["input_size"] = None if options.input_size is None else list(options.input_size)
    return d


# ----------------------------------------------------------------------------- checkpoints
class EvaluationInputs(NamedTuple):
    """A checkpoint and a registered dataset loaded for evaluation, with the options they run under."""

    model: SegmentationModel
    dataset: AnomalyPairs
    options: EvalOptions
    """The caller's options, ``input_size`` set to the size the model's metadata records when the
    caller gave none (what the Predictor does)."""


def load_for_evaluation(
    checkpoint: str | os.PathLike,
    dataset_name: str,
    root: str | os.PathLike,
    options: EvalOptions,
    dataset_options: dict | None = None,
    arch: str | None = None,
) -> EvaluationInputs:
    """Load the dataset ``dataset_name`` (:func:`pebal_core.data.anomaly_sets.build_anomaly_dataset`)
    and the checkpoint onto ``options.device``: what ``pebal eval`` and ``pebal threshold`` run on.

    ``arch`` names the architecture of a bare state_dict (e.g. the realdata ENet ``model_best.pth``);
    files in this project's format carry it in their metadata."""
    device = torch_device(options.device, "--device")
    dataset = build_anomaly_dataset(dataset_name, root, **(dataset_options or {}))
    model = load_model(checkpoint, arch=arch).to(device)
    recorded = recorded_input_size(model.checkpoint_metadata)
    if options.input_size is None and recorded is not None:
        options = replace(options, input_size=recorded)
    return EvaluationInputs(model, dataset, options)


def run_evaluation(
    checkpoint: str | os.PathLike,
    dataset_name: str,
    root: str | os.PathLike,
    options: EvalOptions,
    dataset_options: dict | None = None,
    arch: str | None = None,
) -> dict:
    """Load a checkpoint and a registered dataset (:func:`load_for_evaluation`), evaluate, and
    describe both in the report. Without ``options.input_size`` the model runs at the size its
    metadata records, else at each image's native size."""
    model, dataset, options = load_for_evaluation(checkpoint, dataset_name, root, options, dataset_options, arch)
    meta = model.checkpoint_metadata
    report = evaluate(model, dataset, options)
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
