"""``pebal_demo``: the whole chain on one dataset tree, end to end over real ROS 2.

The tree is a LostAndFound-style one (video sequences) or a ``Validation_Dataset`` bundle of
single real frames (``<SET>/images/<N>.<ext>`` + ``<SET>/labels_masks/<N>.png``; ``--sequence``
picks sets); the model is the shipped default one unless ``--model`` names another (a file or
``synthetic``), run at the input size its metadata records unless ``--input-size`` says otherwise.

1. **convert** the frames into one bag (``<out>/bags/input``; :mod:`pebal_ros.bag_convert`);
2. start the perception node as its console script ``pebal_node`` (namespace ``/pebal``, reliable
   input QoS, camera topics remapped to the bag's, ``use_sim_time``) and ``pebal_bag record`` of
   ``/pebal/anomaly_score``, ``/pebal/anomaly_overlay``, ``/pebal/semantic`` (the alarm region),
   the CameraInfo topic (latency reference) and ``/diagnostics`` (``<out>/bags/output``), and wait
   until the ROS graph shows the recorder subscribed to all of them and the node subscribed to the
   camera topics and publishing the recorded outputs (:class:`GraphWatch`);
3. ``pebal_bag play --clock`` the input bag into the node at the recorded pace times ``--rate``
   (``auto``: slowed down, never sped up, so that the node can keep up with every frame on this
   machine — three timed inferences decide), once both the node and the recorder subscribe to the
   CameraInfo topic and the node to ``/clock`` (on a loaded machine discovery can take longer than
   any fixed delay); the node's clock is the bag's, so its latencies are in bag time;
4. stop the recorder and the node, **score** the recording against the labels
   (:mod:`pebal_ros.bag_score`: PEBAL from the node, MaxLogit offline on the same frames with the
   same model; obstacle-level alarm counts at the operating point the node runs, resolved from the
   model and the ``--node-param`` values as the node resolves it) and print the table;
5. write the node's overlay frames to ``<out>/overlays/`` and ``<out>/anomaly_overlay.gif``
   (and, with ``--sheet``, several of them, evenly spaced over the run, in one picture).

Outputs under ``--out``: ``bags/``, ``overlays/``, ``anomaly_overlay.gif``, ``score.json``,
``score.md`` and ``logs/`` (each process's output). The outputs of an earlier run in the same
folder are replaced. DDS stays on this machine (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``) on a
random domain, with the shared-memory profile for large images
(``config/fastdds_large_images.xml``) unless set in the environment already; ``pebal_core`` sets
``OMP_WAIT_POLICY=PASSIVE`` for every process (see its docstring).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pebal_core.console import plain_text, run_reporting_errors
from pebal_core.fileio import atomic_write_text

if TYPE_CHECKING:
    from pebal_core.alarms.operating_point import ResolvedPoint

NAMESPACE = "/pebal"
IMAGE_TOPIC = "/camera/image_raw"
INFO_TOPIC = "/camera/camera_info"
RECORDED = ("anomaly_score", "anomaly_overlay", "semantic")
OUTPUT_NAMES = ("bags", "overlays", "logs", "anomaly_overlay.gif", "score.json", "score.md")
"""What a run writes under ``--out`` (and replaces on the next run)."""
GIF_WIDTH = 640
"""GIF frames wider than this are scaled down."""
SHEET_WIDTH = 480
"""Width of each frame on a ``--sheet`` picture (pixels)."""
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


def ros_environment() -> dict[str, str]:
    """This process's environment with DDS kept on this machine, on a random domain, with the Fast DDS
    large-image profile (:func:`pebal_ros.dds_profile.apply_profile`), each unless the user set it already."""
    from pebal_ros.dds_profile import apply_profile

    env = dict(os.environ)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 101)))
    apply_profile(env)
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

    from pebal_ros.bag_export import export_images
    from pebal_ros.bag_storage import BagReader

    topic = f"{NAMESPACE}/anomaly_overlay"
    with BagReader(output_bag) as reader:
        if topic not in reader.topics():
            return 0, None
    names = {ns: name for ns, _, name in index["frames"]}
    frames = export_images(output_bag, topic, out / "overlays", names)
    if not frames:
        return 0, None
    frames.sort(key=lambda f: f[0])
    pictures = [_scaled(PILImage.fromarray(rgb)) for _, _, rgb in frames]
    gif = out / "anomaly_overlay.gif"
    tmp = out / ".anomaly_overlay.gif.partial"
    pictures[0].save(tmp, format="GIF", save_all=True, append_images=pictures[1:], duration=round(1000 / fps), loop=0)
    os.replace(tmp, gif)
    return len(frames), gif


def _scaled(pic: object, width: int = GIF_WIDTH) -> object:
    """A PIL image scaled down to ``width`` when wider."""
    from PIL import Image as PILImage

    if pic.width <= width:
        return pic
    return pic.resize((width, round(pic.height * width / pic.width)), PILImage.Resampling.BILINEAR)


def write_sheet(overlays: Path, index: dict, sheet: Path, count: int, columns: int = 2) -> list[str]:
    """``count`` overlay frames evenly spaced over the run (index order), captioned with their names,
    in a grid of ``columns`` (each scaled to :data:`SHEET_WIDTH` wide; rows as tall as their tallest
    frame), saved as a 256-colour PNG; returns the frame names shown."""
    from PIL import Image as PILImage
    from PIL import ImageDraw

    names = [name for _, _, name in index["frames"] if (overlays / f"{name}.png").is_file()]
    if not names:
        raise DemoError(f"no overlay frames under {overlays} to put on the sheet")
    picks = [names[round(i)] for i in np.linspace(0, len(names) - 1, min(count, len(names)))]
    pictures = [_scaled(PILImage.open(overlays / f"{name}.png").convert("RGB"), SHEET_WIDTH) for name in picks]
    rows = [pictures[i : i + columns] for i in range(0, len(pictures), columns)]
    heights = [max(p.height for p in row) for row in rows]
    canvas = PILImage.new("RGB", (columns * SHEET_WIDTH, sum(heights)), "white")
    draw = ImageDraw.Draw(canvas)
    y = 0
    for row, height in zip(rows, heights, strict=True):
        for col, pic in enumerate(row):
            canvas.paste(pic, (col * SHEET_WIDTH, y))
        y += height
    y = 0
    for r, (row, height) in enumerate(zip(rows, heights, strict=True)):
        for col in range(len(row)):
            name = picks[r * columns + col]
            box = draw.textbbox((0, 0), name)
            x0, y0 = col * SHEET_WIDTH + 6, y + 6
            draw.rectangle((x0 - 3, y0 - 3, x0 + box[2] + 3, y0 + box[3] + 3), fill="black")
            draw.text((x0, y0), name, fill="white")
        y += height
    sheet.parent.mkdir(parents=True, exist_ok=True)
    tmp = sheet.with_name(f".{sheet.name}.partial")
    canvas.quantize(256).save(tmp, format="PNG", optimize=True)
    os.replace(tmp, sheet)
    return picks


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


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``os.environ`` updated with ``values`` inside the block, restored after it."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class GraphWatch:
    """A ROS node of the demo's own, on its children's domain, that only looks at the ROS graph:
    which nodes publish and subscribe a topic (``get_publishers_info_by_topic`` /
    ``get_subscriptions_info_by_topic``; the graph is kept up to date by the middleware, no spinning
    needed). The demo waits on it, not on the text its children print."""

    NODE_NAME = "pebal_demo_graph"

    def __init__(self, env: dict[str, str]) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.signals import SignalHandlerOptions

        self._rclpy = rclpy
        self._context = Context()
        # the discovery settings and the DDS profile are read from the environment at start-up
        dds = {k: v for k, v in env.items() if k.startswith(("ROS_", "RMW_", "FASTDDS_", "FASTRTPS_", "CYCLONEDDS_"))}
        with _environment(dds):
            rclpy.init(
                context=self._context,
                domain_id=int(env["ROS_DOMAIN_ID"]),
                signal_handler_options=SignalHandlerOptions.NO,
            )
            self.node = rclpy.create_node(
                self.NODE_NAME, context=self._context, enable_rosout=False, start_parameter_services=False
            )

    def publishers(self, topic: str) -> set[str]:
        """Fully qualified names of the nodes that publish ``topic``."""
        return {_qualified(e.node_namespace, e.node_name) for e in self.node.get_publishers_info_by_topic(topic)}

    def subscribers(self, topic: str) -> set[str]:
        """Fully qualified names of the nodes that subscribe to ``topic``."""
        return {_qualified(e.node_namespace, e.node_name) for e in self.node.get_subscriptions_info_by_topic(topic)}

    def missing(self, links: list[tuple[str | None, str, str | None]]) -> list[str]:
        """The links ``(publisher node, topic, subscriber node)`` not (yet) in the graph, as text;
        a ``None`` end is not checked."""
        absent = []
        for pub, topic, sub in links:
            if (pub is not None and pub not in self.publishers(topic)) or (
                sub is not None and sub not in self.subscribers(topic)
            ):
                absent.append(f"{pub or '*'} -> {topic} -> {sub or '*'}")
        return absent

    def wait_for(
        self, what: str, links: list[tuple[str | None, str, str | None]], timeout: float, procs: list[Process]
    ) -> None:
        """Return once every link is in the graph; DemoError when a process of ``procs`` exits first
        or after ``timeout`` seconds (naming the links still missing)."""
        deadline = time.monotonic() + timeout
        while absent := self.missing(links):
            for proc in procs:
                if proc.popen.poll() is not None:
                    raise proc.failed(
                        f"{proc.name} exited with status {proc.popen.returncode} while waiting for {what}"
                    )
            if time.monotonic() > deadline:
                logs = ", ".join(str(proc.log) for proc in procs)
                raise DemoError(f"{what}: not in the ROS graph within {timeout:g} s: {'; '.join(absent)} (logs {logs})")
            time.sleep(0.05)

    def close(self) -> None:
        self.node.destroy_node()
        self._rclpy.try_shutdown(context=self._context)

    def __enter__(self) -> GraphWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _qualified(namespace: str, name: str) -> str:
    return f"{namespace.rstrip('/')}/{name}"


@dataclass
class DemoRun:
    """What the steps of one run share: paths, the model, the converted frames, the pace, timings (s)."""

    out: Path
    model: Path
    input_size: tuple[int, int] | None
    logs: Path
    input_bag: Path
    output_bag: Path
    point: ResolvedPoint | None = None
    """The operating point the node runs (the model's, with the ``--node-param`` overrides)."""
    timings: dict[str, float] = field(default_factory=dict)
    frames: int = 0
    index: dict = field(default_factory=dict)
    rate: float = 1.0
    interval: float = 0.1
    t_infer: float = 0.1


@contextlib.contextmanager
def _timed(run: DemoRun, step: str) -> Iterator[None]:
    t = time.perf_counter()
    yield
    run.timings[step] = time.perf_counter() - t


def prepare(args: argparse.Namespace) -> DemoRun:
    """Resolve the model and its input size; empty ``--out`` of an earlier run's outputs."""
    from pebal_core.model_store import resolve_model
    from pebal_core.models.checkpoint import read_checkpoint
    from pebal_core.runtime import recorded_input_size

    out: Path = args.out
    model = resolve_model(args.model).resolve()
    if not model.is_file():
        raise FileNotFoundError(f"model {model} does not exist")
    metadata = read_checkpoint(model).metadata
    input_size = args.input_size or recorded_input_size(metadata)
    point = node_operating_point(metadata, args.node_param or ())
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUT_NAMES:
        target = out / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
    logs = out / "logs"
    logs.mkdir()
    return DemoRun(out, model, input_size, logs, out / "bags" / "input", out / "bags" / "output", point)


def node_operating_point(metadata: dict, node_params: Iterable[str]) -> ResolvedPoint:
    """The operating point the node runs for a model (``metadata``): its parameter defaults,
    overridden by ``NAME:=VALUE`` strings (values parsed as YAML, as ``--ros-args -p`` does),
    resolved as the node resolves them (:func:`pebal_ros.node_parameters.resolve_point`). Refuses
    names the node does not declare and values or combinations it would refuse, before anything
    starts."""
    import yaml

    from pebal_ros.node_parameters import PARAMETERS, check_value, resolve_point

    values = {spec.name: spec.default for spec in PARAMETERS}
    for text in node_params:
        name, sep, raw = text.partition(":=")
        if not sep or name not in values:
            raise ValueError(
                f"--node-param {text!r}: expected NAME:=VALUE with a pebal_node parameter (see pebal_node --help)"
            )
        value = yaml.safe_load(raw)
        problem = check_value(name, value)
        if problem:
            raise ValueError(f"--node-param {text!r}: {problem}")
        values[name] = value
    return resolve_point(values, metadata)


def convert_frames(args: argparse.Namespace, run: DemoRun) -> None:
    """Step 1: the frames into the input bag; then the playback rate (``--rate``, or ``auto``)."""
    from pebal_ros.bag_convert import ConvertOptions, convert, read_index, select_frames
    from pebal_ros.bag_storage import metadata

    with _timed(run, "convert"):
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
        (converted,) = convert(args.data, run.input_bag, options, progress=False)
        first_image = select_frames(args.data, options)[0].image
        run.index = read_index(metadata(run.input_bag), run.input_bag)
    run.frames = converted.frames
    print(
        f"[1/5] converted {converted.frames} frames of {len(converted.sequences)} sequence(s) -> {run.input_bag} "
        f"(stamps from {converted.stamps_from})",
        flush=True,
    )
    run.interval = _frame_interval(run.index["frames"])
    if args.rate == "auto":
        run.rate, run.t_infer = auto_rate(run.model, first_image, run.interval, run.input_size)
        pace = f"node needs ~{1000 * run.t_infer:.0f} ms/frame here"
    else:
        run.rate, run.t_infer = float(args.rate), run.interval
        pace = "as asked"
    print(
        f"      recorded pace {1 / run.interval:.2f} frames/s; playing at rate {run.rate:.3g} "
        f"({run.rate / run.interval:.2f} frames/s; {pace})",
        flush=True,
    )


def start_node_and_recorder(
    args: argparse.Namespace, run: DemoRun, env: dict[str, str], graph: GraphWatch, procs: list[Process]
) -> tuple[Process, Process]:
    """Step 2: ``pebal_node`` and ``pebal_bag record``, returned once the graph shows the recorder
    subscribed to every recorded topic and the node publishing the recorded outputs and subscribed
    to the camera topics (the node computes only outputs that have subscribers)."""
    from pebal_ros.bag_record import NODE_NAME as RECORDER_NAME
    from pebal_ros.node import NODE_NAME

    node_cmd = [
        *_script("pebal_node", "pebal_ros.node"),
        "--ros-args",
        "-r", f"__ns:={NAMESPACE}",
        "-r", f"image:={IMAGE_TOPIC}",
        "-r", f"image/compressed:={IMAGE_TOPIC}/compressed",
        "-r", f"camera_info:={INFO_TOPIC}",
        "-p", f"model:={run.model}",
        "-p", "use_sim_time:=true",  # the player's /clock: stamps and latencies in bag time
        "-p", f"subscribe_compressed:={'false' if args.image_format == 'raw' else 'true'}",
    ]  # fmt: skip
    for topic in (IMAGE_TOPIC, f"{IMAGE_TOPIC}/compressed", INFO_TOPIC):  # reliable: the bag's frames all count
        node_cmd += ["-p", f"qos_overrides.{topic}.subscription.reliability:=reliable"]
    if run.input_size:
        node_cmd += ["-p", f"input_height:={run.input_size[0]}", "-p", f"input_width:={run.input_size[1]}"]
    # the longest wall-clock pause of the slowed-down playback (between sequences) is no silent camera
    silence = min(3600.0, max(5.0, 2 * args.max_gap / run.rate))
    node_cmd += ["-p", f"input_timeout:={silence:.1f}"]
    for param in args.node_param or ():  # after the demo's own: a --node-param wins
        node_cmd += ["-p", param]
    outputs = [f"{NAMESPACE}/{name}" for name in RECORDED]
    record_cmd = [
        *_script("pebal_bag", "pebal_ros.bag"), "record", "-o", str(run.output_bag), "--storage", args.storage,
        *(f"{topic}:sensor_msgs/msg/Image" for topic in outputs),
        f"{INFO_TOPIC}:sensor_msgs/msg/CameraInfo",
        "/diagnostics:diagnostic_msgs/msg/DiagnosticArray",
    ]  # fmt: skip
    node_name, recorder = _qualified(NAMESPACE, NODE_NAME), _qualified("/", RECORDER_NAME)
    with _timed(run, "start node + recorder"):
        procs.append(node := _start("node", node_cmd, run.logs, env))
        procs.append(record := _start("record", record_cmd, run.logs, env))
        recorded = [*outputs, INFO_TOPIC, "/diagnostics"]
        graph.wait_for("pebal_bag record", [(None, topic, recorder) for topic in recorded], 120, procs)
        camera = IMAGE_TOPIC if args.image_format == "raw" else f"{IMAGE_TOPIC}/compressed"
        links = [(None, camera, node_name), (None, INFO_TOPIC, node_name)]
        graph.wait_for("pebal_node", links + [(node_name, topic, recorder) for topic in outputs], 180, procs)
    print(
        f"[2/5] pebal_node and pebal_bag record running (ROS_DOMAIN_ID={env['ROS_DOMAIN_ID']}, logs in {run.logs})",
        flush=True,
    )
    return node, record


def play_input(
    args: argparse.Namespace, run: DemoRun, env: dict[str, str], node: Process, record: Process, procs: list[Process]
) -> None:
    """Step 3: ``pebal_bag play`` the input bag into the node (it waits until the node and the
    recorder match its CameraInfo publisher), then stop the recorder and the node."""
    play_cmd = [
        *_script("pebal_bag", "pebal_ros.bag"), "play", str(run.input_bag), "--rate", f"{run.rate:.6g}",
        "--max-gap", str(args.max_gap), "--clock",
        "--wait-for-subscribers", "120", "--subscribers", f"{INFO_TOPIC}:2", "--delay", "1.0",
    ]  # fmt: skip
    with _timed(run, "play + record"):
        procs.append(play := _start("play", play_cmd, run.logs, env))
        budget = 180 + 2 * run.frames * run.interval / run.rate + 10
        try:
            rc = play.popen.wait(budget)
        except subprocess.TimeoutExpired:
            raise play.failed(f"play did not finish within {budget:.0f} s") from None
        if rc != 0:
            if node.popen.poll() is not None:
                raise node.failed(f"pebal_node exited with status {node.popen.returncode} during playback")
            raise play.failed(f"play exited with status {rc}")
        time.sleep(2.0 + 5 * run.t_infer)  # the node finishes the last frame; the recorder receives it
        if record.interrupt() != 0:
            raise record.failed("record failed")
        node.interrupt()
    print(f"[3/5] played and recorded -> {run.output_bag}", flush=True)


def score_recording(args: argparse.Namespace, run: DemoRun) -> dict:
    """Step 4: score the recording against the labels (:func:`pebal_ros.bag_score.score_bag`)."""
    from pebal_ros.bag_score import ScoreOptions, score_bag

    with _timed(run, "score"):
        report = score_bag(
            run.output_bag,
            [run.input_bag],
            ScoreOptions(
                score_topic=f"{NAMESPACE}/anomaly_score",
                baselines=tuple(args.baseline),
                model=run.model,
                input_size=run.input_size,
                exact=not args.streaming,
                point=run.point.point,
                semantic_topic=f"{NAMESPACE}/semantic",
                progress=False,
            ),
        )
        report["node_diagnostics"] = _node_diagnostics(run.output_bag)
        report["demo"] = {
            "rate": run.rate,
            "recorded_fps": 1 / run.interval,
            "model": str(run.model),
            "input_size": list(run.input_size) if run.input_size else None,
            "data": str(args.data),
        }
    print("[4/5] scored", flush=True)
    return report


def write_pictures(args: argparse.Namespace, run: DemoRun, report: dict) -> None:
    """Step 5: the node's overlay frames as PNGs and a GIF (and the ``--sheet`` picture)."""
    with _timed(run, "overlays + GIF"):
        fps_out = report["throughput"]["output_fps"] or run.rate / run.interval
        n_overlays, gif = write_overlays(run.output_bag, run.index, run.out, fps_out)
        if args.sheet and n_overlays:
            report["demo"]["sheet"] = {
                "path": str(args.sheet),
                "frames": write_sheet(run.out / "overlays", run.index, args.sheet, args.sheet_frames),
            }
    sheet = f", {args.sheet}" if args.sheet and n_overlays else ""
    print(
        f"[5/5] {n_overlays} overlay frames -> {run.out / 'overlays'}" + (f", {gif}" if gif else "") + sheet,
        flush=True,
    )


def write_report(args: argparse.Namespace, run: DemoRun, report: dict) -> int:
    """``score.md`` and ``score.json``, the table printed; exit status 1 when no frame was scored."""
    from pebal_ros.bag_score import format_table

    report["timings_s"] = run.timings
    table = format_table(report, per_sequence=args.per_sequence)
    extra = []
    diag = report["node_diagnostics"]
    if diag:
        p50 = diag.get("inference_ms_p50")
        capacity = f" (~{1000 / float(p50):.1f} frames/s)" if p50 and float(p50) > 0 else ""
        extra.append(
            f"node (its /diagnostics): inference p50 {p50 or '?'} ms{capacity}, "
            f"frames in {diag.get('frames_in', '?')}, out {diag.get('frames_out', '?')}, "
            f"dropped {diag.get('frames_dropped', '?')}; model {diag.get('model_id', '?')}"
        )
    extra.append("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in run.timings.items()))
    text = table + "\n" + "\n".join(extra)
    atomic_write_text(run.out / "score.md", text + "\n")
    atomic_write_text(run.out / "score.json", json.dumps(report, indent=2) + "\n")
    print("\n" + text)
    if report["frames"]["scored"] == 0:
        print("pebal_demo: error: no frame was scored (see the logs)", file=sys.stderr)
        return 1
    return 0


def run_demo(args: argparse.Namespace) -> int:
    """The five steps (see the module docstring); returns the exit status."""
    t_total = time.perf_counter()
    run = prepare(args)
    print(f"      operating point: {run.point.warning() or run.point.point.describe()}", flush=True)
    convert_frames(args, run)
    env = ros_environment()
    procs: list[Process] = []
    try:
        with GraphWatch(env) as graph:
            node, record = start_node_and_recorder(args, run, env, graph, procs)
        play_input(args, run, env, node, record, procs)
    finally:
        for p in procs:
            if p.popen.poll() is None:
                p.popen.kill()
                p.popen.wait()
    report = score_recording(args, run)
    write_pictures(args, run, report)
    run.timings["total"] = time.perf_counter() - t_total
    return write_report(args, run, report)


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

    p = argparse.ArgumentParser(
        prog="pebal_demo",
        description=plain_text(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--data",
        type=Path,
        required=True,
        help="LostAndFound root (leftImg8bit/, gtCoarse/, camera/, ...) or Validation_Dataset bundle (<SET>/images/)",
    )
    p.add_argument(
        "--model",
        default="default",
        help="checkpoint for the node, or a shipped model's name: default (the real-camera model; the default) "
        "or synthetic (see `pebal models`)",
    )
    p.add_argument("-o", "--out", type=Path, default=Path("demo_out"), help="output folder (default: demo_out)")
    p.add_argument("--split", default="test", help="dataset split (default: test)")
    p.add_argument("--sequence", action="append", help="only this sequence (Validation_Dataset: set; repeatable)")
    p.add_argument("--frames", type=int, help="at most this many frames")
    p.add_argument("--rate", type=_rate, default="auto", help="playback speed factor, or auto (default: auto)")
    p.add_argument("--max-gap", type=float, default=1.0, help="longest pause between frames, bag seconds (default: 1)")
    p.add_argument(
        "--input-size",
        type=_size,
        help="HEIGHTxWIDTH for the network (default: the model's recorded input size, else each image's own)",
    )
    p.add_argument("--image-format", choices=("raw", "png", "jpeg"), default="raw", help="(default: raw)")
    p.add_argument("--storage", choices=sorted(STORAGES), default="mcap", help="(default: mcap)")
    p.add_argument(
        "--baseline", action="append", choices=BASELINES, help="offline baseline(s) to compare (default: maxlogit)"
    )
    p.add_argument(
        "--node-param",
        action="append",
        metavar="NAME:=VALUE",
        help="a pebal_node parameter (repeatable), e.g. persistence.k:=1 for frames of unrelated scenes",
    )
    p.add_argument("--per-sequence", action="store_true", help="also print per-sequence AP / FPR95")
    p.add_argument("--sheet", type=Path, help="also write this PNG: overlay frames evenly spaced over the run")
    p.add_argument("--sheet-frames", type=int, default=6, help="frames on the --sheet picture (default: 6)")
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
