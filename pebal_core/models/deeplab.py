"""DeepLabv3+ segmentation head (Chen et al. 2018) in the layout of the reference PEBAL model.

Data flow (``C_low``/``C_high`` from the trunk; widths for the reference model in brackets)::

    trunk(x) -> low [128, stride 2 for WRN38], high [4096, stride 8]
    aspp(high): image pooling + 1x1 + three dilated 3x3 -> concat [5 x 256 = 1280]
    bot_aspp (1x1, no BN) [256] -> upsample to low's size
    bot_fine(low) (1x1, no BN) [48]
    concat(fine, aspp) [304] -> final: conv3x3+BN+ReLU, conv3x3+BN+ReLU, conv1x1 -> num_classes
    -> bilinear upsample (align_corners=True) to the input size

``features`` ends at the 304-channel concatenation; ``final`` is the block PEBAL fine-tunes
(1.3 M parameters for WideResNet38). The ASPP concatenation order (image pooling first) matches
NVIDIA semantic-segmentation's ``_AtrousSpatialPyramidPoolingModule``, so ``bot_aspp`` weights
of real checkpoints line up.
"""

from __future__ import annotations

import torch
from torch import nn

from pebal_core.models.base import SegmentationModel, conv_bn_relu, upsample


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: image-level features plus 1x1 and dilated 3x3 branches.

    Output channels: ``(len(rates) + 2) * dim``. ``rates`` are the dilations at output stride 16;
    they are doubled at output stride 8 (12/24/36 for the reference model).
    """

    def __init__(self, cin: int, dim: int = 256, output_stride: int = 16, rates: tuple[int, ...] = (6, 12, 18)):
        super().__init__()
        scale = {8: 2, 16: 1, 32: 1}[output_stride]
        branches = [conv_bn_relu(cin, dim, kernel=1)]
        branches += [conv_bn_relu(cin, dim, kernel=3, dilation=r * scale) for r in rates]
        self.features = nn.ModuleList(branches)
        self.img_pooling = nn.AdaptiveAvgPool2d(1)
        self.img_conv = conv_bn_relu(cin, dim, kernel=1)
        self.out_channels = dim * (len(rates) + 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = tuple(x.shape[-2:])
        img = self.img_conv(self.img_pooling(x)).expand(-1, -1, *size)
        return torch.cat([img] + [f(x) for f in self.features], dim=1)


class DeepLabV3Plus(SegmentationModel):
    """DeepLabv3+ over a trunk that returns ``(low, high)`` feature maps.

    The trunk's child modules are registered directly on this model (not under a ``trunk.``
    prefix) so that the state_dict keys equal the reference checkpoints' (``mod1``..``mod7``,
    ``aspp``, ``bot_fine``, ``bot_aspp``, ``final``).

    Args:
        trunk: module with ``low_channels``, ``high_channels`` and ``forward(x) -> (low, high)``.
        num_classes: output channels (20 for PEBAL).
        output_stride: the trunk's output stride (sets the ASPP dilation rates).
        aspp_dim, fine_dim, final_dim: widths of the ASPP branches, the low-level projection
            and the ``final`` convolutions (256 / 48 / 256 in the reference model).
    """

    def __init__(
        self,
        trunk: nn.Module,
        num_classes: int = 20,
        output_stride: int = 8,
        aspp_dim: int = 256,
        fine_dim: int = 48,
        final_dim: int = 256,
    ) -> None:
        super().__init__(num_classes)
        for name, module in trunk.named_children():
            self.add_module(name, module)
        # The trunk object is kept outside the module registry: its children are ours already.
        self.__dict__["_trunk"] = trunk
        self.aspp = ASPP(trunk.high_channels, aspp_dim, output_stride)
        self.bot_fine = nn.Conv2d(trunk.low_channels, fine_dim, 1, bias=False)
        self.bot_aspp = nn.Conv2d(self.aspp.out_channels, aspp_dim, 1, bias=False)
        self.final = nn.Sequential(
            nn.Conv2d(fine_dim + aspp_dim, final_dim, 3, padding=1, bias=False),
            nn.BatchNorm2d(final_dim),
            nn.ReLU(inplace=True),
            nn.Conv2d(final_dim, final_dim, 3, padding=1, bias=False),
            nn.BatchNorm2d(final_dim),
            nn.ReLU(inplace=True),
            nn.Conv2d(final_dim, num_classes, 1, bias=False),
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        low, high = self._trunk(x)
        up = upsample(self.bot_aspp(self.aspp(high)), tuple(low.shape[-2:]))
        return torch.cat([self.bot_fine(low), up], dim=1)
