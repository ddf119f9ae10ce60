"""How fast ``pebal_node`` is: per stage at camera resolution, and end to end against ``Predictor.predict``.

**Per stage** (``--stages``; what the node itself costs beside the network, to trim): a real
:class:`~pebal_ros.node.PebalNode` in this process, its publishers matched by a subscriber
process, runs its real per-frame path (``PebalNode._process``) on real camera frames; every
stage it calls (message -> array, resize, network, score head, resize back, alarm region,
persistence, obstacles, overlay, grid, each output's message, publish) is timed from outside by
wrapping the function the node calls, exclusive of the stages nested in it, so the rows add up
to the whole frame. Printed as a table of ms and share of the frame, once with every output
subscribed and once without subscribers for ``anomaly_overlay`` and ``anomaly_grid`` (the node
does not compute an output nobody subscribes to).

    python benchmarks/bench_node.py --stages [--model default] [--backend auto]
                                    [--sizes 720x1280 1024x2048] [--frames 10] [--images DIR]

**End to end** (default; targets: end-to-end / predict <= 1.15, and node frames/s >= 0.9x of
``Predictor.predict``'s at 1280x720 with backend ``auto``): the node runs as the real console
script in its own process per backend (``pebal_node --ros-args ...``, its own namespace, all
outputs enabled and subscribed, CameraInfo given so the occupancy grid is computed too). This
process publishes one frame at a time and measures publish -> the last output received; for
every frame it also times ``Predictor.predict`` on the same image in this process (on a worker
thread, as the node runs it), interleaved with every node, so all see the same machine load.
Printed per size and backend: medians, frames/s of the node (one frame in flight: ``1000 /
end-to-end ms``) and of ``predict``, their ratio, end-to-end over the node's own inference time
(the same ``predict`` call timed inside the node process, from /diagnostics: immune to the two
processes running at different speeds on a shared machine), and with several backends the node's
frames/s relative to the first backend's. The node subscribes with reliable QoS here (see ``main``).

    python benchmarks/bench_node.py [--model M.safetensors|default|synthetic] [--backends auto torch]
                                    [--frames 20] [--sizes 720x1280] [--images DIR] [--stock-dds]

Frames: ``--images DIR`` (every image in it, sorted, resized to each size; e.g.
``../shared/realdata/Validation_Dataset/RoadAnomaly/images``, real 1280x720 road frames), else
synthetic road-like pictures. Both processes use ``config/fastdds_large_images.xml`` (the Fast
DDS profile ``docs/node.md`` recommends for megabyte-sized images; its UDP transport limited to
loopback here) unless ``--stock-dds``. Without ``--model`` a fresh resnet18 (width 0.5, the
synthetic model's architecture) is used. ``--backends onnxruntime`` exports the model to a
fixed-size ONNX file per image size and runs both the node and the bare predictor on it. The load
average is printed beside every measurement: on a shared machine the ratios are what to compare.
"""

from __future__ import annotations

import argparse
import array
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

TARGET = 1.15
FPS_TARGET = 0.9
ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "config" / "fastdds_large_images.xml"
PAUSE_S = 0.3
"""Idle time between the two measurements of a frame, so that neither process's OpenMP threads are
still spinning (they busy-wait a while after a parallel region) when the other one computes."""
OUTPUT_NAMES = ("semantic", "semantic_color", "anomaly_score", "anomaly_mask", "anomaly_overlay", "anomaly_grid")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}

os.environ.update(
    {
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "ROS_DOMAIN_ID": os.environ.get("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 101))),
        "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
    }
)

import rclpy  # noqa: E402  (after the DDS environment is set)
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from nav_msgs.msg import OccupancyGrid  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

import pebal_core.alarms.pipeline as alarm_pipeline  # noqa: E402
import pebal_core.backends.torch_backend as torch_backend  # noqa: E402
import pebal_core.runtime as runtime  # noqa: E402
import pebal_ros.node_outputs as node_outputs  # noqa: E402
from pebal_core.alarms.persistence import Persistence  # noqa: E402
from pebal_core.export.onnx import export_onnx  # noqa: E402
from pebal_core.images import read_rgb  # noqa: E402
from pebal_core.model_store import resolve_model  # noqa: E402
from pebal_core.models import build_model  # noqa: E402
from pebal_core.models.checkpoint import save_checkpoint  # noqa: E402
from pebal_core.protocols import resize_image  # noqa: E402
from pebal_core.runtime import Predictor  # noqa: E402
from pebal_ros.dds_profile import PROFILE_VARIABLE  # noqa: E402
from pebal_ros.mailbox import Frame  # noqa: E402
from pebal_ros.node import PebalNode  # noqa: E402
from pebal_ros.node_parameters import OUTPUTS  # noqa: E402


def loopback_profile(src: Path, dst: Path) -> Path:
    """A copy of the shipped Fast DDS profile whose UDP transport only uses 127.0.0.1."""
    ns = "http://www.eprosima.com"
    ET.register_namespace("", ns)
    tree = ET.parse(src)
    for descriptor in tree.getroot().iter(f"{{{ns}}}transport_descriptor"):
        if descriptor.findtext(f"{{{ns}}}type") == "UDPv4":
            allowed = ET.SubElement(descriptor, f"{{{ns}}}interfaceWhiteList")
            ET.SubElement(allowed, f"{{{ns}}}address").text = "127.0.0.1"
    tree.write(dst, xml_declaration=True, encoding="UTF-8")
    return dst


def stock_profile(dst: Path) -> Path:
    """A Fast DDS profile file that keeps the stock transports (what a process without the large-image
    profile runs with); naming it keeps ``pebal_node`` from applying the large-image profile itself."""
    dst.write_text(
        '<?xml version="1.0" encoding="UTF-8" ?>\n<dds xmlns="http://www.eprosima.com"><profiles>'
        '<participant profile_name="stock" is_default_profile="true"><rtps/></participant></profiles></dds>\n'
    )
    return dst


def street(h: int, w: int, seed: int) -> np.ndarray:
    """A road-like test picture: sky, buildings, road, noise (content does not change the timing)."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.int64)
    img[: h // 3] = (110, 150, 200)
    img[h // 3 : h // 2] = (90, 85, 80)
    img[h // 2 :] = (70, 70, 75)
    return np.clip(img + rng.integers(-20, 20, (h, w, 3)), 0, 255).astype(np.uint8)


def frames_at(images: Path | None, h: int, w: int, count: int) -> list[np.ndarray]:
    """``count`` frames of ``h x w``: the sorted images of ``images`` (resized, cycled), else synthetic."""
    if images is None:
        return [street(h, w, seed) for seed in range(count)]
    files = sorted(f for f in images.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SystemExit(f"--images {images}: no image files (.jpg, .png, ...) in it")
    return [resize_image(read_rgb(files[i % len(files)]), (h, w)) for i in range(count)]


def parse_size(text: str) -> tuple[int, int]:
    h, _, w = text.lower().partition("x")
    return int(h), int(w)


def load_text() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def image_msg(rgb: np.ndarray, stamp) -> Image:
    h, w = rgb.shape[:2]
    msg = Image(height=h, width=w, encoding="rgb8", step=w * 3)
    data = array.array("B")
    data.frombytes(rgb.tobytes())
    msg.data = data
    msg.header.stamp = stamp
    msg.header.frame_id = "camera_optical_frame"
    return msg


def camera_info(h: int, w: int) -> CameraInfo:
    info = CameraInfo(height=h, width=w)
    info.k = np.array([w * 0.8, 0, (w - 1) / 2, 0, w * 0.8, (h - 1) / 2, 0, 0, 1], dtype=np.float64)
    return info


# ============================================================================ per stage
class StageClock:
    """Exclusive wall time per stage: a wrapped call's time minus that of the wrapped calls inside it."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self._stack: list[float] = []  # time of nested stages, per open call

    def timed(self, stage: str, fn):
        def call(*args, **kwargs):
            self._stack.append(0.0)
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - t0
                nested = self._stack.pop()
                self.totals[stage] += elapsed - nested
                if self._stack:
                    self._stack[-1] += elapsed

        return call

    def wrap(self, owner: object, attr: str, stage: str) -> None:
        setattr(owner, attr, self.timed(stage, getattr(owner, attr)))


CLOCK = StageClock()


def instrument_modules() -> None:
    """Time the stages the node reaches through module-level functions (once per process)."""
    CLOCK.wrap(torch_backend, "labels_and_score", "score head (labels + free energy)")
    CLOCK.wrap(runtime, "resize_label_map", "labels + score to the image size")
    CLOCK.wrap(runtime, "resize_score", "labels + score to the image size")
    CLOCK.wrap(alarm_pipeline, "alarm_region", "alarms: region")
    CLOCK.wrap(alarm_pipeline, "find_obstacles", "alarms: obstacles")
    CLOCK.wrap(Persistence, "update", "persistence filters (alarm pixels, grid cells)")
    CLOCK.wrap(node_outputs, "alarm_overlay", "overlay: drawing")
    CLOCK.wrap(node_outputs, "persist_grid", "grid: persistence capping")
    for name, output in list(node_outputs.OUTPUTS_TABLE.items()):
        timed = CLOCK.timed(f"message: {name}", output.make)
        node_outputs.OUTPUTS_TABLE[name] = node_outputs.Output(output.type, timed, output.content)


def instrument(node: PebalNode) -> None:
    """Time every stage of this node's frame path by wrapping the methods it calls (in place)."""
    CLOCK.wrap(node, "_process", "other (stats, checks, bookkeeping)")
    CLOCK.wrap(node, "_decode", "image message -> array")
    CLOCK.wrap(node.predictor, "network_image", "resize to the network size")
    backend = node.predictor.backend
    if isinstance(backend, torch_backend.TorchBackend):
        CLOCK.wrap(backend, "logits", "network (torch)")
        CLOCK.wrap(backend, "run", "network output -> numpy")
    else:
        CLOCK.wrap(backend, "run", f"network + score head ({backend.name}, one graph)")
    CLOCK.wrap(node, "_frame_context", "frame context (intrinsics, ego mask)")
    CLOCK.wrap(node._alarm_chain, "process", "alarms: threshold in the region")
    CLOCK.wrap(node._grid.mapper, "values", "grid: ground projection")
    for publisher in node._outputs.values():
        CLOCK.wrap(publisher, "publish", "publish (all outputs)")


SUBSCRIBER = """
import os, signal, sys, rclpy
from rclpy.qos import qos_profile_sensor_data
from pebal_ros.node_outputs import OUTPUTS_TABLE
signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # a subscriber only: nothing to finish
rclpy.init()
node = rclpy.create_node("bench_subscriber")
subs = [node.create_subscription(OUTPUTS_TABLE[n].type, sys.argv[1] + n, lambda m: None, qos_profile_sensor_data)
        for n in sys.argv[2:]]
rclpy.spin(node)
"""


def stage_table(node: PebalNode, frames: list[np.ndarray], subscribed: tuple[str, ...]) -> dict[str, float]:
    """Mean exclusive ms per stage over ``frames`` (after two warm-up frames), with a subscriber
    process on the outputs ``subscribed`` and none on the others."""
    prefix = node.get_namespace().rstrip("/") + "/"
    sub = subprocess.Popen([sys.executable, "-c", SUBSCRIBER, prefix, *subscribed])
    try:
        deadline = time.monotonic() + 60
        while any(bool(node._outputs[n].get_subscription_count()) != (n in subscribed) for n in OUTPUTS):
            if sub.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the subscriber process did not connect")
            time.sleep(0.05)
        for i, rgb in enumerate([*frames[:2], *frames]):
            if i == 2:
                CLOCK.totals.clear()
            node._process(Frame(image_msg(rgb, node.get_clock().now().to_msg()), time.perf_counter()))
    finally:
        sub.terminate()
        sub.wait(timeout=30)
    return {stage: total * 1e3 / len(frames) for stage, total in CLOCK.totals.items()}


def print_stage_table(title: str, ms: dict[str, float]) -> None:
    total = sum(ms.values())
    print(f"\n{title}\n  whole frame {total:.1f} ms ({1000 / total:.2f} frames/s)")
    print(f"  {'stage':<50s} {'ms':>8s} {'share':>7s}")
    for stage, value in sorted(ms.items(), key=lambda kv: -kv[1]):
        print(f"  {stage:<50s} {value:8.2f} {100 * value / total:6.1f}%")


def run_stages(args: argparse.Namespace, model: Path) -> None:
    backend = args.backends[0]
    predictor = Predictor.from_checkpoint(model, backend=backend)
    print(f"model {predictor.model_id} on {predictor.backend.describe()}; network input {predictor.input_size}")
    instrument_modules()
    rclpy.init()
    try:
        for size in args.sizes:
            h, w = parse_size(size)
            frames = frames_at(args.images, h, w, args.frames)
            node = PebalNode(
                predictor,
                namespace=f"stages_{h}x{w}",
                parameter_overrides=[Parameter("diagnostics_period", value=3600.0)],
            )
            node._on_camera_info(camera_info(h, w))
            instrument(node)
            try:
                trimmed = tuple(n for n in OUTPUTS if n not in ("anomaly_overlay", "anomaly_grid"))
                for title, subscribed in (
                    ("every output subscribed", tuple(OUTPUTS)),
                    ("no subscriber for anomaly_overlay and anomaly_grid", trimmed),
                ):
                    before = load_text()
                    ms = stage_table(node, frames, subscribed)
                    print_stage_table(
                        f"{h}x{w} input, {len(frames)} frames, {title} ({before} before, {load_text()} after)", ms
                    )
            finally:
                node.destroy_node()
    finally:
        rclpy.try_shutdown()


# ============================================================================ end to end
class Probe:
    """Publishes frames to the node in namespace ``ns`` and records when each of its outputs arrives."""

    def __init__(self, node, ns: str) -> None:
        self.node = node
        self.ns = ns
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.cond = threading.Condition()
        self.arrivals: dict[tuple[int, int], dict[str, float]] = {}
        self.diag: dict[str, str] = {}
        self.subs = [
            node.create_subscription(
                OccupancyGrid if n == "anomaly_grid" else Image, f"/{ns}/{n}", self._recorder(n), qos
            )
            for n in OUTPUT_NAMES
        ]
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, qos)
        self.image_pub = node.create_publisher(Image, f"/{ns}/image", qos)
        self.info_pub = node.create_publisher(CameraInfo, f"/{ns}/camera_info", qos)

    def _recorder(self, name: str):
        def record(msg) -> None:
            now = time.perf_counter()
            with self.cond:
                self.arrivals.setdefault((msg.header.stamp.sec, msg.header.stamp.nanosec), {})[name] = now
                self.cond.notify_all()

        return record

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith(f"{self.ns}_node"):
                with self.cond:
                    self.diag = {kv.key: kv.value for kv in status.values}

    def connected(self) -> bool:
        return bool(self.image_pub.get_subscription_count()) and all(s.get_publisher_count() for s in self.subs)

    def run_frame(self, rgb: np.ndarray, info: CameraInfo, timeout: float) -> float | None:
        """Publish one frame; seconds until the last of its outputs arrived (None on timeout)."""
        self.info_pub.publish(info)
        msg = image_msg(rgb, self.node.get_clock().now().to_msg())
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        t_pub = time.perf_counter()
        self.image_pub.publish(msg)
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.arrivals.get(key, {})) == len(OUTPUT_NAMES), timeout):
                return None
            return max(self.arrivals[key].values()) - t_pub


def timed_predict(predictor: Predictor, rgb: np.ndarray) -> float:
    t0 = time.perf_counter()
    predictor.predict(rgb)
    return time.perf_counter() - t0


# The node runs inference on a worker thread; time the bare predictor on one too (on a loaded
# machine torch's CPU kernels run measurably faster off the main thread than on it).
inference = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bare_predict")


class Contender:
    """One backend: its node process, a probe on the node's namespace, and the bare predictor."""

    def __init__(self, backend: str, run: Path, probe_node, script: str, log) -> None:
        self.backend = backend
        self.predictor = Predictor.from_checkpoint(run, backend=backend)
        self.ns = f"bench_{backend}"
        self.probe = Probe(probe_node, self.ns)
        # reliable input: a lost UDP fragment of a megabyte-sized image is then resent instead of
        # the whole frame vanishing (best effort, the default for cameras, would make a lost frame
        # look like an unanswered one here)
        cmd = [script, "--ros-args", "-r", f"__ns:=/{self.ns}", "-r", f"__node:={self.ns}_node"]
        cmd += ["-p", f"model:={run}", "-p", f"backend:={backend}"]
        cmd += ["-p", "diagnostics_period:=0.5"]
        cmd += ["-p", f"qos_overrides./{self.ns}/image.subscription.reliability:=reliable"]
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        self.predict_ms: list[float] = []
        self.e2e_ms: list[float] = []
        self.loads: list[float] = []

    def wait_ready(self, rgb: np.ndarray, info: CameraInfo, deadline: float) -> None:
        while not self.probe.connected():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pebal_node ({self.backend}) did not come up")
            time.sleep(0.05)
        # until the node (whose discovery of us may lag ours of it) answers
        while self.probe.run_frame(rgb, info, 3.0) is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pebal_node ({self.backend}) does not answer; diagnostics: {self.probe.diag}")

    def measure(self, rgb: np.ndarray, info: CameraInfo, record: bool) -> None:
        """One frame through the bare predictor, then through the node."""
        predict_s = inference.submit(timed_predict, self.predictor, rgb).result()
        time.sleep(PAUSE_S)
        e2e = self.probe.run_frame(rgb, info, 60.0)
        time.sleep(PAUSE_S)
        if e2e is None:
            raise RuntimeError(
                f"no complete set of outputs from the {self.backend} node; diagnostics: {self.probe.diag}"
            )
        if record:
            self.predict_ms.append(predict_s * 1e3)
            self.e2e_ms.append(e2e * 1e3)
            self.loads.append(os.getloadavg()[0])

    def stop(self) -> dict[str, str]:
        with self.probe.cond:
            diag = dict(self.probe.diag)
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(timeout=30)
        return diag


def run_end_to_end(args: argparse.Namespace, model: Path, tmp: Path) -> None:
    script = shutil.which("pebal_node") or str(Path(sys.executable).parent / "pebal_node")
    print(f"model {model.name}; nodes = {script}, one process per backend; {load_text()} at start")
    rclpy.init()
    probe_node = rclpy.create_node("bench_probe")
    executor = SingleThreadedExecutor()
    executor.add_node(probe_node)
    threading.Thread(target=executor.spin, daemon=True).start()
    log = open(args.node_log, "a") if args.node_log else subprocess.DEVNULL  # noqa: SIM115
    rows = []
    try:
        for size in args.sizes:
            h, w = parse_size(size)
            frames = frames_at(args.images, h, w, args.frames)
            info = camera_info(h, w)
            contenders = []
            try:
                for backend in args.backends:
                    run = model
                    if backend == "onnxruntime":
                        run = export_onnx(model, tmp / f"model_{h}x{w}.onnx", input_size=(h, w))
                    # the bare predictor first: backend auto measures and caches its choice, the node reads it
                    contenders.append(Contender(backend, run, probe_node, script, log))
                    print(
                        f"{h}x{w} {backend}: model {contenders[-1].predictor.model_id} on "
                        f"{contenders[-1].predictor.backend.describe()}"
                    )
                deadline = time.monotonic() + 300
                for c in contenders:
                    c.wait_ready(frames[0], info, deadline)
                for i, rgb in enumerate([*frames[:2], *frames]):  # two warm-up frames, then interleaved
                    for c in contenders:
                        c.measure(rgb, info, record=i >= 2)
                time.sleep(1.2)  # one more diagnostics period
            finally:
                diags = [c.stop() for c in contenders]
            for c, diag in zip(contenders, diags, strict=True):
                rows.append((f"{h}x{w}", c, diag))
    finally:
        if args.node_log:
            log.close()
        executor.shutdown()
        probe_node.destroy_node()
        rclpy.try_shutdown()

    print(
        "\nmedians; 'predict' = Predictor.predict in this process, 'node inference' = the same call inside the\n"
        "node, 'end-to-end' = publish -> last output received; fps = 1000 / ms (one frame in flight);\n"
        f"targets: end-to-end over predict and over node inference <= {TARGET} (every backend; 'e2e'),\n"
        f"node fps / predict fps >= {FPS_TARGET} (backend auto; 'fps'); "
        "'vs first' = node fps over the first backend's; load average over the timed frames"
    )
    print(
        f"{'size':>9s} {'backend':>18s} {'predict':>9s} {'node inf.':>9s} {'e2e':>9s} {'predict fps':>11s}"
        f" {'node fps':>8s} {'node/predict':>12s} {'e2e/node inf.':>13s} {'vs first':>8s} {'load avg':>10s}"
    )
    first: dict[str, float] = {}
    for size, c, d in rows:
        p, e = float(np.median(c.predict_ms)), float(np.median(c.e2e_ms))
        inf = float(d.get("inference_ms_p50", "nan"))
        first.setdefault(size, 1000 / e)
        verdict = f"e2e {'PASS' if max(e / p, e / inf) <= TARGET else 'FAIL'}"
        if c.backend == "auto":
            verdict += f", fps {'PASS' if p / e >= FPS_TARGET else 'FAIL'}"
        print(
            f"{size:>9s} {c.backend + ' (' + c.predictor.backend.name + ')':>18s} {p:7.1f}ms {inf:7.1f}ms {e:7.1f}ms"
            f" {1000 / p:11.2f} {1000 / e:8.2f} {p / e:12.3f} {e / inf:13.3f} {1000 / e / first[size]:7.2f}x"
            f" {min(c.loads):4.1f}-{max(c.loads):4.1f}  {verdict}"
        )
    print(load_text() + " at the end")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", help="checkpoint, or a shipped model's name (default, synthetic); default: a fresh resnet18 (w 0.5)"
    )
    parser.add_argument(
        "--backends",
        nargs="+",
        default=["auto"],
        choices=("auto", "torch", "onnxruntime", "openvino"),
        help="inference backends, measured interleaved (default: auto); --stages uses the first",
    )
    parser.add_argument("--stages", action="store_true", help="time the node's stages in this process (see above)")
    parser.add_argument("--frames", type=int, default=20, help="timed frames per size (after two warm-up frames)")
    parser.add_argument("--sizes", nargs="+", default=["720x1280"], help="HxW camera image sizes (default 720x1280)")
    parser.add_argument("--images", type=Path, help="folder of camera frames (default: synthetic pictures)")
    parser.add_argument("--node-log", type=Path, help="append the nodes' console output to this file")
    parser.add_argument(
        "--stock-dds", action="store_true", help=f"do not use {PROFILE.name} (large shared-memory segment)"
    )
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_node_"))
    try:
        if args.stock_dds:
            os.environ[PROFILE_VARIABLE] = str(stock_profile(tmp / "stock.xml"))
            print("Fast DDS with its stock transports")
        else:
            profile = loopback_profile(PROFILE, tmp / PROFILE.name)
            os.environ[PROFILE_VARIABLE] = str(profile)
            print(f"Fast DDS profile {PROFILE.relative_to(ROOT)} (UDP limited to loopback here), for every process")
        if args.model:
            model = resolve_model(args.model)
        else:
            model = save_checkpoint(build_model("resnet18", width=0.5), tmp / "resnet18_w05.safetensors")
        if args.stages:
            run_stages(args, model)
        else:
            run_end_to_end(args, model, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
