"""The ego-vehicle mask: loading (PNG, shipped name, polygons), validation, resizing, and its place
in the alarm chain (never alarms, out of the drivable region and of obstacles)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from pebal_core.alarms.ego_mask import (
    SHIPPED,
    EgoMask,
    EgoMaskError,
    load_ego_mask,
    parse_polygons,
    read_ego_mask,
    write_ego_mask,
)
from pebal_core.alarms.frame import FrameContext
from pebal_core.alarms.operating_point import OperatingPoint
from pebal_core.alarms.pipeline import AlarmPipeline
from pebal_core.alarms.region import drivable_region


def _bonnet(h: int = 64, w: int = 128, top: int = 52) -> np.ndarray:
    mask = np.zeros((h, w), bool)
    mask[top:, :] = True
    return mask


def test_png_round_trip_and_nonzero_is_ego(tmp_path):
    mask = _bonnet()
    path = write_ego_mask(tmp_path / "sub" / "ego.png", mask)
    stored = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert stored.dtype == np.uint8 and stored.ndim == 2 and set(np.unique(stored)) == {0, 255}
    loaded = load_ego_mask(path)
    assert np.array_equal(loaded.mask, mask) and loaded.source == str(path)
    # any non-zero value marks the vehicle, colour files are read as grey
    grey = np.where(mask, 7, 0).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "seven.png"), np.dstack([grey, grey, grey]))
    assert np.array_equal(read_ego_mask(tmp_path / "seven.png").mask, mask)
    assert load_ego_mask("") is None and load_ego_mask(None) is None
    assert not list((tmp_path / "sub").glob("*.tmp"))  # written atomically


def test_mask_follows_the_frame_size():
    # a 2048x1024 mask with its bonnet from row 900: rows 450.. at 1024x512, rows 225.. at 512x256
    ego = EgoMask(_bonnet(1024, 2048, 900), "test")
    assert np.array_equal(ego.at((512, 1024)), _bonnet(512, 1024, 450))
    assert np.array_equal(ego.at((256, 512)), _bonnet(256, 512, 225))
    assert np.array_equal(ego.at((2048, 4096)), _bonnet(2048, 4096, 1800))
    assert ego.at((512, 1024)) is ego.at((512, 1024))  # cached per size
    assert not ego.at((512, 1024)).flags.writeable
    # a one-pixel-off aspect (odd sizes) is the same camera
    assert ego.at((511, 1024)).shape == (511, 1024)


def test_bad_masks_are_refused_with_the_fix(tmp_path):
    ego = EgoMask(_bonnet(1024, 2048, 900), "ego.png")
    with pytest.raises(EgoMaskError, match=r"2048x1024 but the frame is 1920x1080.*pebal mask estimate"):
        ego.at((1080, 1920))
    with pytest.raises(EgoMaskError, match="no non-zero pixel.*leave the ego mask unset"):
        EgoMask(np.zeros((10, 20), bool), "empty.png")
    with pytest.raises(EgoMaskError, match="covers 80 %.*inverted"):
        EgoMask(~_bonnet(10, 20, 8), "inverted.png")
    with pytest.raises(EgoMaskError, match="does not exist"):
        load_ego_mask(tmp_path / "missing.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(EgoMaskError, match="cannot read ego mask"):
        load_ego_mask(tmp_path / "text.png")
    with pytest.raises(EgoMaskError, match="no shipped ego mask named 'nope'"):
        from pebal_core.alarms.ego_mask import shipped_mask_path

        shipped_mask_path("nope")


def test_polygons_rasterise_in_reference_pixels():
    ego = parse_polygons("20x10: 0,6 19,6 19,9 0,9; 8,2 11,2 11,5 8,5")
    expected = np.zeros((10, 20), bool)
    expected[6:10, :] = True
    expected[2:6, 8:12] = True
    assert np.array_equal(ego.mask, expected) and ego.source == "polygons"
    assert np.array_equal(load_ego_mask(" 20x10 : 0,6 19,6 19,9 0,9;8,2 11,2 11,5 8,5 ").mask, expected)
    for bad, match in (
        ("20x10: 0,6 19,6", "three or more corners"),
        ("20x10: 0,6 19,x 3,4", "three or more corners"),
        ("20x10:", "hold no polygon"),
        ("20x10: 0,0,1 3,3 4,4", "three or more corners"),
    ):
        with pytest.raises(EgoMaskError, match=match):
            load_ego_mask(bad)


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_masks_load(name):
    ego = load_ego_mask(name)
    assert ego.source == f"shipped:{name}" and ego.size == (1024, 2048)
    # a bonnet: touches the bottom row, covers a few per cent of the frame; above it at most the
    # rectification border (strips and wedges of up to 40 px along the edges of the Cityscapes frames)
    assert ego.mask[-1].mean() > 0.5 and 0.01 < ego.fraction < 0.2 and not ego.mask[40:700, 40:-40].any()


def test_ego_pixels_never_alarm_and_leave_region_and_obstacles():
    h, w = 40, 60
    labels = np.zeros((h, w), np.uint8)  # all road: the bonnet is predicted as road too
    ego = np.zeros((h, w), bool)
    ego[32:, :] = True
    score = np.full((h, w), -10.0, np.float32)
    score[28:40, 20:30] = 0.0  # an alarm blob straddling the bonnet edge (rows 28..31 outside)
    score[35:40, 45:55] = 0.0  # an alarm blob on the bonnet only
    for region in ("drivable", "all"):
        context = FrameContext(labels, score, OperatingPoint(-1.0, region=region, min_pixels=5), ego_mask=ego)
        frame = AlarmPipeline(sequence=False).process(context)
        assert not (frame.alarms & ego).any()
        if region == "drivable":
            assert not (frame.region & ego).any() and frame.region[:32].all()
        assert len(frame.obstacles) == 1 and frame.obstacles[0].pixels == 4 * 10
        assert frame.obstacles[0].box == (20, 28, 29, 31)
        # the per-pixel mask (the paper's) is untouched
        assert context.mask[35:, 45:55].all()


def test_point_carries_its_mask_and_none_is_no_mask():
    from pebal_core.alarms.operating_point import resolve_operating_point

    point = OperatingPoint(-3.0, "obstacles:0.5", ego_mask="lostandfound")
    assert OperatingPoint.from_dict(point.to_dict()) == point
    assert "ego mask lostandfound" in point.describe()
    assert OperatingPoint(-3.0, ego_mask=" None ").ego_mask == ""
    meta = {"score_threshold": -3.0}
    resolved = resolve_operating_point(meta, "", {"ego_mask": "cityscapes"})
    assert resolved.point.ego_mask == "cityscapes" and resolved.overridden == ("ego_mask",)
    assert load_ego_mask("none") is None


def test_mask_for_frame_says_when_a_mask_does_not_fit():
    from pebal_core.alarms.ego_mask import mask_for_frame

    ego = EgoMask(_bonnet(1024, 2048, 900), "ego.png")
    mask, why = mask_for_frame(ego, (512, 1024))
    assert why is None and mask.shape == (512, 1024)
    mask, why = mask_for_frame(ego, (1080, 1920))
    assert mask is None and "1920x1080" in why and "run without an ego mask" in why
    assert mask_for_frame(None, (10, 10)) == (None, None)


def test_bonnet_predicted_as_road_joins_no_fragments():
    # two road fragments too small on their own, joined only through a bonnet predicted as road
    labels = np.full((40, 60), 8, np.uint8)
    labels[20:30, 5:10] = 0
    labels[20:30, 50:55] = 0
    labels[30:, :] = 0  # the bonnet
    ego = np.zeros(labels.shape, bool)
    ego[30:, :] = True
    min_fraction = 100 / labels.size  # 50-px fragments are too small; 650 px with the bonnet are not
    assert drivable_region(labels, min_fraction=min_fraction)[20:30, 5:10].all()
    region = drivable_region(labels, min_fraction=min_fraction, ego=ego)
    assert not region.any()
    # the subsampled path (large frames) leaves the ego pixels out as well
    big_labels = np.kron(labels, np.ones((30, 30), np.uint8))
    big_ego = np.kron(ego, np.ones((30, 30), bool))
    assert not (drivable_region(big_labels, ego=big_ego) & big_ego).any()
