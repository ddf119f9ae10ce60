"""``pebal predict``: run a model on images and write labels, scores and overlays."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_predict(sub: argparse._SubParsersAction) -> None:
    from pebal_core.alarms.ego_mask import SPEC_HELP as EGO_HELP

    p = sub.add_parser(
        "predict",
        help="labels and anomaly score for image files",
        description=(
            "Run a model on image files and write, per image: <stem>_labels.png (trainIds 0..18), "
            "<stem>_color.png (Cityscapes palette), <stem>_score.npy (float32 PEBAL score, higher = more "
            "anomalous), <stem>_score.png (heat map) and <stem>_overlay.png: the alarms pebal_node raises on "
            "the same frame, at the model's stored operating point (its threshold, region, smallest obstacle "
            "and ego-vehicle mask; each image is a still, so without the persistence filter): ego mask hatched, "
            "region outlined, alarm pixels tinted, obstacles boxed. An image whose every score is NaN or "
            "infinite (a broken model) gets no files and makes the command fail (exit status 2)."
        ),
    )
    p.add_argument("images", nargs="+", type=Path, help="input image files (png, jpg, webp)")
    p.add_argument(
        "--model",
        default="default",
        help="checkpoint (torch), .onnx file (onnxruntime, tensorrt) or .engine plan (tensorrt), or a shipped "
        "model's name: 'default' (the real-camera model, the default) or 'synthetic' (see `pebal models`)",
    )
    p.add_argument(
        "--arch",
        help="architecture of a checkpoint without metadata (a bare state_dict, e.g. --arch espnet_p2q8 for the "
        "real Cityscapes ESPNet); see `pebal models`",
    )
    p.add_argument(
        "--backend",
        default="auto",
        choices=("auto", "torch", "onnxruntime", "openvino", "tensorrt"),
        help="inference backend (default auto: the fastest CPU backend installed, timed on this machine for this "
        "model at its first use and cached in $XDG_CACHE_HOME/pebal; never tensorrt)",
    )
    p.add_argument(
        "--precision",
        help="openvino: fp32 (default) or bf16 (CPUs with bf16 arithmetic); tensorrt: fp16 (default), fp32 or int8",
    )
    p.add_argument(
        "--device",
        default=None,
        help="cpu or cuda[:N] (torch, onnxruntime), tensorrt[:N] (onnxruntime's TensorRT provider); "
        "default cpu, cuda for --backend tensorrt",
    )
    p.add_argument(
        "--engine-auto-build",
        action="store_true",
        help="tensorrt backend: build a missing engine and rebuild one from another TensorRT version or GPU",
    )
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), help="run the network at this size")
    p.add_argument(
        "--policy", default="", help="operating point stored in the model to alarm at (default: the model's default)"
    )
    p.add_argument(
        "--threshold",
        type=float,
        help="energy threshold for the alarms, overriding the operating point's (which then no longer applies as "
        "it was chosen)",
    )
    p.add_argument(
        "--ego-mask",
        metavar="MASK",
        help=f"ego-vehicle mask of the camera, overriding the point's: {EGO_HELP}; 'none' = no mask",
    )
    p.add_argument("--no-smoothing", action="store_true", help="skip the 7x7 Gaussian smoothing of the score")
    p.add_argument("--out", type=Path, default=Path("predictions"), help="output directory (default ./predictions)")


def run_predict(args: argparse.Namespace) -> int:
    import logging

    import numpy as np

    from pebal_core.alarms.ego_mask import cached_ego_mask
    from pebal_core.alarms.frame import FrameContext
    from pebal_core.alarms.operating_point import resolve_operating_point
    from pebal_core.alarms.pipeline import AlarmPipeline
    from pebal_core.cli.errors import UserError
    from pebal_core.images import read_rgb, write_label, write_rgb
    from pebal_core.labels import colorize
    from pebal_core.model_store import resolve_model
    from pebal_core.runtime import Predictor
    from pebal_core.scoring import nonfinite_pixels
    from pebal_core.visualize import alarm_overlay, heatmap

    if args.backend == "auto":  # say what the first, slow use of a model on this machine is doing
        logging.basicConfig(format="%(message)s")
        logging.getLogger("pebal_core.backends.auto").setLevel(logging.INFO)
    options: dict[str, object] = {"engine_auto_build": True} if args.engine_auto_build else {}
    if args.precision:
        options["precision"] = args.precision
    predictor = Predictor.from_checkpoint(
        resolve_model(args.model),
        backend=args.backend,
        device=args.device or ("cuda" if args.backend == "tensorrt" else "cpu"),
        input_size=tuple(args.input_size) if args.input_size else None,
        smoothing=not args.no_smoothing,
        arch=args.arch,
        **options,
    )
    print(f"backend: {predictor.backend.describe()}")
    overrides = {"threshold": args.threshold, "ego_mask": args.ego_mask}
    resolved = resolve_operating_point(predictor.metadata, args.policy, overrides)
    mask = cached_ego_mask(resolved.point.ego_mask)
    print(f"operating point: {resolved.warning() or resolved.point.describe()}")
    chain = AlarmPipeline(sequence=False)  # unrelated stills: each judged on its own
    args.out.mkdir(parents=True, exist_ok=True)
    blind = []
    for image_path in args.images:
        rgb = read_rgb(image_path)
        labels, score = predictor.predict(rgb)
        bad = nonfinite_pixels(score)
        if bad == score.size:
            print(f"{image_path}: every score is NaN or infinite: no files written")
            blind.append(str(image_path))
            continue
        ego = None if mask is None else mask.at(score.shape)
        frame = FrameContext(labels, score, resolved.point, rgb, ego_mask=ego)
        alarms = chain.process(frame)
        stem = args.out / image_path.stem
        write_label(f"{stem}_labels.png", labels)
        write_rgb(f"{stem}_color.png", colorize(labels))
        np.save(f"{stem}_score.npy", score)
        write_rgb(f"{stem}_score.png", heatmap(score))
        write_rgb(f"{stem}_overlay.png", alarm_overlay(frame, alarms))
        found = f"{len(alarms.obstacles)} obstacle(s)"
        finite = score[np.isfinite(score)] if bad else score
        note = f"; {bad} of {score.size} pixels NaN or infinite" if bad else ""
        print(f"{image_path}: score range [{finite.min():.3f}, {finite.max():.3f}]{note}, {found} -> {stem}_*")
    if blind:
        raise UserError(
            f"{len(blind)} of {len(args.images)} images got no finite anomaly score ({', '.join(blind[:3])}"
            f"{', ...' if len(blind) > 3 else ''}): the model gives NaN/inf everywhere (check its normalisation "
            f"and weights, and the backend {args.backend})"
        )
    return 0


COMMANDS = {"predict": (add_predict, run_predict)}
"""Sub-command name -> (declare its arguments on the sub-parsers, run it)."""
