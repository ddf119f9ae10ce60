"""Model files whose metadata or weights are wrong: one CheckpointError naming the file, the key and
what is allowed, and exit status 2 without a traceback in ``pebal predict`` and ``pebal_node``.

Every case is a real file (a tiny ``resnet18`` saved by ``save_checkpoint`` with one metadata
entry or one tensor changed, or a real ONNX export with one ``metadata_props`` entry changed),
loaded through the same entry points a user runs.
"""

from __future__ import annotations

import json
import math
import signal

import cv2
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from pebal_core import cli
from pebal_core.model_metadata import MAX_NETWORK_SIDE, METADATA_RULES, check_metadata
from pebal_core.models import build_model
from pebal_core.models.checkpoint import CheckpointError, load_model, read_checkpoint, save_checkpoint
from pebal_core.onnx_contract import ONNX_RULES, parse_metadata
from pebal_core.runtime import Predictor

NORM = {"mean": [1.0, 2.0, 3.0], "std": [4.0, 5.0, 6.0]}

# (case id, metadata entries written into the file, the key the error must name, words of what is allowed)
METADATA_CASES = [
    ("arch_kwargs-list", {"arch_kwargs": [1, 2]}, "arch_kwargs", "an object of architecture options"),
    ("arch_kwargs-unknown", {"arch_kwargs": {"bogus": 1}}, "arch_kwargs", "allowed options: width (default 1.0)"),
    ("arch_kwargs-huge-width", {"arch_kwargs": {"width": 1000}}, "arch_kwargs", "width must be a number in (0, 4.0]"),
    ("arch_kwargs-text-width", {"arch_kwargs": {"width": "wide"}}, "arch_kwargs", "width must be a number"),
    ("arch_kwargs-stride", {"arch_kwargs": {"output_stride": 7}}, "arch_kwargs", "output_stride must be 8, 16 or 32"),
    ("arch-number", {"arch": 5}, "arch", "a non-empty string"),
    ("normalization-text", {"normalization": "x"}, "normalization", "3 finite numbers > 0"),
    ("normalization-empty", {"normalization": {}}, "normalization", "{mean: 3 finite numbers"),
    ("normalization-zero-std", {"normalization": {**NORM, "std": [0, 0, 0]}}, "normalization", "std: 3 finite"),
    ("normalization-nan-mean", {"normalization": {**NORM, "mean": [math.nan, 0, 0]}}, "normalization", "finite"),
    ("normalization-extra", {"normalization": {**NORM, "scale": 2}}, "normalization", "nothing else"),
    ("normalization-bgr-text", {"normalization": {**NORM, "bgr": "yes"}}, "normalization", "bgr: true/false"),
    ("normalization-post-scale", {"normalization": {**NORM, "post_scale": 0}}, "normalization", "post_scale"),
    ("input_size-scalar", {"input_size": 5}, "input_size", "[height, width]"),
    ("input_size-huge", {"input_size": [30000, 30000]}, "input_size", f"from 1 to {MAX_NETWORK_SIDE}"),
    ("input_size-zero", {"input_size": [0, 512]}, "input_size", "integers from 1"),
    ("input_size-float", {"input_size": [256.5, 512]}, "input_size", "integers"),
    ("score_threshold-list", {"score_threshold": [1]}, "score_threshold", "null or a finite number"),
    ("score_threshold-nan", {"score_threshold": math.nan}, "score_threshold", "finite number"),
    ("score_threshold-inf", {"score_threshold": -math.inf}, "score_threshold", "finite number"),
    ("score_threshold-text", {"score_threshold": "-5"}, "score_threshold", "finite number"),
    ("score_threshold-bool", {"score_threshold": True}, "score_threshold", "finite number"),
    ("num_classes-5", {"num_classes": 5}, "num_classes", "19 (inlier trainIds) or 20"),
    ("num_classes-text", {"num_classes": "20"}, "num_classes", "19 (inlier trainIds) or 20"),
    ("format_version-newer", {"format_version": 2}, "format_version", "a newer file needs a newer pebal"),
    (
        "operating_points-text",
        {"alarm_operating_points": {"default": "fa:0.1", "points": {"fa:0.1": {"threshold": "x"}}}},
        "alarm_operating_points",
        "threshold: a finite number",
    ),
    ("operating_points-list", {"alarm_operating_points": [1]}, "alarm_operating_points", "null or an object"),
    (
        "operating_points-min-pixels",
        {"alarm_operating_points": {"default": "p", "points": {"p": {"threshold": -5.0, "min_pixels": 0}}}},
        "alarm_operating_points",
        "min_pixels: an integer >= 1",
    ),
    (
        "operating_points-image-size",
        {"alarm_operating_points": {"default": "p", "points": {"p": {"threshold": -5.0, "image_size": [30000, 9]}}}},
        "alarm_operating_points",
        "image_size: null or [height, width]",
    ),
    (
        "operating_points-persistence",
        {"alarm_operating_points": {"default": "p", "points": {"p": {"threshold": -5.0, "persistence": {"k": "x"}}}}},
        "alarm_operating_points",
        "persistence: an object of numbers >= 0",
    ),
    (
        "operating_points-default",
        {"alarm_operating_points": {"default": "q", "points": {"p": {"threshold": -5.0}}}},
        "alarm_operating_points",
        "default: one of the points",
    ),
]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model("resnet18", width=0.25)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "img.png"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8))
    return path


def _bad_weights(tmp_path, tiny, how: str):
    """The tiny model saved, then one floating-point weight replaced in the file (int64 or NaN)."""
    good = save_checkpoint(tiny, tmp_path / "good.safetensors")
    with safe_open(str(good), framework="pt") as f:
        header = f.metadata()
    tensors = load_file(str(good))
    key = "conv1.weight"
    assert key in tensors and tensors[key].is_floating_point()
    if how == "int64":
        tensors[key] = (tensors[key] * 100).to(torch.int64)
    else:
        tensors[key] = tensors[key].clone()
        tensors[key][0, 0, 0, 0] = math.nan
    path = tmp_path / f"weights_{how}.safetensors"
    save_file(tensors, str(path), metadata=header)
    return path, key


def _node_main(path) -> int:
    """``pebal_node``'s entry point in this process (its signal handlers restored afterwards)."""
    from pebal_ros.node import main

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return main(["pebal_node", "--ros-args", "-p", f"model:={path}"])
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _one_error_line(err: str, prog: str) -> str:
    assert err.startswith(f"{prog}: error:") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


@pytest.mark.ros
@pytest.mark.parametrize(("case", "entries", "key", "allowed"), METADATA_CASES, ids=[c[0] for c in METADATA_CASES])
def test_bad_metadata_is_one_error_naming_file_key_and_what_is_allowed(
    ros_env, tmp_path, tiny, image, capsys, case, entries, key, allowed
):
    suffix = ".pt" if case.endswith(("-list", "-empty")) else ".safetensors"  # both storage formats of metadata
    path = save_checkpoint(tiny, tmp_path / f"bad{suffix}", **entries)
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    text = str(err.value)
    assert str(path) in text and f"'{key}'" in text and allowed in text, text

    assert cli.main(["predict", "--model", str(path), "--out", str(tmp_path / "out"), str(image)]) == 2
    err = _one_error_line(capsys.readouterr().err, "pebal")
    assert str(path) in err and f"'{key}'" in err
    assert not (tmp_path / "out").exists()

    assert _node_main(path) == 2
    err = _one_error_line(capsys.readouterr().err, "pebal_node")
    assert str(path) in err and f"'{key}'" in err


@pytest.mark.ros
@pytest.mark.parametrize(
    ("how", "words"),
    [("int64", "not floating point: conv1.weight is torch.int64"), ("nan", "not finite: conv1.weight")],
)
def test_weights_that_are_not_floating_point_or_not_finite_are_refused(
    ros_env, tmp_path, tiny, image, capsys, how, words
):
    """int64 weights used to be cast silently (a constant score); NaN weights gave NaN everywhere."""
    path, key = _bad_weights(tmp_path, tiny, how)
    with pytest.raises(CheckpointError, match=words) as err:
        load_model(path)
    assert str(path) in str(err.value) and key in str(err.value)
    assert cli.main(["predict", "--model", str(path), "--out", str(tmp_path / "out"), str(image)]) == 2
    assert key in _one_error_line(capsys.readouterr().err, "pebal")
    assert _node_main(path) == 2
    assert key in _one_error_line(capsys.readouterr().err, "pebal_node")


@pytest.mark.ros
def test_an_operating_point_with_settings_that_mean_nothing_is_one_error(ros_env, tmp_path, tiny, image, capsys):
    """Types and ranges pass the table; the meaning (the region's name) is checked where the point is
    resolved, and is still one line naming the metadata key."""
    points = {"default": "p", "points": {"p": {"threshold": -5.0, "region": "bogus"}}}
    path = save_checkpoint(tiny, tmp_path / "bogus_region.safetensors", alarm_operating_points=points)
    load_model(path)  # a valid file as far as types go
    assert cli.main(["predict", "--model", str(path), "--out", str(tmp_path / "out"), str(image)]) == 2
    err = _one_error_line(capsys.readouterr().err, "pebal")
    assert "'alarm_operating_points'" in err and "alarm region must be one of drivable, all, got 'bogus'" in err
    assert _node_main(path) == 2
    assert "'alarm_operating_points'" in _one_error_line(capsys.readouterr().err, "pebal_node")


def test_good_metadata_passes_and_every_rule_is_exercised(tiny, tmp_path):
    """The shipped models' own metadata passes; every row of the table is hit by a case above."""
    from pebal_core.model_store import model_names, model_path

    for name in model_names():
        read_checkpoint(model_path(name))  # raises on any bad entry
    meta = {"input_size": [MAX_NETWORK_SIDE, MAX_NETWORK_SIDE], "score_threshold": -3, "normalization": NORM}
    assert check_metadata(meta, "x") is meta
    covered = {key for _, _, key, _ in METADATA_CASES}
    assert covered == {rule.key for rule in METADATA_RULES}


def test_other_tools_refuse_a_bad_model_in_one_line(tmp_path, tiny, capsys):
    path = save_checkpoint(tiny, tmp_path / "bad.safetensors", input_size=[30000, 30000])
    assert cli.main(["checkpoint", "info", str(path)]) == 2
    assert "'input_size'" in _one_error_line(capsys.readouterr().err, "pebal")
    assert cli.main(["export", "onnx", str(path), "-o", str(tmp_path / "x.onnx")]) == 2
    assert "'input_size'" in _one_error_line(capsys.readouterr().err, "pebal")
    assert not (tmp_path / "x.onnx").exists()


# ------------------------------------------------------------------------------------------- ONNX
ONNX_CASES = [
    ("input_size", "30000x30000", f"from 1 to {MAX_NETWORK_SIDE}"),
    ("input_size", "256xwide", "cannot be read"),
    ("normalization", "x", "cannot be read"),
    ("normalization", "{}", "{mean: 3 finite numbers"),
    ("score_threshold", "[1]", "null or a finite number"),
    ("score_threshold", "NaN", "null or a finite number"),
    ("num_classes", "abc", "cannot be read"),
    ("smoothing", "1", "true or false"),
    ("outputs", '["score"]', "starting with labels, score"),
    ("checkpoint_metadata", '{"input_size": 5}', "[height, width]"),
    ("arch_kwargs", "[1, 2]", "an object of architecture options"),
]


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory, tiny):
    from pebal_core.export.onnx import export_onnx

    base = tmp_path_factory.mktemp("onnx")
    ckpt = save_checkpoint(tiny, base / "tiny.safetensors")
    return export_onnx(ckpt, base / "tiny.onnx", input_size=(64, 64))


def _edited(onnx_file, tmp_path, key: str, value: str):
    import onnx

    proto = onnx.load(str(onnx_file))
    for prop in proto.metadata_props:
        if prop.key == key:
            prop.value = value
            break
    else:
        proto.metadata_props.add(key=key, value=value)
    path = tmp_path / "edited.onnx"
    onnx.save(proto, str(path))
    return path


@pytest.mark.parametrize(("key", "value", "allowed"), ONNX_CASES, ids=[f"{k}={v}" for k, v, _ in ONNX_CASES])
def test_bad_onnx_metadata_is_one_error_naming_file_and_key(onnx_file, tmp_path, image, capsys, key, value, allowed):
    path = _edited(onnx_file, tmp_path, key, value)
    with pytest.raises(CheckpointError) as err:
        Predictor.from_checkpoint(path, backend="onnxruntime")
    text = str(err.value)
    assert str(path) in text and f"'{key}'" in text and allowed in text, text
    argv = ["predict", "--backend", "onnxruntime", "--model", str(path), "--out", str(tmp_path / "o"), str(image)]
    assert cli.main(argv) == 2
    assert f"'{key}'" in _one_error_line(capsys.readouterr().err, "pebal")


def test_onnx_rules_add_to_the_checkpoint_rules(onnx_file):
    from pebal_core.export.onnx import read_metadata

    meta = read_metadata(onnx_file)
    assert meta["input_size"] == (64, 64) and meta["smoothing"] is True
    assert {r.key for r in METADATA_RULES} < {r.key for r in ONNX_RULES}
    props = {"pebal_onnx_format": "1", "normalization": json.dumps(NORM)}
    assert parse_metadata(props, "f.onnx")["input_size"] is None  # absent = dynamic
