"""ENet (Paszke et al., "ENet: A Deep Neural Network Architecture for Real-Time Semantic
Segmentation", 2016), in the module layout of the davidtvs/PyTorch-ENet implementation.

Key layout
----------
The state_dict keys and shapes equal ``shared/reference/enet_cityscapes_layout.json``, the layout
of the real Cityscapes checkpoint ``realdata/models/enet_cityscapes_void_yurnero14/model_best.pth``
(repository ``yurnero14/Anomaly-Segmentation``, class ``ENet(num_classes=20)`` of the
davidtvs/PyTorch-ENet style; plain state_dict with a ``module.`` prefix that
:func:`pebal_core.models.checkpoint.read_checkpoint` strips). Written from the paper and those
architecture facts (no code copied):

* initial block: 3x3 stride-2 convolution (13 channels) beside a 3x3 stride-2 max-pool of the
  image (3 channels), concatenated to 16, BatchNorm, PReLU;
* encoder bottlenecks (stages 1-3) use PReLU with a single slope, one PReLU per position (after
  each of the 1x1 projection, the main convolution, the 1x1 expansion, and after the residual
  sum); decoder bottlenecks (stages 4-5) use ReLU (no parameters);
* downsampling bottleneck: main branch 2x2 max-pool (indices kept) zero-padded in channels;
  extension 2x2 stride-2 projection, 3x3 convolution, 1x1 expansion, spatial dropout;
* regular bottleneck: 1x1 projection to a quarter of the channels, then a 3x3 convolution, a
  dilated 3x3 (rates 2, 4, 8, 16) or an asymmetric 5x1 + 1x5 pair, then a 1x1 expansion;
* upsampling bottleneck: main branch 1x1 conv + BN then max-unpooling with the indices of the
  matching downsampling stage; extension 1x1 projection, 2x2 stride-2 transposed convolution,
  1x1 expansion (conv + BN, no activation);
* the last layer: 3x3 stride-2 transposed convolution to ``num_classes`` (no bias), sized to
  the input with ``output_size``.

Dropout is 0.01 in stage 1 and 0.1 elsewhere (inactive in eval mode).

Input, output
-------------
Input: RGB scaled to [0, 1] with no mean/std (``UNIT_RANGE``; the checkpoint's training code used
torchvision's ``ToTensor()`` only, ``docs/data_sources.md``). Any height and width work (the
max-unpooling and transposed convolutions are
given the exact output sizes, as in the reference forward); the checkpoint was trained at
1024x512, and sizes that are multiples of 8 keep every stage's pooling windows whole.
Output: ``num_classes`` logits at the input resolution; for the real checkpoint 20 channels =
trainIds 0..18 + channel 19 "void" (trained with label 255 mapped to 19), which PEBAL uses as its
abstention channel.

PEBAL split
-----------
``final`` = the last upsampling stage and the transposed convolution (``upsample5_0``,
``regular5_1``, ``transposed_conv``; 6,656 parameters for 20 classes). Those layers keep their
top-level checkpoint names; ``final`` is an :class:`ENetFinal` view over them
(:meth:`SegmentationModel.attach_final_view`). ``features`` returns :class:`ENetFeatures`
(stage-4 output, the stage-1 max-pooling indices, the input size), which
:meth:`ENet.final_inputs` unpacks into ``final``'s arguments.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from pebal_core.models.base import SegmentationModel
from pebal_core.preprocessing import UNIT_RANGE


def _activation(prelu: bool) -> nn.Module:
    """PReLU with one shared slope (encoder) or ReLU (decoder)."""
    return nn.PReLU() if prelu else nn.ReLU()


def _conv_bn_act(cin: int, cout: int, kernel, prelu: bool, **conv_kwargs) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, bias=False, **conv_kwargs), nn.BatchNorm2d(cout), _activation(prelu)]


class InitialBlock(nn.Module):
    """``B x 3 x H x W`` -> ``B x 16 x ceil(H/2) x ceil(W/2)``: conv branch (13) + max-pool branch (3)."""

    def __init__(self, prelu: bool = True) -> None:
        super().__init__()
        self.main_branch = nn.Conv2d(3, 13, 3, stride=2, padding=1, bias=False)
        self.ext_branch = nn.MaxPool2d(3, stride=2, padding=1)
        self.batch_norm = nn.BatchNorm2d(16)
        self.out_activation = _activation(prelu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_activation(self.batch_norm(torch.cat([self.main_branch(x), self.ext_branch(x)], 1)))


class RegularBottleneck(nn.Module):
    """Residual bottleneck at constant resolution and width.

    Args:
        channels: input = output channels; the inner width is ``channels // 4``.
        prelu: PReLU (encoder) or ReLU (decoder) activations.
        dilation: dilation of the 3x3 convolution (1 = regular).
        asymmetric: replace the 3x3 by a 5x1 then 1x5 convolution pair.
        dropout: spatial dropout probability on the extension branch.
    """

    def __init__(
        self, channels: int, prelu: bool, dilation: int = 1, asymmetric: bool = False, dropout: float = 0.1
    ) -> None:
        super().__init__()
        inner = channels // 4
        self.ext_conv1 = nn.Sequential(*_conv_bn_act(channels, inner, 1, prelu))
        if asymmetric:
            self.ext_conv2 = nn.Sequential(
                *_conv_bn_act(inner, inner, (5, 1), prelu, padding=(2, 0)),
                *_conv_bn_act(inner, inner, (1, 5), prelu, padding=(0, 2)),
            )
        else:
            self.ext_conv2 = nn.Sequential(*_conv_bn_act(inner, inner, 3, prelu, padding=dilation, dilation=dilation))
        self.ext_conv3 = nn.Sequential(*_conv_bn_act(inner, channels, 1, prelu))
        self.ext_regul = nn.Dropout2d(dropout)
        self.out_activation = _activation(prelu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ext = self.ext_regul(self.ext_conv3(self.ext_conv2(self.ext_conv1(x))))
        return self.out_activation(x + ext)


class DownsamplingBottleneck(nn.Module):
    """Halves the resolution: ``B x cin x H x W`` -> ``(B x cout x H/2 x W/2, max-pool indices)``.

    Main branch: 2x2 max-pool (its indices are returned for the decoder's unpooling), zero
    channels appended up to ``cout``. Extension: 2x2 stride-2 projection to ``cin // 4``, 3x3
    convolution, 1x1 expansion to ``cout``, spatial dropout. PReLU activations (encoder only).
    """

    def __init__(self, cin: int, cout: int, dropout: float) -> None:
        super().__init__()
        inner = cin // 4
        self.main_max1 = nn.MaxPool2d(2, stride=2, return_indices=True)
        self.ext_conv1 = nn.Sequential(*_conv_bn_act(cin, inner, 2, True, stride=2))
        self.ext_conv2 = nn.Sequential(*_conv_bn_act(inner, inner, 3, True, padding=1))
        self.ext_conv3 = nn.Sequential(*_conv_bn_act(inner, cout, 1, True))
        self.ext_regul = nn.Dropout2d(dropout)
        self.out_activation = _activation(True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        main, indices = self.main_max1(x)
        ext = self.ext_regul(self.ext_conv3(self.ext_conv2(self.ext_conv1(x))))
        main = F.pad(main, (0, 0, 0, 0, 0, ext.shape[1] - main.shape[1]))
        return self.out_activation(main + ext), indices


class UpsamplingBottleneck(nn.Module):
    """Doubles the resolution to ``output_size`` with the indices of the matching downsampling stage.

    Main branch: 1x1 conv + BN to ``cout``, then max-unpooling. Extension: 1x1 projection to
    ``cin // 4``, 2x2 stride-2 transposed convolution + BN + activation, 1x1 conv + BN to
    ``cout``, spatial dropout. ReLU activations (decoder).
    """

    def __init__(self, cin: int, cout: int, dropout: float = 0.1) -> None:
        super().__init__()
        inner = cin // 4
        self.main_conv1 = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.main_unpool1 = nn.MaxUnpool2d(2)
        self.ext_conv1 = nn.Sequential(*_conv_bn_act(cin, inner, 1, False))
        self.ext_tconv1 = nn.ConvTranspose2d(inner, inner, 2, stride=2, bias=False)
        self.ext_tconv1_bnorm = nn.BatchNorm2d(inner)
        self.ext_tconv1_activation = _activation(False)
        self.ext_conv2 = nn.Sequential(nn.Conv2d(inner, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.ext_regul = nn.Dropout2d(dropout)
        self.out_activation = _activation(False)

    def forward(self, x: torch.Tensor, indices: torch.Tensor, output_size: tuple[int, int]) -> torch.Tensor:
        main = self.main_unpool1(self.main_conv1(x), indices, output_size=output_size)
        ext = self.ext_tconv1(self.ext_conv1(x), output_size=output_size)
        ext = self.ext_tconv1_activation(self.ext_tconv1_bnorm(ext))
        ext = self.ext_regul(self.ext_conv2(ext))
        return self.out_activation(main + ext)


class ENetFeatures(NamedTuple):
    """What :meth:`ENet.features` hands to ``final`` (through :meth:`ENet.final_inputs`)."""

    x: torch.Tensor
    """Stage-4 output, ``B x 64 x H/4 x W/4``."""
    indices: torch.Tensor
    """Max-pooling indices of ``downsample1_0`` (int64, ``B x 16 x H/4 x W/4``) for the stage-5 unpooling."""
    input_size: tuple[int, int]
    """``(H, W)`` of the network input."""


class ENetTrunkFeatures(NamedTuple):
    """What :meth:`ENet.features` hands to the ``decoder`` block (see :class:`ENetDecoder`)."""

    x: torch.Tensor
    """Stage-3 output, ``B x 128 x H/8 x W/8``."""
    indices2: torch.Tensor
    """Max-pooling indices of ``downsample2_0`` (``B x 64 x H/8 x W/8``) for the stage-4 unpooling."""
    stage2_size: tuple[int, int]
    """``(H, W)`` of the stage-1 output."""
    indices1: torch.Tensor
    """Max-pooling indices of ``downsample1_0``."""
    input_size: tuple[int, int]
    """``(H, W)`` of the network input."""


class ENetDecoder(nn.Module):
    """The ``decoder`` fine-tuning block: stages 4 and 5 and the transposed convolution.

    A view over the model's own layers (``upsample4_0``, ``regular4_1``, ``regular4_2``,
    ``upsample5_0``, ``regular5_1``, ``transposed_conv``).
    """

    def __init__(self, model: ENet) -> None:
        super().__init__()
        self.upsample4_0 = model.upsample4_0
        self.regular4_1 = model.regular4_1
        self.regular4_2 = model.regular4_2
        self.upsample5_0 = model.upsample5_0
        self.regular5_1 = model.regular5_1
        self.transposed_conv = model.transposed_conv

    def forward(self, x, indices2, stage2_size, indices1, input_size) -> torch.Tensor:
        x = self.upsample4_0(x, indices2, stage2_size)
        x = self.regular4_2(self.regular4_1(x))
        return ENetFinal.forward(self, x, indices1, input_size)


class ENetFinal(nn.Module):
    """ENet's stage 5 and classifier: ``upsample5_0`` -> ``regular5_1`` -> ``transposed_conv``.

    ``forward(x, indices, input_size)`` maps the stage-4 output ``B x 64 x H/4 x W/4`` to
    ``B x num_classes x H x W`` logits.
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.upsample5_0 = UpsamplingBottleneck(64, 16)
        self.regular5_1 = RegularBottleneck(16, prelu=False)
        self.transposed_conv = nn.ConvTranspose2d(16, num_classes, 3, stride=2, padding=1, bias=False)

    def forward(self, x: torch.Tensor, indices: torch.Tensor, input_size: tuple[int, int]) -> torch.Tensor:
        h, w = input_size
        stage1_size = ((h + 1) // 2, (w + 1) // 2)  # the initial block's output: ceil(H/2) x ceil(W/2)
        x = self.regular5_1(self.upsample5_0(x, indices, stage1_size))
        return self.transposed_conv(x, output_size=(h, w))


# (name, dilation, asymmetric) of the eight bottlenecks after stage 2's downsampling; stage 3
# repeats the pattern (indices 0..7 instead of 1..8).
_STAGE_PATTERN = (
    ("regular", 1, False),
    ("dilated", 2, False),
    ("asymmetric", 1, True),
    ("dilated", 4, False),
    ("regular", 1, False),
    ("dilated", 8, False),
    ("asymmetric", 1, True),
    ("dilated", 16, False),
)


class ENet(SegmentationModel):
    """ENet for Cityscapes (see the module docstring for layout, preprocessing and the PEBAL split).

    Args:
        num_classes: output channels (20 for the real checkpoint: 19 trainIds + "void").
    """

    normalization = UNIT_RANGE

    def __init__(self, num_classes: int = 20) -> None:
        super().__init__(num_classes)
        self.initial_block = InitialBlock()
        self.downsample1_0 = DownsamplingBottleneck(16, 64, dropout=0.01)
        self._stage1 = tuple(f"regular1_{i}" for i in range(1, 5))
        for name in self._stage1:
            self.add_module(name, RegularBottleneck(64, prelu=True, dropout=0.01))
        self.downsample2_0 = DownsamplingBottleneck(64, 128, dropout=0.1)
        self._stages23 = tuple(
            f"{kind}{stage}_{first + i}"
            for stage, first in ((2, 1), (3, 0))
            for i, (kind, _, _) in enumerate(_STAGE_PATTERN)
        )
        for name, (_, dilation, asymmetric) in zip(self._stages23, _STAGE_PATTERN * 2, strict=True):
            self.add_module(name, RegularBottleneck(128, True, dilation, asymmetric))
        self.upsample4_0 = UpsamplingBottleneck(128, 64)
        self.regular4_1 = RegularBottleneck(64, prelu=False)
        self.regular4_2 = RegularBottleneck(64, prelu=False)
        final = ENetFinal(num_classes)
        for name, module in final.named_children():  # top-level names, as in the checkpoint
            self.add_module(name, module)
        self.attach_final_view(final)
        self.__dict__["_last_stage"] = final  # not a child: its layers are registered above
        self.block = "final"

    finetune_blocks = ("final", "decoder")

    def select_finetune_block(self, name: str) -> None:
        """``final`` (stage 5 and the transposed convolution) or ``decoder`` (stages 4 and 5,
        :class:`ENetDecoder`)."""
        super().select_finetune_block(name)
        self.__dict__.pop("final", None)
        self.attach_final_view(ENetDecoder(self) if name == "decoder" else self._last_stage)
        self.block = name

    def features(self, x: torch.Tensor) -> ENetFeatures | ENetTrunkFeatures:
        """Stages 0-4: ``B x 3 x H x W`` (RGB in [0, 1]) -> :class:`ENetFeatures`."""
        input_size = (int(x.shape[-2]), int(x.shape[-1]))
        x = self.initial_block(x)
        x, indices1 = self.downsample1_0(x)
        for name in self._stage1:
            x = getattr(self, name)(x)
        stage2_size = (int(x.shape[-2]), int(x.shape[-1]))
        x, indices2 = self.downsample2_0(x)
        for name in self._stages23:
            x = getattr(self, name)(x)
        if self.block == "decoder":
            return ENetTrunkFeatures(x, indices2, stage2_size, indices1, input_size)
        x = self.upsample4_0(x, indices2, stage2_size)
        x = self.regular4_2(self.regular4_1(x))
        return ENetFeatures(x, indices1, input_size)

    def final_inputs(self, feats: ENetFeatures | ENetTrunkFeatures) -> tuple:
        """``final``'s arguments (``(x, indices, input_size)``, or the five fields of
        :class:`ENetTrunkFeatures` with the ``decoder`` block); it returns logits at the input size."""
        return tuple(feats)
