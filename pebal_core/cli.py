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

from pebal_core.version import __version__


class UserError(Exception):
    """An error whose message tells the user what to fix (printed without a traceback)."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from pebal_core.config import ConfigError
    from pebal_core.models.checkpoint import CheckpointError

    return (UserError, ConfigError, CheckpointError, FileNotFoundError, OSError, ValueError, KeyError)


# ----------------------------------------------------------------------------- models
def _add_models(sub: argparse._SubParsersAction) -> None:
    sub.add_parser(
        "models", help="list the model zoo's architectures", description="List every architecture build_model knows."
    )


def _run_models(args: argparse.Namespace) -> int:
    from pebal_core.models import list_models

    for name, description in list_models().items():
        print(f"{name:12s} {description}")
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
    p.add_argument("--model", default="default", help="checkpoint path, or 'default' for the shipped model")
    p.add_argument("--backend", default="torch", help="inference backend: torch (default), onnxruntime, tensorrt")
    p.add_argument("--device", default="cpu", help="torch/onnxruntime device: cpu or cuda")
    p.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), help="run the network at this size")
    p.add_argument("--threshold", type=float, help="energy threshold for the overlay (default: the model's)")
    p.add_argument("--no-smoothing", action="store_true", help="skip the 7x7 Gaussian smoothing of the score")
    p.add_argument("--out", type=Path, default=Path("predictions"), help="output directory (default ./predictions)")


def _run_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from pebal_core.images import read_rgb, write_label, write_rgb
    from pebal_core.labels import colorize
    from pebal_core.runtime import Predictor, default_model_path
    from pebal_core.visualize import heatmap, overlay

    path = default_model_path() if args.model == "default" else Path(args.model)
    predictor = Predictor.from_checkpoint(
        path,
        backend=args.backend,
        device=args.device,
        input_size=tuple(args.input_size) if args.input_size else None,
        smoothing=not args.no_smoothing,
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
            write_rgb(f"{stem}_overlay.png", overlay(rgb, score > threshold))
        print(f"{image_path}: score range [{score.min():.3f}, {score.max():.3f}] -> {stem}_*")
    if threshold is None:
        print("no threshold given and none stored in the model: overlays skipped (use --threshold)")
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command][1](args)
    except _user_errors() as e:
        if os.environ.get("PEBAL_DEBUG"):
            raise
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"pebal: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pebal: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
