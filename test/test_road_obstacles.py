"""Road-obstacle outlier exposure (pebal_core.data.road_obstacles and AnomalyMix's ``paste`` modes):
closed-form ground-plane geometry, exact labels, brightness, shadow, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage
from tiny_trees import make_cityscapes, make_coco_ood_seg

from pebal_core.data.anomalymix import AnomalyMix
from pebal_core.data.cityscapes import Cityscapes
from pebal_core.data.coco import CocoOutliers
from pebal_core.data.road_obstacles import (
    MIN_TEXTURE_STD,
    GroundPlane,
    Obstacle,
    RoadPaste,
    luminance,
    paste_obstacles,
    paste_on_road,
    place_on_road,
    random_polygon_mask,
    texture_patch,
)
from pebal_core.data.synthetic.camera import Camera
from pebal_core.data.transforms import JointTransform

SHARP = RoadPaste(feather_px=(0.0, 0.0), shadow=(0.0, 0.0), contrast=(1.0, 1.0))
"""No soft edge, no shadow, brightness matched exactly: every pasted pixel is predictable."""


def road_scene(h: int = 120, w: int = 160, top: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """A grey host whose road (label 0) is a trapezoid from row ``top`` down; sidewalk (1) elsewhere."""
    label = np.ones((h, w), np.uint8)
    for r in range(top, h):
        half = 4 + (r - top) * (w / 2 - 4) / (h - top)
        label[r, int(w / 2 - half) : int(w / 2 + half)] = 0
    image = np.full((h, w, 3), 100, np.uint8)
    image[label == 1] = 160
    return image, label


# ----------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("distance", [5.0, 10.0, 20.0, 40.0])
@pytest.mark.parametrize("height_m", [0.2, 1.0])
def test_size_is_the_projected_height_for_a_level_camera(distance, height_m):
    cam = Camera.for_size(512, 1024, pitch=0.0, z=1.3)
    ground = GroundPlane.from_camera(cam)
    assert ground.horizon_row == pytest.approx(cam.v0) and ground.camera_height == 1.3
    _, v_bottom, _ = cam.project(np.array([cam.x + distance, 0.0, 0.0]))
    _, v_top, _ = cam.project(np.array([cam.x + distance, 0.0, height_m]))
    # closed form: f H / Z rows, and the contact row is v0 + f h / Z
    assert float(v_bottom - v_top) == pytest.approx(cam.fy * height_m / distance, rel=1e-12)
    assert ground.size_px(height_m, float(v_bottom)) == pytest.approx(float(v_bottom - v_top), rel=1e-12)


def test_size_with_the_synthetic_worlds_pitch_is_within_one_and_a_half_percent():
    for pitch in (0.03, 0.06):  # random_mount draws the pitch from [0, 0.06]
        cam = Camera.for_size(512, 1024, pitch=pitch, z=1.2)
        ground = GroundPlane.from_camera(cam)
        for distance in (5.0, 10.0, 40.0):
            _, vb, _ = cam.project(np.array([cam.x + distance, 0.0, 0.0]))
            _, vt, _ = cam.project(np.array([cam.x + distance, 0.0, 0.2]))
            assert ground.size_px(0.2, float(vb)) == pytest.approx(float(vb - vt), rel=0.015)


def test_size_is_linear_in_the_row_and_zero_above_the_horizon():
    g = GroundPlane(horizon_row=50.0, camera_height=1.25)
    rows = np.array([20.0, 50.0, 60.0, 150.0])
    np.testing.assert_allclose(g.size_px(0.5, rows), [0.0, 0.0, 0.5 * 10 / 1.25, 0.5 * 100 / 1.25])
    with pytest.raises(ValueError, match="camera_height must be a positive number of metres"):
        GroundPlane(10.0, 0.0)


def test_horizon_from_the_frames_own_road_extent():
    _, label = road_scene(top=40)
    assert GroundPlane.from_road(label == 0, 1.2) == GroundPlane(40.0, 1.2)
    assert GroundPlane.from_road(label == 0, 1.2, min_pixels=30).horizon_row > 40
    assert GroundPlane.from_road(np.zeros((5, 5), bool), 1.2) is None


def test_placements_lie_on_the_road_at_the_size_of_their_row():
    _, label = road_scene(h=240, w=320, top=60)
    road = label == 0
    ground = GroundPlane(60.0, 1.2)
    settings = RoadPaste(min_pixels=10, max_fraction=0.4)
    rng = np.random.default_rng(0)
    placed = [place_on_road(road, ground, 1.5, settings, rng) for _ in range(300)]
    placed = [p for p in placed if p is not None]
    assert len(placed) > 250
    for p in placed:
        assert road[p.row, p.col]
        assert p.h == max(1, round(p.height_m * (p.row - 60.0) / 1.2))
        assert p.w == max(1, round(p.h * 1.5))
        assert settings.min_pixels <= p.h <= 0.4 * 240 + 1
        x0, x1 = max(0, p.col - p.w // 2), min(320, p.col - p.w // 2 + p.w)
        assert road[p.row, x0:x1].mean() >= 0.5
        assert 0.15 <= p.height_m <= 1.0
    heights = np.array([p.h for p in placed])
    assert heights.min() <= 12, "far objects come down to about min_pixels"
    # rows are drawn uniformly among usable road rows: far rows are not rarer than near ones
    rows = np.array([p.row for p in placed])
    assert 0.3 < np.mean(rows < np.median(np.arange(60, 240))) < 0.7


def test_no_placement_without_usable_road():
    road = np.zeros((50, 50), bool)
    road[49, :] = True  # a single row right at the horizon: every object would be 0 px tall
    assert place_on_road(road, GroundPlane(49.0, 1.2), 1.0, RoadPaste(), np.random.default_rng(0)) is None


# ----------------------------------------------------------------------------- compositing
def test_sharp_paste_labels_exactly_the_resized_mask_and_matches_brightness():
    image, label = road_scene()
    patch = np.zeros((20, 10, 3), np.uint8)
    patch[...] = (40, 20, 10)
    mask = np.zeros((20, 10), bool)
    mask[2:18, 1:9] = True
    where = Obstacle(row=100, col=80, h=20, w=10, height_m=0.5)
    out, out_label = paste_on_road(image, label, patch, mask, where, SHARP, np.random.default_rng(0))
    expected = np.zeros(label.shape, bool)
    expected[81:101, 75:85] = mask  # top = row - h + 1, left = col - w // 2
    np.testing.assert_array_equal(out_label == 254, expected)
    np.testing.assert_array_equal(out_label[~expected], label[~expected])
    np.testing.assert_array_equal(out[~expected], image[~expected])
    # brightness matched to the surroundings (contrast 1): the object's luminance is the host's
    # mean luminance around it, up to rounding of the uint8 colour
    y0, y1, x0, x1 = max(0, 100 - 40), min(120, 100 + 20), max(0, 75 - 10), min(160, 85 + 10)
    host_mean = luminance(image[y0:y1, x0:x1]).mean()
    assert luminance(out[expected]).mean() == pytest.approx(host_mean, abs=1.0)
    # the object keeps its own colour ratios
    rgb = out[expected].astype(float).mean(0)
    assert rgb[0] / rgb[2] == pytest.approx(4.0, rel=0.1)


def test_soft_edges_label_the_pixels_where_alpha_reaches_one_half():
    image, label = road_scene()
    patch = np.full((20, 20, 3), 30, np.uint8)
    mask = np.zeros((20, 20), bool)
    mask[4:16, 4:16] = True
    where = Obstacle(row=100, col=80, h=20, w=20, height_m=0.5)
    settings = RoadPaste(feather_px=(1.0, 1.0), shadow=(0.0, 0.0), contrast=(1.0, 1.0))
    out, out_label = paste_on_road(image, label, patch, mask, where, settings, np.random.default_rng(0))
    square = np.zeros(label.shape, bool)
    square[85:97, 74:86] = True
    # a Gaussian blur of a square keeps alpha >= 0.5 inside the square except its corners (where it is 0.25)
    inner = ndimage.binary_erosion(square, iterations=1)
    assert (out_label[inner] == 254).all()
    assert not (out_label[~square] == 254).any()
    changed = np.any(out != image, axis=2)
    assert changed[~ndimage.binary_dilation(square, iterations=3)].sum() == 0, "the soft edge reaches 3 sigma"
    assert changed[ndimage.binary_dilation(square, iterations=1) & ~square].any(), "the edge is soft"


def test_a_tiny_object_keeps_an_opaque_labelled_core_and_one_outside_the_frame_is_skipped():
    image, label = road_scene()
    patch = np.full((2, 2, 3), 10, np.uint8)
    settings = RoadPaste(feather_px=(1.0, 1.0), shadow=(0.0, 0.0), contrast=(1.0, 1.0))
    where = Obstacle(row=100, col=80, h=2, w=2, height_m=0.15)
    rng = np.random.default_rng(0)
    out, out_label = paste_on_road(image, label, patch, np.ones((2, 2), bool), where, settings, rng)
    assert 1 <= (out_label == 254).sum() <= 4
    core = out_label == 254
    assert luminance(out[core]).max() < luminance(image[core]).min(), "the object, not a faint blend"
    mask = np.zeros((10, 10), bool)
    mask[:, :2] = True  # only the object's left edge is solid
    outside = Obstacle(row=100, col=158, h=10, w=10, height_m=0.3)  # the left edge falls at x = 153..154: inside
    assert paste_on_road(image, label, np.zeros((10, 10, 3), np.uint8), mask, outside, SHARP, np.random.default_rng(0))
    mask = np.zeros((10, 10), bool)
    mask[:, 8:] = True  # only its right edge, which lies beyond the frame's last column
    gone = paste_on_road(image, label, np.zeros((10, 10, 3), np.uint8), mask, outside, SHARP, np.random.default_rng(0))
    assert gone is None


def test_contact_shadow_darkens_the_road_under_the_object_and_keeps_its_label():
    image, label = road_scene()
    patch = np.full((10, 20, 3), 200, np.uint8)
    mask = np.ones((10, 20), bool)
    where = Obstacle(row=100, col=80, h=10, w=20, height_m=0.3)
    settings = RoadPaste(feather_px=(0.0, 0.0), shadow=(0.5, 0.5), contrast=(1.0, 1.0))
    out, out_label = paste_on_road(image, label, patch, mask, where, settings, np.random.default_rng(0))
    darker = (luminance(out) < luminance(image) - 1) & (out_label != 254)
    assert darker.any()
    ys, xs = np.nonzero(darker)
    assert ys.min() >= 100 - 10 and ys.max() <= 100 + 4, "the shadow lies at the object's base"
    assert np.abs(xs - 80).max() <= 0.6 * 20 + 2
    assert (out_label[darker] == label[darker]).all(), "a shadow is road, not an obstacle"
    assert luminance(out[100 + 1, 80]) == pytest.approx(0.5 * 100, abs=6), "darkened by half at its centre"


def test_texture_patches_are_textured_polygons():
    rng = np.random.default_rng(2)
    textured = rng.integers(0, 256, (80, 100, 3), dtype=np.uint8)
    patch, mask = texture_patch(textured, rng)
    assert patch.shape[:2] == mask.shape and mask.mean() > 0.4
    assert luminance(patch[mask]).std() >= MIN_TEXTURE_STD
    assert texture_patch(np.full((80, 100, 3), 90, np.uint8), rng) is None
    poly = random_polygon_mask(30, 40, rng)
    assert poly[15, 20] and not poly[0, 0], "convex, around the centre"


def test_paste_obstacles_pastes_onto_road_only():
    image, label = road_scene(h=240, w=320, top=60)
    rng = np.random.default_rng(5)
    obj = rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)
    mask = np.zeros((30, 30), bool)
    mask[5:25, 8:22] = True
    out, out_label, placed = paste_obstacles(image, label, [(obj, mask)] * 3, SHARP, rng)
    assert len(placed) == 3
    for p in placed:
        assert label[p.row, p.col] == 0
        assert (out_label[p.row - p.h + 1 : p.row + 1, p.col - p.w // 2 : p.col - p.w // 2 + p.w] == 254).any()
    no_road = np.ones_like(label)
    same, same_label, none = paste_obstacles(image, no_road, [(obj, mask)], SHARP, rng)
    assert none == [] and same is image and same_label is no_road


# ----------------------------------------------------------------------------- AnomalyMix
@pytest.fixture
def road_trees(tmp_path):
    make_cityscapes(tmp_path / "cs", cities={"aachen": 3}, size=(96, 128))
    make_coco_ood_seg(tmp_path / "coco", n=4, size=(40, 40))
    return Cityscapes(tmp_path / "cs"), CocoOutliers(tmp_path / "coco")


def test_road_samples_put_their_objects_on_the_hosts_road(road_trees):
    cs, coco = road_trees
    hosts = {cs[i]["name"]: cs[i] for i in range(len(cs))}
    mix = AnomalyMix(cs, coco, ratio=1.0, seed=3, paste="road", road=RoadPaste(min_pixels=4, min_road_pixels=50))
    sources = [mix[i]["source"] for i in range(len(cs), len(mix))]
    assert sources == ["road"] * len(sources)
    for i in range(len(cs), len(mix)):
        item = mix[i]
        host = hosts[item["name"].split("+")[0]]
        anomaly = item["label"] == 254
        assert anomaly.any()
        components, n = ndimage.label(anomaly)
        for k in range(1, n + 1):
            ys, xs = np.nonzero(components == k)
            bottom = ys.max()
            assert (host["label"][bottom, xs[ys == bottom]] == 0).mean() >= 0.5 or bottom < ys.min() + 2
        np.testing.assert_array_equal(item["label"][~anomaly], host["label"][~anomaly])


def test_paste_modes_are_deterministic_and_both_mixes_them(road_trees):
    cs, coco = road_trees
    tf = JointTransform(scale=(0.75, 1.25), crop=(64, 96), flip=0.5, keep_anomaly=True)
    road = RoadPaste(min_pixels=4, min_road_pixels=50)

    def items(seed, paste):
        mix = AnomalyMix(cs, coco, ratio=8.0, transform=tf, seed=seed, paste=paste, road=road, road_fraction=0.5)
        mix.set_epoch(1)
        return [mix[i] for i in reversed(range(len(mix)))][::-1]

    a, b, c = items(1, "both"), items(1, "both"), items(2, "both")
    assert all(
        np.array_equal(x["image"], y["image"]) and np.array_equal(x["label"], y["label"])
        for x, y in zip(a, b, strict=True)
    )
    assert not all(np.array_equal(x["image"], y["image"]) for x, y in zip(a, c, strict=True))
    sources = {x["source"] for x in a[len(cs) :]}
    assert sources == {"road", "mixed"}
    assert all(x["is_ood"] for x in a[len(cs) :]), "keep_anomaly: every mixed crop shows its object"
    with pytest.raises(ValueError, match="paste must be paper, road or both"):
        AnomalyMix(cs, coco, paste="street")


def test_paper_mode_is_unchanged_by_the_road_settings(road_trees):
    cs, coco = road_trees
    plain = AnomalyMix(cs, coco, ratio=1.0, seed=4)
    other = AnomalyMix(cs, coco, ratio=1.0, seed=4, paste="paper", road=RoadPaste(objects=(3, 3)), road_fraction=0.9)
    for i in range(len(plain)):
        assert np.array_equal(plain[i]["image"], other[i]["image"]) and plain[i]["source"] in ("inlier", "mixed")


def test_keep_anomaly_crops_contain_the_single_anomalous_pixel():
    image = np.zeros((200, 300, 3), np.uint8)
    label = np.zeros((200, 300), np.uint8)
    label[190, 7] = 254
    tf = JointTransform(scale=(1.0, 1.0), crop=(50, 60), flip=0.0, keep_anomaly=True)
    for seed in range(50):
        _, out = tf(image, label, np.random.default_rng(seed))
        assert (out == 254).sum() == 1
    plain = JointTransform(scale=(1.0, 1.0), crop=(50, 60), flip=0.0)
    assert sum((plain(image, label, np.random.default_rng(s))[1] == 254).any() for s in range(50)) < 10
