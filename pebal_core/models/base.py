"""The interface every segmentation network in the zoo implements.

PEBAL fine-tunes only a network's last block (``final``). Every model therefore splits its
forward pass in two::

    logits = model.head(model.features(x), input_size)      == model(x)

``features`` is the frozen part (trunk, ASPP, decoder up to ``final``'s input); ``head`` runs
``final`` and upsamples to the input size. The trainer runs ``features`` under
``torch.no_grad()`` in eval mode, so a fine-tuning step pays for no trunk gradients.

``features`` usually returns one tensor. A network whose last block needs more than one input
(ENet: the max-pooling indices of its first downsampling stage; ESPNet: the level-1 feature map
that the last decoder stage concatenates) returns a ``NamedTuple`` and overrides
:meth:`~SegmentationModel.final_inputs` to unpack it into ``final``'s positional arguments.
Callers treat ``features``' output as opaque: they hand it to ``head``, or call
``final(*model.final_inputs(feats))`` themselves (the trainer does, with a possibly
DDP-wrapped ``final``).

Where a real checkpoint keeps the final block's layers at the top level of its key layout (ENet's
``upsample5_0``, ``regular5_1``, ``transposed_conv``), the model registers those layers under
their checkpoint names and attaches ``final`` with :meth:`SegmentationModel.attach_final_view`:
a module grouping the same layer objects that is not itself a registered child, so the
state_dict keys stay exactly the checkpoint's while ``final`` still names the fine-tuned block.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pebal_core.preprocessing import IMAGENET, Normalization


def upsample(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize with ``align_corners=True`` (the reference model's ``Upsample``)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def pooled_image(image: torch.Tensor, times: int) -> torch.Tensor:
    """The image average-pooled ``times`` times (3x3, stride 2, padding 1): the input reinforcement
    of ESPNet, ESPNetv2 and DABNet. ``B x 3 x H x W`` -> ``B x 3 x h x w``, each side
    ``ceil(side / 2)`` per pooling (the size of a 3x3 stride-2 convolution's output)."""
    for _ in range(times):
        image = F.avg_pool2d(image, 3, stride=2, padding=1)
    return image


class SegmentationModel(nn.Module):
    """Base class: a network mapping ``B x 3 x H x W`` normalised images to ``B x C x H x W`` logits.

    Subclasses set ``self.final`` (the block PEBAL fine-tunes) and implement :meth:`features`.
    ``C = num_classes`` is 20 for a PEBAL model (19 inlier trainIds + abstention channel 19).
    """

    normalization: Normalization = IMAGENET
    """How RGB uint8 input must be normalised for this network (see ``pebal_core.preprocessing``)."""
    size_divisor: int = 1
    """Input height and width must be multiples of this (the network raises ``ValueError`` otherwise)."""
    final: nn.Module

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes

    def features(self, x: torch.Tensor) -> Any:
        """Everything before ``final``: ``B x 3 x H x W`` -> the input of ``final``.

        A tensor for most networks; a ``NamedTuple`` where ``final`` needs several inputs
        (then :meth:`final_inputs` is overridden to unpack it).
        """
        raise NotImplementedError

    def final_inputs(self, feats: Any) -> tuple:
        """The positional arguments of ``final`` for ``features``' output: ``(feats,)`` by default."""
        return (feats,)

    def head(self, feats: Any, size: tuple[int, int]) -> torch.Tensor:
        """``final`` on ``features``' output, upsampled to ``size`` (H, W): ``B x C x H x W`` logits."""
        return upsample(self.final(*self.final_inputs(feats)), size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x), tuple(x.shape[-2:]))

    def forward_padded(self, x: torch.Tensor, multiple: int | None = None) -> torch.Tensor:
        """Logits for any input size: ``x`` is zero-padded (after normalisation) on the bottom and
        right to a multiple of ``multiple`` (default :attr:`size_divisor`), and the padding is
        cropped from the logits, so ``B x C x H x W`` comes back for a ``B x 3 x H x W`` input."""
        m = self.size_divisor if multiple is None else multiple
        h, w = x.shape[-2:]
        ph, pw = -h % m, -w % m
        if ph == 0 and pw == 0:
            return self(x)
        return self(F.pad(x, (0, pw, 0, ph)))[:, :, :h, :w]

    finetune_blocks: tuple[str, ...] = ("final",)
    """Names of the blocks :meth:`select_finetune_block` accepts; ``final`` (the last block) always."""

    def select_finetune_block(self, name: str) -> None:
        """Make ``name`` (one of :attr:`finetune_blocks`) the ``final`` block that PEBAL fine-tunes.

        Networks with more than one choice (ESPNet, ENet: ``decoder``) move the split between
        :meth:`features` and ``final``; the network's output and its state_dict do not change.
        """
        if name not in self.finetune_blocks:
            raise ValueError(
                f"{type(self).__name__} has no fine-tuning block {name!r}; choose one of {list(self.finetune_blocks)}"
            )

    def finetune_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters PEBAL trains: those of ``final`` only."""
        return self.final.parameters()

    def trunk_modules(self) -> Iterator[nn.Module]:
        """Direct children that are not (part of) ``final``: the blocks frozen during PEBAL fine-tuning."""
        in_final = {id(m) for m in self.final.modules()}
        return (m for m in self.children() if id(m) not in in_final)

    def attach_final_view(self, final: nn.Module) -> None:
        """Make ``final`` the fine-tuned block without registering it as a child module.

        For networks whose checkpoint layout keeps the final block's layers at the top level:
        every child of ``final`` must already be registered on this model (under its checkpoint
        name, possibly inside another child), so ``state_dict`` keys, ``.to()``,
        ``.train()``/``.eval()`` and ``named_modules`` all go through those registrations, and
        ``final`` only groups them (and defines how they are chained). Raises ``ValueError`` if a
        child of ``final`` is not a module of the model.
        """
        own = {id(m) for m in self.modules()}
        stray = [name for name, m in final.named_children() if id(m) not in own]
        if stray:
            raise ValueError(f"final view holds modules that are not modules of the model: {stray}")
        self.__dict__["final"] = final

    def train(self, mode: bool = True) -> SegmentationModel:
        super().train(mode)
        view = self.__dict__.get("final")
        if view is not None:  # an attached view is no child: keep its own flag in step too
            view.training = mode
        return self

    @property
    def output_conv(self) -> nn.Conv2d | nn.ConvTranspose2d:
        """The last convolution of ``final`` (its output channels are the classes). Not called
        ``classifier``: checkpoint layouts name their own layers so (ESPNet, DABNet), and a property
        of that name would hide those layers from ``getattr`` (which ``torch.export`` uses)."""
        convs = [m for m in self.final.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
        return convs[-1]


def conv_bn_relu(cin: int, cout: int, kernel: int = 3, dilation: int = 1) -> nn.Sequential:
    """``Conv(bias=False) -> BatchNorm -> ReLU`` with 'same' padding (keys ``0``, ``1``)."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=dilation * (kernel // 2), dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )
