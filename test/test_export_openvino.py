"""int8 OpenVINO IRs from PEBAL ONNX exports (``pebal_core.export.openvino``, ``pebal export openvino``):
real NNCF quantisation, the energy head left in float, the metadata carried, the openvino backend
running the result."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import openvino as ov
import pytest
from _export_models import EXPORT_SIZE, STORED_POINT, camera_like

from pebal_core.alarms.operating_point import resolve_operating_point
from pebal_core.export.openvino import QUANTIZATION_KEY, head_operations, quantize_int8
from pebal_core.images import write_rgb
from pebal_core.onnx_contract import ExportError
from pebal_core.runtime import Predictor

SIZE = EXPORT_SIZE


@pytest.fixture(scope="module")
def checkpoint(shared_exports):
    return shared_exports.checkpoint("resnet18")


@pytest.fixture(scope="module")
def onnx_file(shared_exports):
    return shared_exports.onnx("resnet18")


def images(folder, seeds) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for seed in seeds:
        path = folder / f"{seed:03d}.png"
        write_rgb(path, np.ascontiguousarray(camera_like(*SIZE, seed)[0].transpose(1, 2, 0)))
        out.append(path)
    return out


@pytest.fixture(scope="module")
def int8_ir(tmp_path_factory, onnx_file):
    folder = tmp_path_factory.mktemp("int8")
    record = quantize_int8(onnx_file, folder / "m.int8.xml", images(folder / "calib", range(12)), progress=None)
    return folder / "m.int8.xml", record


def _feeds_from_fake_quantize(op) -> bool:
    return any(v.get_source_output().get_node().get_type_name() == "FakeQuantize" for v in op.inputs())


def test_head_operations_are_the_energy_head_after_the_logits(onnx_file):
    model = ov.Core().read_model(str(onnx_file))
    head = head_operations(model)
    types = {op.get_friendly_name(): op.get_type_name() for op in model.get_ordered_ops()}
    kinds = {types[name] for name in head}
    assert {"Exp", "Log", "ReduceSum", "TopK"} <= kinds, kinds
    network_convs = [n for n, t in types.items() if t == "Convolution"]
    assert network_convs and not set(network_convs) & set(head), "no network convolution counts as head"


def test_int8_ir_runs_int8_with_the_head_in_float_and_the_metadata_kept(int8_ir, onnx_file, checkpoint):
    path, record = int8_ir
    assert path.with_suffix(".bin").is_file()
    model = ov.Core().read_model(str(path))
    fake_quantize = [op for op in model.get_ordered_ops() if op.get_type_name() == "FakeQuantize"]
    assert len(fake_quantize) >= 10, "the network's convolutions are quantised"
    by_name = {op.get_friendly_name(): op for op in model.get_ordered_ops()}
    head = head_operations(model)
    assert head and not [name for name in head if _feeds_from_fake_quantize(by_name[name])]
    assert record["precision"] == "int8" and record["calibration_images"] == 12
    assert record["head_operations_in_float"] == len(head_operations(ov.Core().read_model(str(onnx_file))))

    pred = Predictor.from_checkpoint(path, backend="openvino")
    assert pred.backend.precision == "int8" and pred.input_size == SIZE
    assert pred.metadata["quantization"]["precision"] == "int8"
    assert resolve_operating_point(pred.metadata).point == STORED_POINT and pred.metadata["arch"] == "resnet18"
    rgb = np.ascontiguousarray(camera_like(*SIZE, 99)[0].transpose(1, 2, 0))
    labels, score = pred.predict(rgb)
    ref_labels, ref_score = Predictor.from_checkpoint(checkpoint, input_size=SIZE).predict(rgb)
    assert labels.dtype == np.uint8 and score.dtype == np.float32
    # an untrained network's logits lie close together, so int8 rounding flips many argmaxes (chance: 1 in 19);
    # how well int8 keeps a trained model's answers is the accuracy gate's job (benchmarks/bench_cpu.py)
    assert (labels == ref_labels).mean() >= 0.5
    assert np.corrcoef(score.ravel(), ref_score.ravel())[0, 1] >= 0.9
    assert not np.array_equal(score, ref_score), "int8 arithmetic ran"
    with pytest.raises(ValueError, match="precision 'bf16'"):
        Predictor.from_checkpoint(path, backend="openvino", precision="bf16")


def test_accuracy_control_meets_its_label_budget(onnx_file, tmp_path):
    calibration = images(tmp_path / "calib", range(8))
    validation = images(tmp_path / "val", range(100, 104))
    record = quantize_int8(
        onnx_file, tmp_path / "ac.xml", calibration, validation, max_label_drop=0.02, progress=None
    )
    assert record["validation"]["images"] == 4
    assert record["validation"]["label_agreement"] >= 0.98
    model = ov.Core().read_model(str(tmp_path / "ac.xml"))
    assert model.has_rt_info([QUANTIZATION_KEY, "validation"])


def test_bad_requests_are_refused(onnx_file, tmp_path):
    calibration = images(tmp_path / "calib", range(2))
    with pytest.raises(ValueError, match="needs calibration images"):
        quantize_int8(onnx_file, tmp_path / "m.xml", [], progress=None)
    with pytest.raises(ValueError, match="must not be calibration images"):
        quantize_int8(onnx_file, tmp_path / "m.xml", calibration, calibration[:1], progress=None)
    with pytest.raises(ValueError, match="must end in .xml"):
        quantize_int8(onnx_file, tmp_path / "m.bin", calibration, progress=None)
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 4, 4])
    y = helper.make_tensor_value_info("score", TensorProto.FLOAT, [1, 3, 4, 4])
    plain = tmp_path / "plain.onnx"
    graph = helper.make_graph([helper.make_node("Relu", ["image"], ["score"])], "g", [x], [y])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(plain))
    with pytest.raises(ExportError, match="carries no PEBAL metadata"):
        quantize_int8(plain, tmp_path / "m.xml", calibration, progress=None)


def test_cli_export_openvino(onnx_file, tmp_path):
    images(tmp_path / "calib", range(4))
    out = subprocess.run(
        [sys.executable, "-m", "pebal_core.cli", "export", "openvino", str(onnx_file), "-o", str(tmp_path / "q.xml"),
         "--calibration-images", str(tmp_path / "calib")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "4 calibration images" in out.stdout and (tmp_path / "q.bin").is_file()
    missing = subprocess.run(
        [sys.executable, "-m", "pebal_core.cli", "export", "openvino", str(onnx_file),
         "--calibration-images", str(tmp_path / "absent")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert missing.returncode == 2 and "calibration image folder not found" in missing.stderr
