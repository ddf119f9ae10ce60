"""CamVid and COCO panoptic loaders (tiny trees in the real layouts, and the real folders when
present), the fine-tuning block choice, the distillation term, and a real-data training step."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from tiny_trees import make_camvid, make_coco_panoptic

from pebal_core.config import TrainConfig, load_config
from pebal_core.data.anomalymix import AnomalyMix
from pebal_core.data.base import DatasetError
from pebal_core.data.camvid import CAMVID_TRAINIDS, CamVid, camvid_miou
from pebal_core.data.coco_panoptic import CocoPanopticObjects
from pebal_core.evaluate import inlier_confusion
from pebal_core.labels import ANOMALY_ID, VOID_ID
from pebal_core.losses import distillation
from pebal_core.models import build_model
from pebal_core.models.checkpoint import save_checkpoint
from pebal_core.train import Trainer

# CamVid value -> Cityscapes trainId, written out by hand from the class names:
# Sky->sky 10, Building->building 2, Pole->pole 5, Road->road 0, Pavement->sidewalk 1,
# Tree->vegetation 8, SignSymbol->void, Fence->fence 4, Car->car 13, Pedestrian->person 11,
# Bicyclist->void, Unlabelled->void
HAND_TABLE = {0: 10, 1: 2, 2: 5, 3: 0, 4: 1, 5: 8, 6: 255, 7: 4, 8: 13, 9: 11, 10: 255, 11: 255}


def hand_map(raw: np.ndarray, table: dict[int, int] = HAND_TABLE) -> np.ndarray:
    out = np.empty_like(raw)
    for r in range(raw.shape[0]):
        for c in range(raw.shape[1]):
            out[r, c] = table[int(raw[r, c])]
    return out


# ----------------------------------------------------------------------------- CamVid
def test_camvid_reads_the_segnet_lists_and_maps_labels_by_the_table(tmp_path):
    written = make_camvid(tmp_path / "camvid")
    ds = CamVid(tmp_path / "camvid", "train")
    assert len(ds) == 3
    for (stem, rgb, raw), i in zip(written["train"], range(3), strict=True):
        item = ds[i]
        assert item["name"] == f"camvid/train/{stem}"
        np.testing.assert_array_equal(item["image"], rgb)  # PNG: lossless
        np.testing.assert_array_equal(item["label"], hand_map(raw))
    # without the list file the folder is listed, with the same result
    (tmp_path / "camvid" / "val.txt").unlink()
    val = CamVid(tmp_path / "camvid", "val")
    np.testing.assert_array_equal(val[1]["label"], hand_map(written["val"][1][2]))


def test_camvid_uses_the_json_table_when_present(tmp_path):
    written = make_camvid(tmp_path / "camvid", {"train": 1})
    strict = [10, 2, 5, 0, 1, 8, 255, 4, 255, 11, 255, 255]
    (tmp_path / "camvid" / "camvid_to_cityscapes_trainid.json").write_text(
        json.dumps({"lut_recommended": list(HAND_TABLE.values()), "lut_strict": strict})
    )
    raw = written["train"][0][2]
    item = CamVid(tmp_path / "camvid", "train", table="strict")[0]
    np.testing.assert_array_equal(item["label"], hand_map(raw, dict(enumerate(strict))))
    assert not (item["label"] == 13).any()
    with pytest.raises(DatasetError, match="lut_lenient"):
        CamVid(tmp_path / "camvid", "train", table="lenient")


def test_camvid_errors_name_the_problem(tmp_path):
    written = make_camvid(tmp_path / "camvid", {"train": 2})
    with pytest.raises(DatasetError, match="CamVid root"):
        CamVid(tmp_path / "nowhere", "train")
    stem = written["train"][1][0]
    (tmp_path / "camvid" / "trainannot" / f"{stem}.png").unlink()
    with pytest.raises(DatasetError, match=f"missing, e.g. .*{stem}"):
        CamVid(tmp_path / "camvid", "train")
    from tiny_trees import write_png_gray

    write_png_gray(tmp_path / "camvid" / "trainannot" / f"{stem}.png", np.full((24, 32), 12, np.uint8))
    with pytest.raises(DatasetError, match="value 12; CamVid labels are 0..11"):
        CamVid(tmp_path / "camvid", "train")[1]


def test_camvid_miou_over_the_nine_mapped_classes():
    conf = np.zeros((19, 19), dtype=np.int64)
    conf[0, 0], conf[0, 1] = 8, 2  # road: 8 right, 2 called sidewalk
    conf[1, 1] = 5  # sidewalk: 5 right, plus the 2 road pixels called sidewalk
    conf[13, 14] = 4  # car: 4 pixels called truck (a class CamVid does not label)
    conf[13, 13] = 4
    miou, per_class = camvid_miou(conf)
    assert per_class["road"] == pytest.approx(8 / 10)
    assert per_class["sidewalk"] == pytest.approx(5 / 7)
    assert per_class["car"] == pytest.approx(4 / 8)
    absent = [n for n, v in per_class.items() if np.isnan(v)]
    assert len(absent) == 6 and len(per_class) == len(CAMVID_TRAINIDS) == 9
    assert miou == pytest.approx((0.8 + 5 / 7 + 0.5) / 3)


# ----------------------------------------------------------------------------- COCO panoptic
def test_coco_panoptic_keeps_non_crowd_things_of_other_categories(tmp_path):
    info = make_coco_panoptic(tmp_path / "coco")
    ds = CocoPanopticObjects(tmp_path / "coco", "val2017", exclude=["person"])
    assert [(it.image.stem, it.segment_id, it.category) for it in ds.items] == [
        ("000000000001", 300000, "dog"),
        ("000000000002", 70, "umbrella"),
        ("000000000002", 71, "dog"),
    ]
    for i, (_, _, mask) in enumerate(info["usable"]):
        item = ds[i]
        np.testing.assert_array_equal(item["label"] == ANOMALY_ID, mask)
        assert set(np.unique(item["label"]).tolist()) == {ANOMALY_ID, VOID_ID}
        assert item["image"].shape == (*mask.shape, 3)
    assert ds[0]["name"] == "coco/000000000001/300000"
    small = CocoPanopticObjects(tmp_path / "coco", "val2017", exclude=["person"], min_size=4)
    assert info["tiny"] not in [it.segment_id for it in small.items] and len(small) == 2
    # the person is a thing too: without the exclusion it is used
    assert "person" in {it.category for it in CocoPanopticObjects(tmp_path / "coco", "val2017", exclude=[]).items}


def test_coco_panoptic_errors(tmp_path):
    make_coco_panoptic(tmp_path / "coco")
    with pytest.raises(DatasetError, match="categories \\['zebra'\\]"):
        CocoPanopticObjects(tmp_path / "coco", "val2017", exclude=["zebra"])
    with pytest.raises(DatasetError, match="COCO images of split .train2017.: directory .*train2017 does not exist"):
        CocoPanopticObjects(tmp_path / "coco", "train2017")
    (tmp_path / "coco" / "annotations" / "panoptic_val2017" / "000000000002.png").unlink()
    with pytest.raises(DatasetError, match="missing, e.g. .*000000000002.png"):
        CocoPanopticObjects(tmp_path / "coco", "val2017", exclude=["person"])


def test_anomalymix_pastes_exactly_the_panoptic_segment(tmp_path):
    make_camvid(tmp_path / "camvid", {"train": 2}, size=(48, 64))
    make_coco_panoptic(tmp_path / "coco")
    objects = CocoPanopticObjects(tmp_path / "coco", "val2017", exclude=["person"])
    mix = AnomalyMix(CamVid(tmp_path / "camvid", "train"), objects, ratio=1.0, seed=3)
    for i in range(2, len(mix)):
        item = mix[i]
        obj = objects[int(mix.subset[i - 2])]
        assert item["source"] == "mixed" and item["is_ood"]
        assert (item["label"] == ANOMALY_ID).sum() == (obj["label"] == ANOMALY_ID).sum()


# ----------------------------------------------------------------------------- fine-tuning blocks
@pytest.mark.parametrize(("arch", "final_params"), [("espnet_p2q8", 8140), ("enet", 6656)])
def test_decoder_block_keeps_output_and_keys_and_trains_more(arch, final_params):
    torch.manual_seed(0)
    model = build_model(arch, num_classes=20).eval()
    x = torch.randn(1, 3, 64, 96)
    keys = list(model.state_dict())
    with torch.no_grad():
        ref = model(x)
        assert sum(p.numel() for p in model.finetune_parameters()) == final_params
        model.select_finetune_block("decoder")
        np.testing.assert_array_equal(model(x).numpy(), ref.numpy())
        n_decoder = sum(p.numel() for p in model.finetune_parameters())
        model.select_finetune_block("final")
        np.testing.assert_array_equal(model(x).numpy(), ref.numpy())
    assert list(model.state_dict()) == keys
    assert n_decoder > final_params
    if arch == "espnet_p2q8":
        assert n_decoder == 20240
    with pytest.raises(ValueError, match=f"choose one of {re.escape(str(list(model.finetune_blocks)))}"):
        model.select_finetune_block("trunk")


def test_distillation_is_zero_for_the_teacher_and_blind_to_a_logit_shift():
    torch.manual_seed(0)
    teacher = torch.randn(2, 20, 5, 6)
    mask = torch.ones(2, 5, 6, dtype=torch.bool)
    assert distillation(teacher, teacher, mask).item() == pytest.approx(0, abs=1e-6)
    shifted = teacher.clone()
    shifted[:, :19] += 3.0  # energy moves by 3, the class distribution does not
    assert distillation(shifted, teacher, mask).item() == pytest.approx(0, abs=1e-6)
    other = torch.randn(2, 20, 5, 6)
    p = torch.softmax(teacher[:, :19], 1)
    ref = (p * (torch.log_softmax(teacher[:, :19], 1) - torch.log_softmax(other[:, :19], 1))).sum(1)
    mask[0] = False
    assert distillation(other, teacher, mask).item() == pytest.approx(ref[1].mean().item(), rel=1e-5)


def test_real_data_training_step_trains_the_decoder_block_with_distillation(tmp_path):
    make_camvid(tmp_path / "camvid", {"train": 4, "val": 1}, size=(48, 64))
    make_coco_panoptic(tmp_path / "coco")
    torch.manual_seed(0)
    save_checkpoint(build_model("espnet_p2q8", num_classes=20), tmp_path / "base.safetensors")
    cfg = load_config(
        TrainConfig,
        None,
        [
            f"model.base={tmp_path / 'base.safetensors'}",
            "model.arch=null",
            "model.finetune=decoder",
            "data.inliers=camvid",
            f"data.camvid={tmp_path / 'camvid'}",
            f"data.coco={tmp_path / 'coco'}",
            "data.coco_split=val2017",
            "data.coco_format=panoptic",
            "data.coco_min_size=0",
            "data.coco_exclude=[person]",
            "data.crop=[48,64]",
            "data.ood_ratio=0.5",
            "data.workers=0",
            "loss.distill_weight=1.0",
            "frozen_bn=true",
            "batch_size=2",
            "epochs=1",
            "threads=1",
            "optim.lr=1e-3",
            f"out_dir={tmp_path / 'run'}",
        ],
    )
    trainer = Trainer(cfg, progress=False)
    model = trainer.model
    assert len(trainer.dataset) == 6 and sum(p.numel() for p in trainer.params) == 20240
    before = {k: v.clone() for k, v in model.state_dict().items()}
    terms = trainer.step(next(iter(trainer.loader())))
    assert terms["distill"] == pytest.approx(0, abs=1e-6)  # student == teacher before the first update
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    decoder = {"encoder.classifier.", "level3_C.", "br.", "up_l3.", "combine_l2_l3.", "up_l2.", "conv.", "classifier."}
    assert changed and all(any(k.startswith(d) for d in decoder) for k in changed), sorted(changed)[:5]
    assert "encoder.classifier.conv.weight" in changed
    assert not any("running_" in k for k in changed)  # frozen_bn keeps the statistics
    second = trainer.step(next(iter(trainer.loader())))
    assert second["distill"] > 0


# ----------------------------------------------------------------------------- the real folders
def test_real_camvid_and_coco_panoptic(realdata):
    camvid = realdata / "camvid"
    sizes = {split: len(CamVid(camvid, split)) for split in ("train", "val", "test")}
    assert sizes == {"train": 367, "val": 101, "test": 233}
    item = CamVid(camvid, "test")[0]
    assert item["image"].shape == (360, 480, 3)
    assert set(np.unique(item["label"]).tolist()) <= {*CAMVID_TRAINIDS, VOID_ID}
    exclude = ["person", "bicycle", "car", "motorcycle", "bus", "train", "truck", "traffic light", "stop sign"]
    n = sum(len(CocoPanopticObjects(realdata / "coco_panoptic_200", s, exclude)) for s in ("train2017", "val2017"))
    assert n == 836  # "about 836 usable thing instances" after those exclusions and crowd removal
    obj = CocoPanopticObjects(realdata / "coco_panoptic_200", "val2017", exclude)[0]
    assert obj["category"] not in exclude and (obj["label"] == ANOMALY_ID).any()


def test_real_espnet_camvid_val_miou_of_the_base(realdata):
    """The pretrained ESPNet on 8 CamVid val frames: a sanity bound, not a selection."""
    from pebal_core.models.checkpoint import load_model

    torch.set_num_threads(1)
    model = load_model(
        realdata / "models/espnet_p2q8_cityscapes_sacmehta/espnet_p_2_q_8.safetensors", arch="espnet_p2q8"
    ).eval()
    from pebal_core.evaluate import EvalOptions

    conf = inlier_confusion(model, CamVid(realdata / "camvid", "val"), EvalOptions(limit=8, progress=False))
    miou, per_class = camvid_miou(conf)
    assert per_class["road"] > 0.7 and per_class["sky"] > 0.8  # a Cityscapes network sees streets
    assert 0.3 < miou < 0.7


def test_pebal_eval_camvid_reports_the_nine_class_miou(tmp_path):
    """``pebal eval --dataset camvid/val`` against IoUs counted here from the model's own argmax."""
    from pebal_core.cli import main
    from pebal_core.preprocessing import normalize_images

    written = make_camvid(tmp_path / "camvid", {"val": 2}, size=(48, 64))
    torch.manual_seed(0)
    model = build_model("espnet_p2q8", num_classes=20).eval()
    save_checkpoint(model, tmp_path / "m.safetensors")
    assert (
        main(
            ["eval", "--model", str(tmp_path / "m.safetensors"), "--dataset", "camvid/val"]
            + ["--root", str(tmp_path / "camvid"), "--out", str(tmp_path / "out"), "--no-progress"]
        )
        == 0
    )
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    tp, fp, fn = {}, {}, {}
    for _, rgb, raw in written["val"]:
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None]
        with torch.no_grad():
            pred = model(normalize_images(x, model.normalization))[0, :19].argmax(0).numpy()
        gt = hand_map(raw)
        for c in CAMVID_TRAINIDS:
            labelled = gt != 255
            tp[c] = tp.get(c, 0) + int(((pred == c) & (gt == c)).sum())
            fp[c] = fp.get(c, 0) + int(((pred == c) & (gt != c) & labelled).sum())
            fn[c] = fn.get(c, 0) + int(((pred != c) & (gt == c)).sum())
    ious = [tp[c] / (tp[c] + fp[c] + fn[c]) for c in CAMVID_TRAINIDS if tp[c] + fp[c] + fn[c]]
    assert report["n_images"] == 2
    assert report["miou"] == pytest.approx(float(np.mean(ious)), rel=1e-9)


# ----------------------------------------------------------------------------- the shipped real model
def test_shipped_real_model_metadata_and_threshold(realdata):
    """The committed ESPNet PEBAL model says what it is; the best-pixel-F1 threshold of the
    fs_static hold-out it records and the 95 % TPR point are recomputed here from the pooled scores;
    the alarm operating point is the stored ``obstacles:0.5`` point of the same hold-out, chosen with
    the hold-out camera's ego mask (``benchmarks/real_operating_point.py``), above the 95 % TPR point."""
    from pathlib import Path

    from pebal_core.alarms.operating_point import StoredPoints
    from pebal_core.data.validation_dataset import ValidationDataset
    from pebal_core.models.checkpoint import load_model, read_checkpoint
    from pebal_core.runtime import Predictor

    path = Path(__file__).resolve().parents[1] / "pebal_core" / "assets" / "real_espnet_pebal.safetensors"
    meta = read_checkpoint(path).metadata
    assert meta["arch"] == "espnet_p2q8" and meta["num_classes"] == 20
    assert meta["base_model"]["licence"] == "MIT" and "sacmehta/ESPNet" in meta["base_model"]["source"]
    assert "CamVid" in meta["training_data"]["inliers"] and "COCO panoptic" in meta["training_data"]["outliers"]
    assert meta["input_size"] == [512, 1024]
    assert meta["train_config"]["model"]["finetune"] == "decoder"
    stored = StoredPoints.from_metadata(meta)
    point = stored.points["obstacles:0.5"]
    assert stored.default == "obstacles:0.5" and point.policy == "obstacles:0.5" and point.ego_mask == "cityscapes"
    assert stored.measured["obstacles:0.5"]["obstacle_false_alarms_per_frame"] <= 0.5
    assert stored.measured["fpr:0.01"]["fpr_region"] <= 0.01
    assert stored.source["n_images"] == 15  # fs_static 0-14, frames without anomaly included
    assert (point.min_pixels, point.image_size) == (320, (1024, 2048))  # the hold-out's 2048x1024 frames
    best_f1 = meta["holdout_thresholds"]["best_f1"]
    tpr95 = meta["holdout_thresholds"]["tpr95"]
    source = best_f1["source"]
    assert source["images"] == [0, 1, 4, 5, 6, 7, 8, 9, 10, 12, 13]  # fs_static 0-14 with anomaly pixels
    assert meta["selection"]["chosen"] in meta["selection"]["holdout"]

    torch.set_num_threads(1)
    predictor = Predictor.from_model(load_model(path).eval(), (512, 1024), "predictor")
    ds = ValidationDataset(realdata / "Validation_Dataset", "fs_static")
    scores, labels = [], []
    for i in range(len(ds)):
        if int(ds.samples[i].name.split("/")[-1]) not in source["images"]:
            continue
        item = ds[i]
        score = predictor.scores(item["image"], ("pebal",), output_size=item["label"].shape).scores["pebal"]
        keep = item["label"] != 255
        scores.append(score[keep])
        labels.append(item["label"][keep] == 1)
    s, y = np.concatenate(scores), np.concatenate(labels)
    pooled = np.sort(s[y])[::-1]
    k = int(np.ceil(0.95 * pooled.size)) - 1  # the k+1 highest scores are >= 95 % of the anomalous pixels
    assert tpr95["score"] == pytest.approx(float(pooled[k]), abs=1e-4)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    tp, fp = np.cumsum(y), np.cumsum(~y)
    last = np.r_[s[1:] != s[:-1], True]  # flagging score >= s[i] takes every pixel up to the run's end
    f1 = 2 * tp[last] / (tp[last] + fp[last] + y.sum())
    assert best_f1["score"] == pytest.approx(float(s[last][np.argmax(f1)]), abs=1e-4)
    assert best_f1["score"] > tpr95["score"]
    assert point.threshold > tpr95["score"]
    assert stored.points["tpr95"].threshold <= point.threshold
