"""Dataclass configurations with YAML in/out.

Every tool that takes a configuration (training, evaluation, synthesis) describes it as a
(possibly nested) dataclass whose defaults are the paper's values. :func:`load_config` reads a
YAML file into it, applies ``key.sub=value`` overrides from the command line, and rejects
unknown keys and wrongly-typed values with a message naming the key, so a typo never silently
falls back to a default.

A file may inherit others (:func:`read_config_file`): ``_base_: other.yaml`` (or a list of
files), paths relative to the file that names them. The bases are read first, in order, then
the file itself; a later file wins, and mappings are merged key by key (lists and scalars are
replaced)::

    # config/realdata_camvid_enet.yaml
    _base_: base_realdata_camvid.yaml
    out_dir: runs/real_model/enet
    model: {arch: enet}            # model.base etc. stay as the base sets them
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from pebal_core.data.road_obstacles import RoadPaste
from pebal_core.fileio import atomic_write_text
from pebal_core.labels import COCO_CITYSCAPES_LIKE
from pebal_core.registry import Registry

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration file or override is invalid."""


def to_dict(cfg: Any) -> dict:
    """A dataclass as plain Python data (tuples become lists), suitable for YAML and JSON."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v

    return plain(cfg)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, f"{where}.")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=False)))
        item = args[0] if args else Any
        seq = [_coerce(item, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(seq) if origin is tuple else seq
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # PyYAML reads 1e-5 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: dict, where: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, validating keys and types (nested dataclasses too)."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(where + k for k in unknown)}; "
            f"allowed under {where.rstrip('.') or 'the top level'}: {', '.join(sorted(names))}"
        )
    kwargs = {k: _coerce(hints[k], v, f"{where}{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where.rstrip('.') or cls.__name__}: {e}") from e


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for k in keys[:-1]:
        node = node.setdefault(k, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {k!r} is not a section")
    node[keys[-1]] = value


BASE_KEY = "_base_"
"""The key of a configuration file that names the file(s) it inherits."""


def read_config_file(path: str | os.PathLike) -> dict:
    """The mapping of the YAML file at ``path`` with its :data:`BASE_KEY` files merged in (see the
    module docstring); raises :class:`ConfigError` for a missing file, a cycle (naming the chain of
    files) or a malformed ``_base_``."""
    return _read_with_bases(Path(path), ())


def _read_with_bases(path: Path, chain: tuple[Path, ...]) -> dict:
    seen = [p.resolve() for p in chain]
    if path.resolve() in seen:
        loop = " -> ".join(str(p) for p in (*chain[seen.index(path.resolve()) :], path))
        raise ConfigError(f"configuration files inherit each other in a cycle: {loop}; remove one of these {BASE_KEY}")
    if not path.is_file():
        if chain:
            raise ConfigError(
                f"{chain[-1]}: {BASE_KEY} file not found: {path} (a {BASE_KEY} path is relative to the file naming it)"
            )
        raise ConfigError(f"config file not found: {path}")
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from e
    if not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    bases = loaded.pop(BASE_KEY, [])
    bases = [bases] if isinstance(bases, str) else bases
    if not isinstance(bases, list) or not all(isinstance(b, str) and b for b in bases):
        raise ConfigError(f"{path}: {BASE_KEY} must be a file name or a list of file names, got {bases!r}")
    data: dict = {}
    for base in bases:
        _merge(data, _read_with_bases(path.parent / base, (*chain, path)))
    _merge(data, loaded)
    return data


def load_config(cls: type[T], path: str | os.PathLike | None = None, overrides: list[str] | tuple[str, ...] = ()) -> T:
    """Defaults of ``cls``, updated by the YAML file at ``path`` (with its bases,
    :func:`read_config_file`) and then by ``key=value`` overrides.

    Override values are parsed as YAML scalars/lists (``train.lr=1e-5``, ``data.crop=[512,512]``).
    """
    data = to_dict(cls())
    if path is not None:
        _merge(data, read_config_file(path))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key.sub=value")
        key, raw = item.split("=", 1)
        _set_dotted(data, key.strip(), yaml.safe_load(raw))
    return from_dict(cls, data)


def _merge(base: dict, new: dict) -> None:
    """Update ``base`` with ``new`` in place: mappings merged key by key, everything else replaced."""
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Write a dataclass config as YAML (atomically)."""
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


# ----------------------------------------------------------------------------- training
# The configuration of `pebal train` (pebal_core.train). Defaults are the paper's
# hyperparameters (Tian et al., ECCV 2022); dataset paths are placeholders a user replaces.


@dataclasses.dataclass
class LossConfig:
    """The PEBAL objective (``pebal_core.losses``) and the switches of the paper's ablation.

    ``variant``: ``reference`` reproduces the public reference implementation's arithmetic,
    ``paper`` the paper's Eqs. 2-8 (the differences are listed in ``pebal_core.losses``).
    ``abstention``: ``energy`` = PAL with the energy-biased penalty ``a = logsumexp^2``;
    ``fixed`` = abstention learning with a constant penalty ``fixed_penalty`` (Deep Gambler);
    ``ce`` = cross-entropy with anomalous pixels as an extra class 19.
    ``None`` for ``smooth_penalty``, ``smoothness_weight`` and ``sparsity_weight`` means the
    variant's value (reference: smoothed penalty, 3e-6, 5e-4; paper: raw penalty, 5e-4, 3e-6).
    ``distill_weight`` (not in the paper; 0 = off): weight of the distillation term that keeps
    the 19-way class distribution of every non-anomalous pixel at the base network's
    (``pebal_core.losses.distillation``); it leaves the energy free to move.
    """

    variant: typing.Literal["reference", "paper"] = "reference"
    abstention: typing.Literal["energy", "fixed", "ce"] = "energy"
    smooth_penalty: bool | None = None
    fixed_penalty: float = 4.5
    ebm: bool = True
    regularizer: bool = True
    ebm_weight: float = 0.1
    m_in: float = -12.0
    m_out: float = -6.0
    ood_weight: float = 0.1
    smoothness_weight: float | None = None
    sparsity_weight: float | None = None
    distill_weight: float = 0.0

    def __post_init__(self) -> None:
        if self.fixed_penalty <= 0:
            raise ValueError(f"fixed_penalty must be > 0, got {self.fixed_penalty}")
        for name in ("ebm_weight", "ood_weight", "smoothness_weight", "sparsity_weight", "distill_weight"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")

    def resolved_smooth_penalty(self) -> bool:
        return self.variant == "reference" if self.smooth_penalty is None else self.smooth_penalty

    def resolved_smoothness_weight(self) -> float:
        default = 3e-6 if self.variant == "reference" else 5e-4
        return default if self.smoothness_weight is None else self.smoothness_weight

    def resolved_sparsity_weight(self) -> float:
        default = 5e-4 if self.variant == "reference" else 3e-6
        return default if self.sparsity_weight is None else self.sparsity_weight


@dataclasses.dataclass
class ExtraInliers:
    """A further inlier set in the Cityscapes layout, added to the training inliers (``data.extra_inliers``).

    ``size``: every frame resized to ``[height, width]`` on reading (null = as stored), e.g. the
    512x1024 a real-time network runs at; ``repeat``: how often each frame appears per epoch (a
    handful of frames among hundreds); ``ego_vehicle``: ``void`` or ``inlier`` (the recording
    car's bonnet as an inlier without a class, :class:`~pebal_core.data.cityscapes.Cityscapes`);
    ``in_memory``: read each frame once and keep it (for a handful of frames).
    """

    cityscapes: str
    split: str = "train"
    labels: typing.Literal["auto", "trainIds", "labelIds"] = "auto"
    size: tuple[int, int] | None = None
    repeat: int = 1
    ego_vehicle: typing.Literal["void", "inlier"] = "void"
    in_memory: bool = False

    def __post_init__(self) -> None:
        if self.repeat < 1:
            raise ValueError(f"repeat must be >= 1, got {self.repeat}")
        if self.size is not None and min(self.size) < 1:
            raise ValueError(f"size must be positive [height, width], got {list(self.size)}")


@dataclasses.dataclass
class TrainDataConfig:
    """Training data: an inlier set, COCO outliers, AnomalyMix, augmentation.

    ``inliers``: ``cityscapes`` reads ``cityscapes`` (official layout, ``labels`` encoding);
    ``camvid`` reads ``camvid`` (SegNet layout, labels mapped to trainIds with the
    ``camvid_table`` look-up table, :mod:`pebal_core.data.camvid`). ``split`` applies to both.
    ``coco_format``: ``instances`` / ``ood_seg`` (:mod:`pebal_core.data.coco`, one outlier
    sample per image) or ``panoptic`` (:mod:`pebal_core.data.coco_panoptic`, one sample per
    thing segment, ``coco_min_size`` = smallest bounding-box side); ``auto`` = instances or
    ood_seg, whichever is on disk. ``coco_split`` may list several splits separated by commas.

    ``ood``: ``anomalymix`` pastes COCO objects into inlier images (label 254); ``whole`` adds
    the COCO images themselves (objects 254, background void; the paper's "CE + COCO" row);
    ``none`` uses inlier images only (``pretrain`` mode ignores outliers anyway).
    ``ood_ratio``: outlier samples per inlier image and epoch (reference: 0.1, a fresh random
    subset of COCO each epoch). ``paste_scale``: range of the random rescaling of a pasted
    object (1.0 = its COCO size, as the reference). ``scale``/``crop``/``flip``: joint random
    rescaling, crop (void-padded) and horizontal flip probability, applied after mixing.
    ``val_split``: in ``pretrain`` mode, inlier mIoU on this split after every epoch.

    ``extra_inliers``: further Cityscapes-layout sets added to the training inliers
    (:class:`ExtraInliers`). ``paste``: how AnomalyMix pastes objects, ``paper`` (anywhere, the
    reference), ``road`` (onto the road, sized by the ground plane, with the ``road`` settings,
    :class:`~pebal_core.data.road_obstacles.RoadPaste`) or ``both`` (a road sample with
    probability ``road_fraction``); :mod:`pebal_core.data.anomalymix`. ``crop_keeps_anomaly``:
    the crop of a mixed sample contains at least one anomalous pixel.
    """

    inliers: typing.Literal["cityscapes", "camvid"] = "cityscapes"
    cityscapes: str = "/path/to/cityscapes"
    camvid: str | None = None
    camvid_table: str = "recommended"
    split: str = "train"
    labels: typing.Literal["auto", "trainIds", "labelIds"] = "auto"
    coco: str | None = "/path/to/coco"
    coco_split: str = "train2017"
    coco_format: typing.Literal["auto", "instances", "ood_seg", "panoptic"] = "auto"
    coco_exclude: list[str] = dataclasses.field(default_factory=lambda: list(COCO_CITYSCAPES_LIKE))
    coco_min_size: int = 480
    ood: typing.Literal["anomalymix", "whole", "none"] = "anomalymix"
    ood_ratio: float = 0.1
    paste_scale: tuple[float, float] = (1.0, 1.0)
    scale: tuple[float, float] = (0.5, 2.0)
    crop: tuple[int, int] = (900, 900)
    flip: float = 0.5
    workers: int = 4
    val_split: str | None = None
    extra_inliers: list[ExtraInliers] = dataclasses.field(default_factory=list)
    paste: typing.Literal["paper", "road", "both"] = "paper"
    road_fraction: float = 0.5
    road: RoadPaste = dataclasses.field(default_factory=RoadPaste)
    crop_keeps_anomaly: bool = False

    def __post_init__(self) -> None:
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"scale must be a range 0 < min <= max, got {list(self.scale)}")
        if not 0 < self.paste_scale[0] <= self.paste_scale[1]:
            raise ValueError(f"paste_scale must be a range 0 < min <= max, got {list(self.paste_scale)}")
        if min(self.crop) < 1:
            raise ValueError(f"crop must be positive [height, width], got {list(self.crop)}")
        if not 0 <= self.flip <= 1:
            raise ValueError(f"flip is a probability, got {self.flip}")
        if not 0 <= self.road_fraction <= 1:
            raise ValueError(f"road_fraction is a probability, got {self.road_fraction}")
        if self.ood_ratio < 0 or self.workers < 0 or self.coco_min_size < 0:
            raise ValueError("ood_ratio, workers and coco_min_size must be >= 0")


@dataclasses.dataclass
class TrainModelConfig:
    """The network to train.

    ``base``: checkpoint to start from, any format ``load_model`` reads (a 19-class classifier
    is extended to 20 channels); required in ``pebal`` mode, optional in ``pretrain`` mode
    (``null`` = random initialisation). ``arch``: registry name (``null`` = the checkpoint's
    metadata); ``arch_kwargs``: e.g. ``{width: 0.5}`` for ``resnet18``. ``finetune``: the block
    ``pebal`` mode trains (``final``, the paper's; ``decoder`` for ESPNet and ENet, see
    ``SegmentationModel.select_finetune_block``).
    """

    base: str | None = "/path/to/cityscapes_best.pth"
    arch: str | None = "wrn38"
    arch_kwargs: dict[str, typing.Any] = dataclasses.field(default_factory=dict)
    finetune: str = "final"


@dataclasses.dataclass
class OptimConfig:
    """Optimiser and poly learning-rate schedule ``lr * (1 - step / total) ** poly_power``
    (after ``warmup_steps`` of linear warm-up). Paper: Adam, lr 1e-5, power 0.9.
    ``stage_lr_scale``: with ``model.finetune: last_stage``, the encoder stage's layers learn at
    ``lr * stage_lr_scale`` (the decoder at ``lr``)."""

    name: typing.Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = 1e-5
    weight_decay: float = 0.0
    momentum: float = 0.9
    poly_power: float = 0.9
    warmup_steps: int = 0
    stage_lr_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.lr <= 0 or self.weight_decay < 0 or self.poly_power < 0 or self.warmup_steps < 0:
            raise ValueError("lr must be > 0; weight_decay, poly_power and warmup_steps >= 0")
        if self.stage_lr_scale <= 0:
            raise ValueError(f"stage_lr_scale must be > 0, got {self.stage_lr_scale}")


@dataclasses.dataclass
class TrainConfig:
    """Everything ``pebal train`` needs (YAML <-> dataclass with :func:`load_config`).

    ``mode``: ``pebal`` fine-tunes only ``final`` of a Cityscapes-trained base with the PEBAL
    loss on AnomalyMix data; ``pretrain`` trains the whole network with 19-class cross-entropy
    on the inlier set (for bases that are not Cityscapes-trained).
    ``out_dir`` receives ``last.pt`` (resumable training state), ``history.jsonl`` (losses per
    logged step) and, at the end, ``model.safetensors`` (the trained model with this
    configuration in its metadata). ``batch_size`` is per process (``torchrun`` multiplies it).
    ``max_steps`` stops early (and shortens the LR schedule accordingly).
    ``reference_bn``: run the frozen trunk in train mode as the reference does (BatchNorm
    batch statistics, running stats drifting); default: eval mode.
    ``frozen_bn``: keep the BatchNorm layers of the fine-tuned block in eval mode (their
    running statistics stay the base's; scale and shift still train).
    ``checkpoint_every``: also write ``last.pt`` every N steps (0 = once per epoch).
    ``snapshot_every``: also write the model as ``step_<N>.safetensors`` every N steps (0 = never).
    ``channels_last``: train in the NHWC memory format (about 1.5x faster convolutions on the
    CPU; results differ from NCHW only by float rounding).
    """

    mode: typing.Literal["pebal", "pretrain"] = "pebal"
    out_dir: str = "runs/pebal"
    model: TrainModelConfig = dataclasses.field(default_factory=TrainModelConfig)
    data: TrainDataConfig = dataclasses.field(default_factory=TrainDataConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    batch_size: int = 8
    epochs: int = 20
    max_steps: int | None = None
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    reference_bn: bool = False
    frozen_bn: bool = False
    sync_bn: bool = True
    channels_last: bool = True
    checkpoint_every: int = 0
    snapshot_every: int = 0
    log_every: int = 10
    half: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.epochs < 1:
            raise ValueError("batch_size and epochs must be >= 1")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError("max_steps must be >= 1 (or null)")
        if self.checkpoint_every < 0 or self.snapshot_every < 0 or self.log_every < 1 or self.threads < 0:
            raise ValueError("checkpoint_every and threads must be >= 0, log_every >= 1")


ABLATION_ROWS: Registry[tuple[str, ...]] = Registry("ablation row")
for _row, _overrides in (
    ("ce_coco", ("loss.abstention=ce", "loss.ebm=false", "loss.regularizer=false", "data.ood=whole")),
    ("ce_anomalymix", ("loss.abstention=ce", "loss.ebm=false", "loss.regularizer=false")),
    ("al", ("loss.abstention=fixed", "loss.ebm=false", "loss.regularizer=false")),
    ("al_ebm", ("loss.abstention=fixed", "loss.regularizer=false")),
    ("ebm_pal", ("loss.regularizer=false",)),
    ("pebal", ()),
):
    ABLATION_ROWS.register(_row, _overrides)
"""The rows of the paper's Table 4 as ``key=value`` overrides of a PEBAL training config:
CE with an extra class on COCO images, + AnomalyMix, abstention learning with a fixed penalty
(Deep Gambler), + EBM, EBM + PAL (energy-biased penalty), + smoothness/sparsity regulariser
(full PEBAL)."""
