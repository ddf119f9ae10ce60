"""Denormal weights are flushed when a model is written and when it is loaded; flush-to-zero is on
for torch inference and restored afterwards (``pebal_core.denormals``)."""

from __future__ import annotations

import threading
from importlib import resources

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from pebal_core.denormals import (
    count_denormals,
    flush_denormals,
    flush_to_zero,
    flushing_denormals,
)
from pebal_core.export.onnx import export_onnx
from pebal_core.model_store import MODELS, model_path
from pebal_core.models import build_model, list_models
from pebal_core.models.checkpoint import load_model, read_checkpoint, save_checkpoint
from pebal_core.runtime import Predictor

SMALLEST_NORMAL = 2.0**-126
"""The smallest positive normal float32, written out (IEEE 754), independent of torch.finfo."""
REAL_CHECKPOINTS = {
    "models/enet_cityscapes_void_yurnero14/model_best.pth": "enet",
    "models/espnet_p2q8_cityscapes_sacmehta/espnet_p_2_q_8.safetensors": "espnet_p2q8",
    "models/espnetv2_s2_cityscapes_sacmehta/espnetv2_s_2.0_city_1024x512.safetensors": "espnetv2_s2",
    "models/dabnet_cityscapes_reagan1311/dabnet_cityscapes.safetensors": "dabnet",
}
"""The real Cityscapes checkpoints of the realdata folder and the zoo architecture each loads into."""
CLASSIFIER = "final.6.weight"
"""State_dict key of the classifier weight of ``resnet18`` (``model.output_conv``)."""


def numpy_denormals(array: np.ndarray) -> np.ndarray:
    """Reference mask in float64 arithmetic: non-zero and below the smallest normal float32."""
    values = np.abs(np.asarray(array, dtype=np.float64))
    return (values > 0) & (values < SMALLEST_NORMAL)


def with_denormals(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(20, 36, 3, 3, generator=g)
    tiny = torch.tensor(SMALLEST_NORMAL)
    w.view(-1)[::7] = tiny * torch.rand(w.numel() // 7 + 1, generator=g)[: w.view(-1)[::7].numel()] * 0.999
    w.view(-1)[1] = -tiny / 2
    w.view(-1)[2] = tiny  # the smallest normal number stays
    return {"w": w, "b": torch.tensor([tiny / 4, 1.0, 0.0]), "steps": torch.tensor([3, 0])}


def test_flush_sets_exactly_the_denormals_to_zero():
    sd = with_denormals()
    original = {k: v.clone() for k, v in sd.items()}
    expected = sum(int(numpy_denormals(v.numpy()).sum()) for v in sd.values() if v.is_floating_point())
    assert expected > 100
    assert count_denormals(sd) == expected
    assert flush_denormals(sd) == expected
    for key, value in sd.items():
        mask = numpy_denormals(original[key].numpy()) if value.is_floating_point() else np.zeros(value.shape, bool)
        assert np.all(value.numpy()[mask] == 0)
        assert np.array_equal(value.numpy()[~mask], original[key].numpy()[~mask]), "normal values are untouched"
    assert count_denormals(sd) == 0 and flush_denormals(sd) == 0


def test_save_writes_no_denormal_and_leaves_the_live_model_alone(tmp_path):
    model = build_model("resnet18", width=0.25)
    with torch.no_grad():
        model.output_conv.weight.view(-1)[:50] = SMALLEST_NORMAL / 8
        model.output_conv.weight.view(-1)[50] = -SMALLEST_NORMAL / 3
    assert count_denormals(model) == 51
    for suffix in (".safetensors", ".pt"):
        path = save_checkpoint(model, tmp_path / f"m{suffix}")
        assert count_denormals(model) == 51, "a training run's model keeps computing with its own weights"
        stored = read_checkpoint(path).state_dict
        assert sum(int(numpy_denormals(v.numpy()).sum()) for v in stored.values() if v.is_floating_point()) == 0
        assert torch.equal(stored[CLASSIFIER].view(-1)[51:], model.output_conv.weight.view(-1)[51:])
    with torch.no_grad():
        model.output_conv.weight.view(-1)[60:70] = 1e-6  # a float16 denormal but a normal float32: it stays
    stored = read_checkpoint(save_checkpoint(model, tmp_path / "half.safetensors", half=True)).state_dict
    assert torch.equal(stored[CLASSIFIER].view(-1)[60:70], torch.full((10,), 1e-6).half())
    assert stored[CLASSIFIER].view(-1)[60] != 0


def test_load_flushes_and_records_how_many(tmp_path):
    model = build_model("resnet18", width=0.25)
    sd = model.state_dict()
    sd[CLASSIFIER].view(-1)[:7] = SMALLEST_NORMAL / 16
    path = tmp_path / "raw.pt"
    torch.save(sd, path)  # a bare state_dict written by someone else, denormals included
    loaded = load_model(path, arch="resnet18", width=0.25)
    assert count_denormals(loaded) == 0
    assert loaded.checkpoint_metadata["denormals_flushed"] == 7


def test_onnx_export_holds_no_denormal(tmp_path):
    model = build_model("resnet18", width=0.25)
    with torch.no_grad():
        model.output_conv.weight.view(-1)[:9] = SMALLEST_NORMAL / 4
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    path = tmp_path / "raw.pt"
    torch.save(sd, path)
    ckpt = save_checkpoint(model, tmp_path / "m.safetensors")
    out = export_onnx(ckpt, tmp_path / "m.onnx", input_size=(64, 96))
    graph = onnx.load(str(out)).graph
    arrays = [numpy_helper.to_array(t) for t in graph.initializer]
    assert sum(a.size for a in arrays if a.dtype.kind == "f") > 10_000
    assert sum(int(numpy_denormals(a).sum()) for a in arrays if a.dtype.kind == "f") == 0


@pytest.mark.parametrize("name", sorted(MODELS))
def test_shipped_models_hold_no_denormal_in_file_or_after_loading(name):
    path = model_path(name)
    stored = read_checkpoint(path).state_dict
    assert sum(int(numpy_denormals(v.float().numpy()).sum()) for v in stored.values() if v.is_floating_point()) == 0
    model = load_model(path)
    assert count_denormals(model) == 0 and model.checkpoint_metadata["denormals_flushed"] == 0


def test_the_assets_package_holds_only_known_models():
    files = {p.name for p in resources.files("pebal_core.assets").iterdir() if p.name.endswith(".safetensors")}
    assert files == {m.resource for m in MODELS.values()}, "every shipped weight file is checked above"


@pytest.mark.realdata
@pytest.mark.parametrize("relative", sorted(REAL_CHECKPOINTS))
def test_real_checkpoints_hold_no_denormal_after_loading(relative, realdata):
    arch = REAL_CHECKPOINTS[relative]
    if arch not in list_models():
        pytest.skip(f"{arch} is not in this zoo")
    path = realdata / relative
    raw = read_checkpoint(path).state_dict
    before = sum(int(numpy_denormals(v.numpy()).sum()) for v in raw.values() if v.dtype == torch.float32)
    model = load_model(path, arch=arch)
    assert count_denormals(model) == 0
    assert model.checkpoint_metadata["denormals_flushed"] == before


def _tiny_times_one() -> float:
    return float((torch.tensor([SMALLEST_NORMAL / 4]) * 1.0).item())


def test_flush_to_zero_is_on_inside_and_restored_after():
    def body(out: dict) -> None:
        out["before"] = flushing_denormals()
        with flush_to_zero():
            out["inside"] = _tiny_times_one()
            with flush_to_zero():
                pass
            out["inside_after_nested"] = _tiny_times_one()
        out["after"] = _tiny_times_one()
        with flush_to_zero(enabled=False):
            out["disabled"] = _tiny_times_one()

    out: dict = {}
    thread = threading.Thread(target=body, args=(out,))  # a fresh thread: its mode is the process default
    thread.start()
    thread.join()
    assert out["before"] is False
    assert out["inside"] == 0.0 and out["inside_after_nested"] == 0.0
    assert out["after"] == SMALLEST_NORMAL / 4 and out["disabled"] == SMALLEST_NORMAL / 4


def test_torch_backend_answers_the_same_with_and_without_flush_to_zero():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)
    model = load_model(model_path("default"))
    on = Predictor.from_model(model)
    labels_on, score_on = on.predict(rgb)
    assert on.backend.flush_denormal
    off = Predictor.from_model(model)
    off.backend.flush_denormal = False
    labels_off, score_off = off.predict(rgb)
    assert np.array_equal(labels_on, labels_off)
    assert np.abs(score_on - score_off).max() <= 1e-5
