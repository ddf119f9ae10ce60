"""Anomaly evaluation datasets read from tiny trees written in each real on-disk layout."""

import json

import numpy as np
import pytest

from pebal_core.data.anomaly_pairs import identity_collate
from pebal_core.data.anomaly_sets import ANOMALY_DATASETS, build_anomaly_dataset
from pebal_core.data.base import DatasetError
from pebal_core.data.fishyscapes import FishyscapesDataset
from pebal_core.data.lostandfound import list_frames, list_sequences
from pebal_core.data.lostandfound_dataset import LostAndFoundDataset
from pebal_core.data.road_anomaly import RoadAnomalyDataset
from pebal_core.data.validation_dataset import ValidationDataset
from pebal_core.images import write_label as _write_label
from pebal_core.images import write_rgb as _write_rgb

RNG = np.random.default_rng(0)


def write_rgb(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_rgb(path, image)


def write_label(path, label):
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_label(path, label)


def rgb(h=6, w=8):
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def raw_label(values, h=6, w=8):
    """A label map whose first pixels hold ``values`` in order (rest = values[0])."""
    lab = np.full(h * w, values[0], np.uint8)
    lab[: len(values)] = values
    return lab.reshape(h, w)


def first(label, n):
    return label.ravel()[:n].tolist()


# ----------------------------------------------------------------------------- Fishyscapes
def make_fishyscapes(root, split="LostAndFound", names=("b", "a")):
    for i, name in enumerate(names):
        write_rgb(root / split / "original" / f"{name}.png", rgb())
        write_label(root / split / "labels" / f"{name}.png", raw_label([0, 1, 255, i]))


def test_fishyscapes_reference_layout(tmp_path):
    make_fishyscapes(tmp_path)
    ds = FishyscapesDataset(tmp_path, "LostAndFound")
    assert [s.name for s in ds.samples] == ["a", "b"]
    item = ds[0]
    assert item["name"] == "a" and item["image"].shape == (6, 8, 3) and item["image"].dtype == np.uint8
    assert first(item["label"], 4) == [0, 1, 255, 1]
    assert identity_collate([item]) is item


def test_fishyscapes_meta_ood_flat_layout(tmp_path):
    split = tmp_path / "Static"
    split.mkdir()
    for name in ("x", "y"):
        write_rgb(split / f"{name}.jpg", rgb())
        write_label(split / f"{name}.png", raw_label([0, 1]))
    ds = build_anomaly_dataset("fs_static", tmp_path)
    assert len(ds) == 2 and first(ds[1]["label"], 2) == [0, 1]


def test_fishyscapes_errors_name_the_path(tmp_path):
    with pytest.raises(DatasetError, match=str(tmp_path / "Static")):
        FishyscapesDataset(tmp_path, "Static")
    (tmp_path / "Static" / "original").mkdir(parents=True)
    write_rgb(tmp_path / "Static" / "original" / "a.png", rgb())
    with pytest.raises(DatasetError, match="labels"):
        FishyscapesDataset(tmp_path, "Static")
    write_label(tmp_path / "Static" / "labels" / "a.png", raw_label([0, 7]))
    with pytest.raises(DatasetError, match=r"values \[7\]"):
        FishyscapesDataset(tmp_path, "Static")[0]
    write_label(tmp_path / "Static" / "labels" / "a.png", raw_label([0, 1], h=5))
    with pytest.raises(DatasetError, match="same size"):
        FishyscapesDataset(tmp_path, "Static")[0]


# ----------------------------------------------------------------------------- LostAndFound
def laf_stem(seq, seqnum, frame):
    return f"{seq}_{seqnum:06d}_{frame:06d}"


def make_lostandfound(root, split="test"):
    """Two sequences; one frame has only the prepared trainIds file, one has no camera/timestamp."""
    frames = [("04_Maurener_Weg_8", 0, 30), ("04_Maurener_Weg_8", 0, 10), ("13_Elberfelder_Str_1", 2, 50)]
    for k, (seq, seqnum, frame) in enumerate(frames):
        stem = laf_stem(seq, seqnum, frame)
        write_rgb(root / "leftImg8bit" / split / seq / f"{stem}_leftImg8bit.png", rgb())
        gt = root / "gtCoarse" / split / seq
        if k == 2:
            write_label(gt / f"{stem}_gtCoarse_labelTrainIds.png", raw_label([1, 2, 0, 255]))
        else:
            # unlabeled, free space, crate, marker pole (non-hazard), kid (43), an unknown id
            write_label(gt / f"{stem}_gtCoarse_labelIds.png", raw_label([0, 1, 5, 31, 43, 60]))
        if k != 1:
            cam = {"extrinsic": {"pitch": 0.05, "y": 0.1, "z": 1.2}, "intrinsic": {"fx": 2268.0, "u0": 1048.0}}
            (root / "camera" / split / seq).mkdir(parents=True, exist_ok=True)
            (root / "camera" / split / seq / f"{stem}_camera.json").write_text(json.dumps(cam))
            (root / "timestamp" / split / seq).mkdir(parents=True, exist_ok=True)
            (root / "timestamp" / split / seq / f"{stem}_timestamp.txt").write_text(f"{1000 + frame}\n")


@pytest.fixture
def laf_root(tmp_path):
    make_lostandfound(tmp_path)
    return tmp_path


def test_lostandfound_frame_listing_for_the_bag_converter(laf_root):
    assert list_sequences(laf_root) == ["04_Maurener_Weg_8", "13_Elberfelder_Str_1"]
    frames = list_frames(laf_root)
    assert [(f.sequence, f.sequence_number, f.frame) for f in frames] == [
        ("04_Maurener_Weg_8", 0, 10),
        ("04_Maurener_Weg_8", 0, 30),
        ("13_Elberfelder_Str_1", 2, 50),
    ]
    f10, f30, f50 = frames
    assert f30.name == "04_Maurener_Weg_8_000000_000030" and f30.image.name == f"{f30.name}_leftImg8bit.png"
    assert f30.camera()["intrinsic"]["fx"] == 2268.0 and f30.timestamp_ns() == 1030
    assert f10.camera() is None and f10.timestamp_ns() is None and f10.label_ids is not None
    assert f50.label_ids is None and f50.label_train_ids.name.endswith("_gtCoarse_labelTrainIds.png")
    assert [f.frame for f in list_frames(laf_root, sequence="13_Elberfelder_Str_1")] == [50]


def test_lostandfound_test_protocol(laf_root):
    ds = LostAndFoundDataset(laf_root)
    item = ds[1]
    assert item["name"] == "04_Maurener_Weg_8_000000_000030" and item["sequence"] == "04_Maurener_Weg_8"
    assert item["frame"] == 30 and item["timestamp_ns"] == 1030 and item["camera"]["extrinsic"]["z"] == 1.2
    # label ids 0, 1, 5, 31, 43, 60 -> void, inlier, anomaly, void (non-hazard), anomaly, void
    assert first(item["label"], 6) == [255, 0, 1, 255, 1, 255]
    # prepared trainIds 1, 2, 0, 255 -> inlier, anomaly, void (non-hazard), void
    assert first(ds[2]["label"], 4) == [0, 1, 255, 255]
    counted = LostAndFoundDataset(laf_root, non_hazards="anomaly")
    assert first(counted[1]["label"], 6) == [255, 0, 1, 1, 1, 255] and first(counted[2]["label"], 3) == [0, 1, 1]


def test_lostandfound_errors(laf_root, tmp_path_factory):
    with pytest.raises(DatasetError, match="leftImg8bit/test"):
        LostAndFoundDataset(tmp_path_factory.mktemp("empty"))
    stem = laf_stem("13_Elberfelder_Str_1", 2, 50)
    (laf_root / "gtCoarse" / "test" / "13_Elberfelder_Str_1" / f"{stem}_gtCoarse_labelTrainIds.png").unlink()
    with pytest.raises(DatasetError, match=f"{stem}_gtCoarse_labelIds.png"):
        LostAndFoundDataset(laf_root)
    (
        laf_root / "camera" / "test" / "04_Maurener_Weg_8" / f"{laf_stem('04_Maurener_Weg_8', 0, 30)}_camera.json"
    ).write_text("{}")
    with pytest.raises(DatasetError, match="intrinsic"):
        list_frames(laf_root)[1].camera()


# ----------------------------------------------------------------------------- Road Anomaly
def test_road_anomaly_layout_and_protocol(tmp_path):
    frames = tmp_path / "frames"
    for name in ("animals01_cows", "zebra02"):
        write_rgb(frames / f"{name}.jpg", rgb())
        write_label(frames / f"{name}.labels" / "labels_semantic.png", raw_label([0, 1, 2, 255]))
    ds = build_anomaly_dataset("road_anomaly", tmp_path)
    assert isinstance(ds, RoadAnomalyDataset) and [s.name for s in ds.samples] == ["animals01_cows", "zebra02"]
    assert first(ds[0]["label"], 4) == [0, 0, 1, 255]
    (frames / "zebra02.labels" / "labels_semantic.png").unlink()
    with pytest.raises(DatasetError, match="zebra02.labels"):
        RoadAnomalyDataset(tmp_path)


# ----------------------------------------------------------------------------- Validation_Dataset
def make_validation(root):
    for n, values in [(0, [0, 2]), (1, [0, 0]), (10, [2, 0])]:
        write_rgb(root / "RoadAnomaly" / "images" / f"{n}.jpg", rgb())
        write_label(root / "RoadAnomaly" / "labels_masks" / f"{n}.png", raw_label(values))
    for n, values in [(0, [0, 1, 255]), (1, [255, 0])]:
        write_rgb(root / "fs_static" / "images" / f"{n}.jpg", rgb())
        write_label(root / "fs_static" / "labels_masks" / f"{n}.png", raw_label(values))


def test_validation_dataset_protocol(tmp_path):
    make_validation(tmp_path)
    ra = build_anomaly_dataset("validation/RoadAnomaly", tmp_path)
    assert isinstance(ra, ValidationDataset)
    assert [s.name for s in ra.samples] == ["RoadAnomaly/0", "RoadAnomaly/10"] and ra.n_skipped == 1
    assert first(ra[0]["label"], 2) == [0, 1] and first(ra[1]["label"], 2) == [1, 0]  # 2 -> 1
    everything = ValidationDataset(tmp_path, "RoadAnomaly", skip_without_anomaly=False)
    assert len(everything) == 3 and [s.name for s in everything.samples][-1] == "RoadAnomaly/10"  # numeric order
    fs = ValidationDataset(tmp_path, "fs_static")
    assert len(fs) == 1 and first(fs[0]["label"], 3) == [0, 1, 255]
    with pytest.raises(DatasetError, match="sets found under .*RoadAnomaly, fs_static"):
        ValidationDataset(tmp_path, "RoadObsticle21")


# ----------------------------------------------------------------------------- registry
def test_registry_names_and_synthetic_split_detection(tmp_path):
    assert list(ANOMALY_DATASETS) == [
        "fs_lost_and_found", "fs_static", "lost_and_found", "road_anomaly", "validation/<SET>", "synthetic"
    ]  # fmt: skip
    synth = tmp_path / "synth"
    make_fishyscapes(synth / "fishyscapes", split="Synthetic")
    ds = build_anomaly_dataset("synthetic", synth)
    assert isinstance(ds, FishyscapesDataset) and ds.split == "Synthetic" and len(ds) == 2
    assert len(build_anomaly_dataset("synthetic", synth / "fishyscapes", split="Synthetic")) == 2
    make_fishyscapes(synth / "fishyscapes", split="Other")
    with pytest.raises(DatasetError, match="exactly one split"):
        build_anomaly_dataset("synthetic", synth)
    with pytest.raises(ValueError, match="unknown anomaly dataset 'cityscapes'; available: fs_lost_and_found, "):
        build_anomaly_dataset("cityscapes", tmp_path)
    with pytest.raises(ValueError, match=r"'fs_statc' \(did you mean 'fs_static'\?\)"):
        build_anomaly_dataset("fs_statc", tmp_path)
    with pytest.raises(ValueError, match=r"'validaton/<SET>' \(did you mean 'validation/<SET>'\?\)"):
        build_anomaly_dataset("validaton/RoadAnomaly", tmp_path)
    with pytest.raises(ValueError, match=r"'validation/' \(did you mean 'validation/<SET>'\?\)"):
        build_anomaly_dataset("validation/", tmp_path)


# ----------------------------------------------------------------------------- real data
@pytest.mark.realdata
def test_real_validation_dataset_counts_sizes_and_label_mapping(realdata):
    root = realdata / "Validation_Dataset"
    # (images used by the published protocol, image size W x H, anomaly-pixel prevalence %, docs/data_sources.md)
    expected = {
        "RoadAnomaly": (60, (1280, 720), 9.850),
        "RoadAnomaly21": (10, (1280, 720), 14.807),
        "RoadObsticle21": (30, (1920, 1080), 0.675),
        "fs_static": (20, (2048, 1024), 2.084),
        "FS_LostFound_full": (30, (2048, 1024), 0.335),
    }
    for subset, (count, (w, h), prevalence) in expected.items():
        ds = build_anomaly_dataset(f"validation/{subset}", root)
        assert len(ds) == count, subset
        item = ds[0]
        assert item["image"].shape == (h, w, 3) and item["label"].shape == (h, w), subset
        pos = neg = 0
        for i in range(len(ds)):
            label = ds.read_label(i)
            assert set(np.unique(label).tolist()) <= {0, 1, 255}
            pos, neg = pos + (label == 1).sum(), neg + (label == 0).sum()
        assert 100 * pos / (pos + neg) == pytest.approx(prevalence, abs=0.0006), subset
    assert ValidationDataset(root, "fs_static").n_skipped == 10
