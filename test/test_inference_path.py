"""One inference path: ``pebal eval`` scores every pixel exactly as ``Predictor.predict`` does.

Models with and without a size divisor (ESPNet: multiples of 8, zero padding; ResNet-18: any
size) on 60x90 images (not a multiple of 8), at native size and resized. The threshold ``pebal
eval`` writes is recomputed from ``Predictor.predict``'s scores by its definition (the highest
score that flags at least 95 % of the anomaly pixels), so a difference of one pixel's score in
any image would show.
"""

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score
from tiny_trees import make_anomaly_pairs

from pebal_core import cli
from pebal_core.alarms.operating_point import resolve_operating_point
from pebal_core.data.anomaly_sets import build_anomaly_dataset
from pebal_core.evaluate import EvalOptions, predictor_for, run_evaluation, score_item
from pebal_core.images import read_label, read_rgb
from pebal_core.models import build_model
from pebal_core.models.checkpoint import load_model, read_checkpoint, save_checkpoint
from pebal_core.operating_point_selection import eval_points, write_operating_points
from pebal_core.runtime import Predictor

SIZE = (60, 90)
MODELS = {"resnet18": {"width": 0.125}, "espnet_p2q8": {}}


@pytest.fixture(scope="module")
def fs_root(tmp_path_factory):
    """Fishyscapes Static layout: three 60x90 images, void rows and a bright square as the anomaly."""
    root = tmp_path_factory.mktemp("odd_fs")
    boxes = [(10 + 9 * i, 12 + 17 * i, 13, 19) for i in range(3)]
    make_anomaly_pairs(root / "Static" / "original", root / "Static" / "labels", SIZE, boxes, 3, 4, (250, 240, 30))
    return root


@pytest.fixture(scope="module", params=sorted(MODELS))
def model_file(request, tmp_path_factory):
    torch.manual_seed(7)
    model = build_model(request.param, **MODELS[request.param])
    return save_checkpoint(model, tmp_path_factory.mktemp("m") / f"{request.param}.safetensors")


def predictor_scores(predictor, fs_root):
    """(pooled PEBAL scores, pooled labels) over the set's non-void pixels, from ``predict``."""
    scores, labels = [], []
    for path in sorted((fs_root / "Static" / "original").glob("*.png")):
        _, score = predictor.predict(read_rgb(path))
        label = read_label(fs_root / "Static" / "labels" / path.name)
        scores.append(score[label != 255])
        labels.append(label[label != 255])
    return np.concatenate(scores), np.concatenate(labels)


def tpr95_threshold(scores, labels):
    """The highest score t with (anomaly scores >= t) covering at least 95 % of the anomaly pixels."""
    anomalous = np.sort(scores[labels == 1])[::-1]
    return float(anomalous[int(np.ceil(0.95 * anomalous.size)) - 1])


@pytest.mark.parametrize("input_size", [None, (40, 56)])
def test_eval_scores_equal_predictor_predict(fs_root, model_file, input_size):
    model = load_model(model_file)
    if input_size is None and model.size_divisor > 1:
        assert SIZE[0] % model.size_divisor and SIZE[1] % model.size_divisor  # so padding happens
    options = EvalOptions(input_size=input_size, methods=("pebal",), progress=False)
    evaluator = predictor_for(model, options)
    predictor = Predictor.from_checkpoint(model_file, input_size=input_size)
    dataset = build_anomaly_dataset("fs_static", fs_root)
    for i in range(len(dataset)):
        item = dataset[i]
        scored = score_item(evaluator, item, ("pebal",), options)
        labels, score = predictor.predict(item["image"])
        assert score.shape == scored.label.shape == SIZE and labels.shape == SIZE
        assert scored.network_size == (input_size or SIZE)
        np.testing.assert_array_equal(scored.scores["pebal"], score)


def test_pebal_eval_threshold_and_ap_come_from_predictor_scores(tmp_path, fs_root, model_file):
    """End to end through the command line, at a size the model then keeps as its default."""
    out, thr = tmp_path / "out", tmp_path / "thr.safetensors"
    args = ["eval", "--model", str(model_file), "--dataset", "fs_static", "--root", str(fs_root)]
    args += ["--input-size", "40", "56", "--methods", "pebal", "--no-plots", "--no-progress"]
    assert cli.main([*args, "--out", str(out), "--write-threshold", str(thr)]) == 0
    report = json.loads((out / "results.json").read_text())
    scores, labels = predictor_scores(Predictor.from_checkpoint(model_file, input_size=(40, 56)), fs_root)
    assert report["input_size"] == [40, 56]
    assert report["score_threshold"]["score"] == tpr95_threshold(scores, labels)
    assert report["methods"]["pebal"]["ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)

    # the threshold's size is recorded; the node's Predictor and a later eval use it by default
    assert read_checkpoint(thr).metadata["input_size"] == [40, 56]
    deployed = Predictor.from_checkpoint(thr)
    point = resolve_operating_point(deployed.metadata).point
    assert deployed.input_size == (40, 56) and point.threshold == report["score_threshold"]["score"]
    again = tmp_path / "again"
    assert cli.main(["eval", "--model", str(thr), *args[3:7], "--methods", "pebal", "--no-plots", "--no-progress",
                     "--out", str(again)]) == 0  # fmt: skip
    assert json.loads((again / "results.json").read_text())["score_threshold"] == report["score_threshold"]
    assert Predictor.from_checkpoint(thr, input_size=(60, 90)).input_size == (60, 90)  # the caller's size wins


def test_threshold_records_the_one_network_size_or_none(tmp_path, fs_root, model_file):
    """Native evaluation of same-size images records that size; images of two sizes record none."""
    options = EvalOptions(methods=("pebal",), progress=False)
    report = run_evaluation(model_file, "fs_static", fs_root, options)
    assert report["input_size"] is None and report["network_sizes"] == [list(SIZE)]
    written = write_operating_points(model_file, tmp_path / "a.pt", *eval_points(report))
    assert read_checkpoint(written).metadata["input_size"] == [*SIZE]

    mixed = tmp_path / "mixed" / "Static"
    make_anomaly_pairs(mixed / "original", mixed / "labels", SIZE, [(10, 12, 13, 19)], 1, name="a{}")
    make_anomaly_pairs(mixed / "original", mixed / "labels", (48, 64), [(8, 8, 10, 12)], 2, name="b{}")
    report = run_evaluation(model_file, "fs_static", mixed.parent, options)
    assert report["network_sizes"] == [[48, 64], list(SIZE)]
    written = write_operating_points(model_file, tmp_path / "b.pt", *eval_points(report))
    assert "input_size" not in read_checkpoint(written).metadata
    assert Predictor.from_checkpoint(tmp_path / "b.pt").input_size is None
