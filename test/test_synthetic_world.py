"""`pebal synth`: the four dataset trees, their exact layouts and values, determinism, world.json."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from cityscapesscripts.helpers.labels import id2label
from pycocotools.coco import COCO

from pebal_core.data.synthetic import SMALL, WorldConfig
from pebal_core.data.synthetic.families import FAMILIES
from pebal_core.data.synthetic.writers import generate_world
from pebal_core.labels import CLASS_NAMES, label_ids_to_train_ids

SEED = 7


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world")
    generate_world(root, WorldConfig(seed=SEED, **SMALL), progress=False)
    return root


def _raw(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return img


def _manifest(root: Path) -> dict:
    return json.loads((root / "world.json").read_text())


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


# ----------------------------------------------------------------------------- Cityscapes
def test_cityscapes_tree_names_modes_and_counts(world):
    cs = world / "cityscapes"
    for split, n in (("train", SMALL["train"]), ("val", SMALL["val"])):
        images = sorted((cs / "leftImg8bit" / split).glob("*/*"))
        assert len(images) == n
        for img in images:
            m = re.fullmatch(r"([a-z]+)_(\d{6})_(\d{6})_leftImg8bit\.png", img.name)
            assert m and m.group(1) == img.parent.name, img.name
            stem = img.name[: -len("_leftImg8bit.png")]
            gt = cs / "gtFine" / split / img.parent.name
            rgb = _raw(img)
            ids = _raw(gt / f"{stem}_gtFine_labelIds.png")
            train = _raw(gt / f"{stem}_gtFine_labelTrainIds.png")
            assert rgb.shape == (SMALL["height"], SMALL["width"], 3) and rgb.dtype == np.uint8
            assert (
                ids.shape == train.shape == (SMALL["height"], SMALL["width"]) and ids.dtype == train.dtype == np.uint8
            )
        assert len(list((cs / "gtFine" / split).glob("*/*"))) == 2 * n  # labelIds + labelTrainIds, nothing else


def test_label_ids_map_to_train_ids_with_the_official_table(world):
    for ids_path in (world / "cityscapes" / "gtFine").rglob("*_gtFine_labelIds.png"):
        ids = _raw(ids_path)
        train = _raw(Path(str(ids_path).replace("_labelIds.png", "_labelTrainIds.png")))
        assert set(np.unique(ids).tolist()) <= set(id2label), "labelIds outside the Cityscapes table"
        official = np.vectorize(lambda i: id2label[int(i)].trainId)(ids)
        official = np.where((official < 0) | (official >= 19), 255, official)
        assert np.array_equal(train, official)
        assert np.array_equal(train, label_ids_to_train_ids(ids))


def test_class_frequencies_look_like_a_street(world):
    fractions = {}
    for train_path in (world / "cityscapes" / "gtFine").rglob("*_labelTrainIds.png"):
        t = _raw(train_path)
        for k, n in zip(*np.unique(t, return_counts=True), strict=True):
            fractions[int(k)] = fractions.get(int(k), 0) + int(n)
    classes = {k: n for k, n in fractions.items() if k < 19}
    assert max(classes, key=classes.get) == 0, "road should be the largest class"
    present = {CLASS_NAMES[k] for k in classes}
    assert {"road", "sidewalk", "building", "vegetation", "sky", "car", "pole"} <= present
    assert len(present) >= 10
    recorded = _manifest(world)["parts"]["cityscapes"]["train"]["classes"]
    assert recorded["road"]["pixel_fraction"] == max(c["pixel_fraction"] for c in recorded.values())


# ----------------------------------------------------------------------------- COCO
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # inside pycocotools' decode
def test_coco_json_loads_and_masks_equal_ood_seg_pngs(world):
    root = world / "coco"
    coco = COCO(str(root / "annotations" / "instances_train2017.json"))
    assert len(coco.getImgIds()) == SMALL["coco"]
    names = {c["name"] for c in coco.loadCats(coco.getCatIds())}
    assert not names & set(CLASS_NAMES) and not names & {lab.name for lab in id2label.values()}
    for image_id in coco.getImgIds():
        info = coco.loadImgs(image_id)[0]
        assert info["file_name"] == f"{image_id:012d}.jpg"
        jpg = _raw(root / "train2017" / info["file_name"])
        assert jpg.shape == (info["height"], info["width"], 3)
        ood = _raw(root / "annotations" / "ood_seg_train2017" / f"{image_id:012d}.png")
        assert ood.ndim == 2 and set(np.unique(ood).tolist()) <= {0, 254}
        union = np.zeros(ood.shape, bool)
        for ann in coco.loadAnns(coco.getAnnIds(imgIds=image_id)):
            m = coco.annToMask(ann).astype(bool)
            assert m.any() and not (m & union).any(), "objects own disjoint pixels"
            union |= m
            ys, xs = np.nonzero(m)
            assert ann["area"] == m.sum()
            assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
            assert FAMILIES[ann["family"]].role == "oe"
            assert coco.loadCats(ann["category_id"])[0]["name"] == ann["family"]
        assert np.array_equal(union, ood == 254)


# ----------------------------------------------------------------------------- Fishyscapes
def test_fishyscapes_layout_values_and_anomaly_placement(world):
    fs = world / "fishyscapes"
    manifest = _manifest(world)["parts"]["fishyscapes"]
    placements = set()
    for split in ("LostAndFound", "Static"):
        originals = sorted((fs / split / "original").glob("*.png"))
        labels = sorted((fs / split / "labels").glob("*.png"))
        assert [p.name for p in originals] == [p.name for p in labels] and len(originals) == SMALL["fishyscapes"]
        for img, lab in zip(originals, labels, strict=True):
            rgb, y = _raw(img), _raw(lab)
            assert rgb.shape == (SMALL["height"], SMALL["width"], 3) and y.shape == rgb.shape[:2]
            assert set(np.unique(y).tolist()) <= {0, 1, 255} and (y == 1).any() and (y == 0).any()
            recs = [r for r in manifest[split]["objects"] if r["name"] == img.stem]
            assert sum(r["pixels"] for r in recs) == int((y == 1).sum()), "every anomaly pixel is a recorded object"
            for r in recs:
                assert FAMILIES[r["family"]].role == "test"
                if r["pixels"] > 0:
                    placements.add((split, r["placement"]))
    assert ("Static", "road") in placements and {("Static", "offroad"), ("Static", "pasted")} & placements
    assert {p for s, p in placements if s == "LostAndFound"} == {"road"}


# ----------------------------------------------------------------------------- LostAndFound
def test_lostandfound_layout_and_label_values(world):
    laf = world / "lostandfound"
    seqs = _manifest(world)["parts"]["lostandfound"]["sequences"]
    assert len(seqs) == SMALL["sequences"]
    for seq in seqs:
        name = seq["name"]
        frames = sorted((laf / "leftImg8bit" / "test" / name).glob("*.png"))
        assert len(frames) == SMALL["frames"]
        laf_ids = {o["laf_id"] for o in seq["obstacles"]}
        stamps = []
        for img in frames:
            m = re.fullmatch(rf"{re.escape(name)}_(\d{{6}})_(\d{{6}})_leftImg8bit\.png", img.name)
            assert m, img.name
            stem = img.name[: -len("_leftImg8bit.png")]
            ids = _raw(laf / "gtCoarse" / "test" / name / f"{stem}_gtCoarse_labelIds.png")
            train = _raw(laf / "gtCoarse" / "test" / name / f"{stem}_gtCoarse_labelTrainIds.png")
            assert ids.shape == train.shape == _raw(img).shape[:2]
            assert set(np.unique(ids).tolist()) <= {0, 1} | laf_ids and (ids == 1).any()
            expected = np.where(ids == 0, 255, np.where(ids == 1, 1, 2))
            assert np.array_equal(train, expected)
            cam = json.loads((laf / "camera" / "test" / name / f"{stem}_camera.json").read_text())
            assert set(cam) == {"extrinsic", "intrinsic"}
            assert set(cam["extrinsic"]) == {"baseline", "pitch", "roll", "yaw", "x", "y", "z"}
            assert set(cam["intrinsic"]) == {"fx", "fy", "u0", "v0"}
            text = (laf / "timestamp" / "test" / name / f"{stem}_timestamp.txt").read_text()
            assert re.fullmatch(r"\d+\n", text)
            stamps.append(int(text))
        steps = np.diff(stamps)
        assert (np.abs(steps - 1e9 / seq["fps"]) <= 1).all(), "fixed frame rate in integer nanoseconds"


def test_sequence_obstacles_grow_as_the_car_approaches(world):
    laf = world / "lostandfound"
    for seq in _manifest(world)["parts"]["lostandfound"]["sequences"]:
        first = min(seq["obstacles"], key=lambda o: o["x"])  # the nearest obstacle: nothing hides it
        areas = [
            int((_raw(img) == first["laf_id"]).sum())
            for img in sorted((laf / "gtCoarse" / "test" / seq["name"]).glob("*_labelIds.png"))
        ]
        assert areas == first["pixels_per_frame"]
        assert areas[0] > 0 and areas[-1] > 1.3 * areas[0], areas
        assert all(b >= 0.9 * a for a, b in zip(areas, areas[1:], strict=False)), areas


# ----------------------------------------------------------------------------- world.json
def test_world_manifest_records_config_families_and_objects(world):
    m = _manifest(world)
    assert m["format"] == "pebal-synthetic-world" and m["seed"] == SEED
    assert m["image_size"] == [SMALL["height"], SMALL["width"]]
    assert m["config"]["train"] == SMALL["train"] and m["config"]["sequences"] == SMALL["sequences"]
    assert set(m["families"]["oe"]) & set(m["families"]["test"]) == set()
    coco_objects = m["parts"]["coco"]["objects"]
    assert coco_objects and all(o["family"] in m["families"]["oe"] for o in coco_objects)
    for seq in m["parts"]["lostandfound"]["sequences"]:
        assert all(o["family"] in m["families"]["test"] for o in seq["obstacles"])


# ----------------------------------------------------------------------------- determinism
def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path, world):
    again = tmp_path / "again"
    generate_world(again, WorldConfig(seed=SEED, **SMALL), workers=2, progress=False)  # also the worker path
    a, b = _tree_digest(world), _tree_digest(again)
    assert a == b
    other = tmp_path / "other"
    generate_world(other, WorldConfig(seed=SEED + 1, **{**SMALL, "parts": ("cityscapes",)}), progress=False)
    c = _tree_digest(other)
    images = [k for k in c if k.endswith("_leftImg8bit.png")]
    assert images and all(c[k] != a[k] for k in images)


# ----------------------------------------------------------------------------- safety and CLI
def test_existing_parts_are_kept_unless_overwrite(tmp_path):
    cfg = WorldConfig(seed=1, **{**SMALL, "parts": ("coco",), "coco": 2})
    generate_world(tmp_path, cfg, progress=False)
    before = _tree_digest(tmp_path / "coco")
    with pytest.raises(FileExistsError, match="--overwrite"):
        generate_world(tmp_path, cfg, progress=False)
    with pytest.raises(FileExistsError, match="seed 1"):
        generate_world(tmp_path, WorldConfig(seed=2, **{**SMALL, "parts": ("fishyscapes",)}), progress=False)
    assert _tree_digest(tmp_path / "coco") == before
    generate_world(
        tmp_path, WorldConfig(seed=1, **{**SMALL, "parts": ("coco",), "coco": 3}), overwrite=True, progress=False
    )
    assert len(list((tmp_path / "coco" / "train2017").glob("*.jpg"))) == 3
    assert not list(tmp_path.glob(".*")), "no partial or old trees left behind"


def test_cli_synth_small_then_refuses_to_clobber(tmp_path):
    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "pebal_core.cli", "synth", *args], capture_output=True, text=True, timeout=300
        )

    out = run(
        "--out",
        str(tmp_path / "w"),
        "--seed",
        "3",
        "--small",
        "--parts",
        "fishyscapes",
        "--fishyscapes",
        "2",
        "--quiet",
    )
    assert out.returncode == 0, out.stderr
    assert len(list((tmp_path / "w" / "fishyscapes" / "Static" / "original").glob("*.png"))) == 2
    again = run("--out", str(tmp_path / "w"), "--seed", "3", "--small", "--parts", "fishyscapes", "--quiet")
    assert again.returncode == 2
    assert (
        again.stderr.startswith("pebal: error:") and "--overwrite" in again.stderr and "Traceback" not in again.stderr
    )
    bad = run("--out", str(tmp_path / "b"), "--size", "10", "20", "--quiet")
    assert bad.returncode == 2 and "too small" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
