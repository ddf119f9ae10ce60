"""`pebal eval` end to end on a generated miniature Fishyscapes tree with a small random model."""

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve
from tiny_trees import make_anomaly_pairs

from pebal_core.alarms.operating_point import StoredPoints
from pebal_core.data.anomaly_sets import build_anomaly_dataset
from pebal_core.evaluate import EvalOptions, evaluate, write_report
from pebal_core.images import read_label, read_rgb, write_label, write_rgb
from pebal_core.models import build_model
from pebal_core.models.checkpoint import load_model, read_checkpoint, save_checkpoint
from pebal_core.preprocessing import image_to_tensor
from pebal_core.runtime import Predictor
from pebal_core.scoring import METHODS, score_map


def eval_args(model, dataset, root, *extra):
    return ("eval", "--model", str(model), "--dataset", dataset, "--root", str(root), "--no-progress", *extra)


def run(*args, check=True):
    out = subprocess.run([sys.executable, "-m", "pebal_core.cli", *args], capture_output=True, text=True, timeout=300)
    if check:
        assert out.returncode == 0, out.stderr
    return out


@pytest.fixture(scope="module")
def fs_root(tmp_path_factory):
    """Fishyscapes layout, 4 images 64x96 with void rows and a magenta square as the anomaly."""
    root = tmp_path_factory.mktemp("fishyscapes")
    boxes = [(12 + 8 * i, 10 + 15 * i, 12, 20) for i in range(4)]
    fs = root / "LostAndFound"
    make_anomaly_pairs(fs / "original", fs / "labels", (64, 96), boxes, 0, 6, (255, 0, 255), "{:03d}")
    return root


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    return save_checkpoint(build_model("resnet18", width=0.125), tmp_path_factory.mktemp("m") / "r18.safetensors")


def reference_scores(model_file, fs_root):
    """Every method's pooled scores and labels recomputed independently of pebal_core.evaluate."""
    model = load_model(model_file)
    pooled = {m: [] for m in METHODS}
    labels = []
    for path in sorted((fs_root / "LostAndFound" / "original").glob("*.png")):
        with torch.inference_mode():
            logits = model(image_to_tensor(read_rgb(path), model.normalization))
        label = read_label(fs_root / "LostAndFound" / "labels" / path.name)
        keep = label < 255
        labels.append(label[keep])
        for m in METHODS:
            pooled[m].append(score_map(logits, m)[0].numpy()[keep])
    return {m: np.concatenate(v) for m, v in pooled.items()}, np.concatenate(labels)


def test_pebal_eval_writes_table_json_plots_and_matches_sklearn(tmp_path, fs_root, model_file):
    out = tmp_path / "out"
    thr_ckpt = tmp_path / "with_threshold.safetensors"
    extra = ("--out", str(out), "--components", "anomaly", "--write-threshold", str(thr_ckpt))
    done = run(*eval_args(model_file, "fs_lost_and_found", fs_root, *extra))
    assert "| MaxLogit |" in done.stdout and "PEBAL score threshold at 95% TPR" in done.stdout
    md = (out / "results.md").read_text()
    for name in ("PEBAL (smoothed energy)", "Energy", "MSP", "MaxLogit", "Entropy", "Abstention (void channel)"):
        assert f"| {name} |" in md
    for plot in ("roc.png", "pr.png"):
        image = cv2.imread(str(out / plot))
        assert image is not None and image.shape[0] > 200 and image.std() > 10

    report = json.loads((out / "results.json").read_text())
    assert report["n_images"] == 4 and report["fpr95_definition"] == "pebal" and report["mode"] == "exact"
    scores, y = reference_scores(model_file, fs_root)
    for m in METHODS:
        r = report["methods"][m]
        assert r["n_anomaly_pixels"] == (y == 1).sum() and r["n_inlier_pixels"] == (y == 0).sum()
        assert r["auroc"] == pytest.approx(roc_auc_score(y, scores[m]), abs=1e-9), m
        assert r["ap"] == pytest.approx(average_precision_score(y, scores[m]), abs=1e-9), m
        fpr, tpr, _ = roc_curve(y, scores[m], drop_intermediate=False)
        assert r["fpr95_by_definition"]["smiyc"] == pytest.approx(fpr[np.searchsorted(tpr, 0.95)], abs=1e-9), m

    threshold = report["score_threshold"]
    flagged = scores["pebal"] >= threshold["score"]
    assert threshold["tpr"] == pytest.approx((flagged & (y == 1)).sum() / (y == 1).sum()) and threshold["tpr"] >= 0.95
    stored = StoredPoints.from_metadata(Predictor.from_checkpoint(thr_ckpt).metadata)
    assert stored.points[stored.default].threshold == pytest.approx(threshold["score"])
    assert stored.source["dataset"] == "fs_lost_and_found" and read_checkpoint(thr_ckpt).metadata["arch"] == "resnet18"
    comp = report["components"]
    assert (
        comp["segsize"] == 500
        and len(comp["f1"]) == 11
        and comp["threshold"] == report["methods"]["pebal"]["best_f1"]["score"]
    )


def test_streaming_cli_within_bound_and_limit(tmp_path, fs_root, model_file):
    common = ("--no-plots", "--limit", "2", "--methods", "pebal", "msp")
    run(*eval_args(model_file, "fs_lost_and_found", fs_root, "--out", str(tmp_path / "e"), *common))
    streaming = ("--streaming", "--max-cells", "64", "--fpr95", "ood_metrics")
    run(*eval_args(model_file, "fs_lost_and_found", fs_root, "--out", str(tmp_path / "s"), *common, *streaming))
    e = json.loads((tmp_path / "e" / "results.json").read_text())
    s = json.loads((tmp_path / "s" / "results.json").read_text())
    assert e["n_images"] == 2 and set(s["methods"]) == {"pebal", "msp"} and s["mode"].startswith("streaming")
    for m in ("pebal", "msp"):
        bound = s["methods"][m]["error_bound"]
        for key in ("auroc", "ap"):
            assert abs(s["methods"][m][key] - e["methods"][m][key]) <= bound[key] + 1e-12
        got, want = s["methods"][m]["fpr95"], e["methods"][m]["fpr95_by_definition"]["ood_metrics"]
        assert abs(got - want) <= bound["fpr95"] + 1e-12


def test_padding_and_resizing_keep_label_resolution(tmp_path, fs_root):
    """A 60x90 image (not a multiple of 8): padded or resized for the network, scored at 60x90."""
    root = tmp_path / "odd"
    for d in ("original", "labels"):
        (root / "Static" / d).mkdir(parents=True)
    label = np.zeros((60, 90), np.uint8)
    label[20:40, 30:50] = 1
    write_rgb(root / "Static" / "original" / "a.png", np.full((60, 90, 3), 90, np.uint8))
    write_label(root / "Static" / "labels" / "a.png", label)
    ds = build_anomaly_dataset("fs_static", root)
    torch.manual_seed(1)
    model = build_model("resnet18", width=0.125).eval()
    for options in (
        EvalOptions(progress=False),
        EvalOptions(input_size=(32, 48), progress=False),
    ):
        report = evaluate(model, ds, options)
        assert report["methods"]["pebal"]["n_anomaly_pixels"] == 400
        assert report["methods"]["pebal"]["n_inlier_pixels"] == 60 * 90 - 400


def test_course_resize_protocol_scores_at_network_size_like_pil(fs_root, model_file):
    """--resize-protocol course (the published course evaluations at 512x1024): the image resized
    by PIL bilinear, the labels by PIL nearest, metrics over the network-size pixels."""
    model = load_model(model_file)
    ds = build_anomaly_dataset("fs_lost_and_found", fs_root)
    size = (40, 56)  # shrink by 0.625 x 0.583: PIL's antialiasing filter differs from OpenCV bilinear
    methods = ("msp", "abstention")
    course = evaluate(
        model, ds, EvalOptions(input_size=size, resize_protocol="course", methods=methods, progress=False)
    )
    predictor = evaluate(model, ds, EvalOptions(input_size=size, methods=methods, progress=False))
    scores, labels = {m: [] for m in methods}, []
    for path in sorted((fs_root / "LostAndFound" / "original").glob("*.png")):
        small = np.array(Image.open(path).convert("RGB").resize(size[::-1], Image.BILINEAR))
        label = np.array(Image.open(fs_root / "LostAndFound" / "labels" / path.name).resize(size[::-1], Image.NEAREST))
        with torch.inference_mode():
            logits = model(image_to_tensor(small, model.normalization))
        keep = label < 255
        labels.append(label[keep])
        for m in methods:
            scores[m].append(score_map(logits, m)[0].numpy()[keep])
    y = np.concatenate(labels)
    for m in methods:
        r, s = course["methods"][m], np.concatenate(scores[m])
        assert r["n_anomaly_pixels"] == (y == 1).sum() and r["n_inlier_pixels"] == (y == 0).sum()
        assert r["ap"] == pytest.approx(average_precision_score(y, s), abs=1e-9), m
        assert r["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-9), m
        # the predictor protocol scores every label pixel of the 64x96 images instead
        assert predictor["methods"][m]["n_inlier_pixels"] + predictor["methods"][m]["n_anomaly_pixels"] == 4 * 58 * 96
    with pytest.raises(ValueError, match="resize_protocol must be one of predictor, course"):
        EvalOptions(resize_protocol="pil")


def test_bare_state_dict_needs_arch(tmp_path, fs_root):
    """A checkpoint without metadata (the realdata ENet is one) is evaluated with --arch."""
    torch.manual_seed(2)
    path = tmp_path / "enet_state_dict.pth"
    torch.save(build_model("enet").state_dict(), path)
    common = ("--out", str(tmp_path / "o"), "--no-plots", "--methods", "abstention", "--limit", "1")
    out = run(*eval_args(path, "fs_lost_and_found", fs_root, *common), check=False)
    assert out.returncode == 2 and "does not say which architecture" in out.stderr
    assert "pass --arch NAME" in out.stderr and "arch=" not in out.stderr  # the command line's flag
    run(*eval_args(path, "fs_lost_and_found", fs_root, "--arch", "enet", *common))
    report = json.loads((tmp_path / "o" / "results.json").read_text())
    assert report["model"]["arch"] == "enet" and report["n_images"] == 1


def test_user_errors_are_one_line(tmp_path, model_file):
    out = run(*eval_args(model_file, "road_anomaly", tmp_path / "nope"), check=False)
    assert out.returncode == 2 and out.stderr.startswith("pebal: error: Road Anomaly frames folder")
    out = run(*eval_args(model_file, "fs_static", tmp_path, "--split", "x"), check=False)
    assert out.returncode == 2 and "--split applies to" in out.stderr
    out = run(*eval_args(model_file, "fs_static", tmp_path, "--methods", "energy", "vibes"), check=False)
    assert out.returncode == 2 and "unknown score methods ['vibes']" in out.stderr


class WithSemantic(torch.utils.data.Dataset):
    """Adds a ``semantic`` trainId map to each item: the model's own argmax, so mIoU must be 100 %."""

    def __init__(self, base, model):
        self.base, self.model = base, model

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        item = dict(self.base[i])
        with torch.inference_mode():
            logits = self.model(image_to_tensor(item["image"], self.model.normalization))
        item["semantic"] = logits[0, :19].argmax(0).numpy().astype(np.uint8)
        return item


def test_inlier_miou_when_items_carry_trainids(fs_root, model_file):
    model = load_model(model_file)
    ds = WithSemantic(build_anomaly_dataset("fs_lost_and_found", fs_root), model)
    report = evaluate(model, ds, EvalOptions(progress=False, methods=("pebal",)))
    assert report["inlier_miou"]["miou"] == pytest.approx(1.0)
    assert set(report["methods"]) == {"pebal"}


@pytest.fixture(scope="module")
def validation_root(tmp_path_factory):
    """Validation_Dataset layout, set ``fs_static``: three 48x64 images, image 1 without anomaly pixels."""
    root = tmp_path_factory.mktemp("validation")
    fs = root / "fs_static"
    make_anomaly_pairs(fs / "images", fs / "labels_masks", (48, 64), [(10, 20, 10, 16), None, (10, 20, 10, 16)], 5)
    return root


def test_protocol_presets_flags_override_and_skipped_images_reported(tmp_path, validation_root, model_file):
    common = ("--no-plots", "--methods", "pebal", "msp")
    out = run(*eval_args(model_file, "validation/fs_static", validation_root, "--protocol", "course",
                         "--out", str(tmp_path / "c"), *common))  # fmt: skip
    report = json.loads((tmp_path / "c" / "results.json").read_text())
    assert report["options"]["protocol"] == "course" and report["input_size"] == [512, 1024]
    assert report["options"]["resize_protocol"] == "course" and report["fpr95_definition"] == "ood_metrics"
    # metrics at the network size: every non-void pixel of the two kept images, resized to 512x1024
    pixels = report["methods"]["pebal"]["n_anomaly_pixels"] + report["methods"]["pebal"]["n_inlier_pixels"]
    assert report["n_images"] == 2 and pixels == 2 * 512 * 1024
    skipped = {"count": 1, "reason": "no anomaly pixel in the mask", "names": ["fs_static/1"]}
    assert report["skipped_images"] == skipped
    assert "Skipped 1 images (no anomaly pixel in the mask): fs_static/1." in out.stdout
    assert "fs_static/1" in (tmp_path / "c" / "results.md").read_text()

    run(*eval_args(model_file, "validation/fs_static", validation_root, "--protocol", "course", "--fpr95", "pebal",
                   "--input-size", "24", "32", "--out", str(tmp_path / "o"), *common))  # fmt: skip
    report = json.loads((tmp_path / "o" / "results.json").read_text())
    assert report["input_size"] == [24, 32] and report["fpr95_definition"] == "pebal"
    assert report["options"]["resize_protocol"] == "course"
    assert report["methods"]["pebal"]["n_inlier_pixels"] + report["methods"]["pebal"]["n_anomaly_pixels"] == 2 * 768

    run(*eval_args(model_file, "validation/fs_static", validation_root, "--keep-all-images",
                   "--out", str(tmp_path / "p"), *common))  # fmt: skip
    report = json.loads((tmp_path / "p" / "results.json").read_text())
    assert report["input_size"] is None and report["fpr95_definition"] == "pebal" and report["n_images"] == 3
    assert report["skipped_images"] == {"count": 0, "reason": None, "names": []}


def test_obstacle_level_counts_at_the_models_point_with_its_ego_mask(tmp_path, fs_root, model_file):
    """The ``obstacle_level`` entry against a brute-force count of the same scores: the model's
    stored point (every pixel, 3-px obstacles, a threshold flagging about 10 % of the pixels) and an
    ego mask given as polygons over the bottom 16 rows of the 96x64 frames."""
    from np_reference import brute_obstacle_counts

    from pebal_core.alarms.operating_point import OperatingPoint
    from pebal_core.operating_point_selection import write_operating_points

    dataset = build_anomaly_dataset("fs_lost_and_found", fs_root)
    predictor = Predictor.from_checkpoint(model_file)
    scores = [predictor.scores(dataset[i]["image"], ("pebal",)).scores["pebal"] for i in range(len(dataset))]
    threshold = float(np.quantile(np.concatenate([s.ravel() for s in scores]), 0.9))
    point = OperatingPoint(threshold, "hand", region="all", min_pixels=3)
    model = tmp_path / "with_point.safetensors"
    write_operating_points(model_file, model, StoredPoints({"hand": point}, "hand"), None)
    polygons = "96x64: 0,48 95,48 95,63 0,63"
    ego = np.zeros((64, 96), bool)
    ego[48:, :] = True
    options = EvalOptions(methods=("pebal",), ego_mask=polygons, min_visible=4, progress=False)
    report = evaluate(load_model(model), dataset, options)
    o = report["obstacle_level"]
    expected_point = OperatingPoint(threshold, "hand", "all", min_pixels=3, ego_mask=polygons)
    assert OperatingPoint.from_dict(o["point"]) == expected_point
    assert o["point_origin"] == "model, overridden" and "ego_mask overridden" in o["point_warning"]
    totals = np.zeros(6, int)
    for i, score in enumerate(scores):
        counts = brute_obstacle_counts(dataset[i]["label"], score, threshold, ego, 3, 4)
        totals += counts
        image = o["per_image"][i]
        assert (image["labelled"], image["detected"], len(image["false_alarms"])) == (counts[0], counts[1], counts[3])
    labelled, detected, reported, false_alarms, inlier, flagged = totals.tolist()
    assert (o["obstacles"], o["detected"], o["reported"]) == (labelled, detected, reported)
    assert o["false_alarms"] == false_alarms
    assert o["false_alarms_per_frame"] == pytest.approx(false_alarms / len(scores))
    assert o["pixel_fpr_region"] == pytest.approx(flagged / inlier) and o["min_pixels"] == [3]
    assert reported > 0 and labelled == len(scores)  # something to count
    # without the mask the bottom rows can alarm again: never fewer reported obstacles
    bare = evaluate(load_model(model), dataset, EvalOptions(methods=("pebal",), min_visible=4, progress=False))
    assert bare["obstacle_level"]["point"]["ego_mask"] == "" and bare["obstacle_level"]["reported"] >= reported
    out = tmp_path / "out"
    write_report(report, out, plots=False)
    assert "Obstacle level at threshold" in (out / "results.md").read_text()
    assert json.loads((out / "results.json").read_text())["obstacle_level"]["per_image"][0]["name"]
