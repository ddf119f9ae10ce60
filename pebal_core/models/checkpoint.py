"""Reading, converting and writing model checkpoints, safely.

Formats recognised by :func:`read_checkpoint`:

``pebal``
    This project's format. ``.pt``: ``{"pebal_format": 1, "state_dict": ..., "metadata": ...}``;
    ``.safetensors``: the tensors plus the metadata as JSON under the header key ``pebal``.
    Metadata: ``arch``, ``arch_kwargs``, ``num_classes``, ``normalization``, ``train_config``,
    ``pebal_version`` and free-form extras (``alarm_operating_points``, ``input_size``, ...).
``nvidia-cityscapes``
    NVIDIA semantic-segmentation ``cityscapes_best.pth``: ``{"state_dict": ...}`` with keys
    prefixed ``module.``, a 19-row classifier, and training-only extras that are dropped
    (``criterion.*``, ``dsn.*``, ``final2.*``).
``pebal-reference``
    The PEBAL authors' fine-tuned ``best_ad_ckpt.pth``: ``{"model": ...}`` with keys prefixed
    ``module.branch1.``.
``state_dict``
    A bare state_dict (``.pth``/``.pt``, optional ``module.`` prefix) or a ``.safetensors`` file
    without project metadata (e.g. the real ENet/ESPNet Cityscapes models).

Every torch file is read with ``torch.load(weights_only=True)``: a pickle that would construct
arbitrary Python objects (and could run code) is refused with :class:`CheckpointError`. Every
other way a file can fail to load (empty, truncated or corrupt archive, corrupt pickle, metadata
that is not JSON, metadata values of the wrong type or out of range
(:func:`pebal_core.model_metadata.check_metadata`), architecture options the network does not
take, weights that are not floating point or not finite where the network has floating-point
parameters) is a :class:`CheckpointError` too, naming the file and the cause.
"""

from __future__ import annotations

import json
import os
import pickle
import pickletools
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file as load_safetensors
from safetensors.torch import save_file as save_safetensors
from torch import nn

from pebal_core.denormals import flush_denormals
from pebal_core.fileio import atomic_write, sha256_file
from pebal_core.model_metadata import CHECKPOINT_FORMAT_VERSION, CheckpointError, check_metadata
from pebal_core.model_store import resolve_model
from pebal_core.models.base import SegmentationModel
from pebal_core.models.registry import arch_options, build_model
from pebal_core.preprocessing import Normalization
from pebal_core.version import __version__

FORMAT_VERSION = CHECKPOINT_FORMAT_VERSION
_NVIDIA_EXTRA_PREFIXES = ("criterion.", "dsn.", "final2.")


class MissingArchitectureError(CheckpointError):
    """A checkpoint without metadata was loaded without naming its architecture."""

    def __init__(self, path: Path, source_format: str, how: str = "pass arch=NAME") -> None:
        self.path, self.source_format = path, source_format
        super().__init__(
            f"{path} ({source_format} format) does not say which architecture it holds; {how} "
            "(`pebal models` lists the names)"
        )


@dataclass
class Checkpoint:
    """A checkpoint read from disk, with prefixes stripped and training-only extras dropped."""

    path: Path
    source_format: str
    state_dict: dict[str, torch.Tensor]
    metadata: dict = field(default_factory=dict)
    dropped_keys: list[str] = field(default_factory=list)


def _strip_prefix(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    if sd and all(k.startswith(prefix) for k in sd):
        return {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def _torch_load(path: Path) -> object:
    """``torch.load(weights_only=True)`` with every failure turned into a :class:`CheckpointError`
    naming the file and the cause: empty file, corrupt/truncated zip archive, corrupt pickle data,
    or (only when the pickle really imports functions or classes outside the tensor allowlist) a
    pickle that could execute code."""
    if path.stat().st_size == 0:
        raise CheckpointError(
            f"{path} is empty (0 bytes): an interrupted download, copy or save; fetch or write it again"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        unsafe = _unsafe_globals(path)
        if unsafe:
            raise CheckpointError(
                f"refusing to load {path}: its pickle imports {', '.join(unsafe[:5])}, which is not a tensor "
                "or plain container, and unpickling it could execute code. Only weights_only loading is "
                "allowed. If you trust the file, re-save its state_dict (tensors only) or convert it to "
                ".safetensors on a machine where you accept that risk."
            ) from e
        raise CheckpointError(
            f"cannot read {path}: its pickled data is corrupt ({_first_line(e)}); the file is damaged or "
            "not a PyTorch checkpoint"
        ) from e
    except Exception as e:  # torch reports damaged archives as RuntimeError, others as whatever broke
        raise CheckpointError(
            f"cannot read {path} as a PyTorch checkpoint ({_first_line(e)}); "
            "the file may be truncated or not a checkpoint"
        ) from e


def _first_line(e: BaseException) -> str:
    """The cause in an exception's message, shortened to its first sentence (torch prefixes
    weights_only errors with a paragraph about its defaults and appends advice to others)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    cause = [line for line in lines if line.startswith(("Unsupported", "Trying to load", "WeightsUnpickler"))]
    text = (cause or lines or [""])[0].split(". ")[0]
    return f"{type(e).__name__}: {text}" if text else f"{type(e).__name__}: the data ended early"


def _unsafe_globals(path: Path) -> list[str]:
    """``module.name`` of every function/class the file's pickle imports beyond torch's
    weights_only allowlist, found by disassembling it (nothing is executed); ``[]`` when the
    pickle is corrupt instead (it cannot be disassembled) or imports only allowed names."""
    if zipfile.is_zipfile(path):
        try:
            return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        except Exception:  # the archive or its pickle is damaged: corrupt, not unsafe
            return []
    # legacy (pre-zip) format: a sequence of pickles; torch ships no static check for it
    names: list[str] = []
    strings: list[str] = []
    try:
        with path.open("rb") as f:
            while f.peek(1):
                for op, arg, _ in pickletools.genops(f):
                    if isinstance(arg, str):
                        strings.append(arg)
                    if op.name in ("GLOBAL", "INST"):
                        names.append(arg.replace(" ", "."))
                    elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                        names.append(f"{strings[-2]}.{strings[-1]}")
    except Exception:  # not a pickle stream: corrupt, not unsafe
        return []
    return sorted({n for n in names if not n.startswith(("torch.", "collections.OrderedDict"))})


def _check_tensors(path: Path, sd: object, where: str) -> dict[str, torch.Tensor]:
    if not isinstance(sd, dict) or not sd:
        raise CheckpointError(f"{path}: expected a non-empty dict of tensors under {where}, got {type(sd).__name__}")
    bad = [k for k, v in sd.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"{path}: {where} holds non-tensor entries: {bad[:5]}")
    return sd


def _metadata_json(path: Path, text: str) -> dict:
    """The project metadata stored as JSON in a ``.safetensors`` header."""
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(
            f"{path}: the project metadata (safetensors header key 'pebal') is not valid JSON ({e}); "
            "the file was edited or written by another tool: re-save it with save_checkpoint"
        ) from e
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: the project metadata (header key 'pebal') must be a JSON object")
    return meta


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read any supported checkpoint file (see module docstring) without executing code; a shipped
    model's name (:func:`pebal_core.model_store.resolve_model`) stands for its file."""
    path = resolve_model(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        try:
            sd = load_safetensors(str(path))
            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"cannot read {path} as safetensors: {e}") from e
        if "pebal" in header:
            meta = dict(check_metadata(_metadata_json(path, header["pebal"]), path))
            return Checkpoint(path, "pebal", _check_tensors(path, sd, "tensors"), meta)
        return Checkpoint(path, "state_dict", _check_tensors(path, _strip_prefix(sd, "module."), "tensors"))

    obj = _torch_load(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict at the top level, got {type(obj).__name__}")
    if "pebal_format" in obj:
        sd = _check_tensors(path, obj.get("state_dict"), "'state_dict'")
        meta = obj.get("metadata") or {}
        if not isinstance(meta, dict):
            raise CheckpointError(f"{path}: 'metadata' must be a dict, got {type(meta).__name__}")
        return Checkpoint(path, "pebal", sd, dict(check_metadata(meta, path)))
    if "model" in obj and isinstance(obj["model"], dict):
        sd = _check_tensors(path, obj["model"], "'model'")
        sd = _strip_prefix(_strip_prefix(sd, "module."), "branch1.")
        return Checkpoint(path, "pebal-reference", sd)
    if "state_dict" in obj and isinstance(obj["state_dict"], dict):
        sd = _strip_prefix(_check_tensors(path, obj["state_dict"], "'state_dict'"), "module.")
        dropped = sorted(k for k in sd if k.startswith(_NVIDIA_EXTRA_PREFIXES))
        sd = {k: v for k, v in sd.items() if k not in set(dropped)}
        return Checkpoint(path, "nvidia-cityscapes", sd, dropped_keys=dropped)
    sd = _strip_prefix(_check_tensors(path, obj, "the top level"), "module.")
    return Checkpoint(path, "state_dict", sd)


def _out_dim(module: nn.Module) -> int:
    """Axis of a classifier weight that indexes output channels."""
    return 1 if isinstance(module, nn.ConvTranspose2d) else 0


def _classifier_keys(model: SegmentationModel) -> tuple[str, str | None, int]:
    names = {id(m): n for n, m in model.named_modules()}
    clf = model.output_conv
    prefix = names[id(clf)]
    bias = f"{prefix}.bias" if clf.bias is not None else None
    return f"{prefix}.weight", bias, _out_dim(clf)


def extend_classifier(
    model: SegmentationModel, sd: dict[str, torch.Tensor], generator: torch.Generator | None = None
) -> dict[str, torch.Tensor]:
    """Grow a 19-class classifier in ``sd`` to the model's ``num_classes`` (20 for PEBAL).

    Rows 0..18 are copied; each new row is Kaiming-normal initialised (fan-in, as
    ``torch.nn.init.kaiming_normal_``), a new bias entry is 0. Returns a new dict.
    """
    wkey, bkey, axis = _classifier_keys(model)
    if wkey not in sd:
        return sd
    old = sd[wkey]
    target = model.state_dict()[wkey]
    n_old, n_new = old.shape[axis], target.shape[axis]
    if n_old == n_new or n_old > n_new or old.dim() != target.dim():
        return sd
    other = [s for i, s in enumerate(old.shape) if i != axis]
    if other != [s for i, s in enumerate(target.shape) if i != axis]:
        return sd
    new = torch.empty(target.shape, dtype=old.dtype)
    fan_in = new.numel() // new.shape[axis]
    std = (2.0 / fan_in) ** 0.5
    new.normal_(0.0, std, generator=generator)
    new.narrow(axis, 0, n_old).copy_(old)
    out = dict(sd)
    out[wkey] = new
    if bkey is not None and bkey in sd:
        b = torch.zeros(n_new, dtype=sd[bkey].dtype)
        b[:n_old] = sd[bkey]
        out[bkey] = b
    return out


def load_state_dict_strict(model: nn.Module, sd: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """``load_state_dict(strict=True)`` with one error naming every offending key, shape and dtype.

    Where the network has a floating-point tensor (weights, biases, normalisation statistics) the
    file's must be floating point (any precision; integers would be cast silently and give a
    constant score) and finite (NaN/inf weights give NaN scores on every pixel)."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    mismatched = [
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or mismatched:
        arch = getattr(model, "arch", type(model).__name__)
        parts = [f"{source} does not fit architecture {arch!r}:"]
        for title, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        ):
            if keys:
                more = f" ... (+{len(keys) - 8} more)" if len(keys) > 8 else ""
                parts.append(f"  {title} ({len(keys)}): {', '.join(keys[:8])}{more}")
        parts.append("Check that --arch (or the checkpoint's metadata) names the network the file was saved from.")
        raise CheckpointError("\n".join(parts))
    floating = [k for k in own if own[k].is_floating_point()]
    for bad, what in (
        ([f"{k} is {sd[k].dtype}" for k in floating if not sd[k].is_floating_point()], "not floating point"),
        ([k for k in floating if sd[k].is_floating_point() and not bool(torch.isfinite(sd[k]).all())], "not finite"),
    ):
        if bad:
            more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
            raise CheckpointError(
                f"{source}: weights {what}: {', '.join(bad[:3])}{more}; allowed: finite float16, bfloat16, float32 "
                "or float64 values where the network has floating-point parameters. The file is damaged or was "
                "converted wrongly"
            )
    model.load_state_dict(sd, strict=True)


def load_model(
    path: str | os.PathLike,
    arch: str | None = None,
    num_classes: int | None = None,
    seed: int = 0,
    **arch_kwargs,
) -> SegmentationModel:
    """Build a network and load a checkpoint of any supported format into it, strictly.

    Args:
        path: the checkpoint file.
        arch: registry name; required unless the file carries project metadata.
        num_classes: output channels of the built model (default: the metadata's, else 20).
            A 19-class classifier in the file is extended to 20 (see :func:`extend_classifier`,
            seeded by ``seed``).
        arch_kwargs: extra architecture options (override the metadata's).

    Returns:
        the model in eval mode, with ``model.checkpoint_metadata`` set to the file's metadata
        (completed with ``source_format``, ``sha256`` and ``denormals_flushed``: how many denormal
        weights of the file were set to zero, :mod:`pebal_core.denormals`).
    """
    ckpt = read_checkpoint(path)
    meta = dict(ckpt.metadata)
    arch = arch or meta.get("arch")
    if arch is None:
        raise MissingArchitectureError(ckpt.path, ckpt.source_format)
    if meta.get("arch") not in (None, arch):
        raise CheckpointError(f"{ckpt.path} holds architecture {meta['arch']!r}, not {arch!r}")
    kwargs = {**meta.get("arch_kwargs", {}), **arch_kwargs}
    n = num_classes or int(meta.get("num_classes", 20))
    try:
        options = arch_options(arch)
    except KeyError as e:
        raise CheckpointError(f"{ckpt.path}: {e.args[0]}") from e
    try:
        model = build_model(arch, num_classes=n, **kwargs)
    except (TypeError, ValueError) as e:
        allowed = ", ".join(f"{k} (default {v!r})" for k, v in options.items()) or "none"
        raise CheckpointError(
            f"{ckpt.path}: metadata key 'arch_kwargs' = {kwargs} does not build architecture {arch!r} ({e}); "
            f"allowed options: {allowed}"
        ) from e
    sd = extend_classifier(model, ckpt.state_dict, torch.Generator().manual_seed(seed))
    load_state_dict_strict(model, sd, source=f"{ckpt.path} ({ckpt.source_format} format)")
    flushed = flush_denormals(model)
    if "normalization" in meta:
        model.normalization = Normalization.from_dict(meta["normalization"])
    meta.update(source_format=ckpt.source_format, sha256=sha256_file(ckpt.path), denormals_flushed=flushed)
    if ckpt.dropped_keys:
        meta["dropped_keys"] = ckpt.dropped_keys
    model.checkpoint_metadata = meta
    return model.eval()


def model_metadata(model: SegmentationModel, **extra) -> dict:
    """The project metadata describing ``model`` (architecture, classes, normalisation, version)."""
    meta = {
        "format_version": FORMAT_VERSION,
        "arch": getattr(model, "arch", None),
        "arch_kwargs": dict(getattr(model, "arch_kwargs", {})),
        "num_classes": model.num_classes,
        "normalization": model.normalization.to_dict(),
        "pebal_version": __version__,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "train_config": None,
    }
    meta.update(extra)
    if meta["arch"] is None:
        raise CheckpointError("model has no .arch: build it with pebal_core.models.build_model")
    return meta


def save_checkpoint(model: SegmentationModel, path: str | os.PathLike, half: bool = False, **metadata) -> Path:
    """Write ``model`` in the project format, atomically; ``.safetensors`` or ``.pt`` by suffix.

    Denormal weights are written as zero (:func:`pebal_core.denormals.flush_denormals`, on copies:
    ``model`` itself is unchanged, so a training run that saves snapshots computes as before).

    Args:
        half: store floating-point tensors as float16 (halves the file; they load back into
            float32 models, with float16 rounding of the weights).
        metadata: extra metadata entries (``train_config``, ``input_size``, ...).
    """
    path = Path(path)
    meta = model_metadata(model, **metadata)
    sd = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    flush_denormals(sd)  # float32 denormals; float16 storage keeps its own small numbers
    if half:
        sd = {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}
    with atomic_write(path) as tmp:
        if path.suffix == ".safetensors":
            save_safetensors(sd, str(tmp), metadata={"pebal": json.dumps(meta)})
        elif path.suffix in (".pt", ".pth"):
            torch.save({"pebal_format": FORMAT_VERSION, "state_dict": sd, "metadata": meta}, tmp)
        else:
            raise CheckpointError(f"unknown checkpoint suffix {path.suffix!r}: use .safetensors or .pt")
    return path


_REGENERATED_METADATA = (
    "format_version",
    "arch",
    "arch_kwargs",
    "num_classes",
    "normalization",
    "pebal_version",
    "created",
    "source_format",
    "sha256",
    "dropped_keys",
    "denormals_flushed",
)
"""Metadata that :func:`save_checkpoint` writes anew (never copied from the source file)."""


def copy_with_metadata(
    checkpoint: str | os.PathLike,
    dst: str | os.PathLike,
    updates: dict,
    remove: tuple[str, ...] = (),
    arch: str | None = None,
) -> Path:
    """Copy ``checkpoint`` to ``dst`` in the project format with metadata entries ``updates`` set
    and the entries named in ``remove`` dropped.

    Other metadata (training configuration, operating points, ...) is kept; float16 files stay float16.
    ``arch`` names the architecture of a bare state_dict (files in the project format carry it).
    Refuses to overwrite ``checkpoint`` itself: write a copy, then replace the original yourself.
    """
    if Path(dst).resolve() == Path(checkpoint).resolve():
        raise ValueError(f"refusing to overwrite the evaluated checkpoint {checkpoint}; choose another output file")
    model = load_model(checkpoint, arch=arch)
    half = any(t.dtype == torch.float16 for t in read_checkpoint(checkpoint).state_dict.values())
    meta = {k: v for k, v in model.checkpoint_metadata.items() if k not in _REGENERATED_METADATA + remove}
    meta.update(updates)
    return save_checkpoint(model, dst, half=half, **meta)
