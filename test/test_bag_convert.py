"""``pebal_bag convert``: LostAndFound tree -> rosbag2 (mcap / sqlite3), read back with ``rosbags``.

The bags are read back with the ``rosbags`` Reader and typestore directly (not through
``pebal_ros.bag_storage``), the pixels compared with OpenCV's decoding of the PNG files, the
camera info with the JSON written by the test, and the type hashes in ``metadata.yaml`` with the
ones of the installed ROS 2 kilted interface packages (``share/<pkg>/msg/<Type>.json``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from laf_tree import FX, FY, T0_NS, U0, V0, make_tree
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore

from pebal_core.data.base import DatasetError
from pebal_ros.bag_convert import DEFAULT_START_TIME, INDEX_KEY, ConvertOptions, convert, read_index
from pebal_ros.bag_storage import BagError, metadata

TYPESTORE = get_typestore(Stores.ROS2_KILTED)
SEQS = {"01_Hanns_Klemm_Str_45": 3, "02_Hanns_Klemm_Str_44": 2}


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("laf")
    return root, make_tree(root, SEQS)


def _png_rgb(root: Path, name: str) -> np.ndarray:
    seq = name.rsplit("_", 2)[0]
    bgr = cv2.imread(str(root / "leftImg8bit" / "test" / seq / f"{name}_leftImg8bit.png"), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _read_all(bag: Path) -> dict[str, list[tuple[int, object]]]:
    out: dict[str, list] = {}
    with Reader(bag) as reader:
        for conn, ts, raw in reader.messages():
            out.setdefault(conn.topic, []).append((ts, TYPESTORE.deserialize_cdr(raw, conn.msgtype)))
    return out


def _installed_hash(msgtype: str) -> str:
    pkg, _, name = msgtype.split("/")
    share = Path(sys.prefix) / "share" / pkg / "msg" / f"{name}.json"
    return json.loads(share.read_text())["type_hashes"][0]["hash_string"]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_single_bag_holds_the_frames_byte_for_byte(tree, tmp_path, storage):
    root, names = tree
    bag = tmp_path / "all"
    (result,) = convert(root, bag, ConvertOptions(per_sequence=False, storage=storage, frame_id="cam"), progress=False)
    assert result.frames == 5 and result.stamps_from == "timestamp files" and result.without_camera == []
    msgs = _read_all(bag)
    images, infos = msgs["/camera/image_raw"], msgs["/camera/camera_info"]
    assert len(images) == len(infos) == 5
    for k, (name, (ts, img), (ts_info, info)) in enumerate(zip(names, images, infos, strict=True)):
        stamp = T0_NS + k * 100_000_000
        assert ts == ts_info == stamp
        assert img.header.stamp.sec * 10**9 + img.header.stamp.nanosec == stamp
        assert img.header.frame_id == info.header.frame_id == "cam"
        rgb = _png_rgb(root, name)
        assert (img.height, img.width, img.encoding, img.step) == (rgb.shape[0], rgb.shape[1], "rgb8", 3 * rgb.shape[1])
        assert img.data.tobytes() == rgb.tobytes()
        assert (info.height, info.width) == rgb.shape[:2]
        np.testing.assert_array_equal(info.k, [FX, 0, U0, 0, FY, V0, 0, 0, 1])
        np.testing.assert_array_equal(info.p, [FX, 0, U0, 0, 0, FY, V0, 0, 0, 0, 1, 0])
        np.testing.assert_array_equal(info.r, np.eye(3).ravel())
        assert info.distortion_model == "plumb_bob" and not np.any(info.d)

    meta = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["version"] == 9 and meta["storage_identifier"] == storage and meta["message_count"] == 10
    assert meta["starting_time"]["nanoseconds_since_epoch"] == T0_NS
    assert meta["duration"]["nanoseconds"] == 400_000_000
    for entry in meta["topics_with_message_count"]:
        topic = entry["topic_metadata"]
        assert entry["message_count"] == 5 and topic["serialization_format"] == "cdr"
        assert topic["type_description_hash"] == _installed_hash(topic["type"])
        assert topic["offered_qos_profiles"][0]["reliability"] == "reliable"
    (data_file,) = meta["relative_file_paths"]
    assert (bag / data_file).is_file() and data_file.endswith(".mcap" if storage == "mcap" else ".db3")
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir()), "no staging folder left behind"

    index = read_index(metadata(bag))
    assert index["root"] == str(root.resolve()) and index["split"] == "test"
    assert index["frames"] == [(T0_NS + k * 100_000_000, n.rsplit("_", 2)[0], n) for k, n in enumerate(names)]


def test_one_bag_per_sequence(tree, tmp_path):
    root, names = tree
    results = convert(root, tmp_path / "bags", ConvertOptions(encoding="bgr8"), progress=False)
    assert [r.path.name for r in results] == sorted(SEQS)
    seen = []
    for r in results:
        msgs = _read_all(r.path)
        assert len(msgs["/camera/image_raw"]) == SEQS[r.path.name] == r.frames
        for _, img in msgs["/camera/image_raw"]:
            assert img.encoding == "bgr8"
            seen.append(img.data.reshape(img.height, img.width, 3)[..., ::-1])
        assert [name for _, _, name in read_index(metadata(r.path))["frames"]] == [
            n for n in names if n.startswith(r.path.name)
        ]
    for name, pixels in zip(names, seen, strict=True):
        np.testing.assert_array_equal(pixels, _png_rgb(root, name))


def test_compressed_png_is_the_file_and_jpeg_decodes_close(tree, tmp_path):
    root, names = tree
    convert(root, tmp_path / "png", ConvertOptions(per_sequence=False, image_format="png"), progress=False)
    convert(root, tmp_path / "jpg", ConvertOptions(per_sequence=False, image_format="jpeg"), progress=False)
    pngs = _read_all(tmp_path / "png")["/camera/image_raw/compressed"]
    jpgs = _read_all(tmp_path / "jpg")["/camera/image_raw/compressed"]
    for name, (_, png), (_, jpg) in zip(names, pngs, jpgs, strict=True):
        seq = name.rsplit("_", 2)[0]
        file_bytes = (root / "leftImg8bit" / "test" / seq / f"{name}_leftImg8bit.png").read_bytes()
        assert png.data.tobytes() == file_bytes and "png" in png.format
        assert "jpeg" in jpg.format
        decoded = cv2.cvtColor(cv2.imdecode(jpg.data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        assert np.abs(decoded.astype(int) - _png_rgb(root, name)).mean() < 6


def test_rate_stamps_when_there_are_no_timestamp_files(tmp_path):
    names = make_tree(tmp_path / "laf", SEQS, timestamps=False, camera=False)
    (r,) = convert(
        tmp_path / "laf",
        tmp_path / "bag",
        ConvertOptions(per_sequence=False, rate=4.0, start_time=100.5),
        progress=False,
    )
    assert r.stamps_from == "rate 4 Hz" and r.without_camera == names
    msgs = _read_all(tmp_path / "bag")
    assert "/camera/camera_info" not in msgs  # no camera files, no CameraInfo
    assert [ts for ts, _ in msgs["/camera/image_raw"]] == [100_500_000_000 + k * 250_000_000 for k in range(5)]


def test_frames_limit_and_sequence_selection(tree, tmp_path):
    root, names = tree
    (r,) = convert(root, tmp_path / "a", ConvertOptions(per_sequence=False, limit=2), progress=False)
    assert [n for _, _, n in read_index(metadata(r.path))["frames"]] == names[:2]
    seq = sorted(SEQS)[1]
    (r,) = convert(root, tmp_path / "b", ConvertOptions(per_sequence=False, sequences=(seq,)), progress=False)
    assert r.sequences == [seq] and r.frames == SEQS[seq]


def test_missing_camera_file_is_counted(tmp_path):
    names = make_tree(tmp_path / "laf", SEQS)
    seq = names[1].rsplit("_", 2)[0]
    (tmp_path / "laf" / "camera" / "test" / seq / f"{names[1]}_camera.json").unlink()
    (r,) = convert(tmp_path / "laf", tmp_path / "bag", ConvertOptions(per_sequence=False), progress=False)
    assert r.without_camera == [names[1]]
    msgs = _read_all(tmp_path / "bag")
    assert len(msgs["/camera/image_raw"]) == 5
    assert [ts for ts, _ in msgs["/camera/camera_info"]] == [T0_NS + k * 100_000_000 for k in (0, 2, 3, 4)]


def test_dataset_problems_are_named_and_leave_no_bag(tmp_path):
    names = make_tree(tmp_path / "laf", SEQS)
    seq = names[2].rsplit("_", 2)[0]
    stamp_file = tmp_path / "laf" / "timestamp" / "test" / seq / f"{names[2]}_timestamp.txt"
    stamp_file.unlink()
    with pytest.raises(DatasetError, match=f"only 4 of 5 frames have a timestamp file.*{names[2]}"):
        convert(tmp_path / "laf", tmp_path / "bag", ConvertOptions(per_sequence=False), progress=False)
    (r,) = convert(
        tmp_path / "laf", tmp_path / "ok", ConvertOptions(per_sequence=False, timestamps="rate"), progress=False
    )
    assert r.frames == 5

    stamp_file.write_text(str(T0_NS))  # the same stamp as the first frame
    with pytest.raises(DatasetError, match="same timestamp"):
        convert(tmp_path / "laf", tmp_path / "bag", ConvertOptions(per_sequence=False), progress=False)
    stamp_file.write_text(str(T0_NS + 200_000_000))

    seq = names[3].rsplit("_", 2)[0]
    image = tmp_path / "laf" / "leftImg8bit" / "test" / seq / f"{names[3]}_leftImg8bit.png"
    image.write_bytes(image.read_bytes()[:40])  # truncated PNG
    with pytest.raises(DatasetError, match=names[3]):
        convert(tmp_path / "laf", tmp_path / "bag", ConvertOptions(per_sequence=False), progress=False)
    assert not (tmp_path / "bag").exists() and not list(tmp_path.glob(".bag*")), "a failed conversion leaves nothing"

    with pytest.raises(BagError, match="exists already"):
        convert(tmp_path / "laf", tmp_path / "ok", ConvertOptions(per_sequence=False), progress=False)


def test_index_is_required_for_matching(tmp_path):
    with pytest.raises(BagError, match="no frame index"):
        read_index({"custom_data": None}, "some bag")
    with pytest.raises(BagError, match="damaged"):
        read_index({"custom_data": {INDEX_KEY: "{not json"}}, "some bag")


def test_console_script(tree, tmp_path):
    root, _ = tree
    script = os.path.join(os.path.dirname(sys.executable), "pebal_bag")
    out = subprocess.run(
        [script, "convert", str(root), str(tmp_path / "bags"), "--storage", "sqlite3", "--frames", "4"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "01_Hanns_Klemm_Str_45: 3 frames" in out.stdout and "02_Hanns_Klemm_Str_44: 1 frames" in out.stdout
    assert (tmp_path / "bags" / "02_Hanns_Klemm_Str_44" / "02_Hanns_Klemm_Str_44.db3").is_file()
    bad = subprocess.run(
        [script, "convert", str(tmp_path / "nowhere"), str(tmp_path / "x")], capture_output=True, text=True, timeout=120
    )
    assert bad.returncode == 2 and bad.stderr.startswith("pebal_bag: error:") and "Traceback" not in bad.stderr
    assert "nowhere" in bad.stderr
    help_text = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120).stdout
    for command in ("convert", "play", "record", "score"):
        assert command in help_text


# --------------------------------------------------------------------------- image sources
def test_a_folder_of_real_frames_becomes_one_bag_with_default_camera_info(realdata, tmp_path):
    """A plain folder (the source layout): one bag named after it, the decoded pixels unchanged, rate stamps,
    CameraInfo of the stated default (fx = fy = width, principal point at the centre), unlabelled frames."""
    images = realdata / "Validation_Dataset" / "RoadAnomaly" / "images"
    frames = tmp_path / "frames"
    frames.mkdir()
    for name in ("2.jpg", "10.jpg", "1.jpg"):
        (frames / name).write_bytes((images / name).read_bytes())
    (r,) = convert(frames, tmp_path / "bags", ConvertOptions(rate=5.0), progress=False)
    assert (r.path, r.frames, r.sequences, r.stamps_from) == (tmp_path / "bags" / "frames", 3, ["frames"], "rate 5 Hz")
    msgs = _read_all(r.path)
    stamps = [round(DEFAULT_START_TIME * 1e9) + k * 200_000_000 for k in range(3)]
    assert [ts for ts, _ in msgs["/camera/image_raw"]] == stamps
    for (_, msg), name in zip(msgs["/camera/image_raw"], ("1", "2", "10"), strict=True):  # natural order
        expected = cv2.imread(str(images / f"{name}.jpg"))[..., ::-1]
        assert (msg.height, msg.width, msg.encoding) == (720, 1280, "rgb8")
        np.testing.assert_array_equal(msg.data.reshape(720, 1280, 3), expected)
    for ts, info in msgs["/camera/camera_info"]:
        assert ts in stamps and (info.width, info.height) == (1280, 720)
        np.testing.assert_array_equal(info.k, [1280, 0, 639.5, 0, 1280, 359.5, 0, 0, 1])
        np.testing.assert_array_equal(info.p, [1280, 0, 639.5, 0, 0, 1280, 359.5, 0, 0, 0, 1, 0])
    index = read_index(metadata(r.path), r.path)
    assert index["layout"] == "source" and [f[2] for f in index["frames"]] == ["1", "2", "10"]

    from pebal_ros.bag_convert import labelled_frames

    entries = {ns: (index["layout"], index["root"], index["split"], seq, name) for ns, seq, name in index["frames"]}
    assert not any(frame.labelled for frame in labelled_frames(entries).values())  # scored as unlabelled


def test_a_video_with_a_calibration_file(tmp_path):
    """Every frame of a (lossless) video, exactly; CameraInfo from a ROS calibration YAML; --frames limits."""
    rng = np.random.default_rng(3)
    pictures = [rng.integers(0, 256, (48, 64, 3), dtype=np.uint8) for _ in range(5)]
    video = tmp_path / "drive.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"FFV1"), 10, (64, 48))
    for rgb in pictures:
        writer.write(rgb[..., ::-1].copy())
    writer.release()
    calib = tmp_path / "front.yaml"
    calib.write_text(
        "image_width: 64\nimage_height: 48\ncamera_name: front\n"
        "camera_matrix: {rows: 3, cols: 3, data: [50.5, 0, 31.0, 0, 51.5, 23.0, 0, 0, 1]}\n"
        "distortion_model: plumb_bob\n"
        "distortion_coefficients: {rows: 1, cols: 5, data: [-0.1, 0.01, 0, 0, 0]}\n"
    )
    options = ConvertOptions(per_sequence=False, limit=4, camera_info=str(calib), image_format="png")
    (r,) = convert(video, tmp_path / "bag", options, progress=False)
    assert (r.path, r.frames, r.sequences) == (tmp_path / "bag", 4, ["drive"])
    msgs = _read_all(r.path)
    compressed = msgs["/camera/image_raw/compressed"]
    assert len(compressed) == 4
    for (_, msg), rgb in zip(compressed, pictures, strict=False):  # PNG-encoded decoded frames: lossless
        np.testing.assert_array_equal(cv2.imdecode(msg.data, cv2.IMREAD_COLOR)[..., ::-1], rgb)
    for _, info in msgs["/camera/camera_info"]:
        np.testing.assert_array_equal(info.k, [50.5, 0, 31.0, 0, 51.5, 23.0, 0, 0, 1])
        np.testing.assert_array_equal(info.d, [-0.1, 0.01, 0, 0, 0])
        np.testing.assert_array_equal(info.p, [50.5, 0, 31.0, 0, 0, 51.5, 23.0, 0, 0, 0, 1, 0])  # [K | 0]
    assert [f[2] for f in read_index(metadata(r.path), r.path)["frames"]] == [f"drive_{i:06d}" for i in range(4)]


def test_sources_that_cannot_be_converted_say_why(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no layout pebal_bag convert knows"):
        convert(tmp_path / "empty", tmp_path / "bag", progress=False)
    with pytest.raises(ValueError, match="matches no image files"):
        convert(f"{tmp_path}/*.png", tmp_path / "bag", progress=False)
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(DatasetError, match="--timestamps rate"):
        convert(tmp_path / "a.png", tmp_path / "bag", ConvertOptions(timestamps="files"), progress=False)
    assert not list(tmp_path.glob("*bag*")), "nothing written"


def test_info_shows_what_the_bag_holds(tree, tmp_path):
    """pebal_bag info against the bag read back with rosbags: storage, topics, types, counts, time span."""
    root, names = tree
    convert(root, tmp_path / "bag", ConvertOptions(per_sequence=False, storage="sqlite3"), progress=False)
    script = os.path.join(os.path.dirname(sys.executable), "pebal_bag")
    out = subprocess.run([script, "info", str(tmp_path / "bag")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    with Reader(tmp_path / "bag") as reader:
        counts = {c.topic: (c.msgtype, c.msgcount) for c in reader.connections}
        stamps = sorted(ts for _, ts, _ in reader.messages())
    lines = out.stdout.splitlines()
    assert "Storage id:        sqlite3" in lines
    assert f"Messages:          {sum(n for _, n in counts.values())}" in lines
    assert f"Duration:          {(stamps[-1] - stamps[0]) / 1e9:.9f} s" in lines
    assert any(
        line.startswith("Start:") and f"({stamps[0] // 10**9}.{stamps[0] % 10**9:09d})" in line for line in lines
    )
    for topic, (msgtype, count) in counts.items():
        assert any(f"Topic: {topic}" in line and f"Type: {msgtype} | Count: {count}" in line for line in lines)
    missing = subprocess.run([script, "info", str(tmp_path / "nope")], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "is not a folder" in missing.stderr and "Traceback" not in missing.stderr


def test_export_writes_each_image_as_a_png_named_by_its_stamp(tree, tmp_path):
    root, names = tree
    (r,) = convert(root, tmp_path / "bag", ConvertOptions(per_sequence=False), progress=False)
    from pebal_ros.bag_export import export_images

    written = export_images(r.path, "/camera/image_raw", tmp_path / "png")
    assert [ns for ns, _, _ in written] == [ts for ts, _ in _read_all(r.path)["/camera/image_raw"]]
    for (ns, path, rgb), name in zip(written, names, strict=True):
        assert path.name == f"{ns // 10**9}.{ns % 10**9:09d}.png"
        np.testing.assert_array_equal(cv2.imread(str(path))[..., ::-1], _png_rgb(root, name))
        np.testing.assert_array_equal(rgb, _png_rgb(root, name))
    with pytest.raises(BagError, match="holds sensor_msgs/msg/CameraInfo, not images"):
        export_images(r.path, "/camera/camera_info", tmp_path / "x")
    with pytest.raises(BagError, match="no topic /nope"):
        export_images(r.path, "/nope", tmp_path / "x")
