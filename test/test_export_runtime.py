"""The onnxruntime backend of Predictor and the `pebal export` / `pebal predict --backend` CLI."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
from _export_models import EXPORT_SIZE, STORED_POINT, camera_like

from pebal_core import cli
from pebal_core.alarms.operating_point import resolve_operating_point
from pebal_core.backends import BackendError
from pebal_core.export.onnx import export_onnx
from pebal_core.images import read_label, write_rgb
from pebal_core.runtime import Predictor

SIZE = EXPORT_SIZE


@pytest.fixture(scope="module")
def checkpoint(shared_exports):
    return shared_exports.checkpoint("resnet18")


@pytest.fixture(scope="module")
def fixed_onnx(shared_exports):
    return shared_exports.onnx("resnet18")


@pytest.fixture(scope="module")
def dynamic_onnx(shared_exports):
    return shared_exports.onnx("resnet18", dynamic=True)


def rgb_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.ascontiguousarray(camera_like(h, w, seed)[0].transpose(1, 2, 0))


def run(*args, check=True):
    """``pebal ARGS`` as a user runs it: a new process through ``python -m pebal_core.cli``."""
    out = subprocess.run([sys.executable, "-m", "pebal_core.cli", *args], capture_output=True, text=True, timeout=300)
    if check:
        assert out.returncode == 0, out.stderr
    return out


def run_here(capsys, *args, check=True):
    """``pebal ARGS`` through the same ``main`` in this process (no new interpreter and torch import
    per call): for the calls after the one ``run`` of a test that checks the console command."""
    capsys.readouterr()
    code = cli.main(list(args))
    out = capsys.readouterr()
    if check:
        assert code == 0, out.err
    return subprocess.CompletedProcess(["pebal", *args], code, out.out, out.err)


def test_dynamic_onnx_predictor_matches_torch_predictor(checkpoint, dynamic_onnx):
    onnx_pred = Predictor.from_checkpoint(dynamic_onnx, backend="onnxruntime")
    torch_pred = Predictor.from_checkpoint(checkpoint, backend="torch")
    assert onnx_pred.input_size is None
    for h, w in ((64, 96), (56, 120)):
        rgb = rgb_image(h, w, seed=h)
        labels, score = onnx_pred.predict(rgb)
        ref_labels, ref_score = torch_pred.predict(rgb)
        assert labels.shape == (h, w) and labels.dtype == np.uint8 and score.dtype == np.float32
        assert (labels == ref_labels).mean() >= 0.999
        assert np.abs(score - ref_score).max() <= 1e-3


def test_fixed_onnx_predictor_resizes_to_the_model_size(checkpoint, fixed_onnx):
    onnx_pred = Predictor.from_checkpoint(fixed_onnx, backend="onnxruntime")
    assert onnx_pred.input_size == SIZE, "a fixed-size model sets the Predictor's network size"
    torch_pred = Predictor.from_checkpoint(checkpoint, backend="torch", input_size=SIZE)
    rgb = rgb_image(128, 192, seed=7)  # camera size differs: resized to 64x96 and back
    labels, score = onnx_pred.predict(rgb)
    ref_labels, ref_score = torch_pred.predict(rgb)
    assert labels.shape == (128, 192)
    assert (labels == ref_labels).mean() >= 0.999
    assert np.abs(score - ref_score).max() <= 1e-3


def test_metadata_threshold_and_model_id_come_from_the_onnx_file_and_its_source(checkpoint, fixed_onnx):
    pred = Predictor.from_checkpoint(fixed_onnx, backend="onnxruntime")
    assert resolve_operating_point(pred.metadata).point == STORED_POINT
    assert pred.metadata["arch"] == "resnet18" and pred.metadata["arch_kwargs"] == {"width": 0.25}
    assert pred.metadata["source_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert pred.metadata["sha256"] == hashlib.sha256(fixed_onnx.read_bytes()).hexdigest()
    # the model id names the model, not its format: the same as the source checkpoint's
    assert pred.model_id == Predictor.from_checkpoint(checkpoint, backend="torch").model_id
    assert pred.backend.providers == ["CPUExecutionProvider"]


def test_cpu_session_uses_every_usable_core(fixed_onnx, monkeypatch):
    seen = {}
    original = ort.InferenceSession

    def spy(path, options=None, **kwargs):
        seen["threads"] = options.intra_op_num_threads
        seen["level"] = options.graph_optimization_level
        return original(path, options, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", spy)
    Predictor.from_checkpoint(fixed_onnx, backend="onnxruntime")
    assert seen["threads"] == len(os.sched_getaffinity(0))
    assert seen["level"] == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    Predictor.from_checkpoint(fixed_onnx, backend="onnxruntime", threads=1)
    assert seen["threads"] == 1


def test_mismatched_requests_are_refused(checkpoint, fixed_onnx):
    with pytest.raises(ValueError, match="fixed input of 64x96"):
        Predictor.from_checkpoint(fixed_onnx, backend="onnxruntime", input_size=(128, 256))
    with pytest.raises(ValueError, match="with --no-smoothing"):
        Predictor.from_checkpoint(fixed_onnx, backend="onnxruntime", smoothing=False)
    with pytest.raises(ValueError, match="runs .onnx files"):
        Predictor.from_checkpoint(checkpoint, backend="onnxruntime")
    with pytest.raises(ValueError, match="unknown device"):
        Predictor.from_checkpoint(fixed_onnx, backend="onnxruntime", device="gpu")


@pytest.mark.skipif(
    "CUDAExecutionProvider" in ort.get_available_providers(), reason="this onnxruntime has the CUDA provider"
)
def test_cuda_device_without_gpu_onnxruntime_names_the_fix(fixed_onnx):
    with pytest.raises(BackendError, match="onnxruntime-gpu"):
        Predictor.from_checkpoint(fixed_onnx, backend="onnxruntime", device="cuda")


def test_importing_runtime_loads_no_optional_toolkit():
    code = (
        "import sys, pebal_core.runtime, pebal_core.export.tensorrt;"
        "print(sorted(m for m in ('onnxruntime', 'tensorrt', 'pycuda', 'onnx') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_cli_export_then_predict_with_onnxruntime(tmp_path, checkpoint, capsys):
    onnx_path = tmp_path / "model.onnx"
    out = run("export", "onnx", str(checkpoint), "-o", str(onnx_path), "--input-size", "64", "96", "--verify")
    assert "passed onnx.checker" in out.stdout and "labels agree on" in out.stdout
    rgb = rgb_image(64, 96, seed=11)
    write_rgb(tmp_path / "img.png", rgb)
    for backend, model in (("onnxruntime", onnx_path), ("torch", checkpoint)):
        run_here(
            capsys,
            "predict",
            str(tmp_path / "img.png"),
            "--model",
            str(model),
            "--backend",
            backend,
            "--out",
            str(tmp_path / backend),
        )
    labels = read_label(tmp_path / "onnxruntime" / "img_labels.png")
    ref = read_label(tmp_path / "torch" / "img_labels.png")
    assert (labels == ref).mean() >= 0.999
    score = np.load(tmp_path / "onnxruntime" / "img_score.npy")
    assert np.abs(score - np.load(tmp_path / "torch" / "img_score.npy")).max() <= 1e-3
    assert (tmp_path / "onnxruntime" / "img_overlay.png").is_file(), "the stored threshold drives the overlay"


def test_cli_export_errors_are_one_line(tmp_path, checkpoint, capsys):
    out = run("export", "onnx", str(checkpoint), "-o", str(tmp_path / "m.onnx"), "--opset", "13", check=False)
    assert out.returncode == 2 and out.stderr.startswith("pebal: error: opset 13 is too old")
    out = run_here(capsys, "export", "onnx", str(tmp_path / "missing.safetensors"), check=False)
    assert out.returncode == 2 and "checkpoint file not found" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.skipif(
    any(importlib.util.find_spec(m) for m in ("tensorrt", "pycuda")),
    reason="TensorRT or pycuda is installed here",
)
def test_cli_tensorrt_without_tensorrt_says_how_to_install(tmp_path, fixed_onnx, capsys):
    out = run("export", "tensorrt", str(fixed_onnx), check=False)
    assert out.returncode == 2 and "pip install .[tensorrt]" in out.stderr and "Traceback" not in out.stderr
    write_rgb(tmp_path / "x.png", np.zeros((8, 8, 3), np.uint8))  # sources are opened before the model
    out = run_here(
        capsys, "predict", str(tmp_path / "x.png"), "--model", str(fixed_onnx), "--backend", "tensorrt", check=False
    )
    assert out.returncode == 2 and "pip install .[tensorrt]" in out.stderr


def test_onnxruntime_backend_reads_metadata_without_onnx_or_the_exporter(fixed_onnx):
    code = (
        "import sys; from pebal_core.runtime import Predictor;"
        f"p = Predictor.from_checkpoint({str(fixed_onnx)!r}, backend='onnxruntime');"
        "mods = sorted(m for m in ('onnx', 'pebal_core.export.onnx') if m in sys.modules);"
        "from pebal_core.alarms.operating_point import resolve_operating_point;"
        "print(p.input_size, resolve_operating_point(p.metadata).point.threshold, mods)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"{SIZE} -4.25 []"


def test_unreadable_onnx_file_is_a_backend_error(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a protobuf at all")
    with pytest.raises(BackendError, match="onnxruntime cannot load .*broken.onnx.*pebal export onnx"):
        Predictor.from_checkpoint(bad, backend="onnxruntime")


def test_dynamic_onnx_keeps_the_checkpoints_recorded_input_size(tmp_path, checkpoint):
    from pebal_core.models.checkpoint import load_model, save_checkpoint

    model = load_model(checkpoint)
    sized = save_checkpoint(model, tmp_path / "sized.safetensors", input_size=[48, 80])
    onnx_path = export_onnx(sized, tmp_path / "sized.onnx", input_size=SIZE, dynamic=True)
    assert Predictor.from_checkpoint(onnx_path, backend="onnxruntime").input_size == (48, 80)
    assert Predictor.from_checkpoint(sized).input_size == (48, 80)
    assert Predictor.from_checkpoint(onnx_path, backend="onnxruntime", input_size=(64, 96)).input_size == (64, 96)


def test_scores_through_onnxruntime_give_pebal_and_labels_only(checkpoint, dynamic_onnx):
    onnx_pred = Predictor.from_checkpoint(dynamic_onnx, backend="onnxruntime")
    rgb = rgb_image(64, 96, seed=3)
    pred = onnx_pred.scores(rgb, ("pebal",), labels=True)
    labels, score = onnx_pred.predict(rgb)
    np.testing.assert_array_equal(pred.scores["pebal"], score)
    np.testing.assert_array_equal(pred.labels, labels)
    with pytest.raises(BackendError, match="need the torch backend"):
        onnx_pred.scores(rgb, ("pebal", "msp"))
