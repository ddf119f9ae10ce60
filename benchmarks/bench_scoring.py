"""Cost of the energy-score head next to a forward pass of the real-time model, on this CPU.

Target: :func:`pebal_core.scoring.labels_and_score` costs well under 5% of a forward
pass of the real-time model (``resnet18``, width 0.5 = the shipped default, and width 1.0) at
256x512. Both are timed side by side in one run (median over ``--repeats`` calls, after warm-up),
with the head applied to the logits the model produced; the calls are interleaved so that a
busy machine slows both alike.

    python benchmarks/bench_scoring.py [--size 256 512] [--repeats 30] [--batch 1] [--threads N]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch

from pebal_core.models import build_model
from pebal_core.scoring import labels_and_score

WIDTHS = {"resnet18 (width 0.5, shipped default)": 0.5, "resnet18 (width 1.0)": 1.0}


def interleaved_medians(
    fns: list[Callable[[], object]], repeats: int, warmup: int = 3, clock: Callable[[], float] = time.perf_counter
) -> list[float]:
    """Median time of each function by ``clock``, calling them in turn so that they share the same load."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times, strict=True):
            t0 = clock()
            fn()
            ts.append(clock() - t0)
    return [float(np.median(ts)) for ts in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=2, default=(256, 512), metavar=("H", "W"))
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall time, or this process's CPU time (with --threads 1: robust when other jobs share the cores)",
    )
    args = parser.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    if args.threads:
        torch.set_num_threads(args.threads)
    h, w = args.size
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, input {h}x{w}, "
        f"{args.clock} clock"
    )
    print(
        f"{'model':40s} {'forward ms':>11s} {'head ms':>9s} {'no-smooth ms':>13s} {'head/forward':>13s} {'target':>7s}"
    )
    x = torch.randn(args.batch, 3, h, w, generator=torch.Generator().manual_seed(0))
    for label, width in WIDTHS.items():
        model = build_model("resnet18", width=width).eval()
        with torch.inference_mode():
            logits = model(x)
            fwd, head, raw = interleaved_medians(
                [
                    lambda m=model: m(x),
                    lambda y=logits: labels_and_score(y),
                    lambda y=logits: labels_and_score(y, False),
                ],
                args.repeats,
                clock=clock,
            )
        ratio = head / fwd
        verdict = "PASS" if ratio < 0.05 else "FAIL"
        print(f"{label:40s} {fwd * 1e3:11.2f} {head * 1e3:9.2f} {raw * 1e3:13.2f} {ratio * 100:12.2f}% {verdict:>7s}")


if __name__ == "__main__":
    main()
