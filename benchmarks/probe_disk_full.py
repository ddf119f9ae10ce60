"""``pebal_bag record`` onto a disk that fills up: does any bag lie?

One run: the real ``pebal_bag record`` console script records ``/src/image`` (100 KB ``mono8``
images with random pixels, published reliably at 50 Hz from this process) onto a small disk
until the disk is full. The disk is either a real 5 MiB tmpfs (``--disk tmpfs``: needs root,
``mount -t tmpfs -o size=5m``) or a 5 MiB file-size limit on the recorder process
(``--disk fsize``: ``RLIMIT_FSIZE``, no privileges; writes past it fail with ``EFBIG``). A run
survives when:

* the recorder exits with status 2 and prints exactly one ``pebal_bag: error:`` line naming the
  storage file and the cause, and no traceback;
* no finished bag appears at the output path, and the unfinished recording is left for recovery;
* ``pebal_bag recover`` (onto a disk with free space) turns it into a bag that
  :class:`pebal_ros.bag_storage.BagReader` reads completely (every topic yields as many messages
  as ``metadata.yaml`` says), holding sent messages byte for byte, in the order sent.

Anything else counts as lost (a bag that lies, a traceback, data deleted). Each run is appended
to a JSON-lines file as it finishes, so an interrupted probe continues where it stopped.

    python benchmarks/probe_disk_full.py [--repeats 50] [--storage mcap sqlite3] [--disk tmpfs|fsize]
                                         [--results probe_disk_full.jsonl]

``test/test_bag_storage_faults.py`` runs one repeat per storage and disk with the same functions.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DISK_BYTES = 5 * 1024 * 1024
"""Size of the small disk (5 MiB)."""
IMAGE_SHAPE = (200, 500)
"""Rows x columns of each mono8 image: 100 KB of pixels."""
RATE_HZ = 50.0
TOPIC = "/src/image"
DISKS = ("tmpfs", "fsize")


class CannotMount(RuntimeError):
    """This machine does not let this process mount a tmpfs (not root, or no CAP_SYS_ADMIN)."""


@contextlib.contextmanager
def small_disk(base: Path, kind: str) -> Iterator[tuple[Path, object]]:
    """``(folder, preexec_fn)``: a folder on a :data:`DISK_BYTES` disk and the ``preexec_fn`` the
    recorder process must start with (``None`` for the tmpfs; the file-size limit for ``fsize``)."""
    folder = base / f"disk_{kind}"
    folder.mkdir(parents=True)
    if kind == "fsize":

        def limit() -> None:  # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG
            resource.setrlimit(resource.RLIMIT_FSIZE, (DISK_BYTES, DISK_BYTES))

        yield folder, limit
        return
    if kind != "tmpfs":
        raise ValueError(f"disk must be one of {', '.join(DISKS)}, got {kind!r}")
    out = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(folder)], capture_output=True, text=True
    )
    if out.returncode != 0:
        raise CannotMount(f"mount -t tmpfs failed ({(out.stderr or out.stdout).strip()})")
    try:
        yield folder, None
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def image_message(k: int, rng: np.random.Generator):
    """Image ``k`` of the stream: stamp ``3000 + k`` s, 100 KB of random pixels."""
    import array

    from sensor_msgs.msg import Image

    msg = Image(height=IMAGE_SHAPE[0], width=IMAGE_SHAPE[1], encoding="mono8", step=IMAGE_SHAPE[1])
    msg.header.stamp.sec = 3000 + k
    data = array.array("B")
    data.frombytes(rng.integers(0, 256, IMAGE_SHAPE[0] * IMAGE_SHAPE[1], dtype=np.uint8).tobytes())
    msg.data = data
    return msg


@dataclass
class Run:
    """What one recording onto a full disk did."""

    storage: str
    returncode: int | None
    output: str
    out: Path
    sent: list[bytes] = field(default_factory=list)
    """The pixel bytes of every image published, in order."""


def record_until_full(folder: Path, storage: str, env: dict[str, str], preexec=None, timeout: float = 90.0) -> Run:
    """Record :data:`TOPIC` with the real ``pebal_bag record`` onto ``folder`` while publishing
    100 KB images at 50 Hz until the recorder exits (the disk is full) or ``timeout`` s pass."""
    import rclpy
    from rclpy.context import Context
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    out = folder / "rec"
    script = Path(sys.executable).parent / "pebal_bag"
    cmd = [str(script), "record", "-o", str(out), "--storage", storage, f"{TOPIC}:sensor_msgs/msg/Image"]
    proc = subprocess.Popen(
        cmd,
        env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=preexec,
    )
    run = Run(storage, None, "", out)
    context = Context()
    rclpy.init(context=context)
    node = rclpy.create_node("disk_full_source", context=context)
    try:
        # the recorder's first own line says it records; Fast DDS may log before it (under a
        # file-size limit it cannot create its shared-memory segment and says so, then uses UDP)
        head: list[str] = []
        while not head or not head[-1].startswith("recording "):
            line = proc.stdout.readline()
            if not line:  # it exited before recording
                break
            head.append(line)
        first = "".join(head)
        if not head or not head[-1].startswith("recording 1 topics"):
            proc.wait(timeout=30)
            run.returncode, run.output = proc.returncode, first + proc.stdout.read()
            return run
        pub = node.create_publisher(Image, TOPIC, QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        deadline = time.monotonic() + 30.0
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)
        rng = np.random.default_rng(len(run.sent))
        deadline = time.monotonic() + timeout
        k = 0
        while proc.poll() is None and time.monotonic() < deadline:
            msg = image_message(k, rng)
            pub.publish(msg)
            run.sent.append(msg.data.tobytes())
            k += 1
            time.sleep(1.0 / RATE_HZ)
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=30)
        run.returncode = proc.returncode
        run.output = first + proc.stdout.read()
        return run
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        node.destroy_node()
        rclpy.shutdown(context=context)


@dataclass
class Verdict:
    """How a :class:`Run` ended: ``survived`` or not, why, and how many messages were recovered."""

    survived: bool
    reasons: list[str]
    recovered: int


def judge(run: Run, recover_to: Path) -> Verdict:
    """Check one run against the module docstring's criteria (recovering into ``recover_to``)."""
    from pebal_ros.bag_recover import recover
    from pebal_ros.bag_storage import BagError, BagReader, partial_path, typestore

    reasons = []
    errors = [line for line in run.output.splitlines() if line.startswith("pebal_bag: error:")]
    suffix = ".mcap" if run.storage == "mcap" else ".db3"
    if run.returncode != 2:
        reasons.append(f"exit status {run.returncode}, not 2")
    if "Traceback" in run.output:
        reasons.append("a traceback")
    if len(errors) != 1:
        reasons.append(f"{len(errors)} error lines")
    elif f"rec{suffix}" not in errors[0] or "pebal_bag recover" not in errors[0]:
        reasons.append("the error names neither the storage file nor the recover command")
    if run.out.exists():
        reasons.append(f"a bag appeared at {run.out} although the disk was full")
    partial = partial_path(run.out)
    recovered = 0
    if not partial.is_dir():
        reasons.append("the unfinished recording was not kept")
        return Verdict(False, reasons, 0)
    try:
        recover(partial, recover_to)
        with BagReader(recover_to) as reader:  # raises unless every topic yields what metadata.yaml says
            got = [bytes(typestore().deserialize_cdr(raw, c.msgtype).data) for c, _, raw in reader.messages()]
        recovered = len(got)
        positions = [run.sent.index(p) if p in run.sent else -1 for p in got]
        if -1 in positions or positions != sorted(positions):
            reasons.append("recovered messages that were not sent, or out of order")
    except BagError as e:
        if "holds no complete message" not in str(e):  # a disk full before the first commit: nothing to lose
            reasons.append(f"recover: {e}")
    return Verdict(not reasons, reasons, recovered)


def _ros_env() -> dict[str, str]:
    return {
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "ROS_LOCALHOST_ONLY": "1",
        "ROS_DOMAIN_ID": str(random.SystemRandom().randint(1, 101)),
        "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=50, help="runs per storage (default 50)")
    parser.add_argument("--storage", nargs="+", default=["mcap", "sqlite3"], choices=("mcap", "sqlite3"))
    parser.add_argument("--disk", choices=DISKS, default="tmpfs", help="tmpfs (root) or fsize (default tmpfs)")
    parser.add_argument("--results", type=Path, default=Path("probe_disk_full.jsonl"), help="JSON lines, resumed")
    args = parser.parse_args()
    env = _ros_env()
    os.environ.update(env)
    done = []
    if args.results.exists():
        done = [json.loads(line) for line in args.results.read_text().splitlines() if line.strip()]
    from tqdm import tqdm

    todo = [(s, i) for s in args.storage for i in range(args.repeats)]
    seen = {(r["storage"], r["repeat"]) for r in done if r["disk"] == args.disk}
    for storage, repeat in tqdm([t for t in todo if t not in seen], desc="disk-full runs", unit="run"):
        base = Path(tempfile.mkdtemp(prefix="pebal_disk_full_"))
        t0 = time.monotonic()
        try:
            with small_disk(base, args.disk) as (folder, preexec):
                run = record_until_full(folder, storage, env, preexec)
                verdict = judge(run, base / "recovered")
        finally:
            shutil.rmtree(base, ignore_errors=True)
        row = {
            "storage": storage,
            "disk": args.disk,
            "repeat": repeat,
            "survived": verdict.survived,
            "reasons": verdict.reasons,
            "sent": len(run.sent),
            "recovered": verdict.recovered,
            "returncode": run.returncode,
            "error": next((ln for ln in run.output.splitlines() if "error:" in ln), ""),
            "seconds": round(time.monotonic() - t0, 1),
        }
        with args.results.open("a") as f:
            f.write(json.dumps(row) + "\n")
        done.append(row)
    rows = [r for r in done if r["disk"] == args.disk and r["storage"] in args.storage]
    print(f"disk: {args.disk} ({DISK_BYTES // 1024 // 1024} MiB), 100 KB images at {RATE_HZ:.0f} Hz")
    print("| storage | tried | survived | lost | recovered messages (min-max) | sent (min-max) |")
    print("|---|---|---|---|---|---|")
    for storage in args.storage:
        mine = [r for r in rows if r["storage"] == storage]
        if not mine:
            continue
        rec = [r["recovered"] for r in mine]
        sent = [r["sent"] for r in mine]
        lost = [r for r in mine if not r["survived"]]
        print(
            f"| {storage} | {len(mine)} | {len(mine) - len(lost)} | {len(lost)} | {min(rec)}-{max(rec)} "
            f"| {min(sent)}-{max(sent)} |"
        )
        for r in lost:
            print(f"  lost: repeat {r['repeat']}: {'; '.join(r['reasons'])}")
    print("error line of the last run:", rows[-1]["error"] if rows else "-")
    return 0 if all(r["survived"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
