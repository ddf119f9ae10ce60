"""ESPNet (Mehta et al., "ESPNet: Efficient Spatial Pyramid of Dilated Convolutions for Semantic
Segmentation", ECCV 2018), the full encoder-decoder network ``ESPNet(classes, p, q)`` of
sacmehta/ESPNet.

Key layout
----------
The state_dict keys and shapes for ``p=2, q=8, num_classes=20`` equal
``shared/reference/espnet_p2q8_cityscapes_layout.json``, the layout of the real Cityscapes
checkpoint ``realdata/models/espnet_p2q8_cityscapes_sacmehta/espnet_p_2_q_8.safetensors``
(sacmehta/ESPNet ``pretrained/decoder/espnet_p_2_q_8.pth`` re-saved as safetensors; MIT). Written
from the paper and the architecture facts of that repository's ``test/Model.py`` (no code copied):

* every BatchNorm has ``eps=1e-3``; every activation is a per-channel PReLU; convolutions have
  no bias; ``CBR`` = conv + BN + PReLU, ``BR`` = BN + PReLU;
* ESP module ("reduce, split, transform, merge"): a reduction convolution ``c1`` to
  ``n = nOut // 5`` channels (1x1, or 3x3 stride 2 when downsampling), five parallel 3x3
  convolutions with dilations 1, 2, 4, 8, 16 (``d1`` gives the remaining ``nOut - 4n`` channels),
  hierarchical feature fusion (running sums of the d2..d16 outputs, against gridding),
  concatenation ``[d1, d2, d2+d4, d2+d4+d8, d2+d4+d8+d16]``; the residual version adds the input
  and ends in a ``BR`` (keys ``bn.bn``, ``bn.act``), the downsampling version ends in BN + PReLU
  (keys ``bn``, ``act``);
* input reinforcement: the image average-pooled (3x3, stride 2, padding 1) once / twice is
  concatenated to the level-1 / level-2 outputs;
* encoder (ESPNet-C): level 1 ``CBR(3, 16, 3, stride 2)``; ``b1 = BR(19)`` on [level1, image/2];
  level 2: downsampling ESP 19 -> 64, ``p`` residual ESP 64 -> 64, ``b2 = BR(131)`` on
  [level-2 output, level-2 downsampled, image/4]; level 3: downsampling ESP 131 -> 128,
  ``q`` residual ESP 128 -> 128, ``b3 = BR(256)`` on [level-3 downsampled, level-3 output];
  ``classifier`` 1x1 conv 256 -> classes (at 1/8 resolution);
* decoder: encoder logits -> BN (``br``) -> 2x2 stride-2 transposed conv (``up_l3``);
  ``level3_C`` 1x1 conv 131 -> classes on ``b2``'s output; concatenation [level3_C, up_l3] ->
  ``combine_l2_l3`` = BR(2 classes) + non-residual ESP (2 classes -> classes) -> ``up_l2`` =
  transposed conv + BR (1/2 resolution); ``conv`` = CBR(16 + classes -> classes, 3x3) on
  [up_l2 output, level-1 output]; ``classifier`` = 2x2 stride-2 transposed conv to full size.

Input, output
-------------
Input: BGR, mean ``[72.39, 82.91, 73.16]`` subtracted and std ``[45.32, 46.15, 44.91]`` divided
on the 0..255 scale (both in B, G, R order), then divided by 255
(:data:`pebal_core.preprocessing.ESPNET_CITYSCAPES`; ``test/VisualizeResults.py``). Height and
width must be multiples of 8 (three stride-2 stages whose outputs are concatenated with
transposed-convolution outputs); other sizes raise ``ValueError``. Output: ``num_classes`` logits
at the input resolution; for the real checkpoint 20 channels = trainIds 0..18 + 19 =
ignore/background.

PEBAL split
-----------
``final`` = the last decoder stage: ``conv`` (CBR on the concatenation of the half-resolution
decoder output and the level-1 features) and ``classifier`` (the transposed convolution to full
resolution); 8,140 parameters for 20 classes. Both keep their top-level checkpoint names;
``final`` is an :class:`ESPNetFinal` view over them. ``features`` returns
:class:`ESPNetFeatures`, which :meth:`ESPNet.final_inputs` unpacks into ``final``'s arguments.
``select_finetune_block("decoder")`` moves the split to the encoder's last feature map: ``final``
becomes :class:`ESPNetDecoder` (the encoder's 1x1 classifier and every decoder layer, 20,240
parameters) and ``features`` returns :class:`ESPNetTrunkFeatures`. The decoder is only
``classes`` channels wide, so the last stage alone has too little capacity to reshape the
energy of a whole region. ``select_finetune_block("last_stage")`` also unfreezes encoder level 3
(:class:`ESPNetLastStage`, 338,739 parameters); ``features`` then returns
:class:`ESPNetLevel2Features`.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from pebal_core.models.base import SegmentationModel, pooled_image
from pebal_core.preprocessing import ESPNET_CITYSCAPES


class BatchNorm(nn.BatchNorm2d):
    """``BatchNorm2d`` with ``eps=1e-3`` and no ``num_batches_tracked`` counter.

    The checkpoint was saved by PyTorch 0.3, before that counter existed, and its key layout has
    none. With a fixed momentum the counter only counts (no output depends on it), so these layers
    drop it and the state_dict equals the checkpoint's layout exactly.
    """

    def __init__(self, channels: int) -> None:
        super().__init__(channels, eps=1e-3)
        self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        self.running_mean.zero_()
        self.running_var.fill_(1)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args) -> None:
        # Skip BatchNorm's upgrade of pre-0.4 state dicts: it would insert the dropped counter.
        nn.Module._load_from_state_dict(self, state_dict, prefix, local_metadata, *args)


class Conv(nn.Module):
    """A bias-free convolution with 'same' padding (key ``conv``; ``C``/``CDilated`` in the paper's code)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        pad = (kernel - 1) // 2 * dilation
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=pad, dilation=dilation, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class BR(nn.Module):
    """BatchNorm + per-channel PReLU (keys ``bn``, ``act``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn = BatchNorm(channels)
        self.act = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(x))


class CBR(nn.Module):
    """Convolution + BatchNorm + per-channel PReLU (keys ``conv``, ``bn``, ``act``)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=(kernel - 1) // 2, bias=False)
        self.bn = BatchNorm(cout)
        self.act = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class _ESPBranches(nn.Module):
    """Reduce (``c1``), split into five dilated 3x3 branches (``d1``..``d16``), fuse hierarchically, merge."""

    def __init__(self, cin: int, cout: int, downsample: bool) -> None:
        super().__init__()
        n = cout // 5
        self.c1 = Conv(cin, n, 3, stride=2) if downsample else Conv(cin, n, 1)
        self.d1 = Conv(n, cout - 4 * n, 3, dilation=1)
        self.d2 = Conv(n, n, 3, dilation=2)
        self.d4 = Conv(n, n, 3, dilation=4)
        self.d8 = Conv(n, n, 3, dilation=8)
        self.d16 = Conv(n, n, 3, dilation=16)

    def merge(self, x: torch.Tensor) -> torch.Tensor:
        r = self.c1(x)
        s2 = self.d2(r)
        s4 = s2 + self.d4(r)
        s8 = s4 + self.d8(r)
        s16 = s8 + self.d16(r)
        return torch.cat([self.d1(r), s2, s4, s8, s16], 1)


class DownsamplerESP(_ESPBranches):
    """Strided ESP module: ``B x cin x H x W`` -> ``B x cout x H/2 x W/2``, then BN + PReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(cin, cout, downsample=True)
        self.bn = BatchNorm(cout)
        self.act = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.merge(x)))


class ESP(_ESPBranches):
    """ESP module at constant resolution; with ``residual`` the input is added before the final BR."""

    def __init__(self, cin: int, cout: int, residual: bool = True) -> None:
        super().__init__(cin, cout, downsample=False)
        self.bn = BR(cout)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.merge(x)
        return self.bn(x + y if self.residual else y)


class ESPNetEncoder(nn.Module):
    """ESPNet-C: ``forward(x) -> (level-1 output, b2 output, encoder logits)``.

    Shapes for ``B x 3 x H x W`` input: ``B x 16 x H/2 x W/2``, ``B x 131 x H/4 x W/4``,
    ``B x classes x H/8 x W/8``.
    """

    def __init__(self, classes: int, p: int, q: int) -> None:
        super().__init__()
        self.level1 = CBR(3, 16, 3, stride=2)
        self.b1 = BR(16 + 3)
        self.level2_0 = DownsamplerESP(16 + 3, 64)
        self.level2 = nn.ModuleList(ESP(64, 64) for _ in range(p))
        self.b2 = BR(128 + 3)
        self.level3_0 = DownsamplerESP(128 + 3, 128)
        self.level3 = nn.ModuleList(ESP(128, 128) for _ in range(q))
        self.b3 = BR(256)
        self.classifier = Conv(256, classes, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        level1, level2, level3 = self.trunk(x)
        return level1, level2, self.classifier(level3)

    def trunk(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Everything but ``classifier``: (level-1 output ``B x 16 x H/2 x W/2``, ``b2`` output
        ``B x 131 x H/4 x W/4``, ``b3`` output ``B x 256 x H/8 x W/8``)."""
        level1, level2 = self.levels_1_and_2(x)
        return level1, level2, level3_of(self, level2)

    def levels_1_and_2(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Level-1 output ``B x 16 x H/2 x W/2`` and ``b2`` output ``B x 131 x H/4 x W/4``."""
        level1 = self.level1(x)
        down2 = self.level2_0(self.b1(torch.cat([level1, pooled_image(x, 1)], 1)))
        y = down2
        for block in self.level2:
            y = block(y)
        return level1, self.b2(torch.cat([y, down2, pooled_image(x, 2)], 1))


def level3_of(stage: nn.Module, level2: torch.Tensor) -> torch.Tensor:
    """Encoder level 3 of ``stage`` (the encoder, or a view holding its ``level3_0``, ``level3`` and
    ``b3``): ``b2`` output ``B x 131 x H/4 x W/4`` -> ``b3`` output ``B x 256 x H/8 x W/8``."""
    down3 = stage.level3_0(level2)
    y = down3
    for block in stage.level3:
        y = block(y)
    return stage.b3(torch.cat([down3, y], 1))


class ESPNetFeatures(NamedTuple):
    """What :meth:`ESPNet.features` hands to ``final`` (through :meth:`ESPNet.final_inputs`)."""

    decoded: torch.Tensor
    """Decoder output at half resolution (after ``up_l2``), ``B x classes x H/2 x W/2``."""
    level1: torch.Tensor
    """Encoder level-1 output, ``B x 16 x H/2 x W/2``."""


class ESPNetFinal(nn.Module):
    """The last decoder stage: ``conv`` on [decoded, level1], then the ``classifier`` transposed conv.

    ``forward(decoded, level1)`` -> ``B x classes x H x W`` logits.
    """

    def __init__(self, classes: int) -> None:
        super().__init__()
        self.conv = CBR(16 + classes, classes, 3)
        self.classifier = nn.ConvTranspose2d(classes, classes, 2, stride=2, bias=False)

    def forward(self, decoded: torch.Tensor, level1: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.conv(torch.cat([decoded, level1], 1)))


class ESPNetTrunkFeatures(NamedTuple):
    """What :meth:`ESPNet.features` hands to the ``decoder`` block (see :class:`ESPNetDecoder`)."""

    level3: torch.Tensor
    """Encoder ``b3`` output (before its 1x1 classifier), ``B x 256 x H/8 x W/8``."""
    level2: torch.Tensor
    """Encoder ``b2`` output, ``B x 131 x H/4 x W/4``."""
    level1: torch.Tensor
    """Encoder level-1 output, ``B x 16 x H/2 x W/2``."""


_DECODER_LAYERS = ("level3_C", "br", "up_l3", "combine_l2_l3", "up_l2", "conv", "classifier")
"""The model's decoder layers, in the order the fine-tuning views register them (``classifier`` last)."""


def _attach_decoder(view: nn.Module, model: ESPNet) -> None:
    """Register the encoder's 1x1 classifier and every decoder layer of ``model`` on ``view``."""
    view.encoder_classifier = model.encoder.classifier
    for name in _DECODER_LAYERS:
        setattr(view, name, getattr(model, name))


def _decode(view: nn.Module, level3: torch.Tensor, level2: torch.Tensor, level1: torch.Tensor) -> torch.Tensor:
    """The encoder's 1x1 classifier and the decoder (layers of ``view``) -> ``B x classes x H x W`` logits."""
    up3 = view.up_l3(view.br(view.encoder_classifier(level3)))
    decoded = view.up_l2(view.combine_l2_l3(torch.cat([view.level3_C(level2), up3], 1)))
    return view.classifier(view.conv(torch.cat([decoded, level1], 1)))


class ESPNetDecoder(nn.Module):
    """The ``decoder`` fine-tuning block: the encoder's 1x1 classifier and the whole decoder.

    A view over the model's own layers (``encoder.classifier``, ``level3_C``, ``br``, ``up_l3``,
    ``combine_l2_l3``, ``up_l2``, ``conv``, ``classifier``): 20,240 parameters for 20 classes.
    ``forward(level3, level2, level1)`` -> ``B x classes x H x W`` logits.
    """

    def __init__(self, model: ESPNet) -> None:
        super().__init__()
        _attach_decoder(self, model)

    def forward(self, level3: torch.Tensor, level2: torch.Tensor, level1: torch.Tensor) -> torch.Tensor:
        return _decode(self, level3, level2, level1)


class ESPNetLevel2Features(NamedTuple):
    """What :meth:`ESPNet.features` hands to the ``last_stage`` block (see :class:`ESPNetLastStage`)."""

    level2: torch.Tensor
    """Encoder ``b2`` output, ``B x 131 x H/4 x W/4``."""
    level1: torch.Tensor
    """Encoder level-1 output, ``B x 16 x H/2 x W/2``."""


class ESPNetLastStage(nn.Module):
    """The ``last_stage`` block: encoder level 3 (``level3_0``, the ``q`` residual ESP modules,
    ``b3``), then the encoder's 1x1 classifier and the whole decoder; 338,739 parameters for
    p=2, q=8, 20 classes (most of the network). ``forward(level2, level1)`` -> ``B x classes x H x W`` logits.
    """

    def __init__(self, model: ESPNet) -> None:
        super().__init__()
        self.level3_0 = model.encoder.level3_0
        self.level3 = model.encoder.level3
        self.b3 = model.encoder.b3
        _attach_decoder(self, model)

    def forward(self, level2: torch.Tensor, level1: torch.Tensor) -> torch.Tensor:
        return _decode(self, level3_of(self, level2), level2, level1)


class ESPNet(SegmentationModel):
    """ESPNet with its light-weight decoder (see the module docstring).

    Args:
        num_classes: output channels (20 for the real checkpoint); every decoder layer has this width.
        p, q: number of residual ESP modules at levels 2 and 3 (the checkpoint: 2 and 8).
    """

    normalization = ESPNET_CITYSCAPES
    size_divisor = 8

    def __init__(self, num_classes: int = 20, p: int = 2, q: int = 8) -> None:
        super().__init__(num_classes)
        c = num_classes
        final = ESPNetFinal(c)
        self.encoder = ESPNetEncoder(c, p, q)
        self.level3_C = Conv(128 + 3, c, 1)
        self.br = BatchNorm(c)
        self.conv = final.conv  # registered here, in its checkpoint position
        self.up_l3 = nn.Sequential(nn.ConvTranspose2d(c, c, 2, stride=2, bias=False))
        self.combine_l2_l3 = nn.Sequential(BR(2 * c), ESP(2 * c, c, residual=False))
        self.up_l2 = nn.Sequential(nn.ConvTranspose2d(c, c, 2, stride=2, bias=False), BR(c))
        self.classifier = final.classifier
        self.attach_final_view(final)
        self.__dict__["_final_view"] = final  # not a child: its layers are registered above
        self.block = "final"

    finetune_blocks = ("final", "decoder", "last_stage")

    def select_finetune_block(self, name: str) -> None:
        """``final`` (the last decoder stage, 8,140 parameters), ``decoder`` (the encoder's 1x1
        classifier and the whole decoder, :class:`ESPNetDecoder`, 20,240 parameters) or
        ``last_stage`` (encoder level 3 and that decoder, :class:`ESPNetLastStage`)."""
        super().select_finetune_block(name)
        views = {"decoder": ESPNetDecoder, "last_stage": ESPNetLastStage}
        self.attach_final_view(self._final_view if name == "final" else views[name](self))
        self.block = name

    def features(self, x: torch.Tensor) -> ESPNetFeatures | ESPNetTrunkFeatures | ESPNetLevel2Features:
        """Everything before the selected block, from ``B x 3 x H x W`` normalised BGR:
        :class:`ESPNetFeatures` (``final``), :class:`ESPNetTrunkFeatures` (``decoder``) or
        :class:`ESPNetLevel2Features` (``last_stage``)."""
        h, w = x.shape[-2:]
        if h % self.size_divisor or w % self.size_divisor:
            raise ValueError(
                f"ESPNet needs input height and width that are multiples of {self.size_divisor}, got {h}x{w}; "
                "resize the image (e.g. Predictor input_size) or crop it to such a size"
            )
        if self.block == "last_stage":
            level1, level2 = self.encoder.levels_1_and_2(x)
            return ESPNetLevel2Features(level2, level1)
        if self.block == "decoder":
            level1, level2, level3 = self.encoder.trunk(x)
            return ESPNetTrunkFeatures(level3, level2, level1)
        level1, level2, logits = self.encoder(x)
        up3 = self.up_l3(self.br(logits))
        decoded = self.up_l2(self.combine_l2_l3(torch.cat([self.level3_C(level2), up3], 1)))
        return ESPNetFeatures(decoded, level1)

    def final_inputs(self, feats: ESPNetFeatures | ESPNetTrunkFeatures | ESPNetLevel2Features) -> tuple:
        """``final``'s arguments (``(decoded, level1)``; ``(level3, level2, level1)`` with the
        ``decoder`` block, ``(level2, level1)`` with ``last_stage``); it returns logits at the input size."""
        return tuple(feats)
