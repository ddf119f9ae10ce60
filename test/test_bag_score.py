"""``pebal_bag score``: recorded anomaly scores vs LostAndFound labels, and broken bags.

The output bags here are written directly (as the recorder would: raw 32FC1 images at chosen
receive times), so the expected metrics are known independently: AUROC and AP from
scikit-learn over the pooled, protocol-mapped pixels, FPR95 from ``anomaly_metrics`` on the same
pooled arrays; latency percentiles from numpy over the receive-time differences the test chose.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml
from laf_tree import make_tree
from scipy import ndimage
from sklearn.metrics import average_precision_score, roc_auc_score

from pebal_core.alarms.operating_point import OperatingPoint
from pebal_core.alarms.persistence import PersistenceConfig
from pebal_core.data.base import DatasetError
from pebal_core.metrics import anomaly_metrics
from pebal_core.models import build_model
from pebal_core.models.checkpoint import save_checkpoint
from pebal_core.preprocessing import image_to_tensor
from pebal_core.runtime import Predictor
from pebal_ros.bag_convert import ConvertOptions, convert, read_index
from pebal_ros.bag_score import ScoreOptions, format_table, score_bag
from pebal_ros.bag_storage import BagError, bag_writer, metadata, split_ns, typestore

SEQS = {"01_Hanns_Klemm_Str_45": 3, "02_Hanns_Klemm_Str_44": 3}
TOPIC = "/pebal/anomaly_score"
INFO = "/camera/camera_info"


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[Path, Path, list]:
    """(dataset root, converted bag, index frames)."""
    base = tmp_path_factory.mktemp("score")
    make_tree(base / "laf", SEQS)
    convert(base / "laf", base / "input", ConvertOptions(per_sequence=False), progress=False)
    return base / "laf", base / "input", read_index(metadata(base / "input"))["frames"]


def _label(root: Path, name: str) -> np.ndarray:
    """The test protocol, written out: free space (1) -> 0, hazard (2) -> 1, rest -> 255."""
    seq = name.rsplit("_", 2)[0]
    raw = cv2.imread(str(root / "gtCoarse" / "test" / seq / f"{name}_gtCoarse_labelIds.png"), cv2.IMREAD_UNCHANGED)
    return np.where(raw == 1, 0, np.where(raw == 2, 1, 255)).astype(np.uint8)


def _rgb(root: Path, name: str) -> np.ndarray:
    seq = name.rsplit("_", 2)[0]
    bgr = cv2.imread(str(root / "leftImg8bit" / "test" / seq / f"{name}_leftImg8bit.png"))
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _fake_scores(label: np.ndarray, k: int) -> np.ndarray:
    """Anomalies score higher on average, with ties (one decimal)."""
    rng = np.random.default_rng(k)
    score = rng.normal(0.0, 1.0, label.shape) + 1.2 * (label == 1)
    return np.round(score, 1).astype(np.float32)


def _header(ns: int):
    t = typestore().types
    sec, nanosec = split_ns(ns)
    return t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec), frame_id="cam")


def _score_msg(ns: int, score: np.ndarray):
    t = typestore().types
    h, w = score.shape
    data = np.frombuffer(np.ascontiguousarray(score, dtype="<f4").tobytes(), np.uint8)
    return t["sensor_msgs/msg/Image"](
        header=_header(ns), height=h, width=w, encoding="32FC1", is_bigendian=0, step=4 * w, data=data
    )


def _info_msg(ns: int):
    t = typestore().types
    roi = t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return t["sensor_msgs/msg/CameraInfo"](
        header=_header(ns), height=1, width=1, distortion_model="", d=np.zeros(0), k=np.zeros(9), r=np.zeros(9),
        p=np.zeros(12), binning_x=0, binning_y=0, roi=roi,
    )  # fmt: skip


def write_output(path: Path, outputs: list[tuple[int, np.ndarray, int]], refs: list[tuple[int, int]], storage="mcap"):
    """``outputs``: (stamp, score, receive ns); ``refs``: (stamp, receive ns) of the CameraInfo reference."""
    with bag_writer(path, storage) as bag:
        bag.add_topic(INFO, "sensor_msgs/msg/CameraInfo")
        bag.add_topic(TOPIC, "sensor_msgs/msg/Image")
        events = [(rx, 0, INFO, _info_msg(s)) for s, rx in refs] + [
            (rx, 1, TOPIC, _score_msg(s, sc)) for s, sc, rx in outputs
        ]
        for rx, _, topic, msg in sorted(events, key=lambda e: e[:2]):
            bag.write(topic, rx, msg)


def _pooled(pairs):
    scores = np.concatenate([s.ravel() for s, _ in pairs])
    labels = np.concatenate([lab.ravel() for _, lab in pairs])
    keep = labels != 255
    return scores[keep], labels[keep]


def _check(result: dict, pairs) -> None:
    scores, labels = _pooled(pairs)
    assert result["auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-9)
    assert result["ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-9)
    assert result["fpr95"] == pytest.approx(anomaly_metrics(scores, labels)["fpr95"], abs=1e-12)
    assert result["n_anomaly_pixels"] == int(labels.sum()) and result["n_inlier_pixels"] == int((labels == 0).sum())


def test_metrics_per_sequence_and_overall_latency_and_rate(converted, tmp_path):
    root, input_bag, frames = converted
    t_rx = 2_000_000_000_000_000_000
    latencies_ms = [12.0, 30.0, 18.0, 25.0, 41.0, 22.0]
    outputs, refs, pairs, by_seq = [], [], [], {}
    for k, ((stamp, seq, name), lat) in enumerate(zip(frames, latencies_ms, strict=True)):
        label = _label(root, name)
        score = _fake_scores(label, k)
        ref_rx = t_rx + k * 100_000_000
        refs.append((stamp, ref_rx))
        outputs.append((stamp, score, ref_rx + round(lat * 1e6)))
        pairs.append((score, label))
        by_seq.setdefault(seq, []).append((score, label))
    write_output(tmp_path / "out", outputs, refs)
    report = score_bag(tmp_path / "out", [input_bag], ScoreOptions(score_topic=TOPIC, progress=False))

    _check(report["methods"]["pebal"]["overall"], pairs)
    assert set(report["methods"]["pebal"]["sequences"]) == set(SEQS)
    for seq, seq_pairs in by_seq.items():
        _check(report["methods"]["pebal"]["sequences"][seq], seq_pairs)
    f = report["frames"]
    assert (f["indexed"], f["scored"], f["missing"], f["unmatched_outputs"], f["duplicate_outputs"]) == (6, 6, 0, 0, 0)
    lat = report["latency_ms"]
    p50, p95 = np.percentile(latencies_ms, [50, 95])
    assert lat["p50"] == pytest.approx(p50) and lat["p95"] == pytest.approx(p95) and lat["n"] == 6
    rx_out = [rx for _, _, rx in outputs]
    assert report["throughput"]["output_fps"] == pytest.approx(5 / ((max(rx_out) - min(rx_out)) / 1e9))
    assert report["throughput"]["input_fps"] == pytest.approx(10.0)
    assert report["reference_topic"] == INFO
    table = format_table(report, per_sequence=True)
    assert "| PEBAL (node) | 6 |" in table and f"{100 * report['methods']['pebal']['overall']['ap']:.2f}" in table
    assert "6 of 6 frames scored" in table and "01_Hanns_Klemm_Str_45" in table


def test_missing_unmatched_duplicate_and_unlabelled_frames_are_counted(converted, tmp_path):
    root, input_bag, frames = converted
    outputs, pairs = [], []
    for k, (stamp, _, name) in enumerate(frames):
        label = _label(root, name)
        score = _fake_scores(label, k)
        if k == 2:
            continue  # dropped by the node
        outputs.append((stamp, score, 10**18 + k))
        pairs.append((score, label))
    outputs.append((frames[0][0], _fake_scores(_label(root, frames[0][2]), 99), 10**18 + 50))  # duplicate
    outputs.append((frames[-1][0] + 1, np.zeros((64, 96), np.float32), 10**18 + 60))  # stamp of no frame
    write_output(tmp_path / "out", outputs, refs=[])
    report = score_bag(tmp_path / "out", [input_bag], ScoreOptions(score_topic=TOPIC, progress=False))
    f = report["frames"]
    assert f["missing"] == 1 and f["missing_names"] == [frames[2][2]]
    assert f["duplicate_outputs"] == 1 and f["unmatched_outputs"] == 1 and f["scored"] == 5
    _check(report["methods"]["pebal"]["overall"], pairs)  # the first output of a duplicated frame counts
    assert report["latency_ms"] is None and report["reference_topic"] is None
    table = format_table(report)
    assert "1 missing" in table and frames[2][2] in table and "1 outputs matching no frame" in table

    # a frame without a label file: received but not scored, and named
    seq, name = frames[4][1], frames[4][2]
    label_file = root / "gtCoarse" / "test" / seq / f"{name}_gtCoarse_labelIds.png"
    saved = label_file.read_bytes()
    label_file.unlink()
    try:
        report = score_bag(tmp_path / "out", [input_bag], ScoreOptions(score_topic=TOPIC, progress=False))
    finally:
        label_file.write_bytes(saved)
    assert report["frames"]["unlabelled"] == 1 and report["frames"]["unlabelled_names"] == [name]
    assert report["frames"]["scored"] == 4
    _check(report["methods"]["pebal"]["overall"], pairs[:3] + pairs[4:])


def test_offline_baseline_on_the_same_frames(converted, tmp_path):
    root, input_bag, frames = converted
    ckpt = save_checkpoint(build_model("resnet18", width=0.25), tmp_path / "tiny.safetensors")
    predictor = Predictor.from_checkpoint(ckpt)
    model = predictor.backend.model
    outputs, pebal_pairs, maxlogit_pairs = [], [], []
    for k, (stamp, _, name) in enumerate(frames[:4]):
        rgb, label = _rgb(root, name), _label(root, name)
        score = predictor.predict(rgb)[1]
        with torch.no_grad():
            logits = model(image_to_tensor(rgb, model.normalization))
        maxlogit = (-logits[0, :19].amax(0)).numpy()
        outputs.append((stamp, score, 10**18 + k))
        pebal_pairs.append((score, label))
        maxlogit_pairs.append((maxlogit, label))
    write_output(tmp_path / "out", outputs, refs=[])
    options = ScoreOptions(score_topic=TOPIC, baselines=("maxlogit",), model=ckpt, progress=False)
    report = score_bag(tmp_path / "out", [input_bag], options)
    assert report["frames"]["missing"] == 2  # frames 4 and 5 were not recorded
    _check(report["methods"]["pebal"]["overall"], pebal_pairs)
    _check(report["methods"]["maxlogit"]["overall"], maxlogit_pairs)
    assert report["consistency"]["ok"] and report["consistency"]["max_abs_diff"] < 1e-4
    assert "MaxLogit (offline, same frames)" in format_table(report)

    shifted = [(s, sc + 0.5, rx) for s, sc, rx in outputs]  # not what this model computes
    write_output(tmp_path / "other", shifted, refs=[])
    report = score_bag(tmp_path / "other", [input_bag], options)
    assert not report["consistency"]["ok"] and report["consistency"]["max_abs_diff"] == pytest.approx(0.5, abs=1e-3)
    assert "WARNING" in format_table(report)
    with pytest.raises(ValueError, match="--model"):
        ScoreOptions(baselines=("maxlogit",))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_truncated_output_bag_is_an_error(converted, tmp_path, storage):
    root, input_bag, frames = converted
    outputs = [(s, _fake_scores(_label(root, n), k), 10**18 + k) for k, (s, _, n) in enumerate(frames)]
    write_output(tmp_path / "out", outputs, refs=[], storage=storage)
    (data_file,) = [p for p in (tmp_path / "out").iterdir() if p.suffix in (".mcap", ".db3")]
    data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 2])
    with pytest.raises(BagError, match="truncated or corrupt"):
        score_bag(tmp_path / "out", [input_bag], ScoreOptions(score_topic=TOPIC, progress=False))
    script = os.path.join(os.path.dirname(sys.executable), "pebal_bag")
    cli = subprocess.run(
        [script, "score", str(tmp_path / "out"), "--input", str(input_bag), "--score-topic", TOPIC],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 2 and "Traceback" not in cli.stderr
    assert cli.stderr.strip().splitlines()[-1].startswith("pebal_bag: error: bag") and "truncated" in cli.stderr


def test_fewer_messages_than_the_metadata_promises(converted, tmp_path):
    root, input_bag, frames = converted
    outputs = [(s, _fake_scores(_label(root, n), k), 10**18 + k) for k, (s, _, n) in enumerate(frames)]
    write_output(tmp_path / "out", outputs, refs=[], storage="sqlite3")
    meta_file = tmp_path / "out" / "metadata.yaml"
    meta = yaml.safe_load(meta_file.read_text())
    for entry in meta["rosbag2_bagfile_information"]["topics_with_message_count"]:
        if entry["topic_metadata"]["name"] == TOPIC:
            entry["message_count"] += 1
    meta_file.write_text(yaml.safe_dump(meta))
    with pytest.raises(BagError, match="yields 6 messages on /pebal/anomaly_score but its metadata says 7"):
        score_bag(tmp_path / "out", [input_bag], ScoreOptions(score_topic=TOPIC, progress=False))


def test_wrong_inputs_are_named(converted, tmp_path):
    root, input_bag, frames = converted
    stamp, _, _ = frames[0]
    write_output(tmp_path / "small", [(stamp, np.zeros((8, 8), np.float32), 10**18)], refs=[])
    with pytest.raises(BagError, match="8 x 8 pixels but its label is 96 x 64"):
        score_bag(tmp_path / "small", [input_bag], ScoreOptions(score_topic=TOPIC, progress=False))
    with pytest.raises(BagError, match="has no /elsewhere.*holds /camera/camera_info, /pebal/anomaly_score"):
        score_bag(tmp_path / "small", [input_bag], ScoreOptions(score_topic="/elsewhere", progress=False))
    with pytest.raises(BagError, match="no frame index"):
        score_bag(tmp_path / "small", [tmp_path / "small"], ScoreOptions(score_topic=TOPIC, progress=False))
    with pytest.raises(DatasetError, match="pass --data"):
        score_bag(
            tmp_path / "small",
            [input_bag],
            ScoreOptions(score_topic=TOPIC, data_root=tmp_path / "moved", progress=False),
        )
    with pytest.raises(BagError, match="metadata.yaml"):
        score_bag(tmp_path / "nothing", [input_bag], ScoreOptions(score_topic=TOPIC, progress=False))


def _semantic_msg(ns: int, labels: np.ndarray):
    t = typestore().types
    h, w = labels.shape
    data = np.ascontiguousarray(labels, dtype=np.uint8).ravel()
    return t["sensor_msgs/msg/Image"](
        header=_header(ns), height=h, width=w, encoding="mono8", is_bigendian=0, step=w, data=data
    )


def test_alarm_counts_from_recorded_semantic_labels_and_scores(converted, tmp_path):
    """Scores alarm exactly on the labelled hazards and the node saw road everywhere: every hazard of
    >= 20 px is reported once persistence allows it (not in the first frame after a gap), and there
    is no false alarm; a second run with a threshold above every score reports nothing."""
    root, input_bag, frames = converted
    semantic = "/pebal/semantic"
    outputs = []
    with bag_writer(tmp_path / "out", "mcap") as bag:
        bag.add_topic(TOPIC, "sensor_msgs/msg/Image")
        bag.add_topic(semantic, "sensor_msgs/msg/Image")
        for k, (stamp, _, name) in enumerate(frames):
            label = _label(root, name)
            score = np.where(label == 1, 5.0, -10.0).astype(np.float32)
            rx = 3_000_000_000_000_000_000 + k * 100_000_000
            bag.write(TOPIC, rx, _score_msg(stamp, score))
            bag.write(semantic, rx + 1, _semantic_msg(stamp, np.zeros(label.shape, np.uint8)))
            outputs.append((stamp, label))
    expected_obstacles = expected_detected = 0
    previous = None
    for stamp, label in outputs:
        cc, n = ndimage.label(label == 1, structure=np.ones((3, 3)))
        big = int((np.bincount(cc.ravel())[1:] >= 20).sum())
        expected_obstacles += big
        first_after_gap = previous is None or stamp - previous > 0.5e9
        expected_detected += 0 if first_after_gap else big
        previous = stamp
    assert expected_detected > 0
    options = ScoreOptions(score_topic=TOPIC, point=OperatingPoint(0.0), semantic_topic=semantic, progress=False)
    alarms = score_bag(tmp_path / "out", [input_bag], options)["alarms"]
    assert (alarms["frames"], alarms["obstacles"], alarms["detected"]) == (6, expected_obstacles, expected_detected)
    assert alarms["false_alarms"] == 0 and alarms["reported"] == expected_detected
    assert (alarms["region"], alarms["persistence"], alarms["min_pixels"]) == ("drivable", "2 of 3", [20])
    # the node's own operating point is replayed: without persistence the first frame after a gap counts too
    single = OperatingPoint(0.0, persistence=PersistenceConfig(k=1, n=1, k_off=1))
    options = ScoreOptions(score_topic=TOPIC, point=single, semantic_topic=semantic, progress=False)
    report = score_bag(tmp_path / "out", [input_bag], options)
    assert report["alarms"]["detected"] == expected_obstacles > expected_detected
    assert "(drivable region, 1 of 1 frames, obstacles >= 20 px, ego mask none, as the node)" in format_table(report)
    # a point whose smallest obstacle was counted at twice the frames' size: a quarter of it here
    h, w = outputs[0][1].shape
    scaled = OperatingPoint(0.0, min_pixels=80, image_size=(2 * h, 2 * w), persistence=single.persistence)
    options = ScoreOptions(score_topic=TOPIC, point=scaled, semantic_topic=semantic, progress=False)
    assert score_bag(tmp_path / "out", [input_bag], options)["alarms"] == report["alarms"] | {
        "min_pixels": [20],
        "point": scaled.to_dict(),
    }
    # an ego mask over the lower part of the frame (as polygons): no alarm is raised under it, the
    # hazards above it are reported as before; a mask of another aspect ratio does not fit these
    # frames: they run without it, and are counted
    row = h // 2 + 1
    lower = f"{w}x{h}: 0,{row} {w - 1},{row} {w - 1},{h - 1} 0,{h - 1}"
    above = 0
    for _, label in outputs:
        cc, n = ndimage.label((label == 1)[:row], structure=np.ones((3, 3)))
        above += int((np.bincount(cc.ravel())[1:] >= 20).sum())
    assert above < expected_obstacles
    for mask, reported, unfit in ((lower, above, 0), (f"{w}x{2 * h}: 0,0 9,0 9,9", expected_obstacles, 6)):
        masked = OperatingPoint(0.0, persistence=single.persistence, ego_mask=mask)
        options = ScoreOptions(score_topic=TOPIC, point=masked, semantic_topic=semantic, progress=False)
        got = score_bag(tmp_path / "out", [input_bag], options)["alarms"]
        assert (got["reported"], got["frames_without_ego_mask"], got["ego_mask"]) == (reported, unfit, mask)
    quiet = ScoreOptions(score_topic=TOPIC, point=OperatingPoint(100.0), semantic_topic=semantic, progress=False)
    report = score_bag(tmp_path / "out", [input_bag], quiet)
    assert (report["alarms"]["reported"], report["alarms"]["detected"]) == (0, 0)
    assert "false-alarm obstacles per frame over 6 frames" in format_table(report)
    # without a threshold (or without the semantic topic) there are no alarm counts
    assert "alarms" not in score_bag(tmp_path / "out", [input_bag], ScoreOptions(score_topic=TOPIC, progress=False))
