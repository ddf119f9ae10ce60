"""DABNet and ESPNetv2 (s=2.0) in the zoo: reference key layouts, the real Cityscapes checkpoints,
their input normalisations, architecture facts, the PEBAL fine-tuning blocks, the Cityscapes
loader on the real ``cityscapes_gtfine_8`` tree, and segmentation quality on those real frames.

Quality bound: ``docs/data_sources.md`` reports, for the original code of each network on one
Cityscapes frame at the input size it was trained at, a pixel accuracy of 0.963 (DABNet, full
2048x1024) and 0.947 (ESPNetv2, 1024x512). The ``cityscapes_gtfine_8`` frames are Cityscapes
*train* frames (both networks saw them), whose accuracies spread by about +-1.5 points around
those figures, so a correct re-implementation must reach the published figure minus one point
(``ACCURACY_BOUND``). Feeding DABNet BGR instead of RGB costs 1.6 (1024x512) to 2.5 (full size) points
on the first frame.
"""

from __future__ import annotations

import copy
import json
import math
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from node_harness import Probe, RosSession, as_array, camera_info_msg, first_outputs_from_process, stop_process
from safetensors.torch import load_file as load_safetensors
from scipy.ndimage import maximum_filter, minimum_filter
from torch import nn

from pebal_core.data.cityscapes import Cityscapes
from pebal_core.denormals import flush_denormals
from pebal_core.images import read_label
from pebal_core.labels import NUM_CLASSES
from pebal_core.metrics import confusion_matrix
from pebal_core.models import build_model, list_models
from pebal_core.models.checkpoint import load_model, save_checkpoint
from pebal_core.models.dabnet import STAGE2_DILATIONS
from pebal_core.models.espnetv2 import ChannelShuffle, adaptive_avg_pool, window_table_ops
from pebal_core.preprocessing import DABNET_CITYSCAPES, IMAGENET, image_to_tensor
from pebal_core.runtime import Predictor
from pebal_core.training_modes import TRAINING_MODES, finetune_logits, freeze_for_finetuning
from pebal_ros.node_parameters import check_value

CHECKPOINTS = {
    "dabnet": "models/dabnet_cityscapes_reagan1311/dabnet_cityscapes.safetensors",
    "espnetv2_s2": "models/espnetv2_s2_cityscapes_sacmehta/espnetv2_s_2.0_city_1024x512.safetensors",
}
LAYOUTS = {"dabnet": "dabnet_cityscapes_layout.json", "espnetv2_s2": "espnetv2_s2_cityscapes_layout.json"}
OUTPUTS = {"dabnet": 19, "espnetv2_s2": 20}
"""Output channels of the real checkpoints (docs/data_sources.md)."""
PARAMETERS = {"dabnet": 756_643, "espnetv2_s2": 789_242}
"""Parameter counts of the real checkpoints (docs/data_sources.md)."""
SIZES = {"dabnet": (64, 96), "espnetv2_s2": (64, 128), "espnet_p2q8": (64, 96)}
"""Small input sizes the unit tests run at (multiples of each size divisor)."""
CITYSCAPES = "cityscapes_gtfine_8"
# arch -> (frames of cityscapes_gtfine_8, network input H x W, published pixel accuracy)
QUALITY = {
    "dabnet": (("aachen/aachen_000000_000019",), (1024, 2048), 0.963),
    "espnetv2_s2": (("aachen/aachen_000000_000019", "bochum/bochum_000000_000313"), (512, 1024), 0.947),
}
ACCURACY_BOUND = 0.01
"""How far below the published one-frame accuracy the frames here may fall (module docstring)."""


@pytest.fixture(scope="module")
def real_models(realdata):
    return {arch: load_model(realdata / path, arch=arch) for arch, path in CHECKPOINTS.items()}


@pytest.fixture(scope="module")
def frames(realdata):
    data = Cityscapes(realdata / CITYSCAPES, "train")
    return {item["name"]: item for item in (data[i] for i in range(len(data)))}


def _random_statistics(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and PReLU slopes, so that every layer matters."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
        if isinstance(m, nn.PReLU):
            m.weight.data.uniform_(0.05, 0.4)
    return model.eval()


# ---------------------------------------------------------------- layouts and checkpoints


@pytest.mark.parametrize("arch", sorted(CHECKPOINTS))
def test_state_dict_equals_reference_layout(arch, reference_dir):
    layout = json.loads((reference_dir / LAYOUTS[arch]).read_text())
    sd = build_model(arch, num_classes=OUTPUTS[arch]).state_dict()
    assert list(sd) == list(layout), "keys (and their order) must equal the reference layout"
    for key, shape in layout.items():
        assert list(sd[key].shape) == shape, key


def test_zoo_lists_both_and_the_command_line_shows_them():
    assert {"dabnet", "espnetv2_s2"} <= set(list_models())
    out = subprocess.run(
        [sys.executable, "-m", "pebal_core.cli", "models"], capture_output=True, text=True, timeout=120, check=True
    )
    for arch in CHECKPOINTS:
        assert any(line.split()[:1] == [arch] for line in out.stdout.splitlines()), out.stdout
    assert check_value("arch", "dabnet") is None and check_value("arch", "espnetv2_s2") is None


@pytest.mark.realdata
@pytest.mark.parametrize("arch", sorted(CHECKPOINTS))
def test_real_checkpoint_loads_strictly_with_every_tensor(arch, realdata, real_models):
    expected = load_safetensors(str(realdata / CHECKPOINTS[arch]))
    flushed = flush_denormals(expected)  # loading sets denormal weights to zero (DABNet 2, ESPNetv2 255)
    model = real_models[arch]
    assert model.checkpoint_metadata["source_format"] == "state_dict"
    assert flushed > 0 and model.checkpoint_metadata["denormals_flushed"] == flushed
    assert model.num_classes == 20
    got = model.state_dict()
    assert set(got) == set(expected)
    clf = "classifier.0.conv.weight"
    for key, value in expected.items():
        if arch == "dabnet" and key == clf:  # 19 rows extended by a 20th (the abstention channel)
            assert got[key].shape[0] == 20 and torch.equal(got[key][:19], value)
        else:
            assert torch.equal(got[key], value), key
    exact = load_model(realdata / CHECKPOINTS[arch], arch=arch, num_classes=OUTPUTS[arch])
    assert sum(p.numel() for p in exact.parameters()) == PARAMETERS[arch]


# ---------------------------------------------------------------- normalisation


def test_dabnet_normalisation_matches_the_reference_preprocessing():
    """The original code reads BGR with OpenCV, subtracts (72.3924, 82.9090, 73.1583) per B, G, R
    channel on the 0..255 scale (no std), then reorders the channels to RGB."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    rgb[0, 0] = (255, 0, 0)  # pure red: a channel-order error cannot cancel out
    bgr = rgb[:, :, ::-1].astype(np.float64) - np.array([72.3924, 82.9090, 73.1583])
    reference = bgr[:, :, ::-1].transpose(2, 0, 1)
    model = build_model("dabnet")
    assert model.normalization == DABNET_CITYSCAPES
    got = image_to_tensor(rgb, model.normalization)[0].double().numpy()
    np.testing.assert_allclose(got, reference, rtol=0, atol=1e-4)
    assert got[0, 0, 0] == pytest.approx(255 - 73.1583, abs=1e-4)  # channel 0 is red


def test_espnetv2_normalisation_is_imagenet_on_rgb():
    rgb = np.random.default_rng(1).integers(0, 256, (16, 32, 3), dtype=np.uint8)
    reference = (rgb / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    model = build_model("espnetv2_s2")
    assert model.normalization == IMAGENET
    got = image_to_tensor(rgb, model.normalization)[0].double().numpy()
    np.testing.assert_allclose(got, reference.transpose(2, 0, 1), rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", sorted(CHECKPOINTS))
def test_normalisation_is_recorded_in_saved_checkpoints(arch, tmp_path):
    model = build_model(arch)
    loaded = load_model(save_checkpoint(model, tmp_path / f"{arch}.safetensors"))
    assert loaded.arch == arch and loaded.normalization == model.normalization
    assert loaded.checkpoint_metadata["normalization"] == model.normalization.to_dict()


# ---------------------------------------------------------------- architecture facts


def test_dabnet_architecture_facts():
    model = build_model("dabnet", num_classes=19)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-3 for m in bns)
    assert all(isinstance(m.acti, nn.PReLU) for m in model.modules() if type(m).__name__ == "BNPReLU")
    assert [m.ddconv3x1.conv.dilation for m in model.DAB_Block_1] == [(2, 1)] * 3
    assert [m.ddconv1x3.conv.dilation[1] for m in model.DAB_Block_2] == list(STAGE2_DILATIONS) == [4, 4, 8, 8, 16, 16]
    module = model.DAB_Block_2[0]
    assert module.dconv3x1.conv.groups == 64 and module.conv1x1.bn_prelu is None
    assert model.init_conv[0].conv.stride == (2, 2) and model.downsample_2.conv3x3.conv.out_channels == 128
    with pytest.raises(ValueError, match="multiples of 4.*got 66x96"):
        model(torch.rand(1, 3, 66, 96))


def test_dabnet_stage1_downsampling_concatenates_a_max_pool_of_its_input():
    block = build_model("dabnet").downsample_1.eval()
    x = torch.rand(1, 35, 8, 12)
    with torch.no_grad():
        block.conv3x3.conv.weight.zero_()
        out = block(x)
    bn = block.bn_prelu.bn
    pooled = x.reshape(1, 35, 4, 2, 6, 2).amax(dim=(3, 5))  # 2x2 max-pool by hand
    pre = torch.cat([torch.zeros(1, 29, 4, 6), pooled], 1)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    normalised = (pre - bn.running_mean[:, None, None]) * scale[:, None, None] + bn.bias[:, None, None]
    expected = block.bn_prelu.acti(normalised)
    torch.testing.assert_close(out, expected)


def test_dabnet_logits_are_a_bilinear_upsampling_without_corner_alignment():
    """The logits are the 1/8-resolution classifier map resized with ``align_corners=False``: output
    column ``j`` samples the map at ``x = (j + 0.5) / 8 - 0.5`` (clamped at 0), linearly; output row 0
    samples map row 0."""
    model = _random_statistics(build_model("dabnet"))
    x = torch.rand(1, 3, 32, 64)
    with torch.no_grad():
        feats = model.features(x)
        coarse = model.classifier(feats.concat)
        out = model(x)
    assert coarse.shape[-2:] == (4, 8)
    src = (torch.arange(64) + 0.5) / 8 - 0.5  # source coordinate of each output column
    lo = src.floor().clamp(0, 7).long()
    hi = (lo + 1).clamp(max=7)
    frac = (src - lo).clamp(0, 1)
    row = coarse[0, :, 0]  # first row: y coordinate clamps to source row 0 for output rows 0..3
    expected = row[:, lo] * (1 - frac) + row[:, hi] * frac
    torch.testing.assert_close(out[0, :, 0], expected, rtol=1e-5, atol=1e-5)


def test_espnetv2_architecture_facts():
    model = build_model("espnetv2_s2")
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(m.eps == 1e-5 for m in bns)
    base = model.base_net

    def dilations(unit):
        return [c.conv.dilation[0] for c in unit.spp_dw]

    # receptive-field limits 13, 11, 9, 9, 7: kernel sizes 3, 5, 7, 9 (9 > 7 falls back to 3)
    assert dilations(base.level2_0.eesp) == [1, 2, 3, 4] and dilations(base.level3[0]) == [1, 2, 3, 4]
    assert dilations(base.level4[0]) == [1, 1, 2, 3]
    assert base.level2_0.eesp.spp_dw[0].conv.stride == (2, 2) and base.level3[0].spp_dw[0].conv.stride == (1, 1)
    assert base.level4_0.eesp.proj_1x1.conv.groups == 4 and base.level4_0.eesp.conv_1x1_exp.conv.groups == 4
    assert (len(base.level3), len(base.level4)) == (3, 7)
    assert model.merge_enc_dec_l2.expansion_layer.cbr[0].groups == math.gcd(256, 64)
    assert model.bu_dec_l4.br is None and model.bu_dec_l4.merge_layer[3].bias is not None
    with pytest.raises(ValueError, match="multiples of 16.*got 72x128"):
        model(torch.rand(1, 3, 72, 128))


def test_espnetv2_strided_unit_skips_its_activation_and_stride_one_units_are_residual():
    model = _random_statistics(build_model("espnetv2_s2"))
    unit, strided = model.base_net.level3[0], model.base_net.level3_0.eesp
    x = torch.rand(1, 256, 8, 8)
    with torch.no_grad():
        reduced = unit.proj_1x1(x)
        branches = [conv(reduced) for conv in unit.spp_dw]
        fused = torch.cat([sum(branches[: k + 1]) for k in range(4)], 1)  # hierarchical feature fusion
        expected = unit.module_act(unit.conv_1x1_exp(unit.br_after_cat(fused)) + x)
        torch.testing.assert_close(unit(x), expected)
        y = torch.rand(1, 128, 8, 8)
        reduced = strided.proj_1x1(y)
        branches = [conv(reduced) for conv in strided.spp_dw]
        assert branches[0].shape == (1, 32, 4, 4)
        fused = torch.cat([sum(branches[: k + 1]) for k in range(4)], 1)
        torch.testing.assert_close(strided(y), strided.conv_1x1_exp(strided.br_after_cat(fused)))


def test_espnetv2_input_reinforcement_reaches_every_level_at_its_size():
    model = build_model("espnetv2_s2")
    assert [model.base_net.level2_0.image_pools, model.base_net.level3_0.image_pools] == [2, 3]
    assert model.base_net.level4_0.image_pools == 4
    with torch.no_grad():
        l1, l2, l3 = model.base_net.levels_1_to_3(torch.rand(1, 3, 48, 80))
    assert [t.shape[-2:] for t in (l1, l2, l3)] == [(24, 40), (12, 20), (6, 10)]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 90), m=st.integers(1, 40), k=st.integers(1, 90), j=st.integers(1, 40))
def test_adaptive_avg_pool_equals_torchs(n, m, k, j):
    x = torch.from_numpy(np.random.default_rng(n * 1000 + m).normal(size=(1, 2, n, k)))
    window = (-(-n // m) + 1, -(-k // j) + 1)
    expected = F.adaptive_avg_pool2d(x, (m, j))
    torch.testing.assert_close(adaptive_avg_pool(x, (m, j), window), expected)
    # the tables a symbolic-size trace builds (torch operations, max_window wide), on the rows
    index, weight = window_table_ops(n, m, window[0], x)
    rows = (x.index_select(-2, index.flatten()).unflatten(-2, index.shape) * weight[:, :, None]).sum(-2)
    torch.testing.assert_close(rows, F.adaptive_avg_pool2d(x, (m, k)))


def test_channel_shuffle_equals_torchs():
    x = torch.rand(2, 50, 3, 4)
    torch.testing.assert_close(ChannelShuffle(5)(x), nn.ChannelShuffle(5)(x), rtol=0, atol=0)


# ---------------------------------------------------------------- PEBAL fine-tuning blocks


def _block_parameter_names(arch: str, block: str, names: list[str]) -> set[str]:
    """The parameters a block must train, from the checkpoint key names alone."""
    espnet_decoder = ("encoder.classifier.", "level3_C.", "br.", "up_l3.", "combine_l2_l3.", "up_l2.", "conv.")
    espnet_level3 = ("encoder.level3_0.", "encoder.level3.", "encoder.b3.")
    prefixes = {
        ("espnet_p2q8", "final"): ("conv.", "classifier."),
        ("espnet_p2q8", "decoder"): (*espnet_decoder, "classifier."),
        ("espnet_p2q8", "last_stage"): (*espnet_decoder, "classifier.", *espnet_level3),
        ("dabnet", "final"): ("classifier.",),
        ("dabnet", "decoder"): ("bn_prelu_3.", "classifier."),
        ("dabnet", "last_stage"): ("downsample_2.", "DAB_Block_2.", "bn_prelu_3.", "classifier."),
        ("espnetv2_s2", "final"): ("merge_enc_dec_l4.", "bu_br_l4.", "bu_dec_l4."),
        ("espnetv2_s2", "decoder"): ("bu_", "merge_enc_dec_"),
        ("espnetv2_s2", "last_stage"): ("bu_", "merge_enc_dec_", "base_net.level4_0.", "base_net.level4."),
    }[arch, block]
    return {n for n in names if n.startswith(prefixes)}


@pytest.mark.parametrize("arch", [*sorted(CHECKPOINTS), "espnet_p2q8"])
def test_finetune_blocks_keep_output_and_keys_and_train_exactly_their_layers(arch):
    model = _random_statistics(build_model(arch))
    x = torch.randn(2, 3, *SIZES[arch])
    keys = list(model.state_dict())
    names = {id(p): n for n, p in model.named_parameters()}
    with torch.no_grad():
        reference = model(x)
    assert model.finetune_blocks == ("final", "decoder", "last_stage")
    sizes = []
    for block in model.finetune_blocks:
        model.select_finetune_block(block)
        assert "final" not in dict(model.named_children()) and list(model.state_dict()) == keys
        trained = {names[id(p)] for p in model.finetune_parameters()}
        assert trained == _block_parameter_names(arch, block, list(names.values()))
        assert model.output_conv.out_channels == 20 and names[id(model.output_conv.weight)].startswith(
            ("classifier.", "bu_dec_l4.merge_layer.3.")
        )
        sizes.append(len(trained))
        # the trainer's path: features without autograd, the block (and a frozen teacher copy) on them
        freeze_for_finetuning(model)
        TRAINING_MODES["pebal"].set_train_modes(model, reference_bn=False, frozen_bn=True)
        teacher = copy.deepcopy(model.final).eval().requires_grad_(False)
        logits, taught = finetune_logits(model, model.final, x, teacher)
        torch.testing.assert_close(logits, reference, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(taught, reference, rtol=1e-5, atol=1e-5)
        model.zero_grad(set_to_none=True)
        logits.square().mean().backward()
        with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
        unused = {n for n in trained if n.endswith("eesp.module_act.weight")}  # a strided unit's, in the layout only
        assert with_grad == trained - unused
        model.eval()
    assert sizes[0] < sizes[1] < sizes[2]
    with pytest.raises(ValueError, match="choose one of \\['final', 'decoder', 'last_stage'\\]"):
        model.select_finetune_block("trunk")


# ---------------------------------------------------------------- the real Cityscapes frames


@pytest.mark.realdata
def test_cityscapes_loader_reads_the_official_tree_and_maps_label_ids(realdata):
    train_ids = Cityscapes(realdata / CITYSCAPES, "train", labels="trainIds")
    label_ids = Cityscapes(realdata / CITYSCAPES, "train", labels="labelIds")
    assert len(train_ids) == len(label_ids) == 8
    assert [s.kind for s in Cityscapes(realdata / CITYSCAPES, "train").samples] == ["trainIds"] * 8
    for i, (a, b) in enumerate(zip(train_ids.samples, label_ids.samples, strict=True)):
        assert a.name == b.name and a.image == b.image and a.label != b.label
        mapped, stored, raw = label_ids[i]["label"], read_label(a.label), read_label(b.label)
        # the tree's two encodings were rasterised apart: they differ on 0.3-0.6 % of the pixels,
        # all on (a few within 3 px of) a region border of the labelIds image
        differ = mapped != stored
        border = (maximum_filter(raw, 3) != raw) | (minimum_filter(raw, 3) != raw)
        assert differ.mean() < 0.01 and not (differ & ~maximum_filter(border, 7)).any()
    item = train_ids[0]
    assert item["image"].shape == (1024, 2048, 3) and item["image"].dtype == np.uint8
    assert item["name"] == "aachen/aachen_000000_000019"
    # the recording car's bonnet: official labelId 1 (ego vehicle) -> 255, at the image bottom
    raw = read_label(label_ids.samples[0].label)
    bonnet = raw == 1
    assert (label_ids[0]["label"][bonnet] == 255).all() and np.argwhere(bonnet)[:, 0].min() > 800


def _pixel_accuracy(model: nn.Module, item: dict, size: tuple[int, int]) -> tuple[float, np.ndarray]:
    """Pixel accuracy (void excluded) of the 19-way argmax at ``size``, against the full-resolution
    label (prediction nearest-resized back), and the 19 x 19 confusion matrix."""
    h, w = item["label"].shape
    image = item["image"] if (h, w) == size else cv2.resize(item["image"], size[::-1], interpolation=cv2.INTER_AREA)
    with torch.no_grad():
        logits = model(image_to_tensor(image, model.normalization))
    pred = logits[0, :NUM_CLASSES].argmax(0).numpy().astype(np.uint8)
    pred = cv2.resize(pred, (w, h), interpolation=cv2.INTER_NEAREST)
    conf = confusion_matrix(pred, item["label"], num_classes=NUM_CLASSES)
    return float(np.trace(conf) / conf.sum()), conf


@pytest.mark.realdata
@pytest.mark.parametrize("arch", sorted(CHECKPOINTS))
def test_real_frames_pixel_accuracy_reaches_the_published_level(arch, real_models, frames):
    names, size, published = QUALITY[arch]
    conf = 0
    for name in names:
        acc, c = _pixel_accuracy(real_models[arch], frames[name], size)
        print(f"{arch} {name} at {size[0]}x{size[1]}: pixel accuracy {acc:.4f}")
        conf = conf + c
    pooled = np.trace(conf) / conf.sum()
    assert pooled >= published - ACCURACY_BOUND, f"{arch}: {pooled:.4f} < {published} - {ACCURACY_BOUND}"


@pytest.mark.realdata
def test_dabnet_input_is_rgb_not_bgr(real_models, frames):
    """The same frame fed in BGR order (the mean in the same order as the channels) loses points:
    DABNet was trained on RGB."""
    model = copy.deepcopy(real_models["dabnet"])
    item = frames["aachen/aachen_000000_000019"]
    rgb_acc, _ = _pixel_accuracy(model, item, (512, 1024))
    model.normalization = type(DABNET_CITYSCAPES)(mean=DABNET_CITYSCAPES.mean[::-1], std=(1.0,) * 3, bgr=True)
    bgr_acc, _ = _pixel_accuracy(model, item, (512, 1024))
    print(f"dabnet 512x1024: RGB {rgb_acc:.4f}, BGR {bgr_acc:.4f}")
    assert rgb_acc > bgr_acc + 0.005


@pytest.mark.realdata
@pytest.mark.parametrize("arch", sorted(CHECKPOINTS))
def test_predictor_and_cli_run_the_bare_real_checkpoint_by_arch(arch, realdata, real_models, frames, tmp_path):
    path = realdata / CHECKPOINTS[arch]
    rgb = frames["bochum/bochum_000000_000313"]["image"]
    small = cv2.resize(rgb, (512, 256), interpolation=cv2.INTER_AREA)
    predictor = Predictor.from_checkpoint(path, arch=arch)
    assert predictor.model_id.startswith(f"{arch}@")
    labels, score = predictor.predict(small)
    with torch.no_grad():
        logits = real_models[arch](image_to_tensor(small, real_models[arch].normalization))
    np.testing.assert_array_equal(labels, logits[0, :NUM_CLASSES].argmax(0).numpy())
    assert score.shape == labels.shape and np.isfinite(score).all()

    cv2.imwrite(str(tmp_path / "frame.png"), cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
    cmd = [sys.executable, "-m", "pebal_core.cli", "predict", str(tmp_path / "frame.png"), "--model", str(path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*cmd, "--arch", arch, "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=300, env=env
    )
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(read_label(tmp_path / "out" / "frame_labels.png"), labels)


@pytest.mark.ros
@pytest.mark.realdata
@pytest.mark.parametrize("arch", sorted(CHECKPOINTS))
def test_node_runs_the_bare_real_checkpoint_given_its_arch_parameter(arch, ros_env, realdata):
    path = realdata / CHECKPOINTS[arch]
    rgb = np.random.default_rng(3).integers(0, 256, (64, 128, 3), dtype=np.uint8)
    reference = Predictor.from_checkpoint(path, arch=arch)
    labels, score = reference.predict(rgb)
    script = os.path.join(os.path.dirname(sys.executable), "pebal_node")
    params = {"model": path, "arch": arch, "backend": "torch", "diagnostics_period": 0.2}  # torch: as the reference
    cmd = [script, "--ros-args", *(a for k, v in params.items() for a in ("-p", f"{k}:={v}"))]
    env = {**os.environ, **ros_env, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with RosSession() as session:
            probe = Probe(session)
            out = first_outputs_from_process(proc, probe, rgb, camera_info_msg(64, 128, 100.0, 100.0), "cam")
            np.testing.assert_array_equal(as_array(out["semantic"]), labels)
            np.testing.assert_allclose(as_array(out["anomaly_score"]), score, rtol=1e-5, atol=1e-5)
            values = probe.wait_diag(lambda v: int(v["frames_out"]) >= 1, what="node diagnostics")
            assert values["model_id"] == reference.model_id
    finally:
        rc, log = stop_process(proc)
    assert rc == 0, log
