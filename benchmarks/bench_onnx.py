"""ONNX Runtime (CPU) against eager PyTorch (CPU): speed ratio and frames per second.

Targets: the onnxruntime backend runs the real-time model at 256x512 at least 1.3x as fast as
the torch backend on the same CPU; the shipped default (real-camera) model runs at
least 10 frames/s through onnxruntime at 512x1024 (``--model default --size 512 1024``).
Both sides time the full ``Predictor.predict`` path of one camera frame (uint8 RGB in; labels
and smoothed anomaly score out): the torch backend normalises, runs the network and the energy
head eagerly; the onnxruntime backend runs a fixed-size ``pebal export onnx`` file with
normalisation and head fused in. Rounds alternate between the two backends so that other load
on the machine hits both alike.

    python benchmarks/bench_onnx.py [--size 256 512] [--frames 30] [--threads N] [--sweep]
    python benchmarks/bench_onnx.py --model default --size 512 1024 [--sweep]   # a checkpoint or shipped model
    python benchmarks/bench_onnx.py --arch espnet_p2q8 --size 512 1024          # a zoo network, random weights
    python benchmarks/bench_onnx.py --bases --size 512 1024                    # the shipped default + real bases

Without ``--model``, ``--arch`` or ``--bases`` the two real-time ResNet-18 widths are compared.
``--bases`` times the shipped default model beside every real Cityscapes base of the realdata
folder (``benchmarks/real_data_baselines.py``'s ``MODELS``, real weights, by ``arch``) and
reports each one's onnxruntime time over the default's (the speed criterion for shipping another
base: no slower than the default through onnxruntime). All models are timed in one run, their
calls interleaved round by round.

``--threads`` sets both sides' CPU threads (torch intra-op threads and onnxruntime intra-op
threads; default: every usable core). On a machine shared with other work, OpenMP-style
thread pools lose badly when a core is taken, so the load average is printed with the
results, and ``--threads 1`` gives the comparison least disturbed by other load.

``--sweep`` also times onnxruntime's graph optimisation levels and thread counts, which is
how the backend's defaults (ORT_ENABLE_ALL, one intra-op thread per usable core) were chosen.

Besides wall time, the CPU time the process used per frame is reported (``cpu ms``, all its
threads). It depends much less on other load than wall time (shared caches and cores still
inflate it), so with ``--threads 1``, ``1000 / cpu ms`` is about the single-thread rate of an
idle core, a little pessimistic.

The sweep's sessions leave onnxruntime's default thread spinning on, except the ``no spin``
rows, which set ``session.intra_op.allow_spinning=0`` as the onnxruntime backend does.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from real_data_baselines import DEFAULT_REALDATA, MODELS

from pebal_core.backends import usable_cores
from pebal_core.export.onnx import export_onnx
from pebal_core.model_store import DEFAULT, is_model_name, resolve_model
from pebal_core.models import build_model
from pebal_core.models.checkpoint import load_model, read_checkpoint, save_checkpoint
from pebal_core.runtime import Predictor

CANDIDATES = {"resnet18 (width 0.5, synthetic model)": {"width": 0.5}, "resnet18 (width 1.0)": {"width": 1.0}}
TARGET = 1.3
"""Least torch / onnxruntime time ratio."""
TARGET_FPS = 10.0
"""Least onnxruntime frames/s of the model given by --model or --arch."""


def interleaved_medians(fns: list, frames: int, warmup: int = 3) -> tuple[list[float], list[float]]:
    """Median wall seconds and median process CPU seconds per call of each function, calls
    interleaved round by round."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    wall: list[list[float]] = [[] for _ in fns]
    cpu: list[list[float]] = [[] for _ in fns]
    for _ in range(frames):
        for i, fn in enumerate(fns):
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[i].append(time.perf_counter() - t0)
            cpu[i].append(time.process_time() - c0)
    return [float(np.median(t)) for t in wall], [float(np.median(t)) for t in cpu]


def sweep(onnx_path: Path, rgb: np.ndarray, frames: int) -> None:
    image = np.ascontiguousarray(rgb.transpose(2, 0, 1))[None]
    configs = []
    for level in ("ORT_ENABLE_BASIC", "ORT_ENABLE_EXTENDED", "ORT_ENABLE_ALL"):
        for threads in sorted({1, usable_cores()}):
            for spin in ("1", "0") if threads > 1 else ("1",):
                options = ort.SessionOptions()
                options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, level)
                options.intra_op_num_threads = threads
                options.add_session_config_entry("session.intra_op.allow_spinning", spin)
                session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
                configs.append((f"{level}, {threads} thread(s){'' if spin == '1' else ', no spin'}", session))
    medians, cpu = interleaved_medians([lambda s=s: s.run(None, {"image": image}) for _, s in configs], frames)
    for (label, _), t, c in zip(configs, medians, cpu, strict=True):
        print(f"    {label:46s} {1000 * t:8.1f} ms  (cpu {1000 * c:7.1f} ms)")


def candidates(args: argparse.Namespace, tmp: Path) -> list[tuple[str, Path]]:
    """``(label, checkpoint)`` of the models to time: --model, --arch, --bases, or the two ResNet-18 widths."""
    if args.model:
        path = resolve_model(args.model)
        arch = read_checkpoint(path).metadata.get("arch", "?")
        return [(f"{args.model} ({arch})" if is_model_name(args.model) else f"{path.name} ({arch})", path)]
    if args.arch:
        torch.manual_seed(0)
        ckpt = save_checkpoint(build_model(args.arch).eval(), tmp / "m.safetensors")
        return [(f"{args.arch} (random weights)", ckpt)]
    if args.bases:
        out = [(f"{DEFAULT} ({read_checkpoint(resolve_model(DEFAULT)).metadata['arch']})", resolve_model(DEFAULT))]
        for arch, file in MODELS.items():  # bare files: into the project format, which export_onnx reads
            out.append(
                (
                    f"{arch} (real base)",
                    save_checkpoint(load_model(args.realdata / file, arch=arch), tmp / f"{arch}.safetensors"),
                )
            )
        return out
    out = []
    for i, (label, kwargs) in enumerate(CANDIDATES.items()):
        torch.manual_seed(0)
        out.append((label, save_checkpoint(build_model("resnet18", **kwargs).eval(), tmp / f"m{i}.safetensors")))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint, or a shipped model's name (default, synthetic)")
    parser.add_argument("--arch", help="a zoo architecture with random weights (e.g. espnet_p2q8; see `pebal models`)")
    parser.add_argument("--bases", action="store_true", help="the shipped default beside every real base (realdata)")
    parser.add_argument("--realdata", type=Path, default=DEFAULT_REALDATA, help="realdata folder for --bases")
    parser.add_argument("--size", type=int, nargs=2, default=(256, 512), metavar=("H", "W"))
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--threads", type=int, default=usable_cores(), help="CPU threads for both backends")
    parser.add_argument("--sweep", action="store_true", help="also time onnxruntime session options")
    args = parser.parse_args()
    if sum(map(bool, (args.model, args.arch, args.bases))) > 1:
        parser.error("give one of --model, --arch, --bases")
    torch.set_num_threads(args.threads)
    h, w = args.size
    rgb = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    print(
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), onnxruntime {ort.__version__} "
        f"({args.threads} intra-op threads, ORT_ENABLE_ALL), input {h}x{w}, {args.frames} frames, "
        f"median ms per Predictor.predict; {usable_cores()} usable cores, load average "
        f"{os.getloadavg()[0]:.2f} at start"
    )
    fps_target = bool(args.model or args.arch)
    target = "ort / default" if args.bases else f"ort fps >= {TARGET_FPS:g}" if fps_target else f"ratio >= {TARGET}"
    print(
        f"{'model':40s} {'torch ms':>9s} {'ort ms':>9s} {'torch fps':>10s} {'ort fps':>9s} {'ratio':>6s}"
        f" {'torch cpu ms':>13s} {'ort cpu ms':>11s}  {target}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for i, (label, ckpt) in enumerate(candidates(args, Path(tmp))):
            onnx_path = export_onnx(ckpt, Path(tmp) / f"m{i}.onnx", input_size=(h, w))
            torch_pred = Predictor.from_checkpoint(ckpt, backend="torch", input_size=(h, w))
            ort_pred = Predictor.from_checkpoint(onnx_path, backend="onnxruntime", threads=args.threads)
            agree = (torch_pred.predict(rgb)[0] == ort_pred.predict(rgb)[0]).mean()
            rows.append((label, onnx_path, torch_pred, ort_pred, agree))
        fns = [f for _, _, t, o, _ in rows for f in (lambda p=t: p.predict(rgb), lambda p=o: p.predict(rgb))]
        wall, cpu = interleaved_medians(fns, args.frames)
        for k, (label, onnx_path, _, _, agree) in enumerate(rows):
            t_torch, t_ort, c_torch, c_ort = wall[2 * k], wall[2 * k + 1], cpu[2 * k], cpu[2 * k + 1]
            ratio = t_torch / t_ort
            if args.bases:
                verdict = f"{t_ort / wall[1]:.2f}"
            else:
                passed = 1 / t_ort >= TARGET_FPS if fps_target else ratio >= TARGET
                verdict = "PASS" if passed else "FAIL"
            print(
                f"{label:40s} {1000 * t_torch:9.1f} {1000 * t_ort:9.1f} {1 / t_torch:10.1f} {1 / t_ort:9.1f} "
                f"{ratio:6.2f} {1000 * c_torch:13.1f} {1000 * c_ort:11.1f}  {verdict}   "
                f"(labels agree on {100 * agree:.2f}% of pixels)"
            )
            if args.sweep:
                sweep(onnx_path, rgb, args.frames)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
