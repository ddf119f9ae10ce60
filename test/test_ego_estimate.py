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
from scipy import ndimage

from pebal_core.alarms.ego_estimate import (
    MIN_FRAMES,
    EstimateSettings,
    estimate_and_save,
    estimate_ego_mask,
    spread_indices,
)
from pebal_core.alarms.ego_mask import load_ego_mask
from pebal_core.images import read_label, read_rgb, write_rgb

H, W = 240, 480


def _bonnet_truth() -> np.ndarray:
    """Below a parabola from row 200 (centre) to row 224 (sides), plus a round star on top of it."""
    rows, cols = np.mgrid[0:H, 0:W]
    edge = 200 + 24 * ((cols - W / 2) / (W / 2)) ** 2
    truth = rows >= edge
    truth |= (rows - 186) ** 2 + (cols - W / 2) ** 2 <= 14**2
    return truth


def _scene(rng: np.random.Generator) -> np.ndarray:
    """A random scene: a tilted gradient, 40 random boxes and discs, a random texture (real scenes
    are textured everywhere: asphalt, foliage, facades)."""
    rows, cols = np.mgrid[0:H, 0:W].astype(np.float32)
    a, b, c = rng.uniform(-0.3, 0.3, 2).tolist() + [rng.uniform(60, 190)]
    img = np.clip(c + a * rows + b * cols, 0, 255)[..., None] * rng.uniform(0.7, 1.0, 3)
    for _ in range(40):
        color = rng.uniform(0, 255, 3)
        x, y, s = rng.integers(0, W), rng.integers(0, H), rng.integers(8, 60)
        if rng.random() < 0.5:
            img[max(0, y - s) : y + s, max(0, x - s) : x + s] = color
        else:
            img[(rows - y) ** 2 + (cols - x) ** 2 <= s * s] = color
    texture = cv2.GaussianBlur(rng.normal(0, 1, (H, W)).astype(np.float32), (0, 0), 1.5)
    return img + 40 * texture[..., None]


def _frames(n: int, seed: int = 0, bonnet: bool = True) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = _bonnet_truth()
    rows = np.mgrid[0:H, 0:W][0].astype(np.float32)
    frames = []
    for _ in range(n):
        img = _scene(rng)
        if bonnet:
            # dark paint mirroring a changing sky: a smooth vertical gradient of random strength
            shine = rng.uniform(20, 90) * np.clip((224 - rows) / 40, 0, 1)
            paint = np.array([40.0, 40.0, 48.0]) + shine[..., None]
            img[truth] = paint[truth]
        img += rng.normal(0, 3, img.shape)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return frames


def test_spread_indices_take_first_last_and_evenly_between():
    assert spread_indices(5, 10) == [0, 1, 2, 3, 4]
    assert spread_indices(30, 3) == [0, 14, 29] or spread_indices(30, 3) == [0, 15, 29]
    assert spread_indices(100, 1) == [0]
    idx = spread_indices(1000, 200)
    assert len(idx) == 200 and idx[0] == 0 and idx[-1] == 999 and np.all(np.diff(idx) >= 4)


def test_recovers_a_reflective_bonnet_and_its_star():
    truth = _bonnet_truth()
    mask = estimate_ego_mask(_frames(30)).mask
    assert (mask & truth).sum() >= 0.98 * truth.sum()
    assert mask[186, W // 2]  # the star's centre
    # what the mask adds lies in a band along the car's outline: the margin, plus the two pixels on
    # either side of an edge the gradient operator (Gaussian sigma 1, Sobel) spreads it over, plus
    # one on either side of the cut
    distance = ndimage.distance_transform_edt(~truth)
    extra = mask & ~truth
    assert distance[extra].max() <= EstimateSettings.margin + 4, distance[extra].max()


def test_no_ego_vehicle_gives_an_empty_mask():
    assert not estimate_ego_mask(_frames(30, seed=1, bonnet=False)).mask.any()


def test_frames_unfit_for_an_estimate_are_refused():
    frames = _frames(MIN_FRAMES + 2)
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
    for i, frame in enumerate(_frames(30)):
        write_rgb(folder / f"{i:03d}.png", frame)
    out = tmp_path / "ego.png"
    cmd = [sys.executable, "-m", "pebal_core.cli", "mask", "estimate", str(folder), "--out", str(out), "--no-progress"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "30 frames of 480x240" in done.stdout and "alarms.ego_mask:=" in done.stdout
    mask = load_ego_mask(out).mask
    truth = _bonnet_truth()
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
    for i, frame in enumerate(_frames(12, seed=3, bonnet=False)):
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
    labels = [read_label(p) for p in sorted((root / "labels_masks").glob("*.png"))]
    void = np.logical_and.reduce([lab == 255 for lab in labels])
    void[:, :20] = False
    void[:, -20:] = False
    components, _ = ndimage.label(void, structure=np.ones((3, 3)))
    bottom = np.unique(components[-1])
    return np.isin(components, bottom[bottom > 0])


def test_recovers_the_lostandfound_bonnet(realdata):
    root = realdata / "Validation_Dataset" / "FS_LostFound_full"
    truth = lostandfound_bonnet(root)
    assert 190_000 < truth.sum() < 210_000  # the bonnet and its star, about 10 % of the frame
    mask = estimate_ego_mask(read_rgb(p) for p in sorted((root / "images").glob("*.png"))).mask
    inside = mask.copy()
    inside[:, :20] = False
    inside[:, -20:] = False
    components, _ = ndimage.label(inside, structure=np.ones((3, 3)))
    bottom = np.unique(components[-1])
    bonnet = np.isin(components, bottom[bottom > 0])
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
