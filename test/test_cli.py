"""The `pebal` command line: help, predict, checkpoint tools, and one-line user errors."""

import subprocess
import sys

import numpy as np
import pytest

from pebal_core.alarms.obstacles import DEFAULT_MIN_PIXELS
from pebal_core.alarms.operating_point import OperatingPoint, StoredPoints
from pebal_core.images import read_label, read_rgb, write_rgb
from pebal_core.models import build_model
from pebal_core.models.checkpoint import save_checkpoint
from pebal_core.visualize import OVERLAY_ALPHA


def run(*args, check=True):
    out = subprocess.run([sys.executable, "-m", "pebal_core.cli", *args], capture_output=True, text=True, timeout=300)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def test_help_lists_subcommands():
    text = run("--help").stdout
    for cmd in ("predict", "models", "checkpoint"):
        assert cmd in text


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A tiny model whose stored operating point alarms everywhere (every score is >= -1e9, every
    pixel is in the region ``all``)."""
    path = tmp_path_factory.mktemp("m") / "r18.safetensors"
    point = OperatingPoint(-1e9, "hand-set", region="all", min_pixels=1)
    return save_checkpoint(build_model("resnet18", width=0.25), path, **StoredPoints({"x": point}, "x").to_metadata())


def test_predict_writes_labels_score_and_the_alarm_overlay(tmp_path, model_file):
    rgb = np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8)
    write_rgb(tmp_path / "img.png", rgb)
    out = run("predict", str(tmp_path / "img.png"), "--model", str(model_file), "--out", str(tmp_path / "out"))
    assert "operating point: threshold -1e+09 (hand-set), region every pixel" in out.stdout
    assert "1 obstacle(s)" in out.stdout  # the whole frame is one alarm component
    labels = read_label(tmp_path / "out" / "img_labels.png")
    score = np.load(tmp_path / "out" / "img_score.npy")
    assert labels.shape == (48, 80) and labels.max() <= 18
    assert score.shape == (48, 80) and score.dtype == np.float32
    assert read_rgb(tmp_path / "out" / "img_color.png").shape == (48, 80, 3)
    overlay = read_rgb(tmp_path / "out" / "img_overlay.png")
    # inside the obstacle's outline every pixel is an alarm far above the threshold (probability 1):
    # the image blended towards pure red by the overlay's alpha
    blend = rgb.astype(np.float64) * (1 - OVERLAY_ALPHA) + np.array([255.0, 0.0, 0.0]) * OVERLAY_ALPHA
    assert np.abs(overlay[3:-3, 3:-3] - blend[3:-3, 3:-3]).max() <= 0.5 + 1e-3
    # an explicit threshold overrides the stored one, and says so: above every score, nothing alarms
    out = run("predict", str(tmp_path / "img.png"), "--model", str(model_file), "--threshold", "1e9",
              "--out", str(tmp_path / "quiet"))  # fmt: skip
    assert "threshold overridden" in out.stdout and "0 obstacle(s)" in out.stdout
    np.testing.assert_array_equal(read_rgb(tmp_path / "quiet" / "img_overlay.png"), rgb)


def test_predict_with_an_ego_mask_never_alarms_on_the_car(tmp_path, model_file):
    """``--ego-mask`` polygons over the bottom 12 rows: the frame alarms everywhere else (one
    obstacle), the masked rows are hatched, never tinted; a mask for another aspect ratio is one
    clear error."""
    from pebal_core.visualize import EGO_COLOR, hatch

    rgb = np.random.default_rng(1).integers(0, 255, (48, 80, 3), dtype=np.uint8)
    write_rgb(tmp_path / "img.png", rgb)
    polygons = "160x96: 0,72 159,72 159,95 0,95"  # drawn on a frame twice this size: rows 36.. here
    out = run("predict", str(tmp_path / "img.png"), "--model", str(model_file), "--ego-mask", polygons,
              "--out", str(tmp_path / "out"))  # fmt: skip
    assert "ego_mask overridden" in out.stdout and "1 obstacle(s)" in out.stdout
    overlay = read_rgb(tmp_path / "out" / "img_overlay.png")
    ego = np.zeros((48, 80), bool)
    ego[36:, :] = True
    hatched = hatch(rgb, ego)
    np.testing.assert_array_equal(overlay[38:-1, 1:-1], hatched[38:-1, 1:-1])  # inside the outline
    assert (hatched[38:-1, 1:-1] == EGO_COLOR).all(axis=2).sum() > 100  # grey lines, no alarm tint
    bad = run("predict", str(tmp_path / "img.png"), "--model", str(model_file), "--ego-mask", "100x100: 0,0 9,0 9,9",
              "--out", str(tmp_path / "bad"), check=False)  # fmt: skip
    assert bad.returncode == 2 and "100x100 but the frame is 80x48" in bad.stderr and "Traceback" not in bad.stderr


def test_checkpoint_info_and_convert(tmp_path, model_file):
    assert "format:  pebal" in run("checkpoint", "info", str(model_file)).stdout
    out = tmp_path / "c.pt"
    run("checkpoint", "convert", str(model_file), str(out))
    assert "converted_from" in run("checkpoint", "info", str(out)).stdout


def test_user_errors_are_one_line_exit_2(tmp_path):
    out = run("predict", str(tmp_path / "x.png"), "--model", str(tmp_path / "missing.pt"), check=False)
    assert out.returncode == 2
    assert out.stderr.startswith("pebal: error: checkpoint file not found") and "Traceback" not in out.stderr


def test_predict_fails_when_every_score_of_an_image_is_nan(tmp_path):
    """A file that loads (finite float32 weights, valid metadata) but whose classifier weights of
    3e38 overflow the logits: every score is NaN. The issue: exit 0 and "score range [nan, nan]"."""
    import torch

    model = build_model("resnet18", width=0.25)
    with torch.no_grad():
        model.output_conv.weight.fill_(3e38)
    path = save_checkpoint(model, tmp_path / "overflow.safetensors", score_threshold=-5.0)
    write_rgb(tmp_path / "img.png", np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8))
    out = run(
        "predict", str(tmp_path / "img.png"), "--model", str(path), "--backend", "torch",
        "--out", str(tmp_path / "out"), check=False,
    )  # fmt: skip
    assert out.returncode == 2, out.stdout + out.stderr
    assert "img.png: every score is NaN or infinite: no files written" in out.stdout
    assert (
        out.stderr.startswith("pebal: error: 1 of 1 images got no finite anomaly score")
        and "Traceback" not in out.stderr
    )
    assert list((tmp_path / "out").iterdir()) == []


def test_threshold_writes_operating_points_into_a_copy(tmp_path, model_file):
    from sklearn.metrics import roc_curve

    from pebal_core.data.anomaly_sets import build_anomaly_dataset
    from pebal_core.data.synthetic import SMALL, WorldConfig
    from pebal_core.data.synthetic.writers import generate_world
    from pebal_core.models.checkpoint import read_checkpoint
    from pebal_core.runtime import Predictor

    world = tmp_path / "world"
    generate_world(world, WorldConfig(seed=4, **{**SMALL, "parts": ("fishyscapes",)}), progress=False)
    out = tmp_path / "with_points.safetensors"
    args = ("threshold", "--model", str(model_file), "--dataset", "synthetic", "--split", "LostAndFound",
            "--root", str(world), "--region", "all", "--policy", "tpr95", "--policy", "fpr:0.05",
            "--default", "fpr:0.05", "--no-progress")  # fmt: skip
    text = run(*args, "--write", str(out)).stdout
    assert "| fpr:0.05 (default) |" in text and "| tpr95 |" in text
    meta = read_checkpoint(out).metadata
    points = meta["alarm_operating_points"]
    stored = StoredPoints.from_metadata(meta)
    assert stored.default == "fpr:0.05" and "score_threshold" not in meta
    # every point carries the settings it was chosen with: the region asked for, obstacles of the
    # default size counted at the validation images' size
    assert {p.region for p in stored.points.values()} == {"all"} and stored.source["dataset"] == "synthetic"
    sizes = {p.image_size for p in stored.points.values()}
    assert len(sizes) == 1 and None not in sizes and stored.points["fpr:0.05"].min_pixels == DEFAULT_MIN_PIXELS
    # the 95 %-TPR point, recomputed with the deployed predictor and scikit-learn
    predictor = Predictor.from_checkpoint(model_file)
    data = build_anomaly_dataset("synthetic", world, split="LostAndFound")
    scores, truth = [], []
    for i in range(len(data)):
        item = data[i]
        score = predictor.predict(item["image"])[1]
        scores.append(score[item["label"] != 255])
        truth.append(item["label"][item["label"] != 255] == 1)
    _, tpr, thresholds = roc_curve(np.concatenate(truth), np.concatenate(scores), drop_intermediate=False)
    assert points["points"]["tpr95"]["threshold"] == pytest.approx(thresholds[np.flatnonzero(tpr >= 0.95)[0]])
    # the evaluated file is never overwritten, and a policy the model lacks is named
    refused = run(*args, "--write", str(model_file), check=False)
    assert refused.returncode == 2 and "refusing to overwrite" in refused.stderr
    bad = run(*args[:-1], "--policy", "fpr:2", check=False)
    assert bad.returncode == 2 and "unknown alarm policy 'fpr:2'" in bad.stderr
