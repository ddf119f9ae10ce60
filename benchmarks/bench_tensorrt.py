"""TensorRT fp16 and int8 against torch on the GPU: engine build time, frames/s, labels kept (one table).

For each model (the shipped default and the zoo's WRN38 DeepLabv3+, the PEBAL paper's network, with
random weights: its speed does not depend on them) at 512x1024: exports ONNX (CPU), builds an fp16
and an int8 plan (int8 calibrated on ``--calibration-images``, real inlier frames; random-weight
WRN38 is calibrated on them too, for its speed only), and times ``Predictor.predict`` of one frame
with torch on CUDA (fp32), TensorRT fp16 and TensorRT int8, rounds interleaved. Labels are compared
with torch's on the same frame.

    python benchmarks/bench_tensorrt.py --out DIR [--calibration-images DIR] [--frames 50]
    python benchmarks/bench_tensorrt.py --out DIR --export-only     # the CPU part: ONNX files, no GPU needed

Run by ``benchmarks/gpu_check.sh``, which says how to run it on a machine with an NVIDIA GPU.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads, as importing pebal_core does

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pebal_core.export.onnx import export_model  # noqa: E402
from pebal_core.export.tensorrt import DeviceEnv, build_engine, engine_path_for  # noqa: E402
from pebal_core.model_store import model_path  # noqa: E402
from pebal_core.models import build_model  # noqa: E402
from pebal_core.models.checkpoint import load_model, save_checkpoint  # noqa: E402
from pebal_core.runtime import Predictor  # noqa: E402

SIZE = (512, 1024)
REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"


def models(out: Path) -> dict[str, Path]:
    """``{label: checkpoint}``: the shipped default, and WRN38 with random weights saved under ``out``."""
    wrn38 = out / "wrn38_random.safetensors"
    if not wrn38.is_file():
        torch.manual_seed(0)
        save_checkpoint(build_model("wrn38").eval(), wrn38)
    return {"default (espnet_p2q8)": model_path("default"), "wrn38 (random weights)": wrn38}


def export(checkpoint: Path, out: Path) -> Path:
    onnx_path = out / f"{checkpoint.stem}.onnx"
    if not onnx_path.is_file():
        model = load_model(checkpoint)
        export_model(model, onnx_path, dict(model.checkpoint_metadata, path=str(checkpoint)), SIZE)
    return onnx_path


def timed(predictors: dict[str, Predictor], rgb: np.ndarray, frames: int) -> dict[str, float]:
    for p in predictors.values():
        for _ in range(3):
            p.predict(rgb)
    times: dict[str, list[float]] = {k: [] for k in predictors}
    for _ in range(frames):
        for name, p in predictors.items():
            t0 = time.perf_counter()
            p.predict(rgb)
            times[name].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the ONNX files and plans")
    parser.add_argument("--calibration-images", type=Path, default=REALDATA / "camvid" / "train")
    parser.add_argument("--calibration-limit", type=int, default=64)
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--export-only", action="store_true", help="write the ONNX files and stop (no GPU needed)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    onnx_files = {}
    for label, checkpoint in models(args.out).items():
        t0 = time.perf_counter()
        onnx_files[label] = export(checkpoint, args.out)
        print(f"ONNX {label}: {onnx_files[label]} ({time.perf_counter() - t0:.0f} s)", flush=True)
    if args.export_only:
        return
    env = DeviceEnv.current()
    print(f"GPU {env.gpu_name} (sm {env.compute_capability}), TensorRT {env.tensorrt_version}", flush=True)
    rgb = np.random.default_rng(0).integers(0, 256, (*SIZE, 3), dtype=np.uint8)
    rows = []
    for label, onnx_path in onnx_files.items():
        builds = {}
        for precision in ("fp16", "int8"):
            t0 = time.perf_counter()
            extra = (
                {"calibration_images": args.calibration_images, "calibration_limit": args.calibration_limit}
                if precision == "int8"
                else {}
            )
            build_engine(onnx_path, precision=precision, **extra)
            builds[precision] = time.perf_counter() - t0
            print(f"built {engine_path_for(onnx_path, precision).name} in {builds[precision]:.0f} s", flush=True)
        checkpoint = models(args.out)[label]
        predictors = {"torch cuda fp32": Predictor.from_checkpoint(checkpoint, device="cuda", input_size=SIZE)}
        for precision in ("fp16", "int8"):
            predictors[f"tensorrt {precision}"] = Predictor.from_checkpoint(
                onnx_path, backend="tensorrt", device="cuda", precision=precision
            )
        reference = predictors["torch cuda fp32"].predict(rgb)[0]
        times = timed(predictors, rgb, args.frames)
        for name, seconds in times.items():
            agree = (predictors[name].predict(rgb)[0] == reference).mean()
            build = builds.get(name.split()[-1], float("nan")) if name.startswith("tensorrt") else float("nan")
            rows.append((label, name, 1000 * seconds, 1 / seconds, build, 100 * agree))
    print(f"\n{'model':26s} {'backend':16s} {'ms':>8s} {'fps':>8s} {'build s':>8s} {'labels = torch':>15s}")
    for label, name, ms, fps, build, agree in rows:
        print(f"{label:26s} {name:16s} {ms:8.2f} {fps:8.1f} {build:8.0f} {agree:14.2f}%")


if __name__ == "__main__":
    main()
