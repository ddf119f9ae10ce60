"""The model zoo: ``build_model(name, num_classes=20, **kwargs)``.

Each entry records how to build the network and what a user needs to know about it (input
normalisation, output stride, description). Checkpoint metadata stores ``arch`` (the entry
name) and ``arch_kwargs`` so that :func:`pebal_core.models.checkpoint.load_model` can rebuild
exactly the network that was saved.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from pebal_core.models.base import SegmentationModel
from pebal_core.models.dabnet import DABNet
from pebal_core.models.deeplab import DeepLabV3Plus
from pebal_core.models.enet import ENet
from pebal_core.models.espnet import ESPNet
from pebal_core.models.espnetv2 import ESPNetv2
from pebal_core.models.resnet import ResNet
from pebal_core.models.wider_resnet import WiderResNet38
from pebal_core.registry import Registry


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., SegmentationModel]
    description: str


MODELS: Registry[ModelEntry] = Registry("model")
"""The zoo: architecture name -> its :class:`ModelEntry` (builder and one-line description)."""


def register(
    name: str, description: str
) -> Callable[[Callable[..., SegmentationModel]], Callable[..., SegmentationModel]]:
    """Decorator adding a builder ``f(num_classes, **kwargs) -> SegmentationModel`` to :data:`MODELS`."""

    def wrap(builder: Callable[..., SegmentationModel]) -> Callable[..., SegmentationModel]:
        MODELS.register(name, ModelEntry(name, builder, description))
        return builder

    return wrap


def list_models() -> dict[str, str]:
    """Names of every registered architecture and their one-line descriptions."""
    return {name: MODELS[name].description for name in sorted(MODELS)}


def arch_options(name: str) -> dict[str, object]:
    """The architecture options (``arch_kwargs``) ``name`` takes, with their defaults."""
    params = inspect.signature(MODELS[name].builder).parameters.values()
    return {p.name: p.default for p in params if p.name != "num_classes"}


def build_model(name: str, num_classes: int = 20, **kwargs) -> SegmentationModel:
    """Build an (untrained) network of the zoo.

    Args:
        name: an entry of :func:`list_models` (``wrn38``, ``resnet101``, ``resnet50``, ``resnet18``, ``enet``,
            ``espnet_p2q8``...); another name raises :class:`~pebal_core.registry.UnknownNameError`
            (a ``KeyError``) listing them.
        num_classes: output channels; 20 for PEBAL (19 Cityscapes trainIds + abstention),
            19 for a plain Cityscapes segmenter.
        kwargs: architecture options of that entry (e.g. ``width`` for ``resnet18``).

    Returns:
        a :class:`SegmentationModel` whose forward maps ``B x 3 x H x W`` normalised images to
        ``B x num_classes x H x W`` logits. ``model.arch`` and ``model.arch_kwargs`` record how
        it was built.
    """
    model = MODELS[name].builder(num_classes=num_classes, **kwargs)
    model.arch = name
    model.arch_kwargs = dict(kwargs)
    return model


@register("wrn38", "WideResNet38-A2 DeepLabv3+, output stride 8: the PEBAL paper/reference model (137 M params)")
def _wrn38(num_classes: int = 20) -> SegmentationModel:
    return DeepLabV3Plus(WiderResNet38(), num_classes, output_stride=8)


@register("resnet101", "ResNet-101 DeepLabv3+, output stride 8 (the paper's ResNet backbone)")
def _resnet101(num_classes: int = 20, output_stride: int = 8) -> SegmentationModel:
    return DeepLabV3Plus(ResNet(101, output_stride), num_classes, output_stride)


@register("resnet50", "ResNet-50 DeepLabv3+, output stride 8")
def _resnet50(num_classes: int = 20, output_stride: int = 8) -> SegmentationModel:
    return DeepLabV3Plus(ResNet(50, output_stride), num_classes, output_stride)


@register(
    "resnet18",
    "real-time ResNet-18 DeepLabv3+, output stride 16, slim decoder (128/32/128); `width` scales the trunk",
)
def _resnet18(num_classes: int = 20, width: float = 1.0, output_stride: int = 16) -> SegmentationModel:
    return DeepLabV3Plus(
        ResNet(18, output_stride, width), num_classes, output_stride, aspp_dim=128, fine_dim=32, final_dim=128
    )


@register(
    "enet",
    "ENet (Paszke et al. 2016), davidtvs/PyTorch-ENet layout: the real Cityscapes 'void' checkpoint (0.35 M params, "
    "input RGB/255)",
)
def _enet(num_classes: int = 20) -> SegmentationModel:
    return ENet(num_classes)


@register(
    "espnet_p2q8",
    "ESPNet (Mehta et al. 2018) with decoder, p=2 q=8, sacmehta/ESPNet layout (0.36 M params, BGR mean/std input, "
    "H and W multiples of 8)",
)
def _espnet_p2q8(num_classes: int = 20) -> SegmentationModel:
    return ESPNet(num_classes, p=2, q=8)


@register(
    "dabnet",
    "DABNet (Li et al. 2019), Reagan1311/DABNet layout: the real Cityscapes checkpoint (0.76 M params, 19 classes "
    "extended to 20; input RGB minus the Cityscapes mean on 0..255, H and W multiples of 4)",
)
def _dabnet(num_classes: int = 20) -> SegmentationModel:
    return DABNet(num_classes)


@register(
    "espnetv2_s2",
    "ESPNetv2 segmentation (Mehta et al. 2019), s=2.0, sacmehta/EdgeNets layout (0.79 M params, channel 19 = "
    "background; input ImageNet mean/std, H and W multiples of 16)",
)
def _espnetv2_s2(num_classes: int = 20) -> SegmentationModel:
    return ESPNetv2(num_classes, s=2.0)
