"""PEBAL on the real ENet: the pseudo-labelled Cityscapes tree of the realdata frames, and
``pebal train`` on it (``benchmarks/realdata_inliers.py``, ``benchmarks/real_data_pebal.py``).

The tree is checked against independent computations: the stored images against PIL's resize
of the source files, the void pixels against a 2x2 block reduction of the fs_static labels in
numpy, the pseudo-labels against a fresh forward pass of the pretrained ENet on the stored image,
the train / hold-out split against the images themselves (no held-out image shows a training
frame). Training runs the shipped configuration ``config/realdata_pebal_enet.yaml`` for two steps
and compares the saved model with the real checkpoint key by key.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pebal_core.config import TrainConfig, load_config
from pebal_core.data.cityscapes import Cityscapes
from pebal_core.data.validation_dataset import ValidationDataset
from pebal_core.models.checkpoint import load_model, read_checkpoint
from pebal_core.preprocessing import image_to_tensor
from pebal_core.train import train

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))  # realdata_inliers is a benchmark helper, not a package module
from realdata_inliers import (  # noqa: E402
    ENET_CHECKPOINT,
    FS_STATIC,
    FS_STATIC_HOLDOUT,
    HOLDOUT_SET,
    LABELLED_FRAME,
    build_inlier_tree,
    labelled_frame_miou,
    pseudo_labels,
    void_at,
)

ENET_FINAL = ("upsample5_0.", "regular5_1.", "transposed_conv.")


@pytest.fixture(scope="module")
def enet(realdata):
    return load_model(realdata / ENET_CHECKPOINT, arch="enet").eval()


@pytest.fixture(scope="module")
def tree(realdata, enet, tmp_path_factory):
    out = tmp_path_factory.mktemp("realpebal") / "tree"
    manifest = build_inlier_tree(realdata, out, enet, model_file=realdata / ENET_CHECKPOINT, progress=False)
    return out, manifest


def test_void_at_marks_every_target_pixel_over_a_nonzero_source_pixel():
    rng = np.random.default_rng(0)
    label = np.where(rng.random((64, 96)) < 0.03, rng.choice([1, 255], (64, 96)), 0).astype(np.uint8)
    expected = (label != 0).reshape(32, 2, 48, 2).any(axis=(1, 3))
    np.testing.assert_array_equal(void_at(label, (32, 48)), expected)
    np.testing.assert_array_equal(void_at(label, (64, 96)), label != 0)


def test_pseudo_labels_give_channel_19_the_chosen_label():
    """Void by default; UNCLASSED_ID (253) for frames of normal scenes (the bonnet is no anomaly)."""
    from pebal_core.models import build_model

    torch.manual_seed(0)
    model = build_model("espnet_p2q8", num_classes=20).eval()
    rgb = np.random.default_rng(1).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    with torch.no_grad():
        model.classifier.weight[:, 19] += 0.05  # make channel 19 win on part of the image
        logits = model(image_to_tensor(rgb, model.normalization))[0]
    argmax19, argmax20 = logits[:19].argmax(0).numpy(), logits.argmax(0).numpy()
    assert 0 < (argmax20 == 19).mean() < 1
    for channel19 in (255, 253):
        labels = pseudo_labels(model, rgb, channel19)
        np.testing.assert_array_equal(labels[argmax20 != 19], argmax19[argmax20 != 19])
        assert (labels[argmax20 == 19] == channel19).all()


@pytest.mark.realdata
def test_tree_is_a_cityscapes_tree_of_the_training_frames(tree, realdata):
    out, manifest = tree
    data = Cityscapes(out / "cityscapes", "train", labels="trainIds")  # validates names, sizes, label values
    names = sorted(s.name for s in data.samples)
    train_fs = [i for i in range(30) if i not in FS_STATIC_HOLDOUT]
    assert names == sorted(
        [f"fsstatic/fsstatic_000000_{i:06d}" for i in train_fs] + ["frankfurt/frankfurt_000000_000576"]
    )
    assert LABELLED_FRAME not in " ".join(names)  # the labelled frame is held out for mIoU
    item = data[0]
    assert item["image"].shape == (512, 1024, 3) and item["label"].shape == (512, 1024)
    assert sorted(f["name"] for f in manifest["train"]) == names
    # the stored image is the source resized with PIL bilinear (the course evaluation's resize)
    src = Image.open(realdata / FS_STATIC / "images" / f"{train_fs[0]}.jpg").convert("RGB")
    stored = data[names.index(f"fsstatic/fsstatic_000000_{train_fs[0]:06d}")]["image"]
    np.testing.assert_array_equal(stored, np.asarray(src.resize((1024, 512), Image.BILINEAR)))


@pytest.mark.realdata
def test_pasted_objects_and_void_are_void_and_targets_are_the_models_argmax(tree, realdata, enet):
    out, _ = tree
    data = Cityscapes(out / "cityscapes", "train", labels="trainIds")
    checked = 0
    for sample_index, sample in enumerate(data.samples):
        city, stem = sample.name.split("/")
        if city == "fsstatic" and int(stem[-6:]) not in (1, 5):  # two fs_static frames with objects, and the
            continue  # unlabelled Cityscapes frame, keep the test fast
        item = data[sample_index]
        with torch.no_grad():
            logits = enet(image_to_tensor(item["image"], enet.normalization))[0]
        argmax19 = logits[:19].argmax(0).numpy()
        argmax20 = logits.argmax(0).numpy()
        label = item["label"]
        masked = np.zeros(label.shape, dtype=bool)
        if city == "fsstatic":
            src = np.asarray(Image.open(realdata / FS_STATIC / "labels_masks" / f"{int(stem[-6:])}.png"))
            masked = (src != 0).reshape(512, 2, 1024, 2).any(axis=(1, 3))
            assert (src == 1).any()
        assert (label[masked] == 255).all()
        free = ~masked
        np.testing.assert_array_equal(label[free & (argmax20 != 19)], argmax19[free & (argmax20 != 19)])
        assert (label[free & (argmax20 == 19)] == 255).all()  # the model's own void prediction
        checked += 1
    assert checked == 3


@pytest.mark.realdata
def test_holdout_is_the_untouched_validation_set_and_shows_no_training_frame(tree, realdata):
    out, manifest = tree
    holdout = ValidationDataset(out / "validation", HOLDOUT_SET)
    assert len(holdout) == len(FS_STATIC_HOLDOUT) == 10  # every held-out image has pasted objects
    assert manifest["holdout"]["fs_static_indices"] == list(FS_STATIC_HOLDOUT)
    for i in FS_STATIC_HOLDOUT:
        for sub, ext in (("images", "jpg"), ("labels_masks", "png")):
            a = (out / "validation" / HOLDOUT_SET / sub / f"{i}.{ext}").read_bytes()
            assert (
                hashlib.sha256(a).digest()
                == hashlib.sha256((realdata / FS_STATIC / sub / f"{i}.{ext}").read_bytes()).digest()
            )

    def small(i: int) -> np.ndarray:
        img = Image.open(realdata / FS_STATIC / "images" / f"{i}.jpg").convert("RGB").reduce(8)
        return np.asarray(img, dtype=np.float32)

    thumbs = {i: small(i) for i in range(30)}
    for h in FS_STATIC_HOLDOUT:
        nearest = min(np.abs(thumbs[h] - thumbs[t]).mean() for t in range(30) if t not in FS_STATIC_HOLDOUT)
        assert nearest > 10, f"held-out fs_static {h} shows a training frame (mean abs diff {nearest:.1f})"


@pytest.mark.realdata
def test_tree_builder_refuses_an_existing_directory(tree, realdata, enet):
    out, _ = tree
    with pytest.raises(FileExistsError, match="exists"):
        build_inlier_tree(realdata, out, enet)


@pytest.mark.realdata
def test_labelled_frame_miou_reproduces_the_published_check(realdata, enet):
    m = labelled_frame_miou(enet, realdata)
    # the checkpoint sanity check of docs/data_sources.md
    assert abs(m["miou_20"] - 62.5) <= 0.1 and abs(m["acc_20"] - 90.2) <= 0.1
    assert m["miou_19"] >= m["miou_20"] - 1e-9  # removing the void option can only fix void predictions


@pytest.mark.realdata
def test_pebal_train_on_the_tree_changes_only_enets_final_block(tree, realdata, tmp_path):
    out, _ = tree
    from pebal_core.data.synthetic import WorldConfig
    from pebal_core.data.synthetic.writers import generate_world

    generate_world(tmp_path / "oe", WorldConfig(seed=0, coco=12, parts=("coco",)), progress=False)
    cfg = load_config(
        TrainConfig,
        ROOT / "config" / "realdata_pebal_enet.yaml",
        [
            f"model.base={realdata / ENET_CHECKPOINT}",
            f"data.cityscapes={out / 'cityscapes'}",
            f"data.coco={tmp_path / 'oe' / 'coco'}",
            "data.crop=[256,256]",
            "data.workers=0",
            "data.ood_ratio=0.5",
            "max_steps=2",
            "optim.lr=1e-3",
            f"out_dir={tmp_path / 'run'}",
        ],
    )
    result = train(cfg, progress=False)
    assert result.global_step == 2
    before = read_checkpoint(realdata / ENET_CHECKPOINT).state_dict
    after = load_model(result.model_path).state_dict()
    assert set(before) == set(after)
    changed = {k for k in before if not torch.equal(before[k].float(), after[k].float())}
    assert changed and all(k.startswith(ENET_FINAL) for k in changed), sorted(changed)[:5]
    weights = {k for k in before if k.startswith(ENET_FINAL) and before[k].is_floating_point() and "running" not in k}
    assert weights <= changed  # every weight of the final block trained
