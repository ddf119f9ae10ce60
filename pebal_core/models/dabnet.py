"""DABNet (Li, Zhao, Kang, Li, "DABNet: Depth-wise Asymmetric Bottleneck for Real-time Semantic
Segmentation", BMVC 2019): a three-stage encoder with input injection and a 1x1 classifier at
1/8 resolution, bilinearly upsampled to the input size.

Key layout
----------
The state_dict keys and shapes for ``num_classes=19`` equal the key layout of the real Cityscapes
checkpoint (``docs/data_sources.md``: the pretrained model of ``Reagan1311/DABNet``, 756,643
parameters, 19 outputs; ``test/test_zoo_dabnet_espnetv2.py`` compares them key by key). Written
from the paper and the architecture facts of that repository's ``model/DABNet.py`` (no code
copied):

* every BatchNorm has ``eps=1e-3`` and is followed by a per-channel PReLU (``BNPReLU``, keys
  ``bn``, ``acti``); convolutions have no bias; ``Conv`` = convolution (key ``conv``) with an
  optional ``BNPReLU`` (key ``bn_prelu``);
* stem ``init_conv``: three 3x3 ``Conv`` + BNPReLU (3 -> 32 stride 2, 32 -> 32, 32 -> 32);
* input injection: the image average-pooled (3x3, stride 2, padding 1) once, twice, three times
  is concatenated to the outputs at 1/2, 1/4 and 1/8;
* downsampling block: a 3x3 stride-2 convolution to ``cout - cin`` channels concatenated with a
  2x2 max-pool of the input when ``cin < cout`` (stage 1: 35 -> 29 + 35 = 64), else a 3x3
  stride-2 convolution to ``cout`` alone (stage 2: 131 -> 128); then BNPReLU;
* DAB module (residual, width ``c``): BNPReLU, 3x3 ``Conv`` to ``c/2`` + BNPReLU, two
  depth-wise branches of a 3x1 then 1x3 ``Conv`` + BNPReLU, the second dilated ``d`` along its
  kernel, summed, BNPReLU, 1x1 ``Conv`` back to ``c`` (no BN), plus the module input;
* stage 1: downsample 35 -> 64 (1/4), three DAB modules with ``d = 2``; ``bn_prelu_2`` on
  [stage output, downsampled, image/4] (131); stage 2: downsample 131 -> 128 (1/8), six DAB
  modules with ``d = 4, 4, 8, 8, 16, 16``; ``bn_prelu_3`` on [stage output, downsampled,
  image/8] (259); ``classifier`` = 1x1 ``Conv`` 259 -> classes; bilinear upsampling with
  ``align_corners=False`` to the input size.

Input, output
-------------
Input (:data:`pebal_core.preprocessing.DABNET_CITYSCAPES`): RGB on the 0..255 scale minus the
Cityscapes mean, which the original code subtracts from the BGR image before turning it into
RGB (R - 73.16, G - 82.91, B - 72.39); no division by a std. Height and width must be multiples of
4 (the stage-1 max-pool branch is concatenated with a stride-2 convolution); other sizes raise
``ValueError``. The checkpoint was trained and evaluated at 1024x2048. Output: ``num_classes``
logits at the input resolution; the real checkpoint has 19 (trainIds 0..18): loaded for PEBAL
its classifier is extended to 20 (``pebal_core.models.checkpoint.extend_classifier``), channel
19 the abstention channel.

PEBAL split
-----------
``final`` (:class:`DABNetClassifier`) = the 1x1 ``classifier`` and the upsampling; 5,180
parameters for 20 classes. ``features`` returns :class:`DABNetFeatures` (``bn_prelu_3``'s output
and the input size). The network has no decoder, so ``select_finetune_block("decoder")`` takes
the head after the last DAB module: ``bn_prelu_3`` and the classifier (:class:`DABNetHead`, 5,957
parameters), and ``select_finetune_block("last_stage")`` the whole last encoder stage with that
head (``downsample_2``, ``DAB_Block_2``, ``bn_prelu_3``, ``classifier``; :class:`DABNetLastStage`,
662,597 parameters, most of the network), fed with the stage-1 concatenation and the image at
1/8 (:class:`DABNetStage1Features`). Every block is a view over the model's own layers (their
checkpoint names stay).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from pebal_core.models.base import SegmentationModel, pooled_image
from pebal_core.preprocessing import DABNET_CITYSCAPES


class BNPReLU(nn.Module):
    """BatchNorm (``eps=1e-3``) + per-channel PReLU (keys ``bn``, ``acti``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, eps=1e-3)
        self.acti = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.acti(self.bn(x))


class Conv(nn.Module):
    """A bias-free convolution (key ``conv``), optionally followed by :class:`BNPReLU` (``bn_prelu``).

    ``kernel`` and ``dilation`` are ``(height, width)``; the padding keeps the size at stride 1.
    """

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: tuple[int, int],
        stride: int = 1,
        dilation: tuple[int, int] = (1, 1),
        groups: int = 1,
        bn_prelu: bool = True,
    ) -> None:
        super().__init__()
        pad = tuple((k - 1) // 2 * d for k, d in zip(kernel, dilation, strict=True))
        self.conv = nn.Conv2d(cin, cout, kernel, stride, pad, dilation, groups=groups, bias=False)
        self.bn_prelu = BNPReLU(cout) if bn_prelu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return x if self.bn_prelu is None else self.bn_prelu(x)


class DABModule(nn.Module):
    """Depth-wise asymmetric bottleneck, ``B x c x H x W`` -> same shape (residual).

    Args:
        channels: ``c``; the branches run at ``c // 2``.
        dilation: dilation of the second depth-wise branch (3x1 along H, 1x3 along W).
    """

    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        half, d = channels // 2, dilation
        self.bn_relu_1 = BNPReLU(channels)
        self.conv3x3 = Conv(channels, half, (3, 3))
        self.dconv3x1 = Conv(half, half, (3, 1), groups=half)
        self.dconv1x3 = Conv(half, half, (1, 3), groups=half)
        self.ddconv3x1 = Conv(half, half, (3, 1), dilation=(d, 1), groups=half)
        self.ddconv1x3 = Conv(half, half, (1, 3), dilation=(1, d), groups=half)
        self.bn_relu_2 = BNPReLU(half)
        self.conv1x1 = Conv(half, channels, (1, 1), bn_prelu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3x3(self.bn_relu_1(x))
        y = self.dconv1x3(self.dconv3x1(y)) + self.ddconv1x3(self.ddconv3x1(y))
        return self.conv1x1(self.bn_relu_2(y)) + x


class DownSamplingBlock(nn.Module):
    """``B x cin x H x W`` -> ``B x cout x H/2 x W/2``: strided 3x3 conv (+ 2x2 max-pool of the
    input when ``cin < cout``), then :class:`BNPReLU`."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.pool = cin < cout
        self.conv3x3 = Conv(cin, cout - cin if self.pool else cout, (3, 3), stride=2, bn_prelu=False)
        self.bn_prelu = BNPReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv3x3(x)
        if self.pool:
            y = torch.cat([y, F.max_pool2d(x, 2, 2, ceil_mode=True)], 1)  # = floor mode at the even sizes that run
        return self.bn_prelu(y)


class DABNetFeatures(NamedTuple):
    """What :meth:`DABNet.features` hands to the ``final`` block."""

    concat: torch.Tensor
    """``[stage-2 output, stage-2 downsampled, image/8]`` before ``bn_prelu_3``, ``B x 259 x H/8 x W/8``
    (after ``bn_prelu_3`` for the ``final`` block)."""
    size: tuple[int, int]
    """Input height and width (the logits are upsampled to it)."""


class DABNetStage1Features(NamedTuple):
    """What :meth:`DABNet.features` hands to the ``last_stage`` block (:class:`DABNetLastStage`)."""

    stage1: torch.Tensor
    """``bn_prelu_2`` output: [stage-1 output, stage-1 downsampled, image/4], ``B x 131 x H/4 x W/4``."""
    image8: torch.Tensor
    """The normalised image average-pooled three times, ``B x 3 x H/8 x W/8``."""
    size: tuple[int, int]
    """Input height and width."""


class DABNetClassifier(nn.Module):
    """The ``final`` block: the 1x1 ``classifier`` and bilinear upsampling (``align_corners=False``).

    ``forward(x, size)``: ``B x 259 x h x w`` -> ``B x classes x size``.
    """

    def __init__(self, classifier: nn.Sequential) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(self.classifier(x), size=size, mode="bilinear", align_corners=False)


class DABNetHead(nn.Module):
    """The ``decoder`` block: ``bn_prelu_3`` then :class:`DABNetClassifier`'s layers.

    ``forward(concat, size)``: ``B x 259 x h x w`` (before ``bn_prelu_3``) -> ``B x classes x size``.
    """

    def __init__(self, model: DABNet) -> None:
        super().__init__()
        self.bn_prelu_3 = model.bn_prelu_3
        self.classifier = model.classifier

    def forward(self, concat: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        logits = self.classifier(self.bn_prelu_3(concat))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


class DABNetLastStage(nn.Module):
    """The ``last_stage`` block: ``downsample_2``, ``DAB_Block_2``, ``bn_prelu_3``, ``classifier``.

    ``forward(stage1, image8, size)`` (see :class:`DABNetStage1Features`) -> ``B x classes x size``.
    """

    def __init__(self, model: DABNet) -> None:
        super().__init__()
        self.downsample_2 = model.downsample_2
        self.DAB_Block_2 = model.DAB_Block_2
        self.bn_prelu_3 = model.bn_prelu_3
        self.classifier = model.classifier

    def forward(self, stage1: torch.Tensor, image8: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        down = self.downsample_2(stage1)
        concat = torch.cat([self.DAB_Block_2(down), down, image8], 1)
        logits = self.classifier(self.bn_prelu_3(concat))
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


STAGE2_DILATIONS = (4, 4, 8, 8, 16, 16)
"""Dilations of the six stage-2 DAB modules (stage 1: three modules with dilation 2)."""


class DABNet(SegmentationModel):
    """DABNet (see the module docstring): ``B x 3 x H x W`` normalised RGB -> ``B x classes x H x W``.

    Args:
        num_classes: output channels (19 for the real checkpoint, 20 for PEBAL).
    """

    normalization = DABNET_CITYSCAPES
    size_divisor = 4
    finetune_blocks = ("final", "decoder", "last_stage")

    def __init__(self, num_classes: int = 20) -> None:
        super().__init__(num_classes)
        self.init_conv = nn.Sequential(Conv(3, 32, (3, 3), stride=2), Conv(32, 32, (3, 3)), Conv(32, 32, (3, 3)))
        self.bn_prelu_1 = BNPReLU(32 + 3)
        self.downsample_1 = DownSamplingBlock(32 + 3, 64)
        self.DAB_Block_1 = nn.Sequential()
        for i in range(3):
            self.DAB_Block_1.add_module(f"DAB_Module_1_{i}", DABModule(64, 2))
        self.bn_prelu_2 = BNPReLU(128 + 3)
        self.downsample_2 = DownSamplingBlock(128 + 3, 128)
        self.DAB_Block_2 = nn.Sequential()
        for i, d in enumerate(STAGE2_DILATIONS):
            self.DAB_Block_2.add_module(f"DAB_Module_2_{i}", DABModule(128, d))
        self.bn_prelu_3 = BNPReLU(256 + 3)
        self.classifier = nn.Sequential(Conv(256 + 3, num_classes, (1, 1), bn_prelu=False))
        self.select_finetune_block("final")

    def select_finetune_block(self, name: str) -> None:
        """``final`` (the 1x1 classifier, :class:`DABNetClassifier`), ``decoder`` (``bn_prelu_3`` +
        classifier, :class:`DABNetHead`) or ``last_stage`` (the last encoder stage and that head,
        :class:`DABNetLastStage`)."""
        super().select_finetune_block(name)
        views = {"final": DABNetClassifier, "decoder": DABNetHead, "last_stage": DABNetLastStage}
        view = views[name](self.classifier) if name == "final" else views[name](self)
        self.attach_final_view(view)
        self.block = name

    def stage1(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and stage 1: ``B x 3 x H x W`` -> ``bn_prelu_2`` output ``B x 131 x H/4 x W/4``."""
        h, w = x.shape[-2:]
        if h % self.size_divisor or w % self.size_divisor:
            raise ValueError(
                f"DABNet needs input height and width that are multiples of {self.size_divisor}, got {h}x{w}; "
                "resize the image (e.g. Predictor input_size) or crop it to such a size"
            )
        stem = self.bn_prelu_1(torch.cat([self.init_conv(x), pooled_image(x, 1)], 1))
        down = self.downsample_1(stem)
        return self.bn_prelu_2(torch.cat([self.DAB_Block_1(down), down, pooled_image(x, 2)], 1))

    def features(self, x: torch.Tensor) -> DABNetFeatures | DABNetStage1Features:
        """Everything before the selected block (see the module docstring), from normalised RGB."""
        size = (x.shape[-2], x.shape[-1])
        stage1 = self.stage1(x)
        image8 = pooled_image(x, 3)
        if self.block == "last_stage":
            return DABNetStage1Features(stage1, image8, size)
        down = self.downsample_2(stage1)
        concat = torch.cat([self.DAB_Block_2(down), down, image8], 1)
        return DABNetFeatures(concat if self.block == "decoder" else self.bn_prelu_3(concat), size)

    def final_inputs(self, feats: DABNetFeatures | DABNetStage1Features) -> tuple:
        """The selected block's arguments: the feature tensors, then the input size."""
        return tuple(feats)
