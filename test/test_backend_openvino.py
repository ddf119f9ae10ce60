"""The openvino backend of Predictor: the same ONNX contract, parity with torch, precisions."""

from __future__ import annotations

import hashlib

import numpy as np
import openvino as ov
import pytest
from _export_models import EXPORT_SIZE, STORED_POINT, camera_like

from pebal_core.alarms.operating_point import resolve_operating_point
from pebal_core.backends import BackendError
from pebal_core.backends.openvino_backend import cpu_capabilities
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


def test_dynamic_onnx_matches_torch(checkpoint, dynamic_onnx):
    ov_pred = Predictor.from_checkpoint(dynamic_onnx, backend="openvino")
    torch_pred = Predictor.from_checkpoint(checkpoint, backend="torch")
    assert ov_pred.input_size is None and ov_pred.backend.precision == "fp32"
    for h, w in ((64, 96), (56, 120)):
        rgb = rgb_image(h, w, seed=h)
        labels, score = ov_pred.predict(rgb)
        ref_labels, ref_score = torch_pred.predict(rgb)
        assert labels.shape == (h, w) and labels.dtype == np.uint8 and score.dtype == np.float32
        assert (labels == ref_labels).mean() >= 0.999
        assert np.abs(score - ref_score).max() <= 1e-3


def test_fixed_onnx_resizes_to_the_model_size_and_reads_the_metadata(checkpoint, fixed_onnx):
    pred = Predictor.from_checkpoint(fixed_onnx, backend="openvino", threads=1)
    assert pred.input_size == SIZE
    torch_pred = Predictor.from_checkpoint(checkpoint, backend="torch", input_size=SIZE)
    rgb = rgb_image(128, 192, seed=7)
    labels, score = pred.predict(rgb)
    ref_labels, ref_score = torch_pred.predict(rgb)
    assert labels.shape == (128, 192)
    assert (labels == ref_labels).mean() >= 0.999
    assert np.abs(score - ref_score).max() <= 1e-3
    assert resolve_operating_point(pred.metadata).point == STORED_POINT
    assert pred.metadata["arch"] == "resnet18" and pred.metadata["arch_kwargs"] == {"width": 0.25}
    assert pred.metadata["source_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    # one model, one id on every backend: the source checkpoint's
    digest = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert pred.model_id == torch_pred.model_id == f"resnet18@{digest[:12]}"
    assert int(pred.backend.compiled.get_property("INFERENCE_NUM_THREADS")) == 1


def test_mismatched_requests_are_refused(checkpoint, fixed_onnx, tmp_path):
    with pytest.raises(ValueError, match="fixed input of 64x96"):
        Predictor.from_checkpoint(fixed_onnx, backend="openvino", input_size=(128, 256))
    with pytest.raises(ValueError, match="with --no-smoothing"):
        Predictor.from_checkpoint(fixed_onnx, backend="openvino", smoothing=False)
    with pytest.raises(ValueError, match="runs .onnx files"):
        Predictor.from_checkpoint(checkpoint, backend="openvino")
    with pytest.raises(ValueError, match="unknown device"):
        Predictor.from_checkpoint(fixed_onnx, backend="openvino", device="cuda")
    with pytest.raises(ValueError, match="precision 'int8'"):
        Predictor.from_checkpoint(fixed_onnx, backend="openvino", precision="int8")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(BackendError, match="cannot read"):
        Predictor.from_checkpoint(broken, backend="openvino")


def test_an_onnx_file_without_pebal_metadata_is_refused(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("score", TensorProto.FLOAT, [1, 3, 4, 4])
    graph = helper.make_graph([helper.make_node("Relu", ["image"], ["score"])], "g", [x], [y])
    path = tmp_path / "plain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    with pytest.raises(BackendError, match="carries no PEBAL metadata"):
        Predictor.from_checkpoint(path, backend="openvino")


@pytest.mark.skipif("BF16" not in cpu_capabilities(), reason="this CPU has no native bf16 arithmetic")
def test_bf16_runs_in_bf16_where_the_cpu_has_it(checkpoint, fixed_onnx):
    pred = Predictor.from_checkpoint(fixed_onnx, backend="openvino", precision="bf16")
    assert pred.backend.precision == "bf16"
    assert pred.backend.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.bf16
    rgb = rgb_image(64, 96, seed=3)
    labels, score = pred.predict(rgb)
    ref_labels, ref_score = Predictor.from_checkpoint(checkpoint, backend="torch", input_size=SIZE).predict(rgb)
    assert (labels == ref_labels).mean() >= 0.9  # bfloat16 keeps 8 bits of mantissa: close, not equal
    assert 0 < np.abs(score - ref_score).max() <= 0.5


@pytest.mark.skipif("BF16" in cpu_capabilities(), reason="this CPU has bf16 arithmetic")
def test_bf16_is_refused_on_a_cpu_without_it(fixed_onnx):
    with pytest.raises(BackendError, match="no native bf16"):
        Predictor.from_checkpoint(fixed_onnx, backend="openvino", precision="bf16")


def test_fp32_is_fp32_even_where_openvino_would_pick_bf16(fixed_onnx):
    pred = Predictor.from_checkpoint(fixed_onnx, backend="openvino")
    assert pred.backend.compiled.get_property("INFERENCE_PRECISION_HINT") == ov.Type.f32
    assert pred.backend.precision == "fp32"
