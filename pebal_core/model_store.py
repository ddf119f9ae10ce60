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

Wherever a model file is asked for by the command-line tools or the node, a name of this table
is accepted in place of a path (:func:`resolve_model`); a name wins over a file of the same name
in the working directory (write ``./default`` for that file).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from pebal_core.models.checkpoint import read_checkpoint


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
    """A model file from a shipped model's name or a path; ``None`` or ``""`` = the default model."""
    if spec is None or str(spec) == "":
        return model_path(DEFAULT)
    if isinstance(spec, str) and spec in MODELS:
        return model_path(spec)
    return Path(spec).expanduser()


def is_model_name(spec: str | os.PathLike | None) -> bool:
    """Whether ``spec`` names a shipped model (rather than a file)."""
    return isinstance(spec, str) and spec in MODELS


def describe(name: str) -> dict[str, str]:
    """What the shipped model ``name`` is, from its metadata: ``{field: one line of text}`` for listings.

    Fields: ``file``, ``arch``, ``base_model`` (name, source, licence), ``training`` (when the
    metadata describes it in words), ``training_data``, ``input_size`` (``HxW``, or any size). A
    field the model's metadata lacks is left out.
    """
    path = model_path(name)
    meta = read_checkpoint(path).metadata
    out = {"file": path.name, "arch": str(meta.get("arch"))}
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
