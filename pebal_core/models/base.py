"""The interface every segmentation network in the zoo implements.

PEBAL fine-tunes only a network's last block (``final``). Every model therefore splits its
forward pass in two::

    logits = model.head(model.features(x), input_size)      == model(x)

``features`` is the frozen part (trunk, ASPP, decoder up to ``final``'s input); ``head`` runs
``final`` and upsamples to the input size. The trainer runs ``features`` under
``torch.no_grad()`` in eval mode, so a fine-tuning step pays for no trunk gradients.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from pebal_core.preprocessing import IMAGENET, Normalization


def upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize with ``align_corners=True`` (the reference model's ``Upsample``)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class SegmentationModel(nn.Module):
    """Base class: a network mapping ``B x 3 x H x W`` normalised images to ``B x C x H x W`` logits.

    Subclasses set ``self.final`` (the block PEBAL fine-tunes) and implement :meth:`features`.
    ``C = num_classes`` is 20 for a PEBAL model (19 inlier trainIds + abstention channel 19).
    """

    normalization: Normalization = IMAGENET
    """How RGB uint8 input must be normalised for this network (see ``pebal_core.preprocessing``)."""
    final: nn.Module

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Everything before ``final``: ``B x 3 x H x W`` -> the input tensor of ``final``."""
        raise NotImplementedError

    def head(self, feats: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``final`` on ``features``' output, upsampled to ``size`` (H, W): ``B x C x H x W`` logits."""
        return upsample(self.final(feats), size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x), tuple(x.shape[-2:]))

    def finetune_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters PEBAL trains: those of ``final`` only."""
        return self.final.parameters()

    def trunk_modules(self) -> Iterator[nn.Module]:
        """Direct children other than ``final`` (frozen during PEBAL fine-tuning)."""
        return (m for name, m in self.named_children() if name != "final")

    @property
    def classifier(self) -> nn.Conv2d:
        """The last convolution of ``final`` (its output channels are the classes)."""
        convs = [m for m in self.final.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
        return convs[-1]


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, dilation: int = 1) -> nn.Sequential:
    """``Conv(bias=False) -> BatchNorm -> ReLU`` with 'same' padding (keys ``0``, ``1``)."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=dilation * (kernel // 2), dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )
