"""``pebal_bag mask``: the ego-vehicle mask of a recorded camera, from a real bag (written by
``pebal_bag convert``, raw and PNG-compressed images) through the frame sampling to the estimate."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from ego_frames import bonnet_truth, camera_frames

from pebal_core.alarms.ego_mask import load_ego_mask
from pebal_core.images import write_label, write_rgb
from pebal_ros.bag_convert import ConvertOptions, convert
from pebal_ros.bag_mask import sample_frames
from pebal_ros.bag_storage import BagError

FRAMES = 30


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """The synthetic camera's frames in the Validation_Dataset layout (one set, labels all inlier)."""
    root = tmp_path_factory.mktemp("bundle")
    for i, frame in enumerate(camera_frames(FRAMES)):
        (root / "cam" / "images").mkdir(parents=True, exist_ok=True)
        (root / "cam" / "labels_masks").mkdir(parents=True, exist_ok=True)
        write_rgb(root / "cam" / "images" / f"{i}.png", frame)
        write_label(root / "cam" / "labels_masks" / f"{i}.png", np.zeros(frame.shape[:2], np.uint8))
    return root


@pytest.fixture(scope="module", params=["raw", "png"])
def bag(bundle, tmp_path_factory, request):
    out = tmp_path_factory.mktemp(f"bag_{request.param}") / "cam"
    convert(bundle, out, ConvertOptions(per_sequence=False, image_format=request.param), progress=False)
    topic = "/camera/image_raw" if request.param == "raw" else "/camera/image_raw/compressed"
    return out, topic


def test_frames_are_sampled_over_the_recording(bag):
    path, topic = bag
    # 30 frames at 10 Hz (0.1 s apart; the name order of the set, 0, 1, 10, 11, ...)
    assert len(sample_frames(path, topic, every=0).times) == FRAMES
    every = sample_frames(path, topic, every=0.25)
    assert len(every.times) == 10 and np.all(np.diff(every.times) == 300_000_000)
    assert every.names[:2] == ["t = 0.0 s", "t = 0.3 s"]
    spread = sample_frames(path, topic, every=0, max_frames=5)  # 2.9 s / 5: one frame in six
    assert len(spread.times) == 5 and np.all(np.diff(spread.times) == 600_000_000)
    frames = list(spread)
    assert len(frames) == 5 and frames[0].shape == (240, 480, 3) and frames[0].dtype == np.uint8
    with pytest.raises(BagError, match="no topic /nope"):
        sample_frames(path, "/nope")


def test_pebal_bag_mask_estimates_the_bonnet(bag, tmp_path):
    path, topic = bag
    script = os.path.join(os.path.dirname(sys.executable), "pebal_bag")
    out = tmp_path / "ego.png"
    cmd = [script, "mask", str(path), "--topic", topic, "--every", "0", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"{FRAMES} frames of {topic}" in done.stdout and "ego mask from 30 frames of 480x240" in done.stdout
    mask, truth = load_ego_mask(out).mask, bonnet_truth()
    assert (mask & truth).sum() >= 0.98 * truth.sum() and (mask & ~truth).sum() < 0.2 * truth.sum()
    assert (tmp_path / "ego_picture.jpg").is_file()
    # 1-s gaps leave 3 frames of this 3-s recording: too few, one clear line
    few = subprocess.run([*cmd[:-4], "--out", str(tmp_path / "few.png")], capture_output=True, text=True, timeout=300)
    assert few.returncode == 2 and "at least 8 frames" in few.stderr and "Traceback" not in few.stderr
    assert not (tmp_path / "few.png").exists()
