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
    for cmd in ("predict", "models", "checkpoint", "export", "eval", "threshold", "mask", "train", "synth"):
        assert cmd in text
    assert "--fps" in run("predict", "--help").stdout and "--protocol" in run("eval", "--help").stdout


def test_help_and_parsing_do_not_load_torch():
    """`pebal --help` lists every sub-command without declaring their arguments (eval's and threshold's
    choices come from modules that load torch), so it answers without loading torch; a command's own
    --help loads what that command declares."""
    code = (
        "import sys\nfrom pebal_core.cli import main\n"
        "for argv in (['--help'], ['predict', '--help'], ['export', 'onnx', '--help'],\n"
        "             ['mask', 'estimate', '--help']):\n"
        "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
        "print('torch loaded:', 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "torch loaded: False" in out.stdout, out.stdout + out.stderr


def test_every_output_option_is_out():
    """Every sub-command that writes files takes ``-o``/``--out``; export's ``--output`` is the same option."""
    from pebal_core.cli import build_parser

    for argv in (["predict", "x.png"], ["eval", "--model", "m", "--dataset", "fs_static", "--root", "r"],
                 ["synth"], ["mask", "estimate", "f/"]):  # fmt: skip
        for flag in ("-o", "--out"):
            assert build_parser(argv[0]).parse_args([*argv, flag, "o"]).out.name == "o", (argv[0], flag)
    for sub, src in (("onnx", "m.safetensors"), ("openvino", "m.onnx"), ("tensorrt", "m.onnx")):
        extra = ["--calibration-images", "c/"] if sub == "openvino" else []
        for flag in ("-o", "--out", "--output"):
            args = build_parser("export").parse_args(["export", sub, src, *extra, flag, "o.x"])
            assert args.output.name == "o.x", (sub, flag)


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


def test_predict_runs_frames_of_another_camera_without_the_points_own_ego_mask(tmp_path):
    """A model whose stored point carries a 5:3 camera's mask (bottom quarter): a 5:3 frame is masked
    there (hatched, no alarm tint), a square frame of another camera runs without the mask (every
    pixel tinted, as the node does) and the run says so once; both get their files, exit 0."""
    from pebal_core.visualize import hatch

    point = OperatingPoint(-1e9, "hand-set", region="all", min_pixels=1, ego_mask="160x96: 0,72 159,72 159,95 0,95")
    model = save_checkpoint(build_model("resnet18", width=0.25), tmp_path / "m.safetensors",
                            **StoredPoints({"x": point}, "x").to_metadata())  # fmt: skip
    rng = np.random.default_rng(2)
    wide, square = (rng.integers(0, 255, shape, dtype=np.uint8) for shape in ((48, 80, 3), (64, 64, 3)))
    (tmp_path / "in").mkdir()
    write_rgb(tmp_path / "in" / "wide.png", wide)
    write_rgb(tmp_path / "in" / "square.png", square)
    out = run("predict", str(tmp_path / "in"), "--model", str(model), "--backend", "torch", "--no-video",
              "--out", str(tmp_path / "out"))  # fmt: skip
    assert out.stdout.count("such frames run without an ego mask") == 1 and "64x64" in out.stdout
    ego = np.zeros((48, 80), bool)
    ego[36:, :] = True
    np.testing.assert_array_equal(read_rgb(tmp_path / "out" / "wide_overlay.png")[38:-1, 1:-1],
                                  hatch(wide, ego)[38:-1, 1:-1])  # fmt: skip
    blend = square.astype(np.float64) * (1 - OVERLAY_ALPHA) + np.array([255.0, 0.0, 0.0]) * OVERLAY_ALPHA
    overlay = read_rgb(tmp_path / "out" / "square_overlay.png")
    assert np.abs(overlay[3:-3, 3:-3] - blend[3:-3, 3:-3]).max() <= 0.5 + 1e-3  # alarms on the bottom rows too


def test_checkpoint_info_and_convert(tmp_path, model_file):
    assert "format:  pebal" in run("checkpoint", "info", str(model_file)).stdout
    out = tmp_path / "c.pt"
    run("checkpoint", "convert", str(model_file), str(out))
    assert "converted_from" in run("checkpoint", "info", str(out)).stdout


def test_user_errors_are_one_line_exit_2(tmp_path):
    write_rgb(tmp_path / "x.png", np.zeros((8, 8, 3), np.uint8))
    out = run("predict", str(tmp_path / "x.png"), "--model", str(tmp_path / "missing.pt"), check=False)
    assert out.returncode == 2
    assert out.stderr.startswith("pebal: error: checkpoint file not found") and "Traceback" not in out.stderr
    out = run("predict", str(tmp_path / "y.png"), str(tmp_path / "x.png"), check=False)  # before the model loads
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith("pebal: error: no image, folder, video or camera device") and "y.png" in out.stderr


def test_predict_folders_sharing_file_names_and_a_video(tmp_path, model_file):
    """A smaller copy and the full-size frame under one file name in two folders, plus a video: every
    frame gets its own outputs (none replaced), each equal to the predictor on that frame; the folder
    and the video get overlay videos of all their frames."""
    import cv2

    from pebal_core.runtime import Predictor

    rng = np.random.default_rng(5)
    full = rng.integers(0, 256, (96, 160, 3), dtype=np.uint8)
    small = cv2.resize(full, (80, 48), interpolation=cv2.INTER_AREA)  # a smaller copy of the same frame
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    write_rgb(tmp_path / "a" / "frame.png", full)
    write_rgb(tmp_path / "b" / "frame.png", small)
    write_rgb(tmp_path / "a" / "other.png", full[::-1].copy())
    clips = [rng.integers(0, 256, (40, 56, 3), dtype=np.uint8) for _ in range(3)]
    writer = cv2.VideoWriter(str(tmp_path / "drive.avi"), cv2.VideoWriter_fourcc(*"FFV1"), 5, (56, 40))
    for rgb in clips:
        writer.write(rgb[..., ::-1].copy())
    writer.release()
    out = tmp_path / "out"
    res = run("predict", str(tmp_path / "a"), str(tmp_path / "b" / "frame.png"), str(tmp_path / "drive.avi"),
              "--model", str(model_file), "--out", str(out))  # fmt: skip
    assert "note:" in res.stdout + res.stderr and "frame_2" in res.stdout + res.stderr
    predictor = Predictor.from_checkpoint(model_file)
    expected = {"frame": full, "other": full[::-1], "frame_2": small}
    expected.update({f"drive_{i:06d}": rgb for i, rgb in enumerate(clips)})
    for name, rgb in expected.items():
        labels, score = predictor.predict(np.ascontiguousarray(rgb))
        np.testing.assert_allclose(np.load(out / f"{name}_score.npy"), score, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(read_label(out / f"{name}_labels.png"), labels)
        assert read_rgb(out / f"{name}_overlay.png").shape == rgb.shape
    for label, frames, size in (("a", 2, (160, 96)), ("drive", 3, (56, 40))):
        video = cv2.VideoCapture(str(out / f"{label}_overlay.mp4"))
        assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == frames
        assert (int(video.get(cv2.CAP_PROP_FRAME_WIDTH)), int(video.get(cv2.CAP_PROP_FRAME_HEIGHT))) == size
    assert video.get(cv2.CAP_PROP_FPS) == 5  # the video's own rate
    assert not (out / "frame_overlay.mp4").exists()  # a single image gets no video


def test_predict_fails_when_every_score_of_an_image_is_nan(tmp_path):
    """A file that loads (finite float32 weights, valid metadata) but whose classifier weights of
    3e38 overflow the logits: every score is NaN, so no files and exit status 2 (not "score range
    [nan, nan]" and exit 0)."""
    import torch

    model = build_model("resnet18", width=0.25)
    with torch.no_grad():
        model.final[-1].weight.fill_(3e38)  # the 1x1 classifier conv
    path = save_checkpoint(model, tmp_path / "overflow.safetensors", score_threshold=-5.0)
    write_rgb(tmp_path / "img.png", np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8))
    out = run("predict", str(tmp_path / "img.png"), "--model", str(path), "--backend", "torch",
              "--out", str(tmp_path / "out"), check=False)  # fmt: skip
    assert out.returncode == 2, out.stdout + out.stderr
    assert "img.png: every score is NaN or infinite: no files written" in out.stdout
    assert (
        out.stderr.splitlines()[-1].startswith("pebal: error: 1 of 1 frames got no finite anomaly score")
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
