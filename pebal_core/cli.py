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


# ----------------------------------------------------------------------------- main
COMMANDS = {
    "models": (_add_models, _run_models),
    "checkpoint": (_add_checkpoint, _run_checkpoint),
    "predict": (_add_predict, _run_predict),
    "train": (_add_train, _run_train),
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
