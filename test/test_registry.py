"""The one registry type: look-up, registration, and the error for a name that is not there, on
a registry built here and on the four registries of the package."""

import pytest

from pebal_core.backends import BACKENDS, create_backend
from pebal_core.data.anomaly_sets import ANOMALY_DATASETS, build_anomaly_dataset
from pebal_core.devices import torch_device
from pebal_core.models import build_model
from pebal_core.models.registry import MODELS, list_models
from pebal_core.registry import Registry, UnknownNameError


def test_register_directly_and_as_decorator_in_order():
    reg: Registry[object] = Registry("colour")
    assert reg.register("red", (255, 0, 0)) == (255, 0, 0)

    @reg.register("blue")
    def blue():
        return (0, 0, 255)

    assert reg.names() == ["red", "blue"] == list(reg)
    assert reg["blue"] is blue and "red" in reg and "green" not in reg and len(reg) == 2
    with pytest.raises(ValueError, match="colour 'red' is registered twice"):
        reg.register("red", (1, 1, 1))
    assert reg["red"] == (255, 0, 0)  # the first entry is kept
    with pytest.raises(ValueError, match="needs a non-empty name"):
        reg.register("", 1)


def test_unknown_name_lists_the_names_and_suggests_close_ones():
    reg: Registry[int] = Registry("colour")
    for i, name in enumerate(("red", "green", "grey")):
        reg.register(name, i)
    with pytest.raises(UnknownNameError) as err:
        reg["gren"]
    assert str(err.value) == "unknown colour 'gren' (did you mean 'green' or 'grey'?); available: red, green, grey"
    assert isinstance(err.value, KeyError) and isinstance(err.value, ValueError)
    with pytest.raises(UnknownNameError) as err:
        reg["purple"]
    assert str(err.value) == "unknown colour 'purple'; available: red, green, grey"  # no close name, no hint
    with pytest.raises(UnknownNameError):
        reg[["not", "hashable"]]


def test_the_package_registries_use_it():
    assert {"wrn38", "resnet101", "resnet18", "enet"} <= set(MODELS)
    assert set(list_models()) == set(MODELS)
    assert list(BACKENDS) == ["auto", "torch", "onnxruntime", "openvino", "tensorrt"]
    assert "validation/<SET>" in ANOMALY_DATASETS
    with pytest.raises(KeyError, match=r"unknown model 'resnet5' \(did you mean 'resnet50'"):
        build_model("resnet5")
    with pytest.raises(ValueError, match=r"unknown backend 'onnxruntim' \(did you mean 'onnxruntime'\?\)"):
        create_backend("onnxruntim", "model.pth")
    with pytest.raises(ValueError, match=r"unknown anomaly dataset 'road_anomly' \(did you mean 'road_anomaly'"):
        build_anomaly_dataset("road_anomly", ".")


def test_torch_device_names_the_setting_and_the_fix():
    assert torch_device("cpu").type == "cpu"
    assert torch_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ValueError, match=r"--device 'gpu'.*use cpu, cuda or cuda:N"):
        torch_device("gpu", "--device")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda:0' requested but torch sees no CUDA GPU; use device cpu"):
            torch_device("cuda:0")
