"""ResNet-18/50/101 trunks (He et al. 2016) with dilation for DeepLab output strides.

Parameter names follow torchvision's ResNet (``conv1``, ``bn1``, ``layer1``..``layer4``), so an
ImageNet torchvision state_dict loads into the trunk (without its ``fc``) under the same keys.
``width`` scales every channel count (1.0 = the published network); the shipped real-time
model uses a slimmer ResNet-18.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, dilation, dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(cin, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, dilation, dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(cin, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


def _downsample(cin: int, cout: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))


MAX_WIDTH = 4.0
"""Largest channel multiplier: 4 x the published widths (16 x the parameters), far beyond any model
trained here; a larger value in a file's metadata would allocate gigabytes before anything fails."""
_DEPTHS = {18: (BasicBlock, (2, 2, 2, 2)), 50: (Bottleneck, (3, 4, 6, 3)), 101: (Bottleneck, (3, 4, 23, 3))}


class ResNet(nn.Module):
    """ResNet trunk returning ``(low, high)`` = (``layer1`` output at stride 4, ``layer4`` output).

    Args:
        depth: 18, 50 or 101.
        output_stride: 8 (``layer3``/``layer4`` dilated by 2/4) or 16 (``layer4`` dilated by 2)
            or 32 (no dilation).
        width: channel multiplier (1.0 = standard widths 64..512), greater than 0 and at most
            :data:`MAX_WIDTH`.
    """

    def __init__(self, depth: int, output_stride: int = 8, width: float = 1.0) -> None:
        super().__init__()
        if depth not in _DEPTHS:
            raise ValueError(f"ResNet depth must be one of {sorted(_DEPTHS)}, got {depth}")
        strides = {8: (1, 2, 1, 1), 16: (1, 2, 2, 1), 32: (1, 2, 2, 2)}
        dilations = {8: (1, 1, 2, 4), 16: (1, 1, 1, 2), 32: (1, 1, 1, 1)}
        if output_stride not in strides:
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        if not isinstance(width, (int, float)) or isinstance(width, bool) or not 0 < width <= MAX_WIDTH:
            raise ValueError(f"width must be a number in (0, {MAX_WIDTH}], got {width!r}")
        block, counts = _DEPTHS[depth]
        base = max(8, int(round(64 * width)))
        self.conv1 = nn.Conv2d(3, base, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = base
        for i, (n, s, d) in enumerate(zip(counts, strides[output_stride], dilations[output_stride], strict=False)):
            planes = base * 2**i
            blocks = []
            for j in range(n):
                blocks.append(block(cin, planes, s if j == 0 else 1, d))
                cin = planes * block.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.low_channels = base * block.expansion
        self.high_channels = cin

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        low = self.layer1(x)
        x = self.layer4(self.layer3(self.layer2(low)))
        return low, x
