"""``pebal mask estimate``: the ego-vehicle mask from frames of different scenes.

Synthetic frames (a reflective bonnet under a curved edge, random scenes above it) check the method
and its refusals; the real FS Lost & Found frames check that it recovers the bonnet that their
labels mark void (the ground truth is defined in ``lostandfound_bonnet``)."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
from ego_frames import W, bonnet_truth, camera_frames
from scipy import ndimage

from pebal_core.alarms.ego_estimate import (
    MIN_FRAMES,
    EstimateSettings,
    bottom_connected,
    estimate_ego_mask,
    mask_from_labels,
    spread_indices,
)
from pebal_core.alarms.ego_mask import load_ego_mask
from pebal_core.ego_mask_files import estimate_and_save
from pebal_core.images import read_label, read_rgb, write_rgb


def test_spread_indices_take_first_last_and_evenly_between():
    assert spread_indices(5, 10) == [0, 1, 2, 3, 4]
    assert spread_indices(30, 3) == [0, 14, 29] or spread_indices(30, 3) == [0, 15, 29]
    assert spread_indices(100, 1) == [0]
    idx = spread_indices(1000, 200)
    assert len(idx) == 200 and idx[0] == 0 and idx[-1] == 999 and np.all(np.diff(idx) >= 4)


def test_recovers_a_reflective_bonnet_and_its_star():
    truth = bonnet_truth()
    mask = estimate_ego_mask(camera_frames(30)).mask
    assert (mask & truth).sum() >= 0.98 * truth.sum()
    assert mask[186, W // 2]  # the star's centre
    # what the mask adds lies in a band along the car's outline: the margin, plus the two pixels on
    # either side of an edge the gradient operator (Gaussian sigma 1, Sobel) spreads it over, plus
    # one on either side of the cut
    distance = ndimage.distance_transform_edt(~truth)
    extra = mask & ~truth
    assert distance[extra].max() <= EstimateSettings.margin + 4, distance[extra].max()


def test_no_ego_vehicle_gives_an_empty_mask():
    assert not estimate_ego_mask(camera_frames(30, seed=1, bonnet=False)).mask.any()


def test_frames_unfit_for_an_estimate_are_refused():
    frames = camera_frames(MIN_FRAMES + 2)
    with pytest.raises(ValueError, match=f"at least {MIN_FRAMES} frames"):
        estimate_ego_mask(frames[: MIN_FRAMES - 1])
    with pytest.raises(ValueError, match="hardly differ.*different places"):
        estimate_ego_mask([frames[0]] * (MIN_FRAMES + 2))
    with pytest.raises(ValueError, match="one size: got 240x120 after 480x240"):
        estimate_ego_mask([*frames[:3], frames[3][:120, :240]])
    with pytest.raises(ValueError, match="RGB uint8"):
        estimate_ego_mask([f.astype(np.float32) for f in frames])


def test_pebal_mask_estimate_writes_mask_and_picture(tmp_path):
    folder = tmp_path / "camera"
    folder.mkdir()
    for i, frame in enumerate(camera_frames(30)):
        write_rgb(folder / f"{i:03d}.png", frame)
    out = tmp_path / "ego.png"
    cmd = [sys.executable, "-m", "pebal_core.cli", "mask", "estimate", str(folder), "--out", str(out), "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "30 frames of 480x240" in done.stdout and "alarms.ego_mask:=" in done.stdout
    mask = load_ego_mask(out).mask
    truth = bonnet_truth()
    assert (mask & truth).sum() >= 0.98 * truth.sum() and (mask & ~truth).sum() < 0.2 * truth.sum()
    picture = read_rgb(tmp_path / "ego_picture.jpg")
    assert picture.shape == (2 * 512, 2 * 1024, 3)  # median + 3 frames, 1024 wide each
    # an existing mask is kept unless --force
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "exists; pass --force" in again.stderr
    assert load_ego_mask(out).mask.sum() == mask.sum()
    # frames without a car: a clear message, nothing written
    empty = tmp_path / "none"
    empty.mkdir()
    for i, frame in enumerate(camera_frames(12, seed=3, bonnet=False)):
        write_rgb(empty / f"{i}.png", frame)
    with pytest.raises(ValueError, match="no ego-vehicle pixels found in 12 frames.*nothing written"):
        estimate_and_save((read_rgb(p) for p in sorted(empty.iterdir())), [""] * 12, tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def lostandfound_bonnet(root) -> np.ndarray:
    """The bonnet ground truth of the FS Lost & Found frames (bool 1024 x 2048).

    Their labels mark the recording car void (255), together with the off-road parts that vary
    from frame to frame and slanted wedges of up to 19 pixels along the left, right and top borders
    that rectification left. The bonnet is taken as the pixels void in **every** frame, outside the
    20-pixel side strips (the wedges), that are 8-connected to the bottom row through such pixels.
    """
    return mask_from_labels((read_label(p) for p in sorted((root / "labels_masks").glob("*.png"))), side_margin=20)


def test_mask_from_labels_by_hand():
    a = np.zeros((6, 8), np.uint8)
    a[4:, :] = 255  # the bonnet, void in both
    a[0, :] = 255  # a top strip, void in both, not connected to the bottom
    a[:, 0] = 255  # a left strip joining them, void in both
    a[2, 5] = 255  # void in one map only
    b = a.copy()
    b[2, 5] = 0
    b[5, 3] = 0  # one bonnet pixel labelled in the second map
    expected = np.zeros((6, 8), bool)
    expected[4:, :] = True
    expected[5, 3] = False
    expected[:, 0] = True
    expected[0, :] = True
    assert np.array_equal(mask_from_labels([a, b]), expected)
    trimmed = expected.copy()
    trimmed[:, 0] = trimmed[:, -1] = False
    trimmed[0, :] = False  # no longer joined to the bottom once the side strips are left out
    assert np.array_equal(mask_from_labels([a, b], side_margin=1), trimmed)
    with pytest.raises(ValueError, match="one size"):
        mask_from_labels([a, b[:5]])


def test_recovers_the_lostandfound_bonnet(realdata):
    root = realdata / "Validation_Dataset" / "FS_LostFound_full"
    truth = lostandfound_bonnet(root)
    assert 190_000 < truth.sum() < 210_000  # the bonnet and its star, about 10 % of the frame
    mask = estimate_ego_mask(read_rgb(p) for p in sorted((root / "images").glob("*.png"))).mask
    bonnet = bottom_connected(mask, side_margin=20)
    iou = (bonnet & truth).sum() / (bonnet | truth).sum()
    assert iou >= 0.9, f"bonnet IoU {iou:.3f}"
    # the rest of the mask (away from the bonnet) is at most a sliver along the image border
    rest = mask & ~bonnet
    rest[:, :20] = rest[:, -20:] = False
    assert rest.sum() < 0.001 * mask.size
    # the shipped 'lostandfound' mask is this estimate
    shipped = load_ego_mask("lostandfound").mask
    assert (shipped != mask).mean() < 0.001


def test_finds_nothing_on_frames_without_a_car(realdata):
    # RoadObstacle21: 30 frames of country lanes from a camera that sees no part of its car
    root = realdata / "Validation_Dataset" / "RoadObsticle21" / "images"
    frames = (cv2.resize(read_rgb(p), (1024, 576), interpolation=cv2.INTER_AREA) for p in sorted(root.iterdir()))
    assert not estimate_ego_mask(frames).mask.any()
