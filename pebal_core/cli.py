"""The ``pebal`` command: one entry point for the offline tools.

Each subcommand is a pair of functions here: ``_add_<name>(subparsers)`` declares its arguments
and ``_run_<name>(args)`` calls into the module that does the work. Errors a user can fix
(missing files, bad checkpoints, bad configs) are printed as one ``pebal: error: ...`` line
with exit status 2, not as a traceback (set ``PEBAL_DEBUG=1`` to get the traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pebal_core.console import run_reporting_errors
from pebal_core.version import __version__


class UserError(Exception):
    """An error whose message tells the user what to fix (printed without a traceback)."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from pebal_core.config import ConfigError
    from pebal_core.export.onnx import ExportError
    from pebal_core.export.tensorrt import EngineError
    from pebal_core.models.checkpoint import CheckpointError
    from pebal_core.runtime import BackendError

    return (
        UserError,
        ConfigError,
        CheckpointError,
        ExportError,
        EngineError,
        BackendError,
        FileNotFoundError,
        OSError,
        ValueError,
        KeyError,
    )


# ----------------------------------------------------------------------------- models
def _add_models(sub: argparse._SubParsersAction) -> None:
    sub.add_parser(
        "models",
        help="list the shipped models and the model zoo's architectures",
        description=(
            "List the models shipped in the package, which every --model option (and the node's model "
            "parameter) takes by name, with what their metadata says about them (base network, training, input "
            "size, alarm threshold), then every architecture build_model knows (the names --arch takes)."
        ),
    )


def _run_models(args: argparse.Namespace) -> int:
    from pebal_core.model_store import MODELS, describe, model_names
    from pebal_core.models import list_models

    print("shipped models (--model NAME):")
    for name in model_names():
        print(f"  {name:10s} {MODELS[name].summary}")
        try:
            fields = describe(name)
        except FileNotFoundError as e:
            print(f"             not installed: {e}")
            continue
        for key, value in fields.items():
            print(f"             {key}: {value}")
    print("architectures (--arch NAME):")
    for name, description in list_models().items():
        print(f"  {name:12s} {description}")
    return 0


# ----------------------------------------------------------------------------- checkpoint
def _add_checkpoint(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "checkpoint",
        help="inspect or convert checkpoints",
        description=(
            "Inspect a checkpoint of any supported format (this project's .pt/.safetensors, NVIDIA "
            "Cityscapes 'cityscapes_best.pth', PEBAL 'best_ad_ckpt.pth', bare state_dicts), or convert "
            "one into this project's format with metadata. Files are read with weights_only=True."
        ),
    )
    csub = p.add_subparsers(dest="checkpoint_cmd", required=True)
    info = csub.add_parser("info", help="print format, metadata and tensor count")
    info.add_argument("path", type=Path)
    conv = csub.add_parser("convert", help="load into an architecture and save in the project format")
    conv.add_argument("src", type=Path)
    conv.add_argument("dst", type=Path, help="output file, .safetensors or .pt")
    conv.add_argument("--arch", help="architecture name (required unless the file carries metadata)")
    conv.add_argument(
        "--num-classes", type=int, default=20, help="output channels (default 20; 19-row classifiers are extended)"
    )
    conv.add_argument("--half", action="store_true", help="store float tensors as float16")


def _run_checkpoint(args: argparse.Namespace) -> int:
    import json

    from pebal_core.models.checkpoint import load_model, read_checkpoint, save_checkpoint

    if args.checkpoint_cmd == "info":
        ckpt = read_checkpoint(args.path)
        n_params = sum(v.numel() for v in ckpt.state_dict.values())
        print(f"file:    {ckpt.path}")
        print(f"format:  {ckpt.source_format}")
        print(f"tensors: {len(ckpt.state_dict)} ({n_params:,} values)")
        if ckpt.dropped_keys:
            print(f"dropped: {len(ckpt.dropped_keys)} training-only keys ({', '.join(ckpt.dropped_keys[:4])} ...)")
        if ckpt.metadata:
            print("metadata:")
            print(json.dumps(ckpt.metadata, indent=2))
        return 0
    model = load_model(args.src, arch=args.arch, num_classes=args.num_classes)
    source = model.checkpoint_metadata
    meta = {key: source[key] for key in ("train_config", "score_threshold") if source.get(key) is not None}
    meta["converted_from"] = {"file": str(args.src), "format": source["source_format"], "sha256": source["sha256"]}
    save_checkpoint(model, args.dst, half=args.half, **meta)
    print(f"wrote {args.dst}")
    return 0


# ----------------------------------------------------------------------------- predict
def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="labels and anomaly score for image files",
        description=(
            "Run a model on image files and write, per image: <stem>_labels.png (trainIds 0..18), "
            "<stem>_color.png (Cityscapes palette), <stem>_score.npy (float32 PEBAL score, higher = more "
            "anomalous), <stem>_score.png (heat map) and <stem>_overlay.png (anomalous pixels tinted red "
            "where the score exceeds --threshold, or the model's stored threshold)."
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
        default="torch",
        choices=("torch", "onnxruntime", "tensorrt"),
        help="inference backend (default torch)",
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
    p.add_argument("--threshold", type=float, help="energy threshold for the overlay (default: the model's)")
    p.add_argument("--no-smoothing", action="store_true", help="skip the 7x7 Gaussian smoothing of the score")
    p.add_argument("--out", type=Path, default=Path("predictions"), help="output directory (default ./predictions)")


def _run_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from pebal_core.images import read_rgb, write_label, write_rgb
    from pebal_core.labels import colorize
    from pebal_core.model_store import resolve_model
    from pebal_core.runtime import Predictor
    from pebal_core.visualize import heatmap, overlay

    options = {"engine_auto_build": True} if args.engine_auto_build else {}
    predictor = Predictor.from_checkpoint(
        resolve_model(args.model),
        backend=args.backend,
        device=args.device or ("cuda" if args.backend == "tensorrt" else "cpu"),
        input_size=tuple(args.input_size) if args.input_size else None,
        smoothing=not args.no_smoothing,
        arch=args.arch,
        **options,
    )
    threshold = args.threshold if args.threshold is not None else predictor.score_threshold
    args.out.mkdir(parents=True, exist_ok=True)
    for image_path in args.images:
        rgb = read_rgb(image_path)
        labels, score = predictor.predict(rgb)
        stem = args.out / image_path.stem
        write_label(f"{stem}_labels.png", labels)
        write_rgb(f"{stem}_color.png", colorize(labels))
        np.save(f"{stem}_score.npy", score)
        write_rgb(f"{stem}_score.png", heatmap(score))
        if threshold is not None:
            write_rgb(f"{stem}_overlay.png", overlay(rgb, score >= threshold))
        print(f"{image_path}: score range [{score.min():.3f}, {score.max():.3f}] -> {stem}_*")
    if threshold is None:
        print("no threshold given and none stored in the model: overlays skipped (use --threshold)")
    return 0


# ----------------------------------------------------------------------------- export
def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export to ONNX, build TensorRT engines",
        description=(
            "Deployment artefacts. `export onnx` writes the network with input normalisation and the "
            "energy-score head fused in (input 'image': uint8 RGB 1x3xHxW; outputs 'labels' uint8 1xHxW "
            "trainIds, 'score' float32 1xHxW anomaly score, optional 'logits'), checked with onnx.checker, "
            "with the model's metadata in metadata_props. `export tensorrt` builds a TensorRT plan from such "
            "a file on this machine's GPU and writes a JSON sidecar (TensorRT version, GPU, precision, "
            "input profile, ONNX sha256) used to refuse or rebuild the plan elsewhere."
        ),
    )
    esub = p.add_subparsers(dest="export_cmd", required=True)
    o = esub.add_parser(
        "onnx",
        help="checkpoint -> ONNX with the energy head fused in",
        description="Export a checkpoint that names its architecture (this project's format; convert "
        "others with `pebal checkpoint convert SRC DST --arch NAME` first) to ONNX.",
    )
    o.add_argument("checkpoint", help="checkpoint file, or a shipped model's name ('default', 'synthetic')")
    o.add_argument("-o", "--output", type=Path, help="output .onnx (default: the checkpoint's name with .onnx)")
    o.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        default=(512, 1024),
        metavar=("H", "W"),
        help="fixed input size (default 512 1024); with --dynamic only the tracing example",
    )
    o.add_argument("--dynamic", action="store_true", help="accept any input height/width at run time")
    o.add_argument("--no-smoothing", action="store_true", help="score = raw free energy (no 7x7 Gaussian)")
    o.add_argument("--logits", action="store_true", help="add a third output with the logits")
    o.add_argument("--opset", type=int, default=None, help="ONNX opset (>= 17; default 18)")
    o.add_argument("--verify", action="store_true", help="compare onnxruntime with torch on a random image")

    t = esub.add_parser(
        "tensorrt",
        help="ONNX -> TensorRT plan for this machine's GPU (needs pip install .[tensorrt])",
        description="Build a TensorRT plan (explicit batch, one optimisation profile) from a `pebal export "
        "onnx` file. The plan and its sidecar go next to the ONNX file as <stem>.<precision>.engine[.json], "
        "where the tensorrt backend looks for them.",
    )
    t.add_argument("onnx", type=Path, help="a file written by `pebal export onnx`")
    t.add_argument("-o", "--output", type=Path, help="plan file (default <stem>.<precision>.engine beside the ONNX)")
    t.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp16", help="default fp16")
    t.add_argument(
        "--input-size", type=int, nargs=2, metavar=("H", "W"), help="size to optimise for (required if dynamic)"
    )
    t.add_argument("--min-size", type=int, nargs=2, metavar=("H", "W"), help="smallest size (dynamic ONNX)")
    t.add_argument("--max-size", type=int, nargs=2, metavar=("H", "W"), help="largest size (dynamic ONNX)")
    t.add_argument("--workspace-mb", type=int, default=2048, help="builder workspace limit in MiB (default 2048)")
    t.add_argument("--calibration-images", type=Path, help="int8: folder of representative camera images")
    t.add_argument("--calibration-cache", type=Path, help="int8: calibration table (default <stem>.int8.calib)")
    t.add_argument("--calibration-limit", type=int, default=500, help="int8: at most this many images (500)")
    t.add_argument("--timing-cache", type=Path, help="builder timing cache (default: per TensorRT+GPU, beside)")
    t.add_argument("--device", default="cuda", help="cuda or cuda:N (default cuda)")


def _size(value: list[int] | None) -> tuple[int, int] | None:
    return None if value is None else (int(value[0]), int(value[1]))


def _run_export(args: argparse.Namespace) -> int:
    if args.export_cmd == "onnx":
        from pebal_core.export.onnx import DEFAULT_OPSET, export_onnx, verify_export
        from pebal_core.model_store import is_model_name, resolve_model
        from pebal_core.models.checkpoint import load_model

        source = resolve_model(args.checkpoint)
        output = args.output or (
            Path(source.stem + ".onnx") if is_model_name(args.checkpoint) else source.with_suffix(".onnx")
        )
        size = "dynamic size" if args.dynamic else f"{args.input_size[0]}x{args.input_size[1]}"
        print(f"exporting {source} -> {output} ({size})")
        export_onnx(
            source,
            output,
            input_size=_size(args.input_size),
            dynamic=args.dynamic,
            smoothing=not args.no_smoothing,
            logits=args.logits,
            opset=args.opset or DEFAULT_OPSET,
        )
        print(f"wrote {output} ({output.stat().st_size / 2**20:.1f} MiB), passed onnx.checker")
        if args.verify:
            agree, diff = verify_export(output, load_model(source))
            print(f"onnxruntime vs torch: labels agree on {100 * agree:.3f}% of pixels, max |score diff| {diff:.2e}")
        return 0

    from pebal_core.export.tensorrt import build_engine, engine_path_for
    from pebal_core.runtime import parse_device

    _, index = parse_device(args.device, ("cuda",))
    print(f"building a {args.precision} TensorRT plan from {args.onnx} (kernel tuning takes minutes)")
    info = build_engine(
        args.onnx,
        args.output,
        precision=args.precision,
        input_size=_size(args.input_size),
        min_size=_size(args.min_size),
        max_size=_size(args.max_size),
        workspace_mb=args.workspace_mb,
        calibration_images=args.calibration_images,
        calibration_cache=args.calibration_cache,
        calibration_limit=args.calibration_limit,
        timing_cache=args.timing_cache,
        device=index,
    )
    lo, hi = info.input_shapes["min"], info.input_shapes["max"]
    print(
        f"built a {info.precision} plan for {info.gpu_name} (sm {info.compute_capability}) with TensorRT "
        f"{info.tensorrt_version}, input {lo[2]}x{lo[3]}..{hi[2]}x{hi[3]}: "
        f"{args.output or engine_path_for(args.onnx, args.precision)} (+ .json sidecar)"
    )
    return 0


# ----------------------------------------------------------------------------- eval
def _add_model_and_dataset(p: argparse.ArgumentParser) -> None:
    """The model and dataset arguments `pebal eval` and `pebal threshold` share."""
    p.add_argument(
        "--model", default="default", help="checkpoint path, or a shipped model's name ('default', 'synthetic')"
    )
    p.add_argument(
        "--arch",
        help="architecture of a checkpoint without metadata (a bare state_dict, e.g. --arch enet for the course "
        "ENet model_best.pth); see `pebal models`",
    )
    p.add_argument("--dataset", required=True, metavar="NAME", help="dataset name (see above)")
    p.add_argument("--root", required=True, type=Path, help="dataset folder")
    p.add_argument("--split", help="lost_and_found: train|test (default test); synthetic: split folder name")
    p.add_argument(
        "--non-hazards",
        choices=("void", "anomaly"),
        help="lost_and_found: count the non-hazard objects as void (reference protocol, default) or anomaly",
    )
    p.add_argument(
        "--keep-all-images",
        action="store_true",
        help="validation/<SET>: keep images without anomaly pixels (the published protocol skips them)",
    )


def _dataset_options(args: argparse.Namespace) -> dict:
    """``build_anomaly_dataset`` options from the shared arguments (refusing those the dataset lacks)."""
    options = {}
    if args.split is not None:
        if args.dataset not in ("lost_and_found", "synthetic"):
            raise UserError(f"--split applies to lost_and_found and synthetic, not {args.dataset}")
        options["split"] = args.split
    if args.non_hazards is not None:
        if args.dataset != "lost_and_found":
            raise UserError("--non-hazards applies to lost_and_found only")
        options["non_hazards"] = args.non_hazards
    if args.keep_all_images:
        if not args.dataset.startswith("validation/"):
            raise UserError("--keep-all-images applies to validation/<SET> datasets only")
        options["skip_without_anomaly"] = False
    return options


def _add_eval(sub: argparse._SubParsersAction) -> None:
    from pebal_core.data.anomaly_sets import ANOMALY_DATASETS
    from pebal_core.metrics import DEFAULT_MAX_CELLS, FPR95_DEFINITIONS
    from pebal_core.protocols import EVAL_PROTOCOLS, RESIZE_PROTOCOLS

    def preset(p) -> str:
        size = "(no --input-size)" if p.input_size is None else f"--input-size {p.input_size[0]} {p.input_size[1]}"
        return f"  {p.name}: {size} --resize-protocol {p.resize_protocol} --fpr95 {p.fpr95}\n    ({p.description})"

    protocols = "\n".join(preset(p) for p in EVAL_PROTOCOLS.values())
    p = sub.add_parser(
        "eval",
        help="anomaly metrics of a model on an evaluation dataset",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run a model over an anomaly dataset (one forward pass per image) and score every pixel with the "
            "PEBAL score and the baselines (MSP, MaxLogit, entropy, energy; abstention for 20-channel models). "
            "Void pixels are ignored. Writes to --out: results.md (AUROC / AP / FPR95 table in %), "
            "results.json (all numbers, the three FPR95 definitions, operating points), roc.png and pr.png, and "
            "prints the table and the PEBAL score threshold at 95% TPR (the paper's operating point; "
            "--write-threshold stores it in a copy of the checkpoint, `pebal threshold` chooses and stores the "
            "alarm operating points pebal_node uses).\n\n"
            f"datasets: {', '.join(ANOMALY_DATASETS)} (validation/<SET> takes any set folder)\n\n"
            "camvid/<split> (train, val or test; --root = the CamVid folder in the SegNet layout) measures the "
            "inlier segmentation instead: mIoU over the 9 Cityscapes classes CamVid labels, written to "
            "results.json\n\n"
            f"protocols (--protocol NAME; --input-size, --resize-protocol and --fpr95 given explicitly win):\n"
            f"{protocols}\n\n"
            "A model whose metadata records an input size (written by --write-threshold) runs at it unless "
            "--input-size (or --protocol course) sets a size, as the ROS node does.\n\n"
            "example (the published Cityscapes-ENet table for one set):\n"
            "  pebal eval --model model_best.pth --arch enet --protocol course \\\n"
            "      --dataset validation/RoadAnomaly21 --root Validation_Dataset"
        ),
    )
    _add_model_and_dataset(p)
    p.add_argument(
        "--protocol",
        choices=tuple(EVAL_PROTOCOLS),
        help="a named preset of --input-size, --resize-protocol and --fpr95 (see above); default: paper",
    )
    p.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="resize images to this for the network (default: the size the model's metadata records, else native; "
        "native images are zero-padded to the model's size divisor)",
    )
    p.add_argument(
        "--resize-protocol",
        choices=tuple(RESIZE_PROTOCOLS),
        help="when images are resized: 'predictor' (OpenCV bilinear, scores resized back to the label size, "
        "as the deployed Predictor) or 'course' (PIL bilinear, labels resized nearest to the network size, metrics "
        "there); default: the protocol's",
    )
    p.add_argument("--device", default="cpu", help="torch device: cpu or cuda")
    p.add_argument("--workers", type=int, default=0, help="dataloader worker processes (default 0)")
    p.add_argument("--limit", type=int, help="evaluate only the first N images")
    p.add_argument("--out", type=Path, default=Path("eval_out"), help="output directory (default ./eval_out)")
    p.add_argument("--fpr95", choices=FPR95_DEFINITIONS, help="FPR95 definition reported (default: the protocol's)")
    p.add_argument("--streaming", action="store_true", help="bounded-memory metrics with a certified error bound")
    p.add_argument("--max-cells", type=int, default=DEFAULT_MAX_CELLS, help="streaming cell budget")
    p.add_argument(
        "--methods", nargs="+", metavar="METHOD", help="scores to evaluate (default: all of pebal_core.scoring.METHODS)"
    )
    p.add_argument(
        "--components",
        choices=("anomaly", "obstacle"),
        help="also SegmentMeIfYouCan component metrics (sIoU, PPV, mean F1) with that track's size filters",
    )
    p.add_argument("--no-plots", action="store_true", help="skip roc.png / pr.png")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--write-threshold",
        type=Path,
        metavar="CKPT",
        help="write a copy of the checkpoint whose metadata score_threshold is the PEBAL threshold at 95%% TPR",
    )


def _run_camvid_eval(args: argparse.Namespace, checkpoint: Path) -> int:
    """``pebal eval --dataset camvid/<split>``: inlier mIoU over the classes CamVid labels."""
    import json

    from pebal_core.data.camvid import CamVid, camvid_miou
    from pebal_core.evaluate import EvalOptions, inlier_confusion
    from pebal_core.fileio import atomic_write_text
    from pebal_core.models.checkpoint import load_model

    split = args.dataset.split("/", 1)[1]
    options = EvalOptions(
        input_size=tuple(args.input_size) if args.input_size else None,
        resize_protocol=args.resize_protocol or "predictor",
        device=args.device,
        limit=args.limit,
        progress=not args.no_progress,
    )
    model = load_model(checkpoint, arch=args.arch).to(args.device)
    dataset = CamVid(args.root, split)
    miou, per_class = camvid_miou(inlier_confusion(model, dataset, options, desc=f"CamVid {split}"))
    n = len(dataset) if args.limit is None else min(args.limit, len(dataset))
    report = {"dataset": args.dataset, "checkpoint": str(checkpoint), "n_images": n, "miou": miou}
    report["per_class_iou"] = per_class
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "results.json", json.dumps(report, indent=2) + "\n")
    print("| class | IoU % |\n|---|---:|")
    for name, iou in per_class.items():
        print(f"| {name} | {100 * iou:.2f} |")
    print(f"CamVid {split}: mIoU over the 9 mapped classes {100 * miou:.2f} % ({n} images) -> {args.out}/results.json")
    return 0


def _run_eval(args: argparse.Namespace) -> int:
    from pebal_core.evaluate import (
        EvalOptions,
        markdown_table,
        run_evaluation,
        save_with_threshold,
        skipped_line,
        write_report,
    )
    from pebal_core.model_store import resolve_model
    from pebal_core.protocols import EVAL_PROTOCOLS

    checkpoint = resolve_model(args.model)
    if args.dataset.startswith("camvid/"):
        return _run_camvid_eval(args, checkpoint)
    dataset_options = _dataset_options(args)
    preset = EVAL_PROTOCOLS[args.protocol or "paper"]
    input_size = tuple(args.input_size) if args.input_size else preset.input_size
    options = EvalOptions(
        input_size=input_size,
        resize_protocol=args.resize_protocol or preset.resize_protocol,
        protocol=args.protocol,
        device=args.device,
        workers=args.workers,
        limit=args.limit,
        fpr95=args.fpr95 or preset.fpr95,
        exact=not args.streaming,
        max_cells=args.max_cells,
        **({"methods": tuple(args.methods)} if args.methods else {}),
        components=args.components,
        progress=not args.no_progress,
    )
    report = run_evaluation(checkpoint, args.dataset, args.root, options, dataset_options, arch=args.arch)
    paths = write_report(report, args.out, plots=not args.no_plots)
    print(markdown_table(report))
    if skipped_line(report):
        print(skipped_line(report))
    if "score_threshold" in report:
        t = report["score_threshold"]
        print(
            f"PEBAL score threshold at 95% TPR: {t['score']:.6g} (TPR {100 * t['tpr']:.2f}%, FPR {100 * t['fpr']:.2f}%)"
        )
    if "components" in report:
        c = report["components"]
        print(f"components: sIoU {100 * c['siou']:.2f}  PPV {100 * c['ppv']:.2f}  mean F1 {100 * c['f1_mean']:.2f}")
    written = ", ".join(map(str, paths.values()))
    size = report["input_size"]
    at = "native size" if size is None else f"{size[0]}x{size[1]} ({options.resize_protocol} resize)"
    print(
        f"{report['n_images']} images at {at}, FPR95 {report['fpr95_definition']}, {report['mode']}, "
        f"{report['seconds']:.1f} s -> {written}"
    )
    if args.write_threshold is not None:
        threshold_file = save_with_threshold(checkpoint, args.write_threshold, report, arch=args.arch)
        print(f"wrote {threshold_file} (score_threshold set)")
    return 0


# ----------------------------------------------------------------------------- threshold
def _add_threshold(sub: argparse._SubParsersAction) -> None:
    from pebal_core.alarms.operating_point import DEFAULT_POLICY, POLICIES_HELP
    from pebal_core.alarms.region import REGIONS
    from pebal_core.alarms.selection import DEFAULT_POLICIES
    from pebal_core.data.anomaly_sets import ANOMALY_DATASETS

    p = sub.add_parser(
        "threshold",
        help="choose alarm operating points on validation data and store them in a copy of a model",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Run a model over a validation dataset (any dataset `pebal eval` reads), compute the score threshold "
            f"of each policy ({POLICIES_HELP}) and print them. With --write, write a copy of the model whose "
            "metadata stores every point and how it was chosen (alarm_operating_points) and, as score_threshold, "
            "the --default policy's threshold: what pebal_node alarms on. The region of fpr:<x> and fa:<x> is the "
            "drivable area of the model's own prediction (docs/alarms.md). Choose on validation data, never on "
            "the test set you report.\n\n"
            f"datasets: {', '.join(ANOMALY_DATASETS)} (validation/<SET> takes any set folder)\n"
            "example: pebal threshold --model runs/pebal/model.safetensors --dataset synthetic --split LostAndFound "
            "--root val_world --write model_with_alarms.safetensors"
        ),
    )
    _add_model_and_dataset(p)
    p.add_argument(
        "--input-size",
        type=int,
        nargs=2,
        metavar=("H", "W"),
        help="resize images to this for the network (default: the size the model's metadata records, else native)",
    )
    p.add_argument(
        "--policy",
        action="append",
        metavar="POLICY",
        help=f"policy to compute (repeatable; default: {', '.join(DEFAULT_POLICIES)})",
    )
    p.add_argument("--default", default=DEFAULT_POLICY, help=f"policy stored as score_threshold ({DEFAULT_POLICY})")
    p.add_argument("--region", choices=REGIONS, default="drivable", help="region of fpr/fa policies (default drivable)")
    p.add_argument("--include-sidewalk", action="store_true", help="the drivable area includes sidewalk")
    p.add_argument("--min-pixels", type=int, default=20, help="smallest false-alarm obstacle counted by fa:<x> (20)")
    p.add_argument("--device", default="cpu", help="torch device: cpu or cuda")
    p.add_argument("--limit", type=int, help="use only the first N images")
    p.add_argument("--write", type=Path, metavar="CKPT", help="write a copy of the model with the operating points")
    p.add_argument("--json", type=Path, help="also write the points as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _run_threshold(args: argparse.Namespace) -> int:
    import json

    from pebal_core.alarms.selection import (
        DEFAULT_POLICIES,
        choose_operating_points,
        format_points,
        save_with_operating_points,
    )
    from pebal_core.evaluate import EvalOptions
    from pebal_core.fileio import atomic_write_text
    from pebal_core.model_store import resolve_model

    checkpoint = resolve_model(args.model)
    dataset_options = _dataset_options(args)
    options = EvalOptions(
        input_size=tuple(args.input_size) if args.input_size else None,
        device=args.device,
        limit=args.limit,
        progress=not args.no_progress,
    )
    report = choose_operating_points(
        checkpoint,
        args.dataset,
        args.root,
        options,
        dataset_options,
        policies=tuple(args.policy or DEFAULT_POLICIES),
        default=args.default,
        region=args.region,
        include_sidewalk=args.include_sidewalk,
        min_pixels=args.min_pixels,
        arch=args.arch,
    )
    print(format_points(report))
    print(f"{report['source']['n_images']} images of {args.dataset} ({args.root}), region {args.region}")
    if args.json is not None:
        payload = {**report, "points": [p.to_dict() for p in report["points"]]}
        atomic_write_text(args.json, json.dumps(payload, indent=2) + "\n")
    if args.write is not None:
        written = save_with_operating_points(checkpoint, args.write, report, arch=args.arch)
        print(f"wrote {written} (score_threshold = the {report['default']} point)")
    return 0


# ----------------------------------------------------------------------------- train
_TRAIN_EPILOG = """\
examples:
  pebal train --config config/train_pebal_cityscapes.yaml
  pebal train --config config/train_pebal_cityscapes.yaml optim.lr=1e-6 loss.ebm_weight=0.01 out_dir=runs/lf
  pebal train --config config/train_pebal_cityscapes.yaml --ablation al_ebm out_dir=runs/al_ebm
  pebal train --config config/train_pretrain_cityscapes.yaml          # full network, 19 classes
  torchrun --standalone --nproc_per_node 4 -m pebal_core.cli train --config config/train_pebal_cityscapes.yaml

Files in out_dir: last.pt (resumable state; rerun the same command to continue after a kill),
history.jsonl (losses), model.safetensors (the result, with the configuration in its metadata).
"""


def _add_train(sub: argparse._SubParsersAction) -> None:
    from pebal_core.config import ABLATION_ROWS

    p = sub.add_parser(
        "train",
        help="PEBAL fine-tuning of a network's final block, or full-network pretraining",
        description=(
            "Train from a YAML configuration (defaults: the paper's hyperparameters; see README "
            "'Training' for every key). mode=pebal fine-tunes only the final block of a Cityscapes-trained "
            "base with the PEBAL loss on AnomalyMix data (Cityscapes + COCO outliers); mode=pretrain trains "
            "the whole network with 19-class cross-entropy on Cityscapes-layout data. An interrupted run "
            "continues from out_dir/last.pt when started again with the same configuration."
        ),
        epilog=_TRAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", type=Path, help="YAML configuration file (keys not given keep their defaults)")
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="override configuration keys, e.g. optim.lr=1e-6 data.crop=[512,512]",
    )
    p.add_argument(
        "--ablation",
        choices=sorted(ABLATION_ROWS),
        help="a row of the paper's ablation (Table 4), applied before the KEY=VALUE overrides",
    )
    p.add_argument("--print-config", action="store_true", help="print the resolved configuration as YAML and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (history.jsonl is still written)")


def _run_train(args: argparse.Namespace) -> int:
    import yaml

    from pebal_core.config import ABLATION_ROWS, TrainConfig, load_config, to_dict

    overrides = [*(ABLATION_ROWS[args.ablation] if args.ablation else ()), *args.overrides]
    cfg = load_config(TrainConfig, args.config, overrides)
    if args.print_config:
        print(yaml.safe_dump(to_dict(cfg), sort_keys=False), end="")
        return 0
    from pebal_core.train import train

    try:
        result = train(cfg, progress=not args.no_progress)
    except FloatingPointError as e:
        raise UserError(str(e)) from e
    if int(os.environ.get("RANK", "0")) == 0:
        resumed = f", resumed at step {result.resumed_from}" if result.resumed_from is not None else ""
        print(f"trained {result.global_step}/{result.total_steps} steps{resumed}; wrote {result.model_path}")
    return 0


# ----------------------------------------------------------------------------- synth
def _add_synth(sub: argparse._SubParsersAction) -> None:
    from pebal_core.data.synthetic.config import PARTS, WorldConfig

    d = WorldConfig()
    p = sub.add_parser(
        "synth",
        help="generate the synthetic world (Cityscapes, COCO, Fishyscapes, LostAndFound trees)",
        description=(
            "Generate, deterministically from --seed, a procedurally drawn urban world in the real dataset "
            "layouts under --out: cityscapes/ (inlier street scenes, gtFine labelIds + labelTrainIds), coco/ "
            "(outlier-exposure objects: train2017 JPEGs, instances_train2017.json with RLE masks, Meta-OoD "
            "ood_seg_train2017 PNGs), fishyscapes/ (LostAndFound and Static validation splits, labels 0/1/255, "
            "anomalies from test-only object families) and lostandfound/ (ego-motion sequences with gtCoarse, "
            "camera and timestamp files), plus world.json describing everything drawn. The same seed and options "
            "give byte-identical files."
        ),
        epilog="Example: pebal synth --out data/synthetic --seed 0 --workers 2 --preview docs/synthetic_world.png",
    )
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--seed", type=int, default=0, help="world seed (default 0)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help=f"image size (default {d.height} {d.width})")
    p.add_argument("--small", action="store_true", help="a tiny world for smoke tests (64x128, a few images per part)")
    p.add_argument("--train", type=int, help=f"Cityscapes train images (default {d.train})")
    p.add_argument("--val", type=int, help=f"Cityscapes val images (default {d.val})")
    p.add_argument("--coco", type=int, help=f"COCO outlier-exposure images (default {d.coco})")
    p.add_argument("--fishyscapes", type=int, help=f"Fishyscapes images per split (default {d.fishyscapes})")
    p.add_argument("--sequences", type=int, help=f"LostAndFound sequences (default {d.sequences})")
    p.add_argument("--frames", type=int, help=f"frames per sequence (default {d.frames})")
    p.add_argument("--fps", type=float, help=f"sequence frame rate in Hz (default {d.fps:g})")
    p.add_argument(
        "--parts", nargs="+", choices=PARTS, help="generate only these parts (default: all); others keep their files"
    )
    p.add_argument("--workers", type=int, default=1, help="worker processes (default 1; output is identical)")
    p.add_argument("--overwrite", action="store_true", help="replace parts that already exist under --out")
    p.add_argument("--preview", type=Path, help="also write a contact sheet PNG of the generated world")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _run_synth(args: argparse.Namespace) -> int:
    import dataclasses

    from pebal_core.data.synthetic.config import SMALL, WorldConfig
    from pebal_core.data.synthetic.writers import generate_world

    options = dict(SMALL) if args.small else {}
    if args.size:
        options["height"], options["width"] = args.size
    for key in ("train", "val", "coco", "fishyscapes", "sequences", "frames", "fps"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    if args.parts:
        options["parts"] = tuple(args.parts)
    if args.workers < 1:
        raise UserError(f"--workers must be at least 1, got {args.workers}")
    config = WorldConfig(seed=args.seed, **options)
    manifest = generate_world(args.out, config, workers=args.workers, overwrite=args.overwrite, progress=not args.quiet)
    counts = {
        k: v
        for k, v in dataclasses.asdict(config).items()
        if k in ("train", "val", "coco", "fishyscapes", "sequences", "frames")
    }
    print(
        f"wrote {', '.join(config.parts)} under {args.out} (seed {config.seed}, {config.height}x{config.width}, "
        + ", ".join(f"{k} {v}" for k, v in counts.items())
        + ")"
    )
    if args.preview:
        from pebal_core.data.synthetic.preview import write_contact_sheet

        write_contact_sheet(args.out, args.preview, manifest)
        print(f"wrote {args.preview}")
    return 0


# ----------------------------------------------------------------------------- main
COMMANDS = {
    "models": (_add_models, _run_models),
    "checkpoint": (_add_checkpoint, _run_checkpoint),
    "predict": (_add_predict, _run_predict),
    "export": (_add_export, _run_export),
    "eval": (_add_eval, _run_eval),
    "threshold": (_add_threshold, _run_threshold),
    "train": (_add_train, _run_train),
    "synth": (_add_synth, _run_synth),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pebal",
        description=(
            "PEBAL anomaly segmentation (Tian et al., ECCV 2022): train, evaluate, export and run "
            "energy-based anomaly segmenters for Cityscapes-style road scenes."
        ),
    )
    parser.add_argument("--version", action="version", version=f"pebal {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add, _ in COMMANDS.values():
        add(sub)
    return parser


def _run_command(args: argparse.Namespace) -> int:
    from pebal_core.models.checkpoint import MissingArchitectureError

    try:
        return COMMANDS[args.command][1](args)
    except MissingArchitectureError as e:  # the Python API's arch= is the command line's --arch
        raise UserError(str(MissingArchitectureError(e.path, e.source_format, how="pass --arch NAME"))) from e


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_reporting_errors("pebal", lambda: _run_command(args), _user_errors())


if __name__ == "__main__":
    sys.exit(main())
