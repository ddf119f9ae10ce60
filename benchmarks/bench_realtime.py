"""Frames per second of the zoo's real-time models with the torch backend on this machine's CPU.

Target: the real-time trunk runs at >= 10 frames/s at 256x512 on a 2-core CPU.
Times the full ``Predictor`` path a camera frame takes (normalise, network, energy-score head)
and the bare network forward, side by side in one run.

    python benchmarks/bench_realtime.py [--size 256 512] [--frames 30]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from pebal_core.models import build_model
from pebal_core.models.checkpoint import save_checkpoint
from pebal_core.runtime import Predictor

CANDIDATES = {"resnet18 (width 1.0)": {"width": 1.0}, "resnet18 (width 0.5, shipped default)": {"width": 0.5}}


def time_calls(fn, frames: int, warmup: int = 3) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(frames):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=2, default=(256, 512), metavar=("H", "W"))
    parser.add_argument("--frames", type=int, default=30)
    args = parser.parse_args()
    h, w = args.size
    rgb = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, input {h}x{w}, {args.frames} frames")
    print(f"{'model':40s} {'forward fps':>12s} {'predict fps':>12s} {'target':>8s}")
    with tempfile.TemporaryDirectory() as tmp:
        for label, kwargs in CANDIDATES.items():
            model = build_model("resnet18", **kwargs).eval()
            path = save_checkpoint(model, Path(tmp) / "m.safetensors")
            predictor = Predictor.from_checkpoint(path)
            x = torch.randn(1, 3, h, w)
            with torch.inference_mode():
                fwd = time_calls(partial(model, x), args.frames)
            pred = time_calls(partial(predictor.predict, rgb), args.frames)
            ok = "PASS" if 1 / pred >= 10 else "FAIL"
            print(f"{label:40s} {1 / fwd:12.1f} {1 / pred:12.1f} {ok:>8s}")


if __name__ == "__main__":
    main()
