"""Image sources (pebal_core.sources): real files, folders, globs and videos written and read by OpenCV,
checked against the pixels decoded independently; every bad source gives one error that names it."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pebal_core.sources import SourceError, natural_key, open_source


def _write(path: Path, rgb: np.ndarray) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), rgb[..., ::-1].copy())
    return rgb


def _images(n: int, h: int = 24, w: int = 32, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


@pytest.mark.realdata
def test_a_folder_of_real_frames_in_natural_order(realdata):
    folder = realdata / "Validation_Dataset" / "RoadAnomaly" / "images"
    with open_source(folder) as source:
        assert (source.kind, source.length, source.label) == ("folder", 60, "images")
        frames = list(source)
    assert [f.name for f in frames] == [str(i) for i in range(60)]  # 0, 1, ..., 59: not 0, 1, 10, 11, ...
    assert [f.index for f in frames] == list(range(60))
    for frame in frames[::20]:
        expected = cv2.imread(str(folder / f"{frame.name}.jpg"))[..., ::-1]  # BGR file order -> RGB
        assert frame.rgb.shape == (720, 1280, 3) and frame.rgb.dtype == np.uint8
        np.testing.assert_array_equal(frame.rgb, expected)
        assert frame.path == folder / f"{frame.name}.jpg"


def test_natural_order_compares_digit_runs_as_numbers():
    names = ["f10.png", "f2.png", "F1.png", "f2a.png", "g.png"]
    assert sorted(names, key=natural_key) == ["F1.png", "f2.png", "f2a.png", "f10.png", "g.png"]


def test_image_file_and_folder_skip_other_files(tmp_path):
    a, b = _images(2)
    _write(tmp_path / "b.png", b)
    _write(tmp_path / "a.jpg", a)  # lossy: compared with the decoded file, not with `a`
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    with open_source(tmp_path) as source:
        frames = list(source)
    assert [f.name for f in frames] == ["a", "b"]
    np.testing.assert_array_equal(frames[1].rgb, b)  # PNG: exact
    np.testing.assert_array_equal(frames[0].rgb, cv2.imread(str(tmp_path / "a.jpg"))[..., ::-1])
    (single,) = list(open_source(tmp_path / "b.png"))
    assert (single.name, single.index) == ("b", 0)
    np.testing.assert_array_equal(single.rgb, b)


def test_glob_names_frames_below_its_fixed_part(tmp_path):
    imgs = _images(3)
    _write(tmp_path / "run" / "left" / "0001.png", imgs[0])
    _write(tmp_path / "run" / "right" / "0001.png", imgs[1])  # the same file name in another folder
    _write(tmp_path / "run" / "0002.png", imgs[2])
    with open_source(f"{tmp_path}/run/**/*.png") as source:
        assert source.kind == "glob" and source.label == "run"
        frames = list(source)
    assert [f.name for f in frames] == ["0002", "left/0001", "right/0001"]
    for frame, expected in zip(frames, (imgs[2], imgs[0], imgs[1]), strict=True):
        np.testing.assert_array_equal(frame.rgb, expected)


def test_video_frames_exactly_and_loop(tmp_path):
    imgs = _images(4, 48, 64, seed=1)
    path = tmp_path / "drive.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 12.5, (64, 48))  # lossless
    assert writer.isOpened()
    for rgb in imgs:
        writer.write(rgb[..., ::-1].copy())
    writer.release()
    with open_source(path) as source:
        assert (source.kind, source.length, source.fps, source.label) == ("video", 4, 12.5, "drive")
        frames = list(source)
    assert [f.name for f in frames] == [f"drive_{i:06d}" for i in range(4)]
    assert all(f.path is None for f in frames)
    for frame, expected in zip(frames, imgs, strict=True):
        np.testing.assert_array_equal(frame.rgb, expected)
    looped = []
    with open_source(path, loop=True) as source:
        for frame in source:
            looped.append(frame)
            if len(looped) == 10:
                break
    assert [f.index for f in looped] == list(range(10))  # indices count on across passes
    np.testing.assert_array_equal(looped[5].rgb, imgs[1])  # the second pass starts over


def test_loop_over_a_folder_repeats_it(tmp_path):
    for i, rgb in enumerate(_images(2)):
        _write(tmp_path / f"{i}.png", rgb)
    source = open_source(tmp_path, loop=True)
    names = [f.name for f, _ in zip(source, range(5), strict=False)]
    assert names == ["0", "1", "0", "1", "0"]


@pytest.mark.parametrize(
    ("make", "spec", "words"),
    [
        (lambda d: None, "missing.png", ["no image, folder, video or camera device", "missing.png"]),
        (lambda d: (d / "empty").mkdir(), "empty", ["holds no image files", "empty"]),
        (lambda d: ((d / "v").mkdir(), (d / "v" / "a.mp4").write_bytes(b"x")), "v", ["video files (a.mp4)"]),
        (lambda d: None, "*.png", ["matches no image files", "quote it"]),
        (lambda d: (d / "notes.txt").write_text("x"), "notes.txt", ["neither an image", "nor a video"]),
        (lambda d: (d / "broken.mp4").write_bytes(b"\0" * 64), "broken.mp4", ["cannot open the video", "re-encode"]),
        (lambda d: None, "/dev/video63", ["cannot open camera device 63", "v4l2-ctl --list-devices"]),
    ],
)
def test_bad_sources_say_what_is_wrong(tmp_path, monkeypatch, make, spec, words):
    monkeypatch.chdir(tmp_path)
    make(tmp_path)
    with pytest.raises(SourceError) as err:
        open_source(spec)
    assert all(word in str(err.value) for word in words), str(err.value)


def test_an_unreadable_image_in_a_folder_is_named_when_reached(tmp_path):
    _write(tmp_path / "0.png", _images(1)[0])
    (tmp_path / "1.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    frames = iter(open_source(tmp_path))
    assert next(frames).name == "0"
    with pytest.raises(SourceError, match=r"cannot read image .*1\.png.*remove or replace"):
        next(frames)
