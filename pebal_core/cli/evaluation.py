"""``pebal eval`` (anomaly and CamVid metrics) and ``pebal threshold`` (operating points chosen on
validation data); both take a model and a dataset the same way."""

from __future__ import annotations

import argparse
from pathlib import Path

from pebal_core.cli.errors import UserError


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


def add_eval(p: argparse.ArgumentParser) -> None:
    from pebal_core.alarms.ego_mask import SPEC_HELP as EGO_HELP
    from pebal_core.alarms.frame_counts import DEFAULT_MIN_VISIBLE
    from pebal_core.data.anomaly_sets import ANOMALY_DATASETS
    from pebal_core.metrics import DEFAULT_MAX_CELLS, FPR95_DEFINITIONS
    from pebal_core.protocols import EVAL_PROTOCOLS, RESIZE_PROTOCOLS

    def preset(p) -> str:
        size = "(no --input-size)" if p.input_size is None else f"--input-size {p.input_size[0]} {p.input_size[1]}"
        return f"  {p.name}: {size} --resize-protocol {p.resize_protocol} --fpr95 {p.fpr95}\n    ({p.description})"

    protocols = "\n".join(preset(p) for p in EVAL_PROTOCOLS.values())
    p.description = (
        "Run a model over an anomaly dataset (one forward pass per image) and score every pixel with the "
        "PEBAL score and the baselines (MSP, MaxLogit, entropy, energy; abstention for 20-channel models). "
        "Void pixels are ignored. Writes to --out: results.md (AUROC / AP / FPR95 table in %), "
        "results.json (all numbers, the three FPR95 definitions, operating points), roc.png and pr.png, and "
        "prints the table and the PEBAL score threshold at 95% TPR (the paper's operating point; "
        "--write-threshold stores it as the operating point of a copy of the checkpoint; `pebal threshold` "
        "chooses and stores the alarm operating points pebal_node uses).\n\n"
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
    )
    p.formatter_class = argparse.RawDescriptionHelpFormatter
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
    p.add_argument("-o", "--out", type=Path, default=Path("eval_out"), help="output directory (default ./eval_out)")
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
    p.add_argument(
        "--policy",
        default="",
        help="the model's stored operating point the obstacles are counted at (default: its default point)",
    )
    p.add_argument(
        "--ego-mask",
        metavar="MASK",
        help=f"ego-vehicle mask for the obstacle-level alarms, overriding the point's: {EGO_HELP}; 'none' = no mask",
    )
    p.add_argument(
        "--min-visible",
        type=int,
        default=DEFAULT_MIN_VISIBLE,
        help=f"smallest labelled obstacle counted, pixels of the label maps as compared ({DEFAULT_MIN_VISIBLE})",
    )
    p.add_argument("--no-obstacles", action="store_true", help="skip the obstacle-level counts")
    p.add_argument("--no-plots", action="store_true", help="skip roc.png / pr.png")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--write-threshold",
        type=Path,
        metavar="CKPT",
        help="write a copy of the checkpoint whose operating point is the PEBAL threshold at 95%% TPR (with the "
        "default alarm settings)",
    )


def _run_camvid_eval(args: argparse.Namespace, checkpoint: Path) -> int:
    """``pebal eval --dataset camvid/<split>``: inlier mIoU over the classes CamVid labels."""
    import json

    from pebal_core.data.camvid import CamVid, camvid_miou
    from pebal_core.devices import torch_device
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
    model = load_model(checkpoint, arch=args.arch).to(torch_device(args.device, "--device"))
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


def run_eval(args: argparse.Namespace) -> int:
    from pebal_core.alarms.ego_mask import load_ego_mask
    from pebal_core.evaluate import (
        EvalOptions,
        markdown_table,
        obstacle_line,
        run_evaluation,
        skipped_line,
        write_report,
    )
    from pebal_core.model_store import resolve_model
    from pebal_core.operating_point_selection import eval_points, write_operating_points
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
        obstacle_level=not args.no_obstacles,
        policy=args.policy,
        ego_mask=args.ego_mask,
        min_visible=args.min_visible,
        progress=not args.no_progress,
    )
    if args.ego_mask:
        load_ego_mask(args.ego_mask)  # a bad mask is refused before the model runs
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
    if obstacle_line(report):
        print(obstacle_line(report))
        if report["obstacle_level"]["point_warning"]:
            print(f"note: {report['obstacle_level']['point_warning']}")
    written = ", ".join(map(str, paths.values()))
    size = report["input_size"]
    at = "native size" if size is None else f"{size[0]}x{size[1]} ({options.resize_protocol} resize)"
    print(
        f"{report['n_images']} images at {at}, FPR95 {report['fpr95_definition']}, {report['mode']}, "
        f"{report['seconds']:.1f} s -> {written}"
    )
    if args.write_threshold is not None:
        stored, size = eval_points(report)
        written = write_operating_points(checkpoint, args.write_threshold, stored, size, arch=args.arch)
        print(f"wrote {written} (its operating point: {stored.points[stored.default].describe()})")
    return 0


def add_threshold(p: argparse.ArgumentParser) -> None:
    from pebal_core.alarms.ego_mask import SPEC_HELP as EGO_HELP
    from pebal_core.alarms.obstacles import DEFAULT_MIN_PIXELS
    from pebal_core.alarms.operating_point import DEFAULT_POLICIES, DEFAULT_POLICY, POLICIES_HELP
    from pebal_core.alarms.region import REGIONS
    from pebal_core.data.anomaly_sets import ANOMALY_DATASETS

    p.description = (
        "Run a model over a validation dataset (any dataset `pebal eval` reads), compute the score threshold "
        f"of each policy ({POLICIES_HELP}) and print them. With --write, write a copy of the model (weights "
        "unchanged) whose metadata stores every point with the alarm settings it was chosen with (region, "
        "smallest obstacle at the validation images' size, persistence for sequences, ego mask) and how it was "
        "chosen; "
        "the --default point is what pebal_node, pebal predict and the demo alarm at unless told otherwise. "
        "The region of fpr:<x>, fa:<x> and obstacles:<x> is the drivable area of the model's own prediction, "
        "--ego-mask's pixels left out (docs/alarms.md); obstacles:<x> counts obstacles as pebal eval does. "
        "Choose on validation data, never on the test set you report.\n\n"
        f"datasets: {', '.join(ANOMALY_DATASETS)} (validation/<SET> takes any set folder)\n"
        "example: pebal threshold --model runs/pebal/model.safetensors --dataset synthetic --split LostAndFound "
        "--root val_world --write model_with_alarms.safetensors"
    )
    p.formatter_class = argparse.RawDescriptionHelpFormatter
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
    p.add_argument(
        "--default", default=DEFAULT_POLICY, help=f"policy stored as the model's default point ({DEFAULT_POLICY})"
    )
    p.add_argument("--region", choices=REGIONS, default="drivable", help="region of fpr/fa policies (default drivable)")
    p.add_argument("--include-sidewalk", action="store_true", help="the drivable area includes sidewalk")
    p.add_argument(
        "--min-pixels",
        type=int,
        default=DEFAULT_MIN_PIXELS,
        help=f"smallest obstacle, pixels of the validation images: counted by fa:<x>, stored with every point "
        f"({DEFAULT_MIN_PIXELS})",
    )
    p.add_argument(
        "--ego-mask",
        default="",
        metavar="MASK",
        help=f"ego-vehicle mask of the validation camera ({EGO_HELP}): its pixels never alarm while choosing, "
        "and every point stores it and runs with it (default: none)",
    )
    p.add_argument("--device", default="cpu", help="torch device: cpu or cuda")
    p.add_argument("--limit", type=int, help="use only the first N images")
    p.add_argument("--write", type=Path, metavar="CKPT", help="write a copy of the model with the operating points")
    p.add_argument("--json", type=Path, help="also write the points as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run_threshold(args: argparse.Namespace) -> int:
    import json

    from pebal_core.alarms.ego_mask import load_ego_mask
    from pebal_core.alarms.operating_point import DEFAULT_POLICIES, METADATA_KEY
    from pebal_core.evaluate import EvalOptions
    from pebal_core.fileio import atomic_write_text
    from pebal_core.model_store import resolve_model
    from pebal_core.operating_point_selection import choose_operating_points, format_points, write_operating_points

    checkpoint = resolve_model(args.model)
    dataset_options = _dataset_options(args)
    load_ego_mask(args.ego_mask)  # a bad mask is refused before the model runs
    options = EvalOptions(
        input_size=tuple(args.input_size) if args.input_size else None,
        device=args.device,
        limit=args.limit,
        progress=not args.no_progress,
    )
    stored = choose_operating_points(
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
        ego_mask=args.ego_mask,
    )
    print(format_points(stored))
    mask = f", ego mask {args.ego_mask}" if args.ego_mask else ""
    print(f"{stored.source['n_images']} images of {args.dataset} ({args.root}), region {args.region}{mask}")
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(stored.to_metadata()[METADATA_KEY], indent=2) + "\n")
    if args.write is not None:
        size = stored.source["input_size"]
        written = write_operating_points(checkpoint, args.write, stored, size, arch=args.arch)
        print(f"wrote {written} (default: {stored.points[stored.default].describe()})")
    return 0


COMMANDS = {
    "eval": ("anomaly metrics of a model on an evaluation dataset", add_eval, run_eval),
    "threshold": (
        "choose alarm operating points on validation data and store them in a copy of a model",
        add_threshold,
        run_threshold,
    ),
}
"""Sub-command name -> (one-line help, declare its arguments on its parser, run it)."""
