"""``pebal models`` (the shipped models and architectures) and ``pebal checkpoint`` (inspect, convert)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_models(p: argparse.ArgumentParser) -> None:
    p.description = (
        "List the models shipped in the package, which every --model option (and the node's model "
        "parameter) takes by name, with what their metadata says about them (base network, training, input "
        "size, alarm operating point and the data it was chosen on), then every architecture build_model "
        "knows (the names --arch takes)."
    )


def run_models(args: argparse.Namespace) -> int:
    from pebal_core.alarms.operating_point import StoredPoints
    from pebal_core.model_store import MODELS, describe, model_names, model_path
    from pebal_core.models import list_models
    from pebal_core.models.checkpoint import read_checkpoint

    print("shipped models (--model NAME):")
    for name in model_names():
        print(f"  {name:10s} {MODELS[name].summary}")
        try:
            metadata = read_checkpoint(model_path(name)).metadata
        except FileNotFoundError as e:
            print(f"             not installed: {e}")
            continue
        fields = describe(name, metadata)
        stored = StoredPoints.from_metadata(metadata)
        if stored is not None:
            fields["operating_point"] = stored.points[stored.default].describe()
            rates = stored.measured.get(stored.default, {})
            measured = ", ".join(f"{k.upper()} {100 * float(rates[k]):.1f} %" for k in ("tpr", "fpr") if k in rates)
            source = stored.source
            fields["point_chosen_on"] = f"{source.get('dataset')} ({source.get('n_images')} images): {measured}"
        for key, value in fields.items():
            print(f"             {key}: {value}")
    print("architectures (--arch NAME):")
    for name, description in list_models().items():
        print(f"  {name:12s} {description}")
    return 0


def add_checkpoint(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Inspect a checkpoint of any supported format (this project's .pt/.safetensors, NVIDIA "
        "Cityscapes 'cityscapes_best.pth', PEBAL 'best_ad_ckpt.pth', bare state_dicts), or convert "
        "one into this project's format with metadata. Files are read with weights_only=True."
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


def run_checkpoint(args: argparse.Namespace) -> int:
    import json

    from pebal_core.models.checkpoint import load_model, read_checkpoint, save_checkpoint
    from pebal_core.onnx_contract import OPERATING_POINT_KEYS

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
    kept = ("train_config", "input_size", *OPERATING_POINT_KEYS)  # the operating points hold at input_size
    meta = {key: source[key] for key in kept if source.get(key) is not None}
    meta["converted_from"] = {"file": str(args.src), "format": source["source_format"], "sha256": source["sha256"]}
    save_checkpoint(model, args.dst, half=args.half, **meta)
    print(f"wrote {args.dst}")
    return 0


COMMANDS = {
    "models": ("list the shipped models and the model zoo's architectures", add_models, run_models),
    "checkpoint": ("inspect or convert checkpoints", add_checkpoint, run_checkpoint),
}
"""Sub-command name -> (one-line help, declare its arguments on its parser, run it)."""
