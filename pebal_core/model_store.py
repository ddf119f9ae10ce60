"""The models shipped inside the package, by name.

=============  ======================================  ==============================================
name           file (in ``pebal_core/assets/``)        what it is
=============  ======================================  ==============================================
``default``    ``real_espnet_pebal.safetensors``       the model for real cameras: ESPNet (p=2, q=8),
                                                       a real Cityscapes network, PEBAL fine-tuned on
                                                       real street images; ``Predictor.default()``,
                                                       the node's empty ``model`` parameter and
                                                       ``pebal predict --model default`` use it
``synthetic``  ``synthetic_model.safetensors``         the real-time ResNet-18 (width 0.5) trained on
                                                       the project's synthetic world (``make
                                                       synthetic-model``); ``make demo`` uses it on
                                                       that world
=============  ======================================  ==============================================

What a shipped model is (base network, training data, input size, alarm operating points and how
they were chosen) is recorded in its own metadata, not here: :func:`describe` reads it (``pebal
models`` adds the operating point). The licences of the
shipped weights and of the data they were trained on are in ``pebal_core/assets/NOTICE.md``.

Wherever a model file is asked for, a name of this table is accepted in place of a path: by
``Predictor.from_checkpoint``, ``load_model`` / ``read_checkpoint`` (and so ``pebal train
model.base=...``), every ``--model`` option of the command-line tools and the node's ``model``
parameter, all through :func:`resolve_model`. A name wins over a file of the same name in the
working directory (write ``./default`` for that file). Something that is neither a name nor an
existing file and does not look like a file either (no folder part, no model-file suffix of
:data:`MODEL_SUFFIXES`) is taken as a mistyped name: :class:`UnknownModelError` lists the names
and suggests the closest ones.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from pebal_core.models.registry import list_models


@dataclass(frozen=True)
class NamedModel:
    """One shipped model: its name, its file inside ``pebal_core.assets`` and a one-line summary."""

    name: str
    resource: str
    summary: str


MODELS: dict[str, NamedModel] = {
    m.name: m
    for m in (
        NamedModel(
            "default",
            "real_espnet_pebal.safetensors",
            "for real cameras: a real Cityscapes network with PEBAL fine-tuning on real street images",
        ),
        NamedModel(
            "synthetic",
            "synthetic_model.safetensors",
            "trained on the project's synthetic world (make synthetic-model); make demo runs it there",
        ),
    )
}
DEFAULT = "default"
"""The name of the model used when none is given."""
MODEL_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".onnx", ".xml", ".engine", ".plan")
"""Suffixes of model files (checkpoints, ONNX files, OpenVINO IR, TensorRT plans)."""


class UnknownModelError(FileNotFoundError):
    """Neither a shipped model's name nor a model file; the message lists the names (and the closest ones)."""


def model_names() -> list[str]:
    """Names of the shipped models, the default first."""
    return [DEFAULT, *sorted(n for n in MODELS if n != DEFAULT)]


def model_path(name: str = DEFAULT) -> Path:
    """The file of the shipped model ``name``.

    Raises:
        KeyError: ``name`` is not a shipped model (the message lists the names).
        FileNotFoundError: the package was installed without that file.
    """
    if name not in MODELS:
        raise KeyError(f"no shipped model named {name!r}; the shipped models are {', '.join(model_names())}")
    path = Path(str(resources.files("pebal_core.assets").joinpath(MODELS[name].resource)))
    if not path.is_file():
        raise FileNotFoundError(
            f"the shipped model {name!r} ({path}) is not installed; reinstall the package, or pass a checkpoint path"
        )
    return path


def resolve_model(spec: str | os.PathLike | None) -> Path:
    """A model file from a shipped model's name or a path; ``None`` or ``""`` = the default model.

    Raises:
        UnknownModelError: ``spec`` is no name, no existing file, and does not look like a file path
            (see the module docstring).
    """
    if spec is None or str(spec) == "":
        return model_path(DEFAULT)
    if isinstance(spec, str) and spec in MODELS:
        return model_path(spec)
    path = Path(spec).expanduser()
    text = str(spec)
    if isinstance(spec, str) and not path.exists() and "/" not in text and path.suffix.lower() not in MODEL_SUFFIXES:
        raise UnknownModelError(_unknown_name(text))
    return path


def _unknown_name(name: str) -> str:
    names = ", ".join(model_names())
    if name in list_models():
        return (
            f"{name!r} is an architecture of the model zoo, not a model with weights: pass a checkpoint file (with "
            f"--arch {name} / arch={name!r} for a bare state_dict) or a shipped model's name ({names})"
        )
    close = difflib.get_close_matches(name, list(MODELS), n=2, cutoff=0.6)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    return (
        f"no shipped model and no file named {name!r}: {hint}the shipped models are {names} (`pebal models`); "
        f"a model file needs its path (./{name}) or a suffix such as .safetensors"
    )


def is_model_name(spec: str | os.PathLike | None) -> bool:
    """Whether ``spec`` names a shipped model (rather than a file)."""
    return isinstance(spec, str) and spec in MODELS


def describe(name: str, metadata: dict) -> dict[str, str]:
    """What the shipped model ``name`` is, from its checkpoint ``metadata``: ``{field: one line of text}``
    for listings.

    Fields: ``file``, ``arch``, ``base_model`` (name, source, licence), ``training`` (when the
    metadata describes it in words), ``training_data``, ``input_size`` (``HxW``, or any size). A
    field the model's metadata lacks is left out.
    """
    meta = metadata
    out = {"file": model_path(name).name, "arch": str(meta.get("arch"))}
    base = meta.get("base_model")
    if isinstance(base, dict):
        out["base_model"] = f"{base.get('name')}; {base.get('source')}; licence {base.get('licence')}"
    if isinstance(meta.get("training"), str):
        out["training"] = meta["training"]
    if meta.get("training_data"):
        out["training_data"] = _one_line(meta["training_data"])
    size = meta.get("input_size")
    out["input_size"] = f"{size[0]}x{size[1]}" if size else "any (each image's own size)"
    return out


def _one_line(value: object) -> str:
    """A metadata value (string, list or dict) as one line of text."""
    if isinstance(value, dict):
        return ", ".join(f"{k} {_one_line(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return "; ".join(_one_line(v) for v in value)
    return str(value)
