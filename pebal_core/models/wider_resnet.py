"""WiderResNet-38 (A2 variant) trunk, as used by the reference PEBAL model (``docs/models.md``).

Pre-activation identity blocks: ``bn1`` (BatchNorm + ReLU) runs first; when the shape or the
stride changes, a 1x1 ``proj_conv`` shortcut is taken from the *activated* input. Structure
[3, 3, 6, 3, 1, 1] over ``mod2``..``mod7``; ``mod1`` is a single 3x3 conv at full resolution;
``pool2``/``pool3`` (3x3 max-pool, stride 2) precede ``mod2``/``mod3``; ``mod4`` strides by 2;
``mod5`` is dilated by 2 and ``mod6``/``mod7`` by 4, for an output stride of 8. ``mod6``/``mod7``
blocks are bottlenecks with Dropout2d 0.3/0.5. Module and parameter names match the public
checkpoints key for key.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

STRUCTURE = (3, 3, 6, 3, 1, 1)
CHANNELS = ((128, 128), (256, 256), (512, 512), (512, 1024), (512, 1024, 2048), (1024, 2048, 4096))


def _bn_relu(channels: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(inplace=True))


class IdentityResidualBlock(nn.Module):
    """Pre-activation residual block (``inplace_abn`` style, without in-place ABN).

    ``channels`` of length 2: two 3x3 convs; of length 3: 1x1 -> 3x3 -> 1x1 bottleneck.
    """

    def __init__(
        self,
        in_channels: int,
        channels: tuple[int, ...],
        stride: int = 1,
        dilation: int = 1,
        dropout: float | None = None,
    ) -> None:
        super().__init__()
        self.bn1 = _bn_relu(in_channels)
        if len(channels) == 2:
            layers: list[tuple[str, nn.Module]] = [
                ("conv1", nn.Conv2d(in_channels, channels[0], 3, stride, dilation, dilation, bias=False)),
                ("bn2", _bn_relu(channels[0])),
                ("conv2", nn.Conv2d(channels[0], channels[1], 3, 1, dilation, dilation, bias=False)),
            ]
            insert_at = 2
        elif len(channels) == 3:
            layers = [
                ("conv1", nn.Conv2d(in_channels, channels[0], 1, stride, 0, bias=False)),
                ("bn2", _bn_relu(channels[0])),
                ("conv2", nn.Conv2d(channels[0], channels[1], 3, 1, dilation, dilation, bias=False)),
                ("bn3", _bn_relu(channels[1])),
                ("conv3", nn.Conv2d(channels[1], channels[2], 1, 1, 0, bias=False)),
            ]
            insert_at = 4
        else:
            raise ValueError(f"channels must have 2 or 3 entries, got {channels}")
        if dropout is not None:
            layers.insert(insert_at, ("dropout", nn.Dropout2d(p=dropout)))
        self.convs = nn.Sequential(OrderedDict(layers))
        if stride != 1 or in_channels != channels[-1]:
            self.proj_conv = nn.Conv2d(in_channels, channels[-1], 1, stride, 0, bias=False)
        else:
            self.proj_conv = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        activated = self.bn1(x)
        shortcut = self.proj_conv(activated) if self.proj_conv is not None else x
        return self.convs(activated) + shortcut


class WiderResNet38(nn.Module):
    """WiderResNet-38 A2 with dilation (output stride 8).

    ``forward`` returns ``(low, high)``: ``mod2``'s output (128 channels, stride 2) for the
    decoder and ``mod7``'s output (4096 channels, stride 8) for ASPP.
    """

    low_channels = 128
    high_channels = 4096

    def __init__(self) -> None:
        super().__init__()
        self.mod1 = nn.Sequential(OrderedDict([("conv1", nn.Conv2d(3, 64, 3, 1, 1, bias=False))]))
        self.pool2 = nn.MaxPool2d(3, stride=2, padding=1)
        self.pool3 = nn.MaxPool2d(3, stride=2, padding=1)
        in_channels = 64
        for mod_id, (num_blocks, channels) in enumerate(zip(STRUCTURE, CHANNELS, strict=False)):
            dilation = {3: 2, 4: 4, 5: 4}.get(mod_id, 1)
            dropout = {4: 0.3, 5: 0.5}.get(mod_id)
            blocks = []
            for block_id in range(num_blocks):
                stride = 2 if (block_id == 0 and mod_id == 2) else 1
                blocks.append(
                    (
                        f"block{block_id + 1}",
                        IdentityResidualBlock(in_channels, channels, stride, dilation, dropout),
                    )
                )
                in_channels = channels[-1]
            self.add_module(f"mod{mod_id + 2}", nn.Sequential(OrderedDict(blocks)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.mod1(x)
        low = self.mod2(self.pool2(x))
        x = self.mod3(self.pool3(low))
        x = self.mod4(x)
        x = self.mod5(x)
        x = self.mod6(x)
        x = self.mod7(x)
        return low, x
