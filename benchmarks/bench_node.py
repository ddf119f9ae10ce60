"""End-to-end latency of ``pebal_node`` against the bare ``Predictor.predict`` for the same frames.

Target: end-to-end / predict <= 1.15 at 256x512 and 512x1024.

The node runs as the real console script in its own process (``pebal_node --ros-args ...``, all
six outputs enabled and subscribed, CameraInfo given so the occupancy grid is computed too). This
process publishes one frame at a time and measures publish -> the last of the six outputs
received; for every frame it also times ``Predictor.predict`` on the same image in this process
(on a worker thread, as the node runs it), interleaved, so both see the same machine load. Two
ratios of medians are printed: end-to-end over that bare predict, and end-to-end over the node's
own inference time (the same ``predict`` call timed inside the node process, from /diagnostics).
The second is immune to the two processes running at different speeds on a shared machine.
The node subscribes with reliable QoS here (see ``main``).

    python benchmarks/bench_node.py [--model M.safetensors|default|synthetic] [--backend torch|onnxruntime]
                                    [--frames 20] [--sizes 256x512 512x1024] [--stock-dds]

Both processes use ``config/fastdds_large_images.xml`` (the Fast DDS profile ``docs/node.md`` recommends
for megabyte-sized images; its UDP transport limited to loopback here) unless ``--stock-dds``.

Without ``--model`` a fresh resnet18 (width 0.5, the synthetic model's architecture) is used.
``--backend onnxruntime`` exports the model to a fixed-size ONNX file per image size and runs
both the node and the bare predictor on it; the end-to-end frames/s the node sustains (one frame
in flight) is ``1000 / end-to-end ms``.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

TARGET = 1.15
ROOT = Path(__file__).resolve().parents[1]
PROFILE = ROOT / "config" / "fastdds_large_images.xml"
PAUSE_S = 0.3
"""Idle time between the two measurements of a frame, so that neither process's OpenMP threads are
still spinning (they busy-wait a while after a parallel region) when the other one computes."""
OUTPUT_NAMES = ("semantic", "semantic_color", "anomaly_score", "anomaly_mask", "anomaly_overlay", "anomaly_grid")

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
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from pebal_core.export.onnx import export_onnx  # noqa: E402
from pebal_core.model_store import resolve_model  # noqa: E402
from pebal_core.models import build_model  # noqa: E402
from pebal_core.models.checkpoint import save_checkpoint  # noqa: E402
from pebal_core.runtime import Predictor  # noqa: E402
from pebal_ros.dds_profile import PROFILE_VARIABLE  # noqa: E402


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


class Probe:
    """Publishes frames to the node and records when each of its outputs arrives."""

    def __init__(self) -> None:
        self.node = rclpy.create_node("bench_probe")
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.cond = threading.Condition()
        self.arrivals: dict[tuple[int, int], dict[str, float]] = {}
        self.diag: dict[str, str] = {}
        self.subs = [
            self.node.create_subscription(OccupancyGrid if n == "anomaly_grid" else Image, n, self._recorder(n), qos)
            for n in OUTPUT_NAMES
        ]
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diag, qos)
        self.image_pub = self.node.create_publisher(Image, "image", qos)
        self.info_pub = self.node.create_publisher(CameraInfo, "camera_info", qos)
        self.executor = SingleThreadedExecutor()
        self.executor.add_node(self.node)
        self.spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self.spinner.start()

    def _recorder(self, name: str):
        def record(msg) -> None:
            now = time.perf_counter()
            with self.cond:
                self.arrivals.setdefault((msg.header.stamp.sec, msg.header.stamp.nanosec), {})[name] = now
                self.cond.notify_all()

        return record

    def _on_diag(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith("pebal_node"):
                with self.cond:
                    self.diag = {kv.key: kv.value for kv in status.values}

    def connected(self) -> bool:
        return bool(self.image_pub.get_subscription_count()) and all(s.get_publisher_count() for s in self.subs)

    def run_frame(self, rgb: np.ndarray, info: CameraInfo, timeout: float) -> float | None:
        """Publish one frame; seconds until the last of its outputs arrived (None on timeout)."""
        self.info_pub.publish(info)
        h, w = rgb.shape[:2]
        msg = Image(height=h, width=w, encoding="rgb8", step=w * 3)
        data = array.array("B")
        data.frombytes(rgb.tobytes())
        msg.data = data
        msg.header.stamp = self.node.get_clock().now().to_msg()
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        t_pub = time.perf_counter()
        self.image_pub.publish(msg)
        with self.cond:
            if not self.cond.wait_for(lambda: len(self.arrivals.get(key, {})) == len(OUTPUT_NAMES), timeout):
                return None
            return max(self.arrivals[key].values()) - t_pub

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


def timed_predict(predictor: Predictor, rgb: np.ndarray) -> float:
    t0 = time.perf_counter()
    predictor.predict(rgb)
    return time.perf_counter() - t0


# The node runs inference on a worker thread; time the bare predictor on one too (on a loaded
# machine torch's CPU kernels run measurably faster off the main thread than on it).
inference = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bare_predict")


def measure(probe: Probe, predictor: Predictor, cmd: list[str], log, h: int, w: int, frames: int) -> tuple:
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not probe.connected():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("pebal_node did not come up")
            time.sleep(0.05)
        info = CameraInfo(height=h, width=w)
        info.k = np.array([w * 0.8, 0, (w - 1) / 2, 0, w * 0.8, (h - 1) / 2, 0, 0, 1], dtype=np.float64)
        images = [street(h, w, seed) for seed in range(4)]
        # warm-up: until the node (whose discovery of us may lag ours of it) answers, then 2 more frames
        while probe.run_frame(images[0], info, 3.0) is None:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"pebal_node does not answer; its last diagnostics: {probe.diag}")
        for rgb in images[:2]:
            inference.submit(timed_predict, predictor, rgb).result()
            probe.run_frame(rgb, info, 30.0)
        predict_ms, e2e_ms = [], []
        for i in range(frames):
            rgb = images[i % len(images)]
            predict_ms.append(inference.submit(timed_predict, predictor, rgb).result() * 1e3)
            time.sleep(PAUSE_S)
            e2e = probe.run_frame(rgb, info, 30.0)
            time.sleep(PAUSE_S)
            if e2e is None:
                raise RuntimeError(f"no complete set of outputs for frame {i}; node diagnostics: {probe.diag}")
            e2e_ms.append(e2e * 1e3)
        time.sleep(0.6)  # one more diagnostics period
        with probe.cond:
            node_diag = dict(probe.diag)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    return float(np.median(predict_ms)), float(np.median(e2e_ms)), node_diag


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model", help="checkpoint, or a shipped model's name (default, synthetic); default: a fresh resnet18 (w 0.5)"
    )
    parser.add_argument(
        "--backend", choices=("torch", "onnxruntime"), default="torch", help="inference backend (default: torch)"
    )
    parser.add_argument("--frames", type=int, default=20, help="timed frames per size (after warm-up)")
    parser.add_argument("--sizes", nargs="+", default=["256x512", "512x1024"], help="HxW image sizes")
    parser.add_argument("--node-log", type=Path, help="append the node's console output to this file")
    parser.add_argument(
        "--stock-dds", action="store_true", help=f"do not use {PROFILE.name} (large shared-memory segment)"
    )
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_node_"))
    if args.stock_dds:
        os.environ[PROFILE_VARIABLE] = str(stock_profile(tmp / "stock.xml"))
        print("Fast DDS with its stock transports")
    else:
        profile = loopback_profile(PROFILE, tmp / PROFILE.name)
        os.environ[PROFILE_VARIABLE] = str(profile)
        print(f"Fast DDS profile {PROFILE.relative_to(ROOT)} (UDP limited to loopback here), for both processes")
    if args.model:
        model = resolve_model(args.model)
    else:
        model = save_checkpoint(build_model("resnet18", width=0.5), tmp / "resnet18_w05.safetensors")
    script = shutil.which("pebal_node") or str(Path(sys.executable).parent / "pebal_node")
    print(
        f"model {model.name}, {args.backend} backend on the CPU; node = {script} in its own process; "
        f"load average {os.getloadavg()[0]:.2f} at start"
    )
    rclpy.init()
    probe = Probe()
    log = open(args.node_log, "a") if args.node_log else subprocess.DEVNULL  # noqa: SIM115
    rows = []
    try:
        for size in args.sizes:
            h, w = (int(v) for v in size.lower().split("x"))
            run = model
            if args.backend == "onnxruntime":
                run = export_onnx(model, tmp / f"model_{h}x{w}.onnx", input_size=(h, w))
            predictor = Predictor.from_checkpoint(run, backend=args.backend)
            print(f"{h}x{w}: model {predictor.model_id}")
            # reliable input: a lost UDP fragment of a megabyte-sized image is then resent instead of
            # the whole frame vanishing (best effort, the default for cameras, would make a lost frame
            # look like an unanswered one here)
            cmd = [script, "--ros-args", "-p", f"model:={run}", "-p", f"backend:={args.backend}"]
            cmd += ["-p", "diagnostics_period:=0.5", "-p", "qos_overrides./image.subscription.reliability:=reliable"]
            rows.append((f"{h}x{w}", *measure(probe, predictor, cmd, log, h, w, args.frames)))
    finally:
        if args.node_log:
            log.close()
        probe.close()
        rclpy.try_shutdown()
        shutil.rmtree(tmp, ignore_errors=True)

    print(
        "medians; 'predict' = Predictor.predict here, 'node inference' = the same call inside the node,\n"
        "'receive->published' = the node's own overhead window, 'end-to-end' = publish -> last output received"
    )
    print(
        f"{'size':>10s} {'predict':>8s} {'node inference':>15s} {'receive->published':>19s} {'end-to-end':>11s}"
        f" {'e2e fps':>8s} {'e2e/predict':>12s} {'e2e/node inf.':>14s}  target <= {TARGET}"
    )
    for size, p, e, d in rows:
        inf, proc = float(d.get("inference_ms_p50", "nan")), float(d.get("processing_ms_p50", "nan"))
        print(
            f"{size:>10s} {p:6.1f}ms {inf:13.1f}ms {proc:17.1f}ms {e:9.1f}ms {1000 / e:8.2f}"
            f" {e / p:12.3f} {e / inf:14.3f}"
            f"  {'PASS' if max(e / p, e / inf) <= TARGET else 'FAIL'}"
        )
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
