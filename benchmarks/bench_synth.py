"""Generation speed of the synthetic world (``pebal synth``), per image and per part.

Target: well under 0.1 s per 256x512 street image on one core of a 2-core CPU, so CI
and ``make demo`` can generate their worlds in seconds to minutes. Prints wall-clock and CPU
milliseconds per image for each part (rendering, PNG/JPEG encoding and writing included), with
one worker and with ``--workers`` processes, measured side by side in one run.

    python benchmarks/bench_synth.py [--size 256 512] [--images 40] [--workers 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from pebal_core.data.synthetic import WorldConfig
from pebal_core.data.synthetic.writers import generate_world


def measure(part: str, n: int, size: tuple[int, int], workers: int) -> tuple[float, float]:
    counts = {
        "cityscapes": {"train": n, "val": 0},
        "coco": {"coco": n},
        "fishyscapes": {"fishyscapes": max(1, n // 2)},
        "lostandfound": {"sequences": 1, "frames": n},
    }[part]
    images = n if part != "fishyscapes" else 2 * max(1, n // 2)
    cfg = WorldConfig(seed=0, height=size[0], width=size[1], parts=(part,), **counts)
    with tempfile.TemporaryDirectory() as tmp:
        wall, cpu = time.perf_counter(), time.process_time()
        generate_world(tmp, cfg, workers=workers, progress=False)
        return (time.perf_counter() - wall) / images * 1e3, (time.process_time() - cpu) / images * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, nargs=2, default=(256, 512), metavar=("H", "W"))
    ap.add_argument("--images", type=int, default=40, help="images per part")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    print(f"synthetic world generation at {args.size[0]}x{args.size[1]}, {args.images} images per part")
    many_col = f"{args.workers} workers ms/img"
    print(f"{'part':14s} {'1 worker ms/img':>16s} {'(CPU ms/img)':>13s} {many_col:>18s} {'speed-up':>9s}")
    for part in ("cityscapes", "coco", "fishyscapes", "lostandfound"):
        one, cpu = measure(part, args.images, tuple(args.size), 1)
        many, _ = measure(part, args.images, tuple(args.size), args.workers)
        print(f"{part:14s} {one:16.1f} {cpu:13.1f} {many:18.1f} {one / many:8.2f}x")


if __name__ == "__main__":
    main()
