"""The model zoo: reference layout of WideResNet38 DeepLabv3+, shapes, the fine-tuned block."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from pebal_core.models import build_model, list_models


@pytest.fixture(scope="module")
def wrn38():
    return build_model("wrn38", num_classes=20).eval()


def test_wrn38_state_dict_equals_reference_layout(wrn38, reference_dir):
    layout = json.loads((reference_dir / "wrn38_deeplabv3plus_layout.json").read_text())
    sd = wrn38.state_dict()
    assert list(sd) == list(layout), "keys (and their order) must equal the reference layout"
    for key, shape in layout.items():
        assert list(sd[key].shape) == shape, key


def test_wrn38_parameter_counts_match_paper(wrn38):
    total = sum(p.numel() for p in wrn38.parameters())
    final = sum(p.numel() for p in wrn38.finetune_parameters())
    assert round(total / 1e6, 1) == 137.1
    assert round(final / 1e6, 1) == 1.3


def test_wrn38_architecture_facts(wrn38):
    # dilation 2 in mod5, 4 in mod6/mod7; stride-2 first block of mod4; dropout 0.3/0.5
    assert wrn38.mod5.block1.convs.conv1.dilation == (2, 2)
    assert wrn38.mod6.block1.convs.conv2.dilation == (4, 4)
    assert wrn38.mod7.block1.convs.conv2.dilation == (4, 4)
    assert wrn38.mod4.block1.convs.conv1.stride == (2, 2)
    assert wrn38.mod6.block1.convs.dropout.p == 0.3
    assert wrn38.mod7.block1.convs.dropout.p == 0.5
    assert [m[0].dilation for m in wrn38.aspp.features[1:]] == [(12, 12), (24, 24), (36, 36)]
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        low, high = wrn38._trunk(x)
    assert low.shape == (1, 128, 32, 48)  # mod2 at stride 2
    assert high.shape == (1, 4096, 8, 12)  # output stride 8


# torchvision's ImageNet ResNets minus their fc layer (well-known totals: 11,689,512 /
# 25,557,032 / 44,549,160 parameters including fc 512x1000+1000 or 2048x1000+1000).
TRUNK_PARAMS = {
    "resnet18": 11_689_512 - 513_000,
    "resnet50": 25_557_032 - 2_049_000,
    "resnet101": 44_549_160 - 2_049_000,
}


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnet101"])
def test_resnet_trunks_match_torchvision_sizes(name):
    model = build_model(name)
    trunk = sum(
        p.numel() for n, p in model.named_parameters() if n.split(".")[0] in ("conv1", "bn1") or n.startswith("layer")
    )
    assert trunk == TRUNK_PARAMS[name]


@pytest.mark.parametrize("name", sorted(set(list_models()) - {"wrn38"}))  # wrn38: its own tests below
def test_every_model_returns_20_channels_at_input_size(name):
    model = build_model(name).eval()
    h, w = (-(-side // model.size_divisor) * model.size_divisor for side in (72, 104))  # 80 x 112 for ESPNetv2
    x = torch.randn(2, 3, h, w)
    with torch.no_grad():
        out = model(x)
        split = model.head(model.features(x), (h, w))
    assert out.shape == (2, 20, h, w)
    torch.testing.assert_close(out, split, rtol=0, atol=0)


def test_wrn38_forward_and_finetune_parameters(wrn38):
    with torch.no_grad():
        out = wrn38(torch.randn(1, 3, 40, 56))
    assert out.shape == (1, 20, 40, 56)
    assert {id(p) for p in wrn38.finetune_parameters()} == {id(p) for p in wrn38.final.parameters()}
    final = wrn38.final
    assert [type(m) for m in final] == [
        nn.Conv2d,
        nn.BatchNorm2d,
        nn.ReLU,
        nn.Conv2d,
        nn.BatchNorm2d,
        nn.ReLU,
        nn.Conv2d,
    ]
    assert final[0].in_channels == 304 and final[6].out_channels == 20


def test_output_is_bilinear_align_corners_upsample_of_final():
    model = build_model("resnet18", width=0.25).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        low = model.final(model.features(x))
        expected = torch.nn.functional.interpolate(low, size=(64, 64), mode="bilinear", align_corners=True)
        torch.testing.assert_close(model(x), expected)


def test_unknown_model_names_the_choices():
    with pytest.raises(KeyError, match="available: .*wrn38"):
        build_model("vgg16")


def test_build_records_arch_and_kwargs():
    model = build_model("resnet18", width=0.5)
    assert model.arch == "resnet18" and model.arch_kwargs == {"width": 0.5}


def test_forward_padded_equals_manual_padding_and_predictor_takes_any_size(tmp_path):
    from pebal_core.models.checkpoint import save_checkpoint
    from pebal_core.runtime import Predictor

    model = build_model("espnet_p2q8").eval()  # needs multiples of 8
    x = torch.randn(1, 3, 50, 70)
    with pytest.raises(ValueError):
        model(x)
    with torch.no_grad():
        padded = torch.nn.functional.pad(x, (0, 2, 0, 6))
        torch.testing.assert_close(model.forward_padded(x), model(padded)[:, :, :50, :70], rtol=0, atol=0)
    predictor = Predictor.from_checkpoint(save_checkpoint(model, tmp_path / "e.safetensors"))
    labels, score = predictor.predict(np.zeros((50, 70, 3), np.uint8))
    assert labels.shape == score.shape == (50, 70)
