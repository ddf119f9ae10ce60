"""Bad model files against the real ``pebal predict`` and ``pebal_node``: one error line, or worse?

Every case of the table in ``test/test_model_metadata.py`` (a metadata entry of the wrong type, out
of range or not finite; weights stored as int64 or holding NaN) is written as a real checkpoint
next to a good one, and each tool runs on it in its own process with the code of ``--code`` (a
checkout of this repository: run it once on the current code and once on an older checkout to
compare). A run survives when the tool exits with status 2 and prints one ``error:`` line that
names the file, without a traceback; it is lost when it exits otherwise, prints a traceback,
or (the node) starts serving with the bad model. Each process may use at most 8 GiB of address
space (a model asking for a 30000 x 30000 input would otherwise allocate 10.8 GB).

    python benchmarks/probe_model_files.py [--code /path/to/checkout] [--results probe_model_files.jsonl]

Runs are appended to the JSON-lines file as they finish, so an interrupted probe continues.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ADDRESS_SPACE = 8 << 30
"""Address-space limit of every probed process (bytes)."""
NODE_TIMEOUT_S = 120.0


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


def cases(folder: Path) -> list[tuple[str, Path]]:
    """``(case id, checkpoint file)`` for every case of the test's table, written into ``folder``."""
    import torch

    sys.path.insert(0, str(ROOT / "test"))
    from test_model_metadata import METADATA_CASES, _bad_weights  # the test's own table and weight cases

    from pebal_core.models import build_model
    from pebal_core.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    tiny = build_model("resnet18", width=0.25)
    out = [
        (case, save_checkpoint(tiny, folder / f"{case}.safetensors", **entries))
        for case, entries, _, _ in METADATA_CASES
    ]
    for how in ("int64", "nan"):
        sub = folder / f"weights_{how}"
        sub.mkdir()
        out.append((f"weights-{how}", _bad_weights(sub, tiny, how)[0]))
    return out


def run_tool(tool: str, model: Path, code: Path, env: dict[str, str], image: Path, work: Path) -> dict:
    """Run ``tool`` (``predict`` or ``node``) on ``model`` with the code in ``code``; the verdict."""
    env = {**os.environ, **env, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    if tool == "predict":
        cmd = [
            sys.executable,
            "-m",
            "pebal_core.cli",
            "predict",
            "--model",
            str(model),
            "--out",
            str(work / "o"),
            str(image),
        ]
    else:
        cmd = [sys.executable, "-c", "import sys; from pebal_ros.node import main; sys.exit(main(sys.argv))"]
        cmd += ["--ros-args", "-p", f"model:={model}"]
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=_limit
    )
    lines, started = [], False
    timer = threading.Timer(NODE_TIMEOUT_S, proc.kill)
    timer.start()
    for line in proc.stdout:  # the node keeps running when it accepts the model: stop it once it serves
        lines.append(line)
        if "listening on" in line:
            started = True
            proc.terminate()
    rc = proc.wait()
    timer.cancel()
    output = "".join(lines)
    errors = [ln for ln in output.splitlines() if ": error:" in ln]
    reasons = []
    if started:
        reasons.append("started serving with the bad model")
    elif rc != 2:
        reasons.append(f"exit status {rc}")
    if "Traceback" in output:
        reasons.append("traceback")
    if not started and (len(errors) != 1 or str(model) not in errors[0]):
        reasons.append("no single error line naming the file")
    return {
        "survived": not reasons,
        "reasons": reasons,
        "seconds": round(time.monotonic() - t0, 1),
        "tail": output[-300:],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--code", type=Path, default=ROOT, help="checkout whose pebal_core/pebal_ros run (default: this)"
    )
    parser.add_argument("--results", type=Path, default=Path("probe_model_files.jsonl"), help="JSON lines, resumed")
    args = parser.parse_args()
    import cv2
    import numpy as np
    from tqdm import tqdm

    env = {
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "ROS_LOCALHOST_ONLY": "1",
        "ROS_DOMAIN_ID": str(random.SystemRandom().randint(1, 101)),
        "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
    }
    code = args.code.resolve()
    done = (
        [json.loads(ln) for ln in args.results.read_text().splitlines() if ln.strip()] if args.results.exists() else []
    )
    seen = {(r["code"], r["case"], r["tool"]) for r in done}
    with tempfile.TemporaryDirectory(prefix="pebal_model_probe_") as tmp:
        tmp = Path(tmp)
        image = tmp / "img.png"
        cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8))
        todo = [(c, f, t) for c, f in cases(tmp) for t in ("predict", "node") if (str(code), c, t) not in seen]
        for case, model, tool in tqdm(todo, desc=f"bad model files ({code})", unit="run"):
            work = Path(tempfile.mkdtemp(dir=tmp))
            row = {"code": str(code), "case": case, "tool": tool, **run_tool(tool, model, code, env, image, work)}
            with args.results.open("a") as f:
                f.write(json.dumps(row) + "\n")
            done.append(row)
    rows = [r for r in done if r["code"] == str(code)]
    print(f"code: {code}")
    print("| tool | tried | survived | lost |")
    print("|---|---|---|---|")
    for tool in ("predict", "node"):
        mine = [r for r in rows if r["tool"] == tool]
        lost = [r for r in mine if not r["survived"]]
        print(f"| {tool} | {len(mine)} | {len(mine) - len(lost)} | {len(lost)} |")
    for r in rows:
        if not r["survived"]:
            print(f"  lost: {r['tool']} {r['case']}: {'; '.join(r['reasons'])}")
    return 0 if all(r["survived"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
