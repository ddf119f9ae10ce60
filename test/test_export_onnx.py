"""ONNX export: every zoo architecture, fixed and dynamic size, run by real onnxruntime (CPU)
and compared with the eager torch pipeline (normalise -> network -> energy-score head)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from _export_models import EXPORT_SIZE, STORED_POINT, camera_like

from pebal_core.alarms.operating_point import resolve_operating_point
from pebal_core.export.onnx import ExportError, export_onnx
from pebal_core.models import build_model, list_models
from pebal_core.models.checkpoint import load_model
from pebal_core.onnx_contract import read_metadata
from pebal_core.preprocessing import normalize_images
from pebal_core.scoring import free_energy, labels_and_score
from pebal_core.version import __version__

SIZE = EXPORT_SIZE


class _Checkpoints:
    def __init__(self, shared):
        self.shared = shared

    def __getitem__(self, arch):
        return self.shared.checkpoint(arch)


@pytest.fixture(scope="module")
def checkpoints(shared_exports):
    """``checkpoints[arch]``: the session's realistic checkpoint of ``arch`` (made on first use)."""
    return _Checkpoints(shared_exports)


def torch_reference(checkpoint, images: np.ndarray, smoothing: bool = True):
    """The eager pipeline: (labels uint8, score float32, logits) for uint8 N x 3 x H x W images."""
    model = load_model(checkpoint)
    with torch.inference_mode():
        logits = model(normalize_images(torch.from_numpy(images), model.normalization))
        labels, score = labels_and_score(logits, smoothing)
    return labels.numpy(), score.numpy(), logits.numpy()


def run_onnx(path, images: np.ndarray, outputs=None):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(outputs, {"image": images})


def assert_matches(onnx_out, ref):
    labels, score = onnx_out[:2]
    ref_labels, ref_score = ref[:2]
    assert labels.dtype == np.uint8 and score.dtype == np.float32
    assert labels.shape == ref_labels.shape and score.shape == ref_score.shape
    agreement = (labels == ref_labels).mean()
    assert agreement >= 0.999, f"labels agree on only {100 * agreement:.3f}% of pixels"
    assert np.abs(score - ref_score).max() <= 1e-3


@pytest.mark.parametrize("arch", sorted(list_models()))
def test_fixed_size_export_matches_torch(shared_exports, checkpoints, arch):
    path = shared_exports.onnx(arch)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (inp,) = proto.graph.input
    assert inp.name == "image" and inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_value for d in inp.type.tensor_type.shape.dim] == [1, 3, *SIZE]
    assert [o.name for o in proto.graph.output] == ["labels", "score"]

    images = camera_like(*SIZE)
    assert_matches(run_onnx(path, images), torch_reference(checkpoints[arch], images))


STATIC_ONLY = {"enet"}
"""Architectures torch.export cannot trace with symbolic sizes (ENet: max-unpooling to computed sizes)."""


SLOW_DYNAMIC = {"espnetv2_s2"}
"""Architectures whose symbolic-size trace takes minutes (ESPNetv2: about 2,000 graph nodes, a fifth of
them the window tables of its pyramid pooling)."""

SAME_DYNAMIC_PATH = {"resnet101": "resnet50"}
"""Architectures whose dynamic-size export runs exactly the code of another one, which is tested:
ResNet-101 is ResNet-50 (Bottleneck blocks, output stride 8, the same DeepLab head) with 17 more
identical blocks in its third stage; tracing them with symbolic sizes tests nothing ResNet-50's
trace does not (its fixed-size export is still tested above)."""


@pytest.mark.parametrize(
    "arch",
    [
        pytest.param(a, marks=pytest.mark.slow) if a in SLOW_DYNAMIC else a
        for a in sorted(set(list_models()) - STATIC_ONLY - set(SAME_DYNAMIC_PATH))
    ],
)
def test_dynamic_size_export_matches_torch_at_several_sizes(shared_exports, checkpoints, arch):
    path = shared_exports.onnx(arch, dynamic=True)
    dims = onnx.load(str(path)).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_value == 1 and dims[1].dim_value == 3
    assert dims[2].dim_param and dims[3].dim_param, "height and width must be symbolic"
    divisor = load_model(checkpoints[arch]).size_divisor
    # neither the tracing size nor (where the network allows) multiples of the output stride
    for size in ((48, 80), tuple(-(-side // divisor) * divisor for side in (72, 100))):
        images = camera_like(*size, seed=sum(size))
        assert_matches(run_onnx(path, images), torch_reference(checkpoints[arch], images))


def test_collapsed_dynamic_variants_are_built_from_the_same_modules():
    """What :data:`SAME_DYNAMIC_PATH` claims: the collapsed architecture is built from exactly the
    module classes of the tested one, with the same options."""
    for collapsed, tested in SAME_DYNAMIC_PATH.items():
        a, b = build_model(collapsed), build_model(tested)
        assert {type(m) for m in a.modules()} == {type(m) for m in b.modules()}
        assert a.arch_kwargs == b.arch_kwargs and a.size_divisor == b.size_divisor


@pytest.mark.parametrize("arch", sorted(STATIC_ONLY))
def test_dynamic_export_that_comes_out_fixed_is_refused(tmp_path, checkpoints, arch):
    with pytest.raises(ExportError, match="cannot be exported with a dynamic size"):
        export_onnx(checkpoints[arch], tmp_path / f"{arch}.onnx", input_size=SIZE, dynamic=True)
    assert not (tmp_path / f"{arch}.onnx").exists()


def test_metadata_props_describe_the_model(shared_exports, checkpoints):
    ckpt = checkpoints["resnet18"]
    path = shared_exports.onnx("resnet18")
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    model = load_model(ckpt)
    assert props["arch"] == "resnet18"
    assert json.loads(props["arch_kwargs"]) == {"width": 0.25}
    assert props["input_size"] == f"{SIZE[0]}x{SIZE[1]}"
    assert json.loads(props["normalization"]) == model.normalization.to_dict()
    assert "score_threshold" not in props  # the operating points travel once, in checkpoint_metadata
    assert props["pebal_version"] == __version__
    assert props["source_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert json.loads(props["outputs"]) == ["labels", "score"]
    assert json.loads(props["smoothing"]) is True
    meta = read_metadata(path)
    assert meta["input_size"] == SIZE and meta["arch"] == "resnet18"
    assert resolve_operating_point(meta).point == STORED_POINT  # threshold and settings, as the checkpoint's


def test_unsmoothed_score_and_logits_output(tmp_path, checkpoints):
    ckpt = checkpoints["resnet18"]
    path = export_onnx(ckpt, tmp_path / "m.onnx", input_size=SIZE, smoothing=False, logits=True)
    images = camera_like(*SIZE, seed=3)
    labels, score, logits = run_onnx(path, images)
    _, _, ref_logits = torch_reference(ckpt, images)
    assert logits.shape == (1, 20, *SIZE)
    assert np.abs(logits - ref_logits).max() <= 1e-3
    raw_energy = free_energy(torch.from_numpy(ref_logits)).numpy()
    assert np.abs(score - raw_energy).max() <= 1e-3
    assert read_metadata(path)["smoothing"] is False


def test_graph_uses_only_tensorrt_friendly_head_ops(shared_exports):
    """TensorRT imports ReduceLogSumExp as log(sum(exp(x))) (overflows in FP16) and has no uint8
    arithmetic, so the head must be max-shifted exp/sum/log and ArgMax + Cast."""
    path = shared_exports.onnx("resnet18")
    graph = onnx.load(str(path)).graph
    ops = {n.op_type for n in graph.node}
    assert "ReduceLogSumExp" not in ops and "ArgMax" in ops
    producer = {out: n for n in graph.node for out in n.output}
    cast = producer["labels"]
    assert cast.op_type == "Cast" and producer[cast.input[0]].op_type == "ArgMax"


def test_export_formulation_equals_eager_head(monkeypatch):
    """The export-time branches of the head (argmax, explicit max-shift) equal the eager ones,
    including ties (lowest channel wins) and logits far beyond exp's float32 range."""
    torch.manual_seed(0)
    logits = torch.randn(2, 20, 9, 11) * 15
    logits[0, 3, 2, 2] = logits[0, 7, 2, 2] = logits[0, :19, 2, 2].max() + 1  # a tie
    logits[1, :, 4, 4] += 500.0  # exp(500) overflows float32
    eager = labels_and_score(logits, smoothing=True)
    calls = []
    monkeypatch.setattr(torch.onnx, "is_in_onnx_export", lambda: calls.append(1) or True)
    exported = labels_and_score(logits, smoothing=True)
    assert len(calls) >= 2, "both head functions must consult torch.onnx.is_in_onnx_export()"
    assert torch.equal(exported[0], eager[0]) and exported[0][0, 2, 2] == 3
    assert torch.isfinite(exported[1]).all()
    torch.testing.assert_close(exported[1], eager[1], rtol=1e-6, atol=1e-4)


def test_bad_requests_are_refused_clearly(tmp_path, checkpoints):
    ckpt = checkpoints["resnet18"]
    with pytest.raises(ValueError, match="opset 16 is too old"):
        export_onnx(ckpt, tmp_path / "m.onnx", input_size=SIZE, opset=16)
    with pytest.raises(ValueError, match="must end in .onnx"):
        export_onnx(ckpt, tmp_path / "m.bin", input_size=SIZE)
    with pytest.raises(ValueError, match="outside the exportable range"):
        export_onnx(ckpt, tmp_path / "m.onnx", input_size=(8, 8))
    assert not (tmp_path / "m.onnx").exists()

    plain = tmp_path / "plain.onnx"
    node = onnx.helper.make_node("Identity", ["x"], ["y"])
    value = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph(
        [node], "g", [value("x", onnx.TensorProto.FLOAT, [1])], [value("y", onnx.TensorProto.FLOAT, [1])]
    )
    onnx.save(onnx.helper.make_model(graph), str(plain))
    with pytest.raises(ExportError, match="pebal export onnx"):
        read_metadata(plain)
