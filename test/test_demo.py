"""The end-to-end round trip: convert -> play -> pebal_node -> record -> score, as ``pebal_demo`` runs it.

Real processes over real DDS (localhost only, random domain id): the installed console scripts
``pebal_demo``, ``pebal_node`` and ``pebal_bag``, on a tiny LostAndFound tree and a tiny model.
The recorded bag is then read back independently (``rosbags``) and checked against the
predictor run in this process (the node's scores), scikit-learn (the reported AP/AUROC of PEBAL
and of the offline MaxLogit baseline) and the frame bookkeeping (every frame scored or counted
missing).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from laf_tree import make_tree
from PIL import Image as PILImage
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore
from sklearn.metrics import average_precision_score, roc_auc_score

from pebal_core.models import build_model
from pebal_core.models.checkpoint import save_checkpoint
from pebal_core.preprocessing import image_to_tensor
from pebal_core.runtime import Predictor

pytestmark = pytest.mark.ros

TYPESTORE = get_typestore(Stores.ROS2_KILTED)
SEQS = {"01_Hanns_Klemm_Str_45": 4, "02_Hanns_Klemm_Str_44": 3}


def _files(root, name):
    seq = name.rsplit("_", 2)[0]
    rgb = cv2.cvtColor(
        cv2.imread(str(root / "leftImg8bit" / "test" / seq / f"{name}_leftImg8bit.png")), cv2.COLOR_BGR2RGB
    )
    raw = cv2.imread(str(root / "gtCoarse" / "test" / seq / f"{name}_gtCoarse_labelIds.png"), cv2.IMREAD_UNCHANGED)
    return rgb, np.where(raw == 1, 0, np.where(raw == 2, 1, 255)).astype(np.uint8)


def _pooled(pairs):
    scores = np.concatenate([s.ravel() for s, _ in pairs])
    labels = np.concatenate([lab.ravel() for _, lab in pairs])
    return scores[labels != 255], labels[labels != 255]


@contextlib.contextmanager
def explained_by_logs(logs: Path, tail: int = 6000):
    """A failing assertion inside the block carries the end of every ``*.log`` in ``logs`` (the
    demo's node, recorder and player), so a failure that happens once explains itself."""
    try:
        yield
    except AssertionError as e:
        texts = [
            f"--- {p.name} (last {tail} characters) ---\n{p.read_text(errors='replace')[-tail:]}"
            for p in sorted(logs.glob("*.log"))
        ]
        raise AssertionError("\n".join([str(e), *texts]) if texts else str(e)) from e


def test_a_failing_demo_check_carries_the_process_logs(tmp_path):
    (tmp_path / "node.log").write_text("[WARN] frame rejected (truncated_data)\n")
    (tmp_path / "record.log").write_text("matched a publisher on /pebal/anomaly_score\n")
    with pytest.raises(AssertionError) as info:
        with explained_by_logs(tmp_path):
            assert 3 == 4, "frames scored"
    text = str(info.value)
    assert "frames scored" in text and "--- node.log" in text and "frame rejected (truncated_data)" in text
    assert "matched a publisher" in text


def test_demo_round_trip(ros_env, tmp_path):
    root = tmp_path / "laf"
    names = make_tree(root, SEQS)
    ckpt = save_checkpoint(build_model("resnet18", width=0.25), tmp_path / "tiny.safetensors")
    out = tmp_path / "demo_out"
    script = os.path.join(os.path.dirname(sys.executable), "pebal_demo")
    cmd = [script, "--data", str(root), "--model", str(ckpt), "--out", str(out), "--storage", "sqlite3"]
    run = subprocess.run(cmd, env={**os.environ, **ros_env}, capture_output=True, text=True, timeout=400)
    with explained_by_logs(out / "logs"):
        assert run.returncode == 0, run.stdout + run.stderr
        assert "| PEBAL (node) |" in run.stdout and "| MaxLogit (offline, same frames) |" in run.stdout
        report = json.loads((out / "score.json").read_text())
        assert (out / "score.md").read_text().startswith("| score | frames | frames/s |")

        # what the node published, read back independently
        predictor = Predictor.from_checkpoint(ckpt)
        model = predictor.backend.model
        stamps = {}
        with Reader(out / "bags" / "input") as reader:
            for _, ts, _ in reader.messages([c for c in reader.connections if c.topic == "/camera/image_raw"]):
                stamps[ts] = None
        assert len(stamps) == len(names)
        frame_of = dict(zip(sorted(stamps), names, strict=True))
        recorded = {}
        with Reader(out / "bags" / "output") as reader:
            conns = [c for c in reader.connections if c.topic == "/pebal/anomaly_score"]
            for conn, _, raw in reader.messages(conns):
                msg = TYPESTORE.deserialize_cdr(raw, conn.msgtype)
                ns = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
                assert msg.encoding == "32FC1" and msg.header.frame_id == "camera_optical_frame"
                recorded[frame_of[ns]] = np.frombuffer(msg.data.tobytes(), "<f4").reshape(msg.height, msg.width)

        f = report["frames"]
        assert f["indexed"] == len(names) and f["scored"] == len(recorded) >= len(names) // 2
        assert f["missing"] == len(names) - len(recorded)  # every frame is scored or counted missing
        assert f["unmatched_outputs"] == f["duplicate_outputs"] == 0
        pebal, maxlogit = [], []
        for name in names:
            if name not in recorded:
                continue
            rgb, label = _files(root, name)
            np.testing.assert_allclose(recorded[name], predictor.predict(rgb)[1], rtol=1e-5, atol=1e-5)
            with torch.no_grad():
                logits = model(image_to_tensor(rgb, model.normalization))
            pebal.append((recorded[name], label))
            maxlogit.append(((-logits[0, :19].amax(0)).numpy(), label))
        for method, pairs in (("pebal", pebal), ("maxlogit", maxlogit)):
            scores, labels = _pooled(pairs)
            overall = report["methods"][method]["overall"]
            assert overall["ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-6)
            assert overall["auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-6)
        assert report["consistency"]["ok"]
        assert report["latency_ms"]["n"] >= 1 and report["latency_ms"]["p50"] > 0
        assert report["throughput"]["output_fps"] > 0
        assert int(report["node_diagnostics"]["frames_out"]) == len(recorded)
        # obstacle-level counts at the operating point the node ran (the tiny model stores none: -9.0 and
        # the default settings, as the node reported too), over the frames whose score and semantic
        # labels were both recorded
        alarms = report["alarms"]
        assert alarms["threshold"] == -9.0 and report["node_diagnostics"]["score_threshold"] == "-9"
        assert 1 <= alarms["frames"] <= len(recorded) and alarms["detected"] <= alarms["obstacles"]
        assert alarms["false_alarms"] <= alarms["reported"]

        overlays = sorted(p.stem for p in (out / "overlays").glob("*.png"))
        assert overlays == sorted(recorded)
        gif = PILImage.open(out / "anomaly_overlay.gif")
        assert gif.n_frames == len(recorded) and gif.size == (96, 64)
        for log in ("node", "record", "play"):
            assert (out / "logs" / f"{log}.log").is_file()
        # the node ran on the player's /clock: the 2001 stamps of the converted bag are recent in bag time, so no
        # stamp is outside the latency window (on the wall clock every one would be, 25 years old)
        diag = report["node_diagnostics"]
        assert diag["bad_stamps"] == "0" and float(diag["latency_ms_p50"]) >= 0
        node_log = (out / "logs" / "node.log").read_text().splitlines()[1:]  # after the command line
        assert not [line for line in node_log if "header stamp" in line or "latency window" in line], node_log

        # a second run replaces the first one's outputs
        again = subprocess.run(
            [*cmd, "--frames", "2", "--rate", "1"],
            env={**os.environ, **ros_env},
            capture_output=True,
            text=True,
            timeout=400,
        )
        assert again.returncode == 0, again.stdout + again.stderr
        assert json.loads((out / "score.json").read_text())["frames"]["indexed"] == 2
        assert len(list((out / "overlays").glob("*.png"))) <= 2


def test_demo_reports_a_missing_model_in_one_line(tmp_path):
    make_tree(tmp_path / "laf", {"01_Hanns_Klemm_Str_45": 1})
    script = os.path.join(os.path.dirname(sys.executable), "pebal_demo")
    run = subprocess.run(
        [
            script,
            "--data",
            str(tmp_path / "laf"),
            "--model",
            str(tmp_path / "none.safetensors"),
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2 and run.stderr.startswith("pebal_demo: error:") and "none.safetensors" in run.stderr
    assert "Traceback" not in run.stderr


def test_node_params_set_the_operating_point_the_recording_is_scored_with():
    """The demo resolves the operating point from the model and the ``--node-param`` values as the
    node does: unset, the model's stored point; names the node does not declare and values or
    combinations it refuses stop the demo before anything starts."""
    from pebal_core.alarms.operating_point import StoredPoints
    from pebal_core.model_store import model_path
    from pebal_core.models.checkpoint import read_checkpoint
    from pebal_ros.demo import node_operating_point

    meta = read_checkpoint(model_path("default")).metadata
    stored = StoredPoints.from_metadata(meta)
    default = node_operating_point(meta, [])
    assert default.point == stored.points[stored.default] and default.overridden == ()
    single = node_operating_point(meta, ["persistence.k:=1", "persistence.n:=1", "alarms.region:=all"])
    assert (single.point.persistence.k, single.point.persistence.n, single.point.region) == (1, 1, "all")
    assert single.overridden == ("region", "persistence") and single.point.min_pixels == default.point.min_pixels
    assert single.point.persistence.radius == default.point.persistence.radius
    with pytest.raises(ValueError, match="no_such_param"):
        node_operating_point(meta, ["no_such_param:=1"])
    with pytest.raises(ValueError, match="alarms.region"):
        node_operating_point(meta, ["alarms.region:=everywhere"])
    with pytest.raises(ValueError, match="NAME:=VALUE"):
        node_operating_point(meta, ["persistence.k=1"])
    with pytest.raises(ValueError, match="k <= n"):
        node_operating_point(meta, ["persistence.k:=5"])


# pebal_node's main takes sys.argv as rclpy does (program name first); the others argv[1:]
ARGS = {
    "pebal_ros.demo": ["--help"],
    "pebal_ros.bag": ["score", "--help"],
    "pebal_ros.node": ["pebal_node", "--help"],
    "pebal_core.cli": ["models"],
}


@pytest.mark.parametrize("module", list(ARGS))
def test_openmp_wait_policy_is_set_before_torch_loads(module):
    """libgomp reads OMP_WAIT_POLICY when torch loads it: the console scripts must set it first."""
    code = f"""
import importlib.abc, os, sys
seen = []
class Spy(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not seen:
            seen.append(os.environ.get("OMP_WAIT_POLICY"))
        return None
sys.meta_path.insert(0, Spy())
from {module} import main
try:
    main({ARGS[module]!r})
except SystemExit:
    pass
print("torch imported with OMP_WAIT_POLICY =", seen)
"""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "torch imported with OMP_WAIT_POLICY = ['PASSIVE']" in out.stdout


def test_graph_watch_waits_for_links_in_the_ros_graph(ros_env, tmp_path):
    """The demo waits on the ROS graph (who publishes and subscribes what), not on log text: a
    link appears once real nodes create the publisher and the subscription; a missing link is
    named in the timeout error, and a child that exits ends the wait with its log."""
    from node_harness import RosSession, wait_until
    from rclpy.node import Node
    from std_msgs.msg import String

    from pebal_ros.demo import DemoError, GraphWatch, _start

    env = {**os.environ, **ros_env}
    link = ("/pebal/talker", "/chat", "/listener")
    with RosSession() as session, GraphWatch(env) as graph:
        talker = session.add(Node("talker", namespace="/pebal", context=session.context))
        assert graph.missing([link]) == ["/pebal/talker -> /chat -> /listener"]
        with pytest.raises(DemoError, match=r"chat: not in the ROS graph within 0\.3 s: /pebal/talker -> /chat"):
            graph.wait_for("chat", [link], 0.3, [])
        talker.create_publisher(String, "/chat", 1)
        wait_until(lambda: graph.publishers("/chat") == {"/pebal/talker"}, 15.0, "talker in the graph")
        assert graph.missing([link]) == ["/pebal/talker -> /chat -> /listener"]  # no subscriber yet
        assert graph.missing([(link[0], link[1], None)]) == []
        listener = session.add(Node("listener", context=session.context))
        listener.create_subscription(String, "/chat", lambda msg: None, 1)
        graph.wait_for("chat", [link], 15.0, [])
        assert graph.subscribers("/chat") == {"/listener"} and graph.missing([link]) == []

        quitter = _start("quitter", [sys.executable, "-c", "print('bye')"], tmp_path, env)
        quitter.popen.wait(60)
        with pytest.raises(DemoError, match=r"quitter exited with status 0 while waiting for nothing[\s\S]*bye"):
            graph.wait_for("nothing", [(None, "/nobody", "/listener")], 60, [quitter])
