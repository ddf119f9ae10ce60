"""ESPNetv2 segmentation (Mehta, Rastegari, Shapiro, Hajishirzi, "ESPNetv2: A Light-weight, Power
Efficient, and General Purpose Convolutional Neural Network", CVPR 2019), the network
``ESPNetv2Segmentation(s, classes, dataset='city')`` of sacmehta/EdgeNets.

Key layout
----------
The state_dict keys and shapes for ``s=2.0, num_classes=20`` equal the key layout of the real
Cityscapes checkpoint ``espnetv2_s_2.0_city_1024x512`` of sacmehta/EdgeNets (MIT;
``docs/data_sources.md``; 789,242 parameters; ``test/test_zoo_dabnet_espnetv2.py`` compares them
key by key). Written from the paper and the architecture facts of that repository's
``model/segmentation/espnetv2.py``, ``model/classification/espnetv2.py`` and ``nn_layers/``
(no code copied):

* BatchNorm with PyTorch's defaults (``eps=1e-5``); every activation is a per-channel PReLU;
  convolutions have no bias except the last one. Encoder blocks name their layers ``conv``,
  ``bn``, ``act`` (``CBR`` = conv + BN + PReLU, ``CB`` = conv + BN, ``BR`` = BN + PReLU); the
  decoder's use ``nn.Sequential`` (keys ``cbr.0/1/2``, ``br.0/1``);
* EESP unit (width ``c``, ``k = 4`` branches of ``n = c / 4`` channels): grouped (``k`` groups)
  1x1 ``CBR`` to ``n``; four depth-wise 3x3 convolutions (stride 2 when downsampling) whose
  dilations follow the receptive-field limit ``r`` of the level (kernel sizes 3, 5, 7, 9 mapped to
  dilations 1, 2, 3, 4; a size above ``r`` falls back to 3, dilation 1; sorted ascending);
  hierarchical fusion (running sums of the branch outputs), concatenation, ``BR``, grouped 1x1
  ``CB``; at stride 1 the input is added and a PReLU (``module_act``) follows; at stride 2 the
  output is returned before ``module_act`` (which stays unused, but is in the layout);
* downsampler (``cin -> cout``): [3x3 stride-2 average pool of the input, strided EESP to
  ``cout - cin``] concatenated, plus the input reinforcement (the image average-pooled down to the
  same size, then ``CBR`` 3 -> 3 (3x3) and ``CB`` 3 -> ``cout`` (1x1)), then a PReLU;
* encoder for ``s = 2.0`` (``base_net``): ``level1`` = ``CBR(3, 32, 3x3, stride 2)``;
  ``level2_0`` downsampler 32 -> 128 (``r = 13``); ``level3_0`` 128 -> 256 (``r = 11``) and three
  EESP 256 (``r = 9``); ``level4_0`` 256 -> 512 (``r = 9``) and seven EESP 512 (``r = 7``);
  outputs at 1/2, 1/4, 1/8, 1/16 (the classification network's level 5 is not part of it);
* decoder: efficient pyramid pooling (``bu_dec_l1..l4``): 1x1 ``CBR`` projection to
  ``p = min(classes // 2, 16)`` channels; five depth-wise 3x3 convolutions at scales 2.0, 1.5,
  1.0, 0.5, 0.1 of the map (each side ``ceil(scale * side)``, at least 5 cells; bilinear resizing with
  ``align_corners=True`` up, adaptive average pooling down, convolution in between), concatenated,
  ``BR``, a channel shuffle in 5 groups, grouped (``p`` groups) 3x3 ``CBR`` to ``p``, 1x1
  convolution to the output width, then ``BR`` (except in ``bu_dec_l4``, whose 1x1 convolution has
  a bias and gives the logits); widths 64, 48, 32, classes; ``merge_enc_dec_l2..l4`` project
  encoder features 256, 128, 32 -> 64, 48, 32 with a grouped (gcd groups) 3x3 ``CBR`` multiplied
  by a per-channel gate (global average pool, 1x1 convolution, sigmoid); each decoding step is
  ``x2 bilinear upsampling (align_corners=True) + merge_enc_dec -> bu_br (BN + PReLU) -> bu_dec``.

Input, output
-------------
Input: RGB/255 with the ImageNet mean and std (:data:`pebal_core.preprocessing.IMAGENET`); the
checkpoint was trained at 1024x512 (W x H). Height and width must be multiples of 16 (the
decoder adds 2x-upsampled 1/16 features to 1/8 features); other sizes raise ``ValueError``.
Output: logits at half resolution (``bu_dec_l4``), bilinearly upsampled with
``align_corners=True`` to the input size (``SegmentationModel.head``); 20 channels for the real
checkpoint = trainIds 0..18 + 19 = background (the ignore label), which PEBAL uses as its
abstention channel.

PEBAL split
-----------
``final`` (:class:`ESPNetv2LastDecoder`) = the last decoding step: ``merge_enc_dec_l4``,
``bu_br_l4``, ``bu_dec_l4`` (3,154 parameters for 20 classes), fed with ``bu_dec_l3``'s output
and the level-1 features (:class:`ESPNetv2Features`). ``select_finetune_block("decoder")`` takes
the whole decoder (:class:`ESPNetv2Decoder`, 43,556 parameters; fed with the four encoder levels),
and ``select_finetune_block("last_stage")`` also the last encoder stage ``level4_0`` and
``level4`` (:class:`ESPNetv2LastStage`, 701,118 parameters; fed with levels 1-3 and the image).
Every block is a view over the model's own layers, so the state_dict keys stay the checkpoint's.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pebal_core.models.base import SegmentationModel, pooled_image, upsample
from pebal_core.preprocessing import IMAGENET

WIDTHS = {2.0: (32, 128, 256, 512)}
"""Encoder output widths at 1/2, 1/4, 1/8, 1/16 per width multiplier ``s`` (the checkpoint: 2.0)."""
BRANCHES = 4
"""Parallel depth-wise branches of every EESP unit."""
REPEATS = (3, 7)
"""Stride-1 EESP units after ``level3_0`` and ``level4_0``."""
RECEPTIVE_LIMITS = (13, 11, 9, 9, 7)
"""Largest kernel size (``r``) of ``level2_0``, ``level3_0``, ``level3``, ``level4_0``, ``level4``."""
PYRAMID_SCALES = ((2, 1), (3, 2), (1, 1), (1, 2), (1, 10))
"""Scales ``p / q`` of the five depth-wise convolutions of the efficient pyramid pooling: 2.0, 1.5, 1.0,
0.5, 0.1."""
MIN_CELLS = 5
"""Smallest side of a rescaled map in the efficient pyramid pooling."""
DECODER_BASE = 16
"""Decoder base width for Cityscapes: levels 4, 3, 2 x this, then the classes."""


class CBR(nn.Module):
    """Convolution (no bias, 'same' padding) + BatchNorm + per-channel PReLU (keys ``conv``, ``bn``, ``act``)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class CB(nn.Module):
    """Convolution (no bias, 'same' padding) + BatchNorm (keys ``conv``, ``bn``)."""

    def __init__(self, cin: int, cout: int, kernel: int, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, 1, (kernel - 1) // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class BR(nn.Module):
    """BatchNorm + per-channel PReLU (keys ``bn``, ``act``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(channels)
        self.act = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(x))


class DepthwiseDilated(nn.Module):
    """A depth-wise 3x3 convolution with dilation ``d`` and 'same' padding (key ``conv``)."""

    def __init__(self, channels: int, stride: int, dilation: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride, dilation, dilation=dilation, groups=channels, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def branch_dilations(branches: int, limit: int) -> list[int]:
    """Dilations of an EESP unit's 3x3 branches: kernel sizes ``3, 5, 7, ...`` (those above
    ``limit`` replaced by 3), sorted, each size ``k`` realised as a 3x3 kernel with dilation ``(k-1)/2``."""
    sizes = sorted(3 + 2 * i if 3 + 2 * i <= limit else 3 for i in range(branches))
    return [(k - 1) // 2 for k in sizes]


class EESP(nn.Module):
    """Extremely efficient spatial pyramid unit: ``B x cin x H x W`` -> ``B x cout x H/stride x W/stride``.

    Args:
        cin, cout: channels (``cout`` must divide by :data:`BRANCHES`).
        stride: 2 inside a downsampler (the output then skips the residual and ``module_act``).
        limit: receptive-field limit of the branches (:func:`branch_dilations`).
    """

    def __init__(self, cin: int, cout: int, stride: int, limit: int) -> None:
        super().__init__()
        n = cout // BRANCHES
        if n * BRANCHES != cout:
            raise ValueError(f"EESP output width {cout} must be a multiple of {BRANCHES}")
        self.stride = stride
        self.residual = stride == 1 and cin == cout
        self.proj_1x1 = CBR(cin, n, 1, groups=BRANCHES)
        self.spp_dw = nn.ModuleList(DepthwiseDilated(n, stride, d) for d in branch_dilations(BRANCHES, limit))
        self.conv_1x1_exp = CB(cout, cout, 1, groups=BRANCHES)
        self.br_after_cat = BR(cout)
        self.module_act = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduced = self.proj_1x1(x)
        fused = [self.spp_dw[0](reduced)]
        for branch in self.spp_dw[1:]:
            fused.append(branch(reduced) + fused[-1])
        out = self.conv_1x1_exp(self.br_after_cat(torch.cat(fused, 1)))
        if self.stride == 2:
            return out
        return self.module_act(out + x if self.residual else out)


class DownSampler(nn.Module):
    """Strided level entry ``B x cin x H x W`` (+ the image) -> ``B x cout x H/2 x W/2``.

    Args:
        cin, cout: channels.
        limit: receptive-field limit of its strided EESP.
        image_pools: how often the image is average-pooled to reach the output size (the input
            reinforcement: 2 for ``level2_0``, 3, 4 for the next levels).
    """

    def __init__(self, cin: int, cout: int, limit: int, image_pools: int) -> None:
        super().__init__()
        self.eesp = EESP(cin, cout - cin, stride=2, limit=limit)
        self.inp_reinf = nn.Sequential(CBR(3, 3, 3), CB(3, cout, 1))
        self.act = nn.PReLU(cout)
        self.image_pools = image_pools

    def forward(self, x: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        out = torch.cat([F.avg_pool2d(x, 3, stride=2, padding=1), self.eesp(x)], 1)
        return self.act(out + self.inp_reinf(pooled_image(image, self.image_pools)))


class ESPNetv2Encoder(nn.Module):
    """The ESPNetv2 base network without its classification level 5 (``base_net``)."""

    def __init__(self, s: float) -> None:
        super().__init__()
        if s not in WIDTHS:
            raise ValueError(f"ESPNetv2 width multiplier s={s} is not supported; choose one of {sorted(WIDTHS)}")
        c1, c2, c3, c4 = WIDTHS[s]
        r2, r30, r3, r40, r4 = RECEPTIVE_LIMITS
        self.level1 = CBR(3, c1, 3, stride=2)
        self.level2_0 = DownSampler(c1, c2, r2, image_pools=2)
        self.level3_0 = DownSampler(c2, c3, r30, image_pools=3)
        self.level3 = nn.ModuleList(EESP(c3, c3, 1, r3) for _ in range(REPEATS[0]))
        self.level4_0 = DownSampler(c3, c4, r40, image_pools=4)
        self.level4 = nn.ModuleList(EESP(c4, c4, 1, r4) for _ in range(REPEATS[1]))

    def levels_1_to_3(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Level 1, 2 and 3 outputs: ``B x c1 x H/2 x W/2``, ``B x c2 x H/4 x W/4``, ``B x c3 x H/8 x W/8``."""
        l1 = self.level1(x)
        l2 = self.level2_0(l1, x)
        l3 = self.level3_0(l2, x)
        for unit in self.level3:
            l3 = unit(l3)
        return l1, l2, l3


def _level4(encoder: nn.Module, l3: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
    """The last encoder stage of ``encoder`` (the encoder or a view holding ``level4_0`` and
    ``level4``): level 3 (and the image) -> ``B x c4 x H/16 x W/16``."""
    y = encoder.level4_0(l3, image)
    for unit in encoder.level4:
        y = unit(y)
    return y


class ChannelShuffle(nn.Module):
    """Channel shuffle: ``B x (g * m) x H x W`` viewed as ``g x m`` groups, transposed to ``m x g``."""

    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        return x.reshape(b, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(b, c, h, w)


def _seq_br(channels: int) -> nn.Sequential:
    """The decoder's BN + PReLU as a plain sequence (keys ``0``, ``1``)."""
    return nn.Sequential(nn.BatchNorm2d(channels), nn.PReLU(channels))


class SequentialBR(nn.Module):
    """The decoder's BN + PReLU (key ``br.0/1``)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.br = _seq_br(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.br(x)


class SequentialCBR(nn.Module):
    """The decoder's conv (no bias, 'same' padding) + BN + PReLU (key ``cbr.0/1/2``)."""

    def __init__(self, cin: int, cout: int, kernel: int, groups: int = 1) -> None:
        super().__init__()
        self.cbr = nn.Sequential(
            nn.Conv2d(cin, cout, kernel, 1, (kernel - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout),
            nn.PReLU(cout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cbr(x)


def adaptive_avg_pool(x: torch.Tensor, size: tuple[int, int], max_window: tuple[int, int]) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(x, size)``, for windows of at most ``max_window`` (rows, columns) cells.

    Along a side of ``n`` cells pooled to ``m``, output cell ``i`` averages input cells
    ``floor(i n / m) .. ceil((i + 1) n / m) - 1`` (PyTorch's definition); the box average
    factorises into the two sides. Each side is one gather of a ``m x window`` table of cell
    indices and a weighted sum, so the computation also traces with symbolic sizes: PyTorch's own
    operator exports to ONNX with the window indices of the tracing size baked in, which gives
    wrong results (or index errors) at any other size of a dynamic-size export. ``max_window``
    (at least ``ceil(n / m) + 1``) is only used for symbolic sizes; with concrete sizes the
    table is exactly as wide as the widest window.
    """
    return _pool_side(_pool_side(x, -2, size[0], max_window[0]), -1, size[1], max_window[1])


def _pool_side(x: torch.Tensor, dim: int, m: int, max_window: int) -> torch.Tensor:
    """Adaptive average pooling of dimension ``dim`` (-2 or -1) to ``m`` cells."""
    index, weight = _window_table(x.shape[dim], m, max_window, x)
    picked = x.index_select(dim, index.flatten())
    if dim == -2:  # B x C x (m * window) x W -> B x C x m x window x W
        return (picked.unflatten(-2, index.shape) * weight[:, :, None]).sum(-2)
    return (picked.unflatten(-1, index.shape) * weight).sum(-1)


def _window_table(n: int, m: int, max_window: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell indices ``m x window`` (int64; past a window's end repeated, in range) and weights
    ``m x window`` (1 / window length inside the window, 0 past its end) of adaptive pooling
    ``n -> m`` cells. With concrete sizes the tables are computed in numpy, exactly as wide as the
    widest window (a fixed-size export holds them as constants); with symbolic sizes, by
    :func:`window_table_ops`, ``max_window`` wide."""
    if not (isinstance(n, int) and isinstance(m, int)):
        return window_table_ops(n, m, max_window, like)
    i = np.arange(m)[:, None]
    start, end = i * n // m, -(-(i + 1) * n // m)
    cells = start + np.arange((end - start).max())[None, :]
    weight = (cells < end) / (end - start)
    index = torch.from_numpy(np.minimum(cells, end - 1)).to(like.device)
    return index, torch.from_numpy(weight).to(like.device, like.dtype)


def window_table_ops(n: int, m: int, max_window: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_window_table` in torch operations, which trace with symbolic ``n`` and ``m``."""
    i = torch.arange(m, device=like.device)[:, None]
    start = (i * n) // m
    end = (i * n + n + m - 1) // m  # ceil((i + 1) n / m)
    cells = start + torch.arange(max_window, device=like.device)[None, :]
    weight = (cells < end).to(like.dtype) / (end - start).to(like.dtype)
    return torch.minimum(cells, end - 1), weight


def _scaled(side: int, scale: tuple[int, int]) -> int:
    """``max(ceil(side * p / q), MIN_CELLS)`` for ``scale = (p, q)``, in integer arithmetic (exact,
    and symbolic under ``torch.export``)."""
    p, q = scale
    return torch.sym_max((side * p + q - 1) // q, MIN_CELLS)


class EfficientPyramidPool(nn.Module):
    """Efficient pyramid pooling: ``B x cin x H x W`` -> ``B x cout x H x W`` (see the module docstring).

    Args:
        cin, proj, cout: input, projection and output channels.
        last: the network's last layer (its 1x1 convolution has a bias and no ``BR`` follows).
    """

    def __init__(self, cin: int, proj: int, cout: int, last: bool = False) -> None:
        super().__init__()
        n = len(PYRAMID_SCALES)
        self.stages = nn.ModuleList(nn.Conv2d(proj, proj, 3, 1, 1, groups=proj, bias=False) for _ in range(n))
        self.projection_layer = SequentialCBR(cin, proj, 1)
        self.merge_layer = nn.Sequential(
            SequentialBR(proj * n),
            ChannelShuffle(n),
            SequentialCBR(proj * n, proj, 3, groups=proj),
            nn.Conv2d(proj, cout, 1, bias=last),
        )
        self.br = None if last else SequentialBR(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.projection_layer(x)
        h, w = x.shape[-2:]
        outs = []
        for scale, stage in zip(PYRAMID_SCALES, self.stages, strict=True):
            p, q = scale
            size = (_scaled(h, scale), _scaled(w, scale))
            if p < q:  # pool down to >= 5 cells a side, convolve, back up: windows of <= q / p + 1 cells
                window = -(-q // p) + 1
                y = upsample(stage(adaptive_avg_pool(x, size, (window, window))), (h, w))
            elif p > q:  # up, convolve, pool back: windows of <= ceil(s) + 1 cells, all 5 when a side is 1
                window = max(-(-p // q) + 1, MIN_CELLS)
                y = adaptive_avg_pool(stage(upsample(x, size)), (h, w), (window, window))
            else:
                y = stage(x)
            outs.append(y)
        out = self.merge_layer(torch.cat(outs, 1))
        return out if self.br is None else self.br(out)


class EfficientPWConv(nn.Module):
    """Encoder-to-decoder projection ``B x cin x H x W`` -> ``B x cout x H x W``: a grouped
    (``gcd(cin, cout)`` groups) 3x3 conv + BN + PReLU, times a per-channel gate in 0..1 (global
    average pool, 1x1 conv, sigmoid; keys ``wt_layer.1``, ``expansion_layer.cbr``)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.wt_layer = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.Sigmoid())
        self.expansion_layer = SequentialCBR(cin, cout, 3, groups=math.gcd(cin, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expansion_layer(x) * self.wt_layer(x)


def _up2(x: torch.Tensor) -> torch.Tensor:
    """2x bilinear upsampling with ``align_corners=True`` (each decoding step)."""
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)


class ESPNetv2Features(NamedTuple):
    """What :meth:`ESPNetv2.features` hands to ``final`` (:class:`ESPNetv2LastDecoder`)."""

    decoded: torch.Tensor
    """``bu_dec_l3`` output, ``B x 32 x H/4 x W/4``."""
    level1: torch.Tensor
    """Encoder level-1 output, ``B x 32 x H/2 x W/2``."""


class ESPNetv2EncoderFeatures(NamedTuple):
    """What :meth:`ESPNetv2.features` hands to the ``decoder`` block (:class:`ESPNetv2Decoder`)."""

    level4: torch.Tensor
    """``B x 512 x H/16 x W/16``."""
    level3: torch.Tensor
    """``B x 256 x H/8 x W/8``."""
    level2: torch.Tensor
    """``B x 128 x H/4 x W/4``."""
    level1: torch.Tensor
    """``B x 32 x H/2 x W/2``."""


class ESPNetv2Level3Features(NamedTuple):
    """What :meth:`ESPNetv2.features` hands to the ``last_stage`` block (:class:`ESPNetv2LastStage`)."""

    level3: torch.Tensor
    """``B x 256 x H/8 x W/8``."""
    level2: torch.Tensor
    """``B x 128 x H/4 x W/4``."""
    level1: torch.Tensor
    """``B x 32 x H/2 x W/2``."""
    image: torch.Tensor
    """The normalised input ``B x 3 x H x W`` (``level4_0``'s input reinforcement)."""


def _decode_last(model: ESPNetv2, decoded: torch.Tensor, level1: torch.Tensor) -> torch.Tensor:
    """The last decoding step: ``bu_dec_l3`` output + level 1 -> ``B x classes x H/2 x W/2`` logits."""
    return model.bu_dec_l4(model.bu_br_l4(_up2(decoded) + model.merge_enc_dec_l4(level1)))


def _decode(model: ESPNetv2, l4: torch.Tensor, l3: torch.Tensor, l2: torch.Tensor, l1: torch.Tensor) -> torch.Tensor:
    """The whole decoder on the four encoder levels -> ``B x classes x H/2 x W/2`` logits."""
    return _decode_last(model, _decode_to_l3(model, l4, l3, l2), l1)


def _decode_to_l3(model: ESPNetv2, l4: torch.Tensor, l3: torch.Tensor, l2: torch.Tensor) -> torch.Tensor:
    """The decoder up to ``bu_dec_l3``: ``B x 32 x H/4 x W/4``."""
    y = model.bu_dec_l1(l4)
    y = model.bu_dec_l2(model.bu_br_l2(_up2(y) + model.merge_enc_dec_l2(l3)))
    return model.bu_dec_l3(model.bu_br_l3(_up2(y) + model.merge_enc_dec_l3(l2)))


class ESPNetv2LastDecoder(nn.Module):
    """The ``final`` block: ``merge_enc_dec_l4``, ``bu_br_l4``, ``bu_dec_l4``.

    ``forward(decoded, level1)`` (:class:`ESPNetv2Features`) -> ``B x classes x H/2 x W/2`` logits.
    """

    def __init__(self, model: ESPNetv2) -> None:
        super().__init__()
        self.merge_enc_dec_l4 = model.merge_enc_dec_l4
        self.bu_br_l4 = model.bu_br_l4
        self.bu_dec_l4 = model.bu_dec_l4

    def forward(self, decoded: torch.Tensor, level1: torch.Tensor) -> torch.Tensor:
        return _decode_last(self, decoded, level1)


class ESPNetv2Decoder(nn.Module):
    """The ``decoder`` block: every decoder layer (``bu_dec_l4`` last, so its 1x1 convolution is
    the model's ``classifier``).

    ``forward(level4, level3, level2, level1)`` (:class:`ESPNetv2EncoderFeatures`) ->
    ``B x classes x H/2 x W/2`` logits.
    """

    def __init__(self, model: ESPNetv2) -> None:
        super().__init__()
        for name in _DECODER_LAYERS:
            setattr(self, name, getattr(model, name))

    def forward(self, l4: torch.Tensor, l3: torch.Tensor, l2: torch.Tensor, l1: torch.Tensor) -> torch.Tensor:
        return _decode(self, l4, l3, l2, l1)


class ESPNetv2LastStage(nn.Module):
    """The ``last_stage`` block: the encoder's ``level4_0`` and ``level4`` units, then the decoder.

    ``forward(level3, level2, level1, image)`` (:class:`ESPNetv2Level3Features`) ->
    ``B x classes x H/2 x W/2`` logits.
    """

    def __init__(self, model: ESPNetv2) -> None:
        super().__init__()
        self.level4_0 = model.base_net.level4_0
        self.level4 = model.base_net.level4
        for name in _DECODER_LAYERS:
            setattr(self, name, getattr(model, name))

    def forward(self, l3: torch.Tensor, l2: torch.Tensor, l1: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        return _decode(self, _level4(self, l3, image), l3, l2, l1)


_DECODER_LAYERS = (
    "merge_enc_dec_l2",
    "merge_enc_dec_l3",
    "merge_enc_dec_l4",
    "bu_br_l2",
    "bu_br_l3",
    "bu_br_l4",
    "bu_dec_l1",
    "bu_dec_l2",
    "bu_dec_l3",
    "bu_dec_l4",
)
"""The decoder's layers, in the order the fine-tuning views register them (``bu_dec_l4`` last)."""


class ESPNetv2(SegmentationModel):
    """ESPNetv2 segmentation (see the module docstring).

    Args:
        num_classes: output channels (20 for the real checkpoint).
        s: width multiplier (the checkpoint: 2.0).
    """

    normalization = IMAGENET
    size_divisor = 16
    finetune_blocks = ("final", "decoder", "last_stage")

    def __init__(self, num_classes: int = 20, s: float = 2.0) -> None:
        super().__init__(num_classes)
        self.base_net = ESPNetv2Encoder(s)
        c1, c2, c3, c4 = WIDTHS[s]
        proj = min(num_classes // 2, DECODER_BASE)
        d1, d2, d3 = 4 * DECODER_BASE, 3 * DECODER_BASE, 2 * DECODER_BASE
        self.bu_dec_l1 = EfficientPyramidPool(c4, proj, d1)
        self.bu_dec_l2 = EfficientPyramidPool(d1, proj, d2)
        self.bu_dec_l3 = EfficientPyramidPool(d2, proj, d3)
        self.bu_dec_l4 = EfficientPyramidPool(d3, proj, num_classes, last=True)
        self.merge_enc_dec_l2 = EfficientPWConv(c3, d1)
        self.merge_enc_dec_l3 = EfficientPWConv(c2, d2)
        self.merge_enc_dec_l4 = EfficientPWConv(c1, d3)
        self.bu_br_l2 = _seq_br(d1)
        self.bu_br_l3 = _seq_br(d2)
        self.bu_br_l4 = _seq_br(d3)
        self.select_finetune_block("final")

    def select_finetune_block(self, name: str) -> None:
        """``final`` (the last decoding step, :class:`ESPNetv2LastDecoder`), ``decoder`` (the whole
        decoder, :class:`ESPNetv2Decoder`) or ``last_stage`` (``level4_0``, ``level4`` and the
        decoder, :class:`ESPNetv2LastStage`)."""
        super().select_finetune_block(name)
        views = {"final": ESPNetv2LastDecoder, "decoder": ESPNetv2Decoder, "last_stage": ESPNetv2LastStage}
        self.attach_final_view(views[name](self))
        self.block = name

    def features(self, x: torch.Tensor) -> ESPNetv2Features | ESPNetv2EncoderFeatures | ESPNetv2Level3Features:
        """Everything before the selected block, from ``B x 3 x H x W`` normalised RGB."""
        h, w = x.shape[-2:]
        if h % self.size_divisor or w % self.size_divisor:
            raise ValueError(
                f"ESPNetv2 needs input height and width that are multiples of {self.size_divisor}, got {h}x{w}; "
                "resize the image (e.g. Predictor input_size) or crop it to such a size"
            )
        l1, l2, l3 = self.base_net.levels_1_to_3(x)
        if self.block == "last_stage":
            return ESPNetv2Level3Features(l3, l2, l1, x)
        l4 = _level4(self.base_net, l3, x)
        if self.block == "decoder":
            return ESPNetv2EncoderFeatures(l4, l3, l2, l1)
        return ESPNetv2Features(_decode_to_l3(self, l4, l3, l2), l1)

    def final_inputs(self, feats: ESPNetv2Features | ESPNetv2EncoderFeatures | ESPNetv2Level3Features) -> tuple:
        """The selected block's arguments (its logits are at half resolution; ``head`` upsamples them)."""
        return tuple(feats)
