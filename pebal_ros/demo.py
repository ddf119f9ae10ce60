"""``pebal_demo``: the whole chain on one LostAndFound-style tree, end to end over real ROS 2.

1. **convert** the frames into one bag (``<out>/bags/input``; :mod:`pebal_ros.bag_convert`);
2. start the perception node as its console script ``pebal_node`` (namespace ``/pebal``, reliable
   input QoS, camera topics remapped to the bag's) and ``pebal_bag record`` of
   ``/pebal/anomaly_score``, ``/pebal/anomaly_overlay``, ``/pebal/semantic`` (the alarm region),
   the CameraInfo topic (latency reference) and ``/diagnostics`` (``<out>/bags/output``);
3. ``pebal_bag play`` the input bag into the node at the recorded pace times ``--rate``
   (``auto``: slowed down, never sped up, so that the node can keep up with every frame on this
   machine — three timed inferences decide);
4. stop the recorder and the node, **score** the recording against the labels
   (:mod:`pebal_ros.bag_score`: PEBAL from the node, MaxLogit offline on the same frames with the
   same model; obstacle-level alarm counts at the threshold the node reported) and print the table;
5. write the node's overlay frames to ``<out>/overlays/`` and ``<out>/anomaly_overlay.gif``.

Outputs under ``--out``: ``bags/``, ``overlays/``, ``anomaly_overlay.gif``, ``score.json``,
``score.md`` and ``logs/`` (each process's output). The outputs of an earlier run in the same
folder are replaced. DDS stays on this machine (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``) on a
random domain, with the shared-memory profile for large images
(``config/fastdds_large_images.xml``) unless set in the environment already; ``pebal_core`` sets
``OMP_WAIT_POLICY=PASSIVE`` for every process (see its docstring).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pebal_core.console import run_reporting_errors
from pebal_core.fileio import atomic_write_text

NAMESPACE = "/pebal"
IMAGE_TOPIC = "/camera/image_raw"
INFO_TOPIC = "/camera/camera_info"
RECORDED = ("anomaly_score", "anomaly_overlay", "semantic")
OUTPUT_NAMES = ("bags", "overlays", "logs", "anomaly_overlay.gif", "score.json", "score.md")
"""What a run writes under ``--out`` (and replaces on the next run)."""
GIF_WIDTH = 640
"""GIF frames wider than this are scaled down."""
PROFILE = "fastdds_large_images.xml"
AUTO_MARGIN = 2.0
"""``--rate auto`` leaves the node this many times its measured inference time per frame."""


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which and where its log is."""


def _script(name: str, module: str) -> list[str]:
    """The console script next to this Python (venv/colcon), else on PATH, else ``python -m module``."""
    local = Path(sys.executable).parent / name
    if local.is_file():
        return [str(local)]
    found = shutil.which(name)
    return [found] if found else [sys.executable, "-m", module]


def large_image_profile() -> Path | None:
    """``config/fastdds_large_images.xml`` of a source checkout or a colcon install (None if neither)."""
    parents = Path(__file__).resolve().parents
    candidates = [parents[1] / "config" / PROFILE]  # source checkout / editable install
    if len(parents) > 4:  # <prefix>/lib/pythonX.Y/site-packages/pebal_ros/demo.py
        candidates.append(parents[4] / "share" / "pebal_ros" / "config" / PROFILE)
    return next((c for c in candidates if c.is_file()), None)


def ros_environment() -> dict[str, str]:
    """This process's environment with DDS kept on this machine, on a random domain, with the Fast DDS
    large-image profile (README "Large images"), each unless the user set it already."""
    env = dict(os.environ)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 101)))
    profile = large_image_profile()
    if profile is not None and env.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp") == "rmw_fastrtps_cpp":
        env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(profile))
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class Process:
    """A child process whose output goes to a log file."""

    name: str
    popen: subprocess.Popen
    log: Path

    def tail(self, lines: int = 25) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def failed(self, what: str) -> DemoError:
        return DemoError(f"{what} (log {self.log}):\n{self.tail()}")

    def wait_for_line(self, marker: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log.exists() and marker in self.log.read_text(errors="replace"):
                return
            if self.popen.poll() is not None:
                raise self.failed(f"{self.name} exited with status {self.popen.returncode}")
            time.sleep(0.05)
        raise self.failed(f"{self.name} did not report '{marker}' within {timeout:g} s")

    def interrupt(self, timeout: float = 30.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            raise self.failed(f"{self.name} did not stop within {timeout:g} s of Ctrl-C") from None


def _start(name: str, cmd: list[str], logs: Path, env: dict[str, str]) -> Process:
    log = logs / f"{name}.log"
    with log.open("w") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        popen = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL)
    return Process(name, popen, log)


def _frame_interval(index_frames: list[tuple[int, str, str]]) -> float:
    """Median seconds between consecutive frames of a sequence (the recorded pace)."""
    gaps = [
        (b[0] - a[0]) / 1e9
        for a, b in zip(index_frames, index_frames[1:], strict=False)
        if a[1] == b[1] and b[0] > a[0]
    ]
    return float(np.median(gaps)) if gaps else 0.1


def auto_rate(
    model: Path, first_image: Path, interval: float, input_size: tuple[int, int] | None
) -> tuple[float, float]:
    """``(rate factor, seconds per inference)``: slow the recorded pace down so the node keeps up."""
    from pebal_core.images import read_rgb
    from pebal_core.runtime import Predictor

    predictor = Predictor.from_checkpoint(model, input_size=input_size)
    rgb = read_rgb(first_image)
    predictor.predict(rgb)  # warm-up
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        predictor.predict(rgb)
        times.append(time.perf_counter() - t0)
    t_infer = float(np.median(times))
    return min(1.0, interval / (AUTO_MARGIN * t_infer)), t_infer


def write_overlays(output_bag: Path, index: dict, out: Path, fps: float) -> tuple[int, Path | None]:
    """PNG per overlay frame (named after the frame) and an animated GIF; returns (count, gif path)."""
    from PIL import Image as PILImage

    from pebal_core.images import write_rgb
    from pebal_ros.bag_storage import BagReader, stamp_ns
    from pebal_ros.conversions import ImageConverter

    folder = out / "overlays"
    folder.mkdir(parents=True, exist_ok=True)
    names = {ns: name for ns, _, name in index["frames"]}
    converter = ImageConverter()
    frames = []
    topic = f"{NAMESPACE}/anomaly_overlay"
    with BagReader(output_bag) as reader:
        if topic not in reader.topics():
            return 0, None
        for i, (conn, _, data) in enumerate(reader.messages([topic])):
            msg = reader.deserialize(data, conn, i)
            ns = stamp_ns(msg.header.stamp)
            rgb = converter.to_rgb(msg)
            write_rgb(folder / f"{names.get(ns, str(ns))}.png", rgb)
            frames.append((ns, rgb))
    if not frames:
        return 0, None
    frames.sort(key=lambda f: f[0])
    pictures = []
    for _, rgb in frames:
        pic = PILImage.fromarray(rgb)
        if pic.width > GIF_WIDTH:
            pic = pic.resize((GIF_WIDTH, round(pic.height * GIF_WIDTH / pic.width)), PILImage.Resampling.BILINEAR)
        pictures.append(pic)
    gif = out / "anomaly_overlay.gif"
    tmp = out / ".anomaly_overlay.gif.partial"
    pictures[0].save(tmp, format="GIF", save_all=True, append_images=pictures[1:], duration=round(1000 / fps), loop=0)
    os.replace(tmp, gif)
    return len(frames), gif


def _node_diagnostics(output_bag: Path) -> dict[str, str]:
    """The last pebal_node diagnostics status recorded (empty when none)."""
    from pebal_ros.bag_storage import BagReader

    last: dict[str, str] = {}
    with BagReader(output_bag) as reader:
        if "/diagnostics" not in reader.topics():
            return last
        for i, (conn, _, data) in enumerate(reader.messages(["/diagnostics"])):
            for status in reader.deserialize(data, conn, i).status:
                if status.name.startswith("pebal_node"):
                    last = {kv.key: kv.value for kv in status.values}
    return last


def _node_threshold(diag: dict[str, str]) -> float | None:
    """The score threshold the node reported (``"-4.03 (model)"`` -> -4.03), None when unknown."""
    try:
        return float(diag["score_threshold"].split()[0])
    except (KeyError, IndexError, ValueError):
        return None


def run_demo(args: argparse.Namespace) -> int:
    from pebal_core.runtime import default_model_path
    from pebal_ros.bag_convert import ConvertOptions, convert, read_index
    from pebal_ros.bag_score import ScoreOptions, format_table, score_bag
    from pebal_ros.bag_storage import metadata

    t_total = time.perf_counter()
    out: Path = args.out
    model = (args.model or default_model_path()).resolve()
    if not model.is_file():
        raise FileNotFoundError(f"model {model} does not exist")
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUT_NAMES:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    logs = out / "logs"
    logs.mkdir()
    input_bag, output_bag = out / "bags" / "input", out / "bags" / "output"
    timings: dict[str, float] = {}

    # 1. convert
    t = time.perf_counter()
    options = ConvertOptions(
        split=args.split,
        sequences=tuple(args.sequence) if args.sequence else None,
        limit=args.frames,
        per_sequence=False,
        storage=args.storage,
        image_format=args.image_format,
        image_topic=IMAGE_TOPIC,
        info_topic=INFO_TOPIC,
    )
    (converted,) = convert(args.data, input_bag, options, progress=False)
    index = read_index(metadata(input_bag), input_bag)
    timings["convert"] = time.perf_counter() - t
    print(
        f"[1/5] converted {converted.frames} frames of {len(converted.sequences)} sequence(s) -> {input_bag} "
        f"(stamps from {converted.stamps_from})",
        flush=True,
    )

    # pace
    interval = _frame_interval(index["frames"])
    if args.rate == "auto":
        from pebal_core.data.lostandfound import list_frames

        first = next(f for f in list_frames(args.data, args.split, index["frames"][0][1]))
        rate, t_infer = auto_rate(model, first.image, interval, args.input_size)
        pace = f"node needs ~{1000 * t_infer:.0f} ms/frame here"
    else:
        rate, t_infer = float(args.rate), interval
        pace = "as asked"
    print(
        f"      recorded pace {1 / interval:.2f} frames/s; playing at rate {rate:.3g} "
        f"({rate / interval:.2f} frames/s; {pace})",
        flush=True,
    )

    # 2. node + recorder
    env = ros_environment()
    node_cmd = [
        *_script("pebal_node", "pebal_ros.node"),
        "--ros-args",
        "-r", f"__ns:={NAMESPACE}",
        "-r", f"image:={IMAGE_TOPIC}",
        "-r", f"image/compressed:={IMAGE_TOPIC}/compressed",
        "-r", f"camera_info:={INFO_TOPIC}",
        "-p", f"model:={model}",
        "-p", "input_reliability:=reliable",
        "-p", f"subscribe_compressed:={'false' if args.image_format == 'raw' else 'true'}",
    ]  # fmt: skip
    if args.input_size:
        node_cmd += ["-p", f"input_height:={args.input_size[0]}", "-p", f"input_width:={args.input_size[1]}"]
    bag_cmd = _script("pebal_bag", "pebal_ros.bag")
    record_cmd = [
        *bag_cmd, "record", "-o", str(output_bag), "--storage", args.storage,
        *(f"{NAMESPACE}/{name}:sensor_msgs/msg/Image" for name in RECORDED),
        f"{INFO_TOPIC}:sensor_msgs/msg/CameraInfo",
        "/diagnostics:diagnostic_msgs/msg/DiagnosticArray",
    ]  # fmt: skip
    play_cmd = [
        *bag_cmd, "play", str(input_bag), "--rate", f"{rate:.6g}", "--max-gap", str(args.max_gap),
        "--wait-for-subscribers", "120", "--delay", "1.0",
    ]  # fmt: skip
    t = time.perf_counter()
    procs: list[Process] = []
    try:
        node = _start("node", node_cmd, logs, env)
        procs.append(node)
        record = _start("record", record_cmd, logs, env)
        procs.append(record)
        record.wait_for_line("recording", 120)
        node.wait_for_line("listening on", 180)
        for name in RECORDED:  # the node computes only outputs that have subscribers
            record.wait_for_line(f"matched a publisher on {NAMESPACE}/{name}", 60)
        timings["start node + recorder"] = time.perf_counter() - t
        print(
            f"[2/5] pebal_node and pebal_bag record running (ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}, logs in {logs})",
            flush=True,
        )

        # 3. play
        t = time.perf_counter()
        play = _start("play", play_cmd, logs, env)
        procs.append(play)
        budget = 180 + 2 * converted.frames * interval / rate + 10
        try:
            rc = play.popen.wait(budget)
        except subprocess.TimeoutExpired:
            raise play.failed(f"play did not finish within {budget:.0f} s") from None
        if rc != 0:
            if node.popen.poll() is not None:
                raise node.failed(f"pebal_node exited with status {node.popen.returncode} during playback")
            raise play.failed(f"play exited with status {rc}")
        time.sleep(2.0 + 5 * t_infer)  # the node finishes the last frame; the recorder receives it
        if record.interrupt() != 0:
            raise record.failed("record failed")
        node.interrupt()
        timings["play + record"] = time.perf_counter() - t
        print(f"[3/5] played and recorded -> {output_bag}", flush=True)
    finally:
        for p in procs:
            if p.popen.poll() is None:
                p.popen.kill()
                p.popen.wait()

    # 4. score
    t = time.perf_counter()
    diag = _node_diagnostics(output_bag)
    report = score_bag(
        output_bag,
        [input_bag],
        ScoreOptions(
            score_topic=f"{NAMESPACE}/anomaly_score",
            baselines=tuple(args.baseline),
            model=model,
            input_size=args.input_size,
            exact=not args.streaming,
            alarm_threshold=_node_threshold(diag),
            semantic_topic=f"{NAMESPACE}/semantic",
            progress=False,
        ),
    )
    report["node_diagnostics"] = diag
    report["demo"] = {"rate": rate, "recorded_fps": 1 / interval, "model": str(model), "data": str(args.data)}
    timings["score"] = time.perf_counter() - t
    print("[4/5] scored", flush=True)

    # 5. overlays
    t = time.perf_counter()
    fps_out = report["throughput"]["output_fps"] or rate / interval
    n_overlays, gif = write_overlays(output_bag, index, out, fps_out)
    timings["overlays + GIF"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t_total
    report["timings_s"] = timings
    print(f"[5/5] {n_overlays} overlay frames -> {out / 'overlays'}" + (f", {gif}" if gif else ""), flush=True)

    table = format_table(report, per_sequence=args.per_sequence)
    extra = []
    if diag:
        p50 = diag.get("inference_ms_p50")
        capacity = f" (~{1000 / float(p50):.1f} frames/s)" if p50 and float(p50) > 0 else ""
        extra.append(
            f"node (its /diagnostics): inference p50 {p50 or '?'} ms{capacity}, "
            f"frames in {diag.get('frames_in', '?')}, out {diag.get('frames_out', '?')}, "
            f"dropped {diag.get('frames_dropped', '?')}; model {diag.get('model_id', '?')}"
        )
    extra.append("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    text = table + "\n" + "\n".join(extra)
    atomic_write_text(out / "score.md", text + "\n")
    atomic_write_text(out / "score.json", json.dumps(report, indent=2) + "\n")
    print("\n" + text)
    if report["frames"]["scored"] == 0:
        print("pebal_demo: error: no frame was scored (see the logs)", file=sys.stderr)
        return 1
    return 0


def _rate(text: str) -> str | float:
    if text == "auto":
        return text
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"rate must be 'auto' or > 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    from pebal_core.scoring import BASELINES
    from pebal_ros.bag import _size
    from pebal_ros.bag_storage import STORAGES

    text = re.sub(r":\w+:`([^`]+)`", r"\1", __doc__.split(": ", 1)[1]).replace("``", "").replace("**", "")
    p = argparse.ArgumentParser(
        prog="pebal_demo",
        description=text[0].upper() + text[1:],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", type=Path, required=True, help="LostAndFound root (leftImg8bit/, gtCoarse/, camera/, ...)")
    p.add_argument("--model", type=Path, help="checkpoint for the node (default: the shipped default model)")
    p.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder (default: demo_out)")
    p.add_argument("--split", default="test", help="dataset split (default: test)")
    p.add_argument("--sequence", action="append", help="only this sequence (repeatable)")
    p.add_argument("--frames", type=int, help="at most this many frames")
    p.add_argument("--rate", type=_rate, default="auto", help="playback speed factor, or auto (default: auto)")
    p.add_argument("--max-gap", type=float, default=1.0, help="longest pause between frames, bag seconds (default: 1)")
    p.add_argument("--input-size", type=_size, help="HEIGHTxWIDTH for the network (default: native)")
    p.add_argument("--image-format", choices=("raw", "png", "jpeg"), default="raw", help="(default: raw)")
    p.add_argument("--storage", choices=sorted(STORAGES), default="mcap", help="(default: mcap)")
    p.add_argument(
        "--baseline", action="append", choices=BASELINES, help="offline baseline(s) to compare (default: maxlogit)"
    )
    p.add_argument("--per-sequence", action="store_true", help="also print per-sequence AP / FPR95")
    p.add_argument(
        "--streaming", action="store_true", help="bounded-memory metrics (for the full real dataset; certified bound)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    from pebal_core.data.base import DatasetError
    from pebal_core.models.checkpoint import CheckpointError
    from pebal_ros.bag_storage import BagError

    args = build_parser().parse_args(argv)
    args.baseline = args.baseline or ["maxlogit"]
    errors = (DemoError, BagError, DatasetError, CheckpointError, ValueError, OSError)
    return run_reporting_errors("pebal_demo", lambda: run_demo(args), errors)


if __name__ == "__main__":
    sys.exit(main())
