"""How long the command-line tools take to answer ``--help``, next to loading torch, in one run.

Target: ``pebal --help`` (and the ``--help`` of the ROS tools) answers without loading torch, so
in a fraction of the time ``import torch`` takes; a sub-command's own ``--help`` may load what
its options need. Each command runs ``--runs`` times in a fresh process, interleaved (so that the
machine's load hits all of them alike); the table shows the median wall time and its ratio to
``import torch``.

    .venv/bin/python benchmarks/bench_cli_start.py --runs 5
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
COMMANDS = {
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "pebal --help": [str(BIN / "pebal"), "--help"],
    "pebal predict --help": [str(BIN / "pebal"), "predict", "--help"],
    "pebal eval --help": [str(BIN / "pebal"), "eval", "--help"],
    "pebal_camera --help": [str(BIN / "pebal_camera"), "--help"],
    "pebal_bag --help": [str(BIN / "pebal_bag"), "--help"],
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per command (default 5)")
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.runs):
        for name, cmd in COMMANDS.items():
            t0 = time.perf_counter()
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            times[name].append(time.perf_counter() - t0)
    torch_s = statistics.median(times["python -c 'import torch'"])
    print(f"| command | median wall s ({args.runs} runs) | / import torch |")
    print("|---|---:|---:|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| `{name}` | {median:.2f} | {median / torch_s:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
