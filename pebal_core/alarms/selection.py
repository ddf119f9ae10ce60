"""``pebal threshold``: compute a model's operating points on a validation set and store them.

The model runs over any dataset ``pebal eval`` reads (:func:`pebal_core.data.anomaly_sets.build_anomaly_dataset`),
through the Predictor ``pebal eval`` uses (:func:`pebal_core.evaluate.predictor_for`; at the input
size the model's metadata records unless one is given, as the node runs it): per image the
predicted trainIds give the region (:mod:`pebal_core.alarms.region`) and the PEBAL score (smoothed
free energy at the label size) is kept. Each policy of
:mod:`pebal_core.alarms.operating_point` then picks its threshold, and
:func:`save_with_operating_points` writes a copy of the checkpoint whose ``score_threshold`` is
the default policy's (what the ROS node alarms on) with every point and how it was chosen.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import torch
from tqdm import tqdm

from pebal_core.alarms.obstacles import DEFAULT_MIN_PIXELS
from pebal_core.alarms.operating_point import (
    DEFAULT_POLICY,
    OperatingPointSearch,
    ValidationFrame,
    operating_points_metadata,
    parse_policy,
)
from pebal_core.alarms.region import DEFAULT_MIN_FRACTION, alarm_region

DEFAULT_POLICIES = ("tpr95", "fpr:0.01", "fpr:0.001", "fa:0.3", DEFAULT_POLICY, "fa:0.05")
"""Policies computed when none are named (the default one always is)."""


def validation_frames(
    model: torch.nn.Module,
    dataset,
    options,
    region: str = "drivable",
    include_sidewalk: bool = False,
    min_fraction: float = DEFAULT_MIN_FRACTION,
) -> list[ValidationFrame]:
    """Score, labels and region of every image of ``dataset`` (``options``: an ``EvalOptions``)."""
    from pebal_core.evaluate import predictor_for

    predictor = predictor_for(model.eval(), options)
    n = len(dataset) if options.limit is None else min(options.limit, len(dataset))
    if n == 0:
        raise ValueError(f"dataset {dataset!r} has no images to choose a threshold on")
    frames = []
    for i in tqdm(range(n), desc="pebal threshold", unit="img", disable=not options.progress):
        item = dataset[i]
        label = item["label"]
        pred = predictor.scores(item["image"], ("pebal",), labels=True, output_size=label.shape)
        score, trainids = pred.scores["pebal"], pred.labels
        frames.append(ValidationFrame(score, label, alarm_region(trainids, region, include_sidewalk, min_fraction)))
    return frames


def choose_operating_points(
    checkpoint: str | os.PathLike,
    dataset_name: str,
    root: str | os.PathLike,
    options,
    dataset_options: dict | None = None,
    policies: tuple[str, ...] = DEFAULT_POLICIES,
    default: str = DEFAULT_POLICY,
    region: str = "drivable",
    include_sidewalk: bool = False,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    arch: str | None = None,
) -> dict:
    """The report: every policy's point, the default, and the data they were chosen on."""
    from pebal_core.data.anomaly_sets import build_anomaly_dataset
    from pebal_core.models.checkpoint import load_model
    from pebal_core.runtime import recorded_input_size

    for policy in (*policies, default):
        parse_policy(policy)
    policies = tuple(dict.fromkeys((*policies, default)))
    device = torch.device(options.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but torch sees no CUDA GPU; use --device cpu")
    dataset = build_anomaly_dataset(dataset_name, root, **(dataset_options or {}))
    model = load_model(checkpoint, arch=arch).to(device)
    if options.input_size is None and recorded_input_size(model.checkpoint_metadata) is not None:
        options = replace(options, input_size=recorded_input_size(model.checkpoint_metadata))
    frames = validation_frames(model, dataset, options, region, include_sidewalk)
    search = OperatingPointSearch(frames, min_pixels)
    points = [search.choose(p) for p in policies]
    return {
        "points": points,
        "default": default,
        "source": {
            "dataset": dataset_name,
            "dataset_root": str(root),
            "dataset_options": dataset_options or {},
            "n_images": len(frames),
            "input_size": list(options.input_size) if options.input_size else None,
            "region": region,
            "include_sidewalk": include_sidewalk,
            "min_pixels": min_pixels,
            "evaluated_checkpoint_sha256": model.checkpoint_metadata.get("sha256"),
        },
    }


def format_points(report: dict) -> str:
    """A Markdown table of the report's operating points (rates in %)."""
    rows = [
        "| policy | threshold | TPR % | FPR % | FPR in region % | false-alarm obstacles / frame |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for p in report["points"]:
        mark = " (default)" if p.policy == report["default"] else ""
        rows.append(
            f"| {p.policy}{mark} | {p.threshold:.4f} | {100 * p.tpr:.2f} | {100 * p.fpr:.3f} | "
            f"{100 * p.fpr_region:.3f} | {p.false_alarms_per_frame:.3f} |"
        )
    return "\n".join(rows)


def save_with_operating_points(
    checkpoint: str | os.PathLike, dst: str | os.PathLike, report: dict, arch: str | None = None
) -> Path:
    """Copy ``checkpoint`` to ``dst`` with the report's operating points in its metadata:
    ``score_threshold`` (the default policy's), ``score_threshold_source`` (how it was chosen and
    what it does on the validation data), ``alarm_operating_points`` (every policy) and, when the
    points were measured at a fixed network size, ``input_size`` (the Predictor then runs the model
    at it, so the thresholds hold)."""
    from pebal_core.models.checkpoint import copy_with_metadata

    meta = operating_points_metadata(report["points"], report["default"], report["source"])
    chosen = next(p for p in report["points"] if p.policy == report["default"])
    meta["score_threshold_source"] = {
        **{k: report["source"][k] for k in ("dataset", "dataset_options", "n_images", "evaluated_checkpoint_sha256")},
        **chosen.to_dict(),
    }
    if report["source"]["input_size"]:
        meta["input_size"] = report["source"]["input_size"]
    return copy_with_metadata(checkpoint, dst, meta, arch=arch)
