"""``pebal export``: ONNX files, OpenVINO int8 models and TensorRT engines."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_export(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Deployment artefacts. `export onnx` writes the network with input normalisation and the "
        "energy-score head fused in (input 'image': uint8 RGB 1x3xHxW; outputs 'labels' uint8 1xHxW "
        "trainIds, 'score' float32 1xHxW anomaly score, optional 'logits'), checked with onnx.checker, "
        "with the model's metadata in metadata_props. `export tensorrt` builds a TensorRT plan from such "
        "a file on this machine's GPU and writes a JSON sidecar (TensorRT version, GPU, precision, "
        "input profile, ONNX sha256) used to refuse or rebuild the plan elsewhere. `export openvino` "
        "quantises such a file to an int8 OpenVINO IR for the CPU (energy head kept in float). Each writes "
        "to -o/--out (--output is an alias)."
    )
    esub = p.add_subparsers(dest="export_cmd", required=True)
    o = esub.add_parser(
        "onnx",
        help="checkpoint -> ONNX with the energy head fused in",
        description="Export a checkpoint that names its architecture (this project's format; convert "
        "others with `pebal checkpoint convert SRC DST --arch NAME` first) to ONNX.",
    )
    o.add_argument("checkpoint", help="checkpoint file, or a shipped model's name ('default', 'synthetic')")
    o.add_argument(
        "-o",
        "--out",
        "--output",
        dest="output",
        type=Path,
        help="output .onnx (default: the checkpoint's name with .onnx)",
    )
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

    v = esub.add_parser(
        "openvino",
        help="ONNX -> int8 OpenVINO IR for the CPU (NNCF post-training quantisation)",
        description="Quantise a `pebal export onnx` file to int8 for OpenVINO's CPU plugin: weights per channel, "
        "activation ranges from calibration images, the energy head (labels, free energy, smoothing) in float32. "
        "With --validation-images, operations are returned to float32 until the labels agree with the float "
        "model's on all but --max-label-drop of the validation pixels. Use inlier frames of your camera's kind "
        "(ordinary road scenes), never the images you will test on. Run the result with --backend openvino; check "
        "it keeps the answers on your own labelled data (docs/deployment.md, the accuracy gate).",
    )
    v.add_argument("onnx", type=Path, help="a file written by `pebal export onnx` (fixed size, or give --input-size)")
    v.add_argument(
        "-o",
        "--out",
        "--output",
        dest="output",
        type=Path,
        help="IR .xml (default <stem>.int8.xml beside the ONNX; + .bin)",
    )
    v.add_argument("--calibration-images", type=Path, required=True, help="folder of inlier camera images")
    v.add_argument("--calibration-limit", type=int, default=300, help="at most this many images, evenly spread (300)")
    v.add_argument("--validation-images", type=Path, help="folder of other inlier images for accuracy control")
    v.add_argument("--validation-limit", type=int, default=20, help="at most this many validation images (20)")
    v.add_argument(
        "--max-label-drop", type=float, default=0.01, help="accuracy control: share of pixels whose label may change"
    )
    v.add_argument("--input-size", type=int, nargs=2, metavar=("H", "W"), help="size of a dynamic export")
    v.add_argument("--preset", choices=("mixed", "performance"), default="mixed", help="NNCF preset (default mixed)")

    t = esub.add_parser(
        "tensorrt",
        help="ONNX -> TensorRT plan for this machine's GPU (needs pip install .[tensorrt])",
        description="Build a TensorRT plan (explicit batch, one optimisation profile) from a `pebal export "
        "onnx` file. The plan and its sidecar go next to the ONNX file as <stem>.<precision>.engine[.json], "
        "where the tensorrt backend looks for them.",
    )
    t.add_argument("onnx", type=Path, help="a file written by `pebal export onnx`")
    t.add_argument(
        "-o",
        "--out",
        "--output",
        dest="output",
        type=Path,
        help="plan file (default <stem>.<precision>.engine beside the ONNX)",
    )
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


def run_export(args: argparse.Namespace) -> int:
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

    from pebal_core.backends import parse_device

    if args.export_cmd == "openvino":
        from pebal_core.export.calibration import calibration_files
        from pebal_core.export.openvino import quantize_int8

        calibration = calibration_files(args.calibration_images, args.calibration_limit)
        validation = calibration_files(args.validation_images, args.validation_limit) if args.validation_images else []
        output = args.output or args.onnx.with_name(f"{args.onnx.stem}.int8.xml")
        record = quantize_int8(
            args.onnx,
            output,
            calibration,
            validation,
            max_label_drop=args.max_label_drop,
            input_size=_size(args.input_size),
            preset=args.preset,
            describe={"calibration_folder": str(args.calibration_images)},
        )
        if record["validation"]:
            print(
                f"labels agree with the float model on {100 * record['validation']['label_agreement']:.2f}% of "
                "the validation pixels"
            )
        return 0

    from pebal_core.export.tensorrt import build_engine, engine_path_for

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


COMMANDS = {"export": ("export to ONNX, build TensorRT engines", add_export, run_export)}
"""Sub-command name -> (one-line help, declare its arguments on its parser, run it)."""
