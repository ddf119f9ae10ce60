"""``pebal_bag convert`` / ``score`` on the ``Validation_Dataset`` layout (single real frames per set).

A tiny bundle in the real layout (``<SET>/images/<N>.<ext>`` + ``<SET>/labels_masks/<N>.png``:
RoadAnomaly with JPEG images and labels {0, 2}, RoadObsticle21 with WebP images and labels
{0, 1, 255}) is converted; the bags are read back with ``rosbags`` directly and the pixels compared
with OpenCV's decoding of the files. Scores written as the recorder would are scored against the
labels, mapped here by hand (RoadAnomaly's 2 is the anomaly), with AUROC / AP from scikit-learn.
On the real bundle (when present) two frames of FS_LostFound_full are converted and found again.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore
from sklearn.metrics import average_precision_score, roc_auc_score
from test_bag_score import _fake_scores, write_output

from pebal_core.data.base import DatasetError
from pebal_ros.bag_convert import ConvertOptions, convert, detect_layout, labelled_frames, read_index
from pebal_ros.bag_score import ScoreOptions, load_index, score_bag
from pebal_ros.bag_storage import metadata

TYPESTORE = get_typestore(Stores.ROS2_KILTED)
SETS = {"RoadAnomaly": (".jpg", [0, 2]), "RoadObsticle21": (".webp", [0, 1, 255])}
NUMBERS = [0, 1, 2, 10]
"""Image numbers per set: numeric order differs from name order (10 < 2 as text)."""
H, W = 40, 64


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bundle") / "Validation_Dataset"
    rng = np.random.default_rng(0)
    for name, (ext, values) in SETS.items():
        (root / name / "images").mkdir(parents=True)
        (root / name / "labels_masks").mkdir()
        for n in NUMBERS:
            rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
            assert cv2.imwrite(str(root / name / "images" / f"{n}{ext}"), rgb[..., ::-1])
            label = np.full((H, W), values[0], np.uint8)
            label[10:20, 20:40] = values[1]
            label[:, :4] = values[-1]
            assert cv2.imwrite(str(root / name / "labels_masks" / f"{n}.png"), label)
    return root


def _decoded(root: Path, name: str) -> np.ndarray:
    subset, n = name.rsplit("_", 1)
    image = next((root / subset / "images").glob(f"{n}.*"))
    return cv2.cvtColor(cv2.imread(str(image), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _label_by_hand(root: Path, name: str) -> np.ndarray:
    subset, n = name.rsplit("_", 1)
    raw = cv2.imread(str(root / subset / "labels_masks" / f"{n}.png"), cv2.IMREAD_UNCHANGED)
    anomaly = 2 if subset == "RoadAnomaly" else 1
    return np.where(raw == 0, 0, np.where(raw == anomaly, 1, 255)).astype(np.uint8)


def test_layout_is_recognised_by_its_folders(bundle, tmp_path):
    assert detect_layout(bundle) == "validation"
    with pytest.raises(DatasetError, match="Validation_Dataset bundle"):
        detect_layout(tmp_path)


def test_single_bag_holds_every_image_of_the_sets_in_numeric_order(bundle, tmp_path):
    (result,) = convert(bundle, tmp_path / "bag", ConvertOptions(per_sequence=False), progress=False)
    expected = [f"{s}_{n}" for s in sorted(SETS) for n in NUMBERS]
    assert result.frames == len(expected) and result.stamps_from == "rate 10 Hz"
    assert result.without_camera == expected  # the bundle has no camera files
    index = read_index(metadata(tmp_path / "bag"))
    assert index["layout"] == "validation" and Path(index["root"]) == bundle.resolve()
    assert [name for _, _, name in index["frames"]] == expected
    assert [seq for _, seq, _ in index["frames"]] == [name.rsplit("_", 1)[0] for name in expected]
    with Reader(tmp_path / "bag") as reader:
        assert {c.topic for c in reader.connections} == {"/camera/image_raw", "/camera/camera_info"}
        msgs = [(ts, TYPESTORE.deserialize_cdr(raw, c.msgtype)) for c, ts, raw in reader.messages()]
    assert len(msgs) == len(expected)  # images only, no CameraInfo
    for (stamp, _, name), (ts, img) in zip(index["frames"], msgs, strict=True):
        rgb = _decoded(bundle, name)
        assert ts == stamp == img.header.stamp.sec * 10**9 + img.header.stamp.nanosec
        assert (img.height, img.width, img.encoding) == (H, W, "rgb8")
        assert img.data.tobytes() == rgb.tobytes()


def test_sets_are_chosen_like_sequences_one_bag_each(bundle, tmp_path):
    results = convert(bundle, tmp_path / "bags", ConvertOptions(sequences=("RoadObsticle21",)), progress=False)
    assert [(r.path.name, r.frames, r.sequences) for r in results] == [("RoadObsticle21", 4, ["RoadObsticle21"])]
    with pytest.raises(DatasetError, match="'Nope'"):
        convert(bundle, tmp_path / "other", ConvertOptions(sequences=("Nope",)), progress=False)


def test_recorded_scores_are_scored_against_the_bundle_labels(bundle, tmp_path):
    convert(bundle, tmp_path / "input", ConvertOptions(per_sequence=False), progress=False)
    frames = read_index(metadata(tmp_path / "input"))["frames"]
    outputs, pairs = [], {s: [] for s in SETS}
    for k, (stamp, seq, name) in enumerate(frames):
        label = _label_by_hand(bundle, name)
        score = _fake_scores(label, k)
        outputs.append((stamp, score, 3_000_000_000_000_000_000 + k * 10**8))
        pairs[seq].append((score, label))
    write_output(tmp_path / "out", outputs, refs=[])
    report = score_bag(tmp_path / "out", [tmp_path / "input"], ScoreOptions(progress=False))
    assert report["frames"]["scored"] == len(frames) and report["frames"]["missing"] == 0
    assert report["latency_ms"] is None  # no CameraInfo to time against
    everything = [p for seq_pairs in pairs.values() for p in seq_pairs]
    for where, chosen in [("overall", everything), *((s, pairs[s]) for s in SETS)]:
        got = report["methods"]["pebal"]["overall" if where == "overall" else "sequences"]
        got = got if where == "overall" else got[where]
        scores = np.concatenate([s.ravel() for s, _ in chosen])
        labels = np.concatenate([lab.ravel() for _, lab in chosen])
        keep = labels != 255
        assert got["auroc"] == pytest.approx(roc_auc_score(labels[keep], scores[keep]), abs=1e-9)
        assert got["ap"] == pytest.approx(average_precision_score(labels[keep], scores[keep]), abs=1e-9)
        assert got["n_anomaly_pixels"] == int((labels == 1).sum())


def test_moved_bundle_is_found_with_data_root_and_named_when_missing(bundle, tmp_path):
    convert(bundle, tmp_path / "input", ConvertOptions(per_sequence=False), progress=False)
    index, _ = load_index([tmp_path / "input"])
    with pytest.raises(DatasetError, match="does not exist; pass --data"):
        labelled_frames(index, tmp_path / "elsewhere")
    found = labelled_frames(index, bundle)
    for frame in found.values():
        np.testing.assert_array_equal(frame.label(), _label_by_hand(bundle, frame.name))


def test_pebal_bag_convert_command_on_the_bundle(bundle, tmp_path):
    script = os.path.join(os.path.dirname(sys.executable), "pebal_bag")
    out = subprocess.run(
        [script, "convert", str(bundle), str(tmp_path / "bags"), "--sequence", "RoadAnomaly", "--frames", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "2 frames of RoadAnomaly" in out.stdout
    assert [n for _, _, n in read_index(metadata(tmp_path / "bags" / "RoadAnomaly"))["frames"]] == [
        "RoadAnomaly_0",
        "RoadAnomaly_1",
    ]


@pytest.mark.realdata
def test_real_bundle_frames_convert_and_are_found_again(realdata, tmp_path):
    root = realdata / "Validation_Dataset"
    options = ConvertOptions(sequences=("FS_LostFound_full", "RoadObsticle21"), limit=2, per_sequence=False)
    (result,) = convert(root, tmp_path / "bag", options, progress=False)
    index, _ = load_index([tmp_path / "bag"])
    frames = labelled_frames(index)
    assert [f.name for f in frames.values()] == ["FS_LostFound_full_0", "FS_LostFound_full_3"]
    for frame in frames.values():
        label = frame.label()
        assert label.shape == (1024, 2048) and set(np.unique(label)) <= {0, 1, 255} and (label == 1).any()
