"""Training datasets in their real layouts: Cityscapes, COCO (instances JSON, Meta-OoD PNGs), AnomalyMix, transforms."""

from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest
from tiny_trees import make_cityscapes, make_coco_instances, make_coco_ood_seg, write_png_gray

from pebal_core.data.anomalymix import AnomalyMix, object_box, outlier_count, paste_object
from pebal_core.data.base import DatasetError
from pebal_core.data.cityscapes import Cityscapes
from pebal_core.data.coco import CocoOutliers
from pebal_core.data.transforms import MEAN_RGB, JointTransform
from pebal_core.images import read_label


# ----------------------------------------------------------------------------- Cityscapes
def test_cityscapes_reads_train_ids(tmp_path):
    frames = make_cityscapes(tmp_path, cities={"aachen": 2, "bochum": 1})
    ds = Cityscapes(tmp_path, "train")
    assert len(ds) == 3
    assert [ds[i]["name"] for i in range(3)] == sorted(frames)
    for i in range(3):
        item = ds[i]
        image, label = frames[item["name"]]
        assert item["image"].dtype == np.uint8 and item["image"].shape == (64, 128, 3)
        np.testing.assert_array_equal(item["image"], image)  # PNG is lossless, RGB order kept
        np.testing.assert_array_equal(item["label"], label)


def test_cityscapes_maps_label_ids_with_the_official_table(tmp_path):
    frames = make_cityscapes(tmp_path, cities={"ulm": 1}, kind="labelIds")
    item = Cityscapes(tmp_path, "train", labels="labelIds")[0]
    _, expected = frames[item["name"]]  # trainIds the labelIds file was written from (void -> id 0)
    np.testing.assert_array_equal(item["label"], expected)
    assert Cityscapes(tmp_path, "train", labels="auto")[0]["label"].tolist() == expected.tolist()


def test_cityscapes_auto_prefers_train_ids(tmp_path):
    make_cityscapes(tmp_path, cities={"ulm": 1}, kind="both")
    assert Cityscapes(tmp_path, labels="auto").samples[0].kind == "trainIds"
    assert Cityscapes(tmp_path, labels="labelIds").samples[0].kind == "labelIds"


def test_cityscapes_resize_and_the_bonnet_as_unclassed_inlier(tmp_path):
    written = make_cityscapes(tmp_path, cities={"ulm": 2}, size=(64, 128), kind="both")
    ids_file = next((tmp_path / "gtFine").rglob("ulm_000000_000019_gtFine_labelIds.png"))
    ids = read_label(ids_file)
    ids[50:, 30:100] = 1  # labelId 1: ego vehicle
    write_png_gray(ids_file, ids)
    plain = Cityscapes(tmp_path)
    ego = Cityscapes(tmp_path, ego_vehicle="inlier")
    image, train_ids = written["ulm/ulm_000000_000019"]
    np.testing.assert_array_equal(plain[0]["label"], train_ids)
    expected = train_ids.copy()
    expected[50:, 30:100] = 253
    np.testing.assert_array_equal(ego[0]["label"], expected)
    np.testing.assert_array_equal(ego[1]["label"], written["ulm/ulm_000001_000020"][1])
    small = Cityscapes(tmp_path, size=(32, 64), ego_vehicle="inlier")[0]
    np.testing.assert_array_equal(small["label"], expected[::2, ::2])  # nearest neighbour: every other pixel
    np.testing.assert_array_equal(small["image"], cv2.resize(image, (64, 32), interpolation=cv2.INTER_AREA))
    ids_file.unlink()
    with pytest.raises(DatasetError, match=r"ego_vehicle: inlier needs the _gtFine_labelIds\.png files"):
        Cityscapes(tmp_path, ego_vehicle="inlier")


def test_cityscapes_errors_name_the_path_and_expectation(tmp_path):
    with pytest.raises(DatasetError, match=f"{tmp_path / 'nope'}.*does not exist"):
        Cityscapes(tmp_path / "nope")
    make_cityscapes(tmp_path, cities={"ulm": 1})
    with pytest.raises(DatasetError, match=r"leftImg8bit/val.*does not exist"):
        Cityscapes(tmp_path, "val")
    with pytest.raises(DatasetError, match=r"ulm_000000_000019_gtFine_labelIds\.png"):
        Cityscapes(tmp_path, labels="labelIds")
    label = next((tmp_path / "gtFine").rglob("*labelTrainIds.png"))
    write_png_gray(label, np.full((64, 128), 40, dtype=np.uint8))
    with pytest.raises(DatasetError, match=r"holds values \[40\].*trainIds 0\.\.18, 255 \(void\)"):
        Cityscapes(tmp_path)[0]
    write_png_gray(label, np.zeros((32, 128), dtype=np.uint8))
    with pytest.raises(DatasetError, match="expected the same size"):
        Cityscapes(tmp_path)[0]
    label.unlink()
    with pytest.raises(DatasetError, match="1 of 1 Cityscapes images.*no label file"):
        Cityscapes(tmp_path)
    shutil.rmtree(tmp_path / "leftImg8bit" / "train" / "ulm")
    with pytest.raises(DatasetError, match="no Cityscapes images in .*leftImg8bit"):
        Cityscapes(tmp_path)


# ----------------------------------------------------------------------------- COCO
def test_coco_instances_skips_excluded_small_empty_and_missing_images(tmp_path):
    info = make_coco_instances(tmp_path)
    ds = CocoOutliers(tmp_path, min_size=40)
    assert ds.format == "instances"
    assert [image_id for _, image_id in ds.items] == [1, 2]  # 3 has a person, 4 no object, 5 small, 6 no file
    ds_all = CocoOutliers(tmp_path, min_size=0)
    assert [image_id for _, image_id in ds_all.items] == info["usable"]
    ds_people = CocoOutliers(tmp_path, min_size=0, exclude=["umbrella"])  # persons allowed now
    assert [image_id for _, image_id in ds_people.items] == [1, 3, 5]


def test_coco_rle_masks_decode_exactly(tmp_path):
    info = make_coco_instances(tmp_path)
    item = CocoOutliers(tmp_path, min_size=0)[1]  # image 2: compressed + uncompressed RLE
    assert item["name"] == "coco/000000000002"
    expected = info["rle_union"][2]
    np.testing.assert_array_equal(item["label"], np.where(expected, 254, 255))
    assert item["image"].shape == (48, 64, 3)


def test_coco_polygon_mask_covers_the_polygon_area(tmp_path):
    info = make_coco_instances(tmp_path)
    mask = CocoOutliers(tmp_path, min_size=0)[0]["label"] == 254
    xs, ys = info["polygon"][1]
    area = 0.5 * abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1)))  # shoelace
    perimeter = np.hypot(np.diff(np.append(xs, xs[0])), np.diff(np.append(ys, ys[0]))).sum()
    assert abs(mask.sum() - area) <= perimeter / 2 + 4
    rows, cols = np.nonzero(mask)
    assert rows.min() >= np.floor(ys.min()) - 1 and rows.max() <= np.ceil(ys.max())
    assert cols.min() >= np.floor(xs.min()) - 1 and cols.max() <= np.ceil(xs.max())


def test_coco_errors(tmp_path):
    with pytest.raises(DatasetError, match="neither annotations/ood_seg_train2017/.*nor.*instances_train2017.json"):
        (tmp_path / "train2017").mkdir()
        CocoOutliers(tmp_path)
    make_coco_instances(tmp_path)
    with pytest.raises(DatasetError, match=r"categories \['lorry'\].*its categories are"):
        CocoOutliers(tmp_path, exclude=["lorry"])
    with pytest.raises(DatasetError, match="no usable outlier image"):
        CocoOutliers(tmp_path, min_size=1000)
    path = tmp_path / "annotations" / "instances_train2017.json"
    path.write_text("{not json")
    with pytest.raises(DatasetError, match=f"{path} is not valid JSON"):
        CocoOutliers(tmp_path)
    path.write_text(json.dumps({"images": []}))
    with pytest.raises(DatasetError, match="not a COCO instances file"):
        CocoOutliers(tmp_path)


def test_meta_ood_masks(tmp_path):
    written = make_coco_ood_seg(tmp_path, n=3)
    make_coco_instances(tmp_path)  # the prepared PNGs win in auto mode
    ds = CocoOutliers(tmp_path)
    assert ds.format == "ood_seg" and len(ds) == 3
    for i, (stem, (rgb, mask)) in enumerate(sorted(written.items())):
        item = ds[i]
        assert item["name"] == f"coco/{stem}"
        np.testing.assert_array_equal(item["label"], np.where(mask, 254, 255))
        np.testing.assert_array_equal(item["image"], rgb)
    first = sorted(written)[0]
    write_png_gray(tmp_path / "annotations" / "ood_seg_train2017" / f"{first}.png", np.full((48, 64), 7, np.uint8))
    with pytest.raises(DatasetError, match=r"holds values \[7\]; a Meta-OoD mask holds only 0 and 254"):
        ds[0]
    (tmp_path / "train2017" / f"{first}.jpg").unlink()
    with pytest.raises(DatasetError, match=f"1 of 3 masks .* have no image; expected e.g. .*{first}.jpg"):
        CocoOutliers(tmp_path)


# ----------------------------------------------------------------------------- AnomalyMix
def _host_and_object(seed=0):
    rng = np.random.default_rng(seed)
    host = rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)
    host_label = rng.integers(0, 19, (40, 60)).astype(np.uint8)
    obj = rng.integers(0, 255, (30, 30, 3), dtype=np.uint8)
    mask = np.zeros((30, 30), dtype=bool)
    mask[5:15, 8:20] = rng.random((10, 12)) < 0.7
    mask[5, 8] = mask[14, 19] = True  # the box corners are set: the mask's bounding box is [5:15, 8:20]
    return host, host_label, obj, mask


def test_object_box():
    _, _, _, mask = _host_and_object()
    assert object_box(mask) == (5, 8, 15, 20)
    assert object_box(np.zeros((4, 4), bool)) is None


def test_pasted_pixels_and_labels_agree_exactly():
    host, host_label, obj, mask = _host_and_object()
    image, label, where = paste_object(host, host_label, obj, mask, np.random.default_rng(3))
    assert (where.h, where.w) == (10, 12)
    m = np.zeros((40, 60), dtype=bool)
    m[where.y : where.y + 10, where.x : where.x + 12] = mask[5:15, 8:20]
    np.testing.assert_array_equal(label == 254, m)
    np.testing.assert_array_equal(image[m], obj[5:15, 8:20][mask[5:15, 8:20]])
    np.testing.assert_array_equal(image[~m], host[~m])
    np.testing.assert_array_equal(label[~m], host_label[~m])
    assert host_label.max() < 254, "the host itself is untouched"


def test_paste_scale_and_fit():
    host, host_label, obj, mask = _host_and_object()
    _, label, where = paste_object(host, host_label, obj, mask, np.random.default_rng(0), scale=(2.0, 2.0))
    assert (where.h, where.w) == (20, 24) and 0 < (label == 254).sum() <= 20 * 24
    small_host, small_label = host[:8, :9], host_label[:8, :9]
    _, label, where = paste_object(small_host, small_label, obj, mask, np.random.default_rng(0), scale=(3.0, 3.0))
    assert where.h <= 8 and where.w <= 9 and (label == 254).any()
    image, label, where = paste_object(host, host_label, obj, np.zeros_like(mask), np.random.default_rng(0))
    assert where is None and (image == host).all() and (label == host_label).all()


@pytest.fixture
def mix_trees(tmp_path):
    make_cityscapes(tmp_path / "cs", cities={"aachen": 3, "bochum": 3}, size=(48, 96))
    make_coco_ood_seg(tmp_path / "coco", n=4, size=(40, 40))
    return Cityscapes(tmp_path / "cs"), CocoOutliers(tmp_path / "coco")


def test_anomalymix_samples_have_the_object_pasted_into_the_named_host(mix_trees):
    cs, coco = mix_trees
    mix = AnomalyMix(cs, coco, ratio=0.5, seed=7)
    assert len(mix) == 6 + 3 and outlier_count(6, 4, 0.5) == 3
    hosts = {cs[i]["name"]: cs[i] for i in range(len(cs))}
    objects = {coco[i]["name"]: coco[i] for i in range(len(coco))}
    for i in range(6):
        assert mix[i]["source"] == "inlier" and not mix[i]["is_ood"]
    for i in range(6, 9):
        item = mix[i]
        assert item["source"] == "mixed" and item["is_ood"]
        host_name, obj_name = item["name"].split("+")
        host, obj = hosts[host_name], objects[obj_name]
        mask = obj["label"] == 254
        y0, x0, y1, x1 = object_box(mask)
        py, px = (np.argwhere(item["label"] == 254).min(0) - np.argwhere(mask[y0:y1, x0:x1]).min(0)).tolist()
        m = np.zeros(item["label"].shape, bool)
        m[py : py + y1 - y0, px : px + x1 - x0] = mask[y0:y1, x0:x1]
        np.testing.assert_array_equal(item["label"] == 254, m)
        np.testing.assert_array_equal(item["image"][m], obj["image"][y0:y1, x0:x1][mask[y0:y1, x0:x1]])
        np.testing.assert_array_equal(item["image"][~m], host["image"][~m])
        np.testing.assert_array_equal(item["label"][~m], host["label"][~m])


def _items(ds):
    return [ds[i] for i in range(len(ds))]


def _same(a, b):
    return all(
        x["name"] == y["name"] and np.array_equal(x["image"], y["image"]) and np.array_equal(x["label"], y["label"])
        for x, y in zip(a, b, strict=True)
    )


def test_anomalymix_is_deterministic_under_a_seed_and_access_order(mix_trees):
    cs, coco = mix_trees
    tf = JointTransform(scale=(0.5, 2.0), crop=(32, 48), flip=0.5)
    a = AnomalyMix(cs, coco, ratio=0.5, transform=tf, seed=1)
    b = AnomalyMix(cs, coco, ratio=0.5, transform=tf, seed=1)
    first = _items(a)
    assert _same(first, [b[i] for i in reversed(range(len(b)))][::-1])
    assert _same(first, _items(a))
    c = AnomalyMix(cs, coco, ratio=0.5, transform=tf, seed=2)
    assert not _same(first, _items(c))
    a.set_epoch(1)
    assert not _same(first, _items(a))
    a.set_epoch(0)
    assert _same(first, _items(a))
    assert all(x["image"].shape == (32, 48, 3) and x["is_ood"] == bool((x["label"] == 254).any()) for x in first)


def test_anomalymix_whole_and_none_modes(mix_trees):
    cs, coco = mix_trees
    whole = AnomalyMix(cs, coco, mode="whole", ratio=0.5)
    assert [whole[i]["source"] for i in range(6, 9)] == ["outlier"] * 3
    assert set(np.unique(whole[7]["label"]).tolist()) == {254, 255}
    assert len(AnomalyMix(cs, coco, mode="none")) == 6
    with pytest.raises(ValueError, match="mode must be"):
        AnomalyMix(cs, coco, mode="paste")


# ----------------------------------------------------------------------------- transforms
def test_flip_only_is_an_exact_mirror():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (10, 14, 3), dtype=np.uint8)
    label = rng.integers(0, 19, (10, 14)).astype(np.uint8)
    out_image, out_label = JointTransform(scale=(1, 1), crop=None, flip=1.0)(image, label, rng)
    np.testing.assert_array_equal(out_image, image[:, ::-1])
    np.testing.assert_array_equal(out_label, label[:, ::-1])


def test_crop_larger_than_image_is_centred_and_void_padded():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (10, 14, 3), dtype=np.uint8)
    label = rng.integers(0, 19, (10, 14)).astype(np.uint8)
    out_image, out_label = JointTransform(scale=(1, 1), crop=(16, 20), flip=0.0)(image, label, rng)
    np.testing.assert_array_equal(out_image[3:13, 3:17], image)
    np.testing.assert_array_equal(out_label[3:13, 3:17], label)
    assert (out_label[:3] == 255).all() and (out_label[:, :3] == 255).all()
    assert (out_image[0, 0] == MEAN_RGB).all()


def test_crop_smaller_than_image_is_a_window():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
    label = (np.arange(30 * 40) % 19).reshape(30, 40).astype(np.uint8)
    out_image, out_label = JointTransform(scale=(1, 1), crop=(8, 9), flip=0.0)(image, label, rng)
    matches = [
        (yy, xx)
        for yy in range(23)
        for xx in range(32)
        if np.array_equal(label[yy : yy + 8, xx : xx + 9], out_label)
        and np.array_equal(image[yy : yy + 8, xx : xx + 9], out_image)
    ]
    assert len(matches) == 1


def test_rescale_keeps_label_values_and_scales_the_size():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)
    label = np.full((20, 30), 255, dtype=np.uint8)
    label[5:15, 5:25] = 13
    label[8:12, 10:14] = 254
    out_image, out_label = JointTransform(scale=(2.0, 2.0), crop=None, flip=0.0)(image, label, rng)
    assert out_image.shape == (40, 60, 3) and out_label.shape == (40, 60)
    assert set(np.unique(out_label).tolist()) == {13, 254, 255}
    assert (out_label == 254).sum() == 4 * (label == 254).sum()
