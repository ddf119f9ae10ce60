"""The contract of a PEBAL ONNX export that runtimes read: tensor names, size limits, metadata.

:mod:`pebal_core.export.onnx` writes files to this contract; :mod:`pebal_core.runtime` and
:mod:`pebal_core.export.tensorrt` read them. The metadata travels in the model's
``metadata_props`` (string key/value pairs, JSON for structured values); :func:`parse_metadata`
types and checks them. Reading needs neither the exporter nor the ``onnx`` package: onnxruntime returns the
same pairs (``InferenceSession.get_modelmeta().custom_metadata_map``); without a session,
:func:`read_metadata` reads them from the file with the ``onnx`` package.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path

from pebal_core.model_metadata import MAX_NETWORK_SIDE, METADATA_RULES, CheckpointError, Rule, check_metadata

FORMAT_VERSION = 1
"""Version of the input/output/metadata contract below (``pebal_onnx_format`` in the metadata)."""
INPUT_NAME = "image"
OUTPUT_NAMES = ("labels", "score", "logits")
MIN_SIDE = 32
"""Smallest height/width a dynamic-size export accepts."""
MAX_SIDE = MAX_NETWORK_SIDE
"""Largest height/width a dynamic-size export accepts."""
DYNAMIC = "dynamic"
"""Value of the ``input_size`` metadata entry of a dynamic-size export."""
OPERATING_POINT_KEYS = ("alarm_operating_points", "score_threshold")
"""The model metadata entries holding its alarm operating points (read by
:mod:`pebal_core.alarms.operating_point`; ``score_threshold`` is a bare threshold without its settings).
An export carries them inside ``checkpoint_metadata``; :func:`parse_metadata` returns them at the
top level, where a checkpoint's metadata has them, so every backend's metadata reads the same."""


class ExportError(RuntimeError):
    """An ONNX file cannot be written, checked or read as a PEBAL export."""


def _input_size(text: str) -> tuple[int, int] | None:
    if text == DYNAMIC:
        return None
    return tuple(int(v) for v in text.split("x"))


_FIELDS: tuple[tuple[str, str | None, Callable[[str], object]], ...] = (
    ("arch", None, str),
    ("arch_kwargs", "{}", json.loads),
    ("num_classes", "20", int),
    ("input_size", DYNAMIC, _input_size),
    ("normalization", None, json.loads),
    ("smoothing", "true", json.loads),
    ("outputs", json.dumps(list(OUTPUT_NAMES[:2])), json.loads),
    ("pebal_version", None, str),
    ("source_checkpoint", None, str),
    ("source_sha256", None, str),
    ("checkpoint_metadata", "{}", json.loads),
    ("opset", "0", int),
)
"""``metadata_props`` key, its value when absent (None: no default), and how its text is read."""
ONNX_RULES: tuple[Rule, ...] = (
    *METADATA_RULES,
    Rule("smoothing", "true or false", lambda v: isinstance(v, bool)),
    Rule(
        "outputs",
        f"a list of output names from {', '.join(OUTPUT_NAMES)} starting with labels, score",
        lambda v: isinstance(v, list) and v[:2] == list(OUTPUT_NAMES[:2]) and set(v) <= set(OUTPUT_NAMES),
    ),
    Rule("checkpoint_metadata", "an object (the source checkpoint's metadata)", lambda v: isinstance(v, Mapping)),
)
"""The checked keys of an ONNX export's typed metadata: the checkpoint rules plus the export's own."""


def parse_metadata(props: Mapping[str, str], source: object = "the ONNX file") -> dict:
    """Typed and checked metadata of a PEBAL ONNX export from its ``metadata_props``.

    Returns a dict with ``arch`` (str), ``arch_kwargs`` (dict), ``num_classes`` (int),
    ``input_size`` (``(H, W)`` or ``None`` for dynamic), ``normalization`` (dict),
    ``smoothing`` (bool), ``outputs`` (list), ``pebal_version``, ``source_checkpoint``,
    ``source_sha256``, ``checkpoint_metadata``, ``opset`` and the entries of
    :data:`OPERATING_POINT_KEYS` (from ``checkpoint_metadata``; a file with its own entry keeps
    that one).

    Raises:
        ExportError: the file was not written by :func:`export_onnx` (no ``pebal_onnx_format``)
            or by a newer, incompatible version.
        CheckpointError: a value cannot be read or is not allowed (:data:`ONNX_RULES`, and
            :data:`pebal_core.model_metadata.METADATA_RULES` for ``checkpoint_metadata``); the
            message names ``source`` (the file) and the key.
    """
    if "pebal_onnx_format" not in props:
        raise ExportError(
            f"{source} carries no PEBAL metadata (metadata_props 'pebal_onnx_format'); export it with "
            "`pebal export onnx CHECKPOINT`"
        )
    fields = (("pebal_onnx_format", None, int), *_FIELDS)
    out: dict = {}
    for key, default, read in fields:
        text = props.get(key, default)
        if text is None and key == "normalization":
            raise CheckpointError(f"{source}: metadata key 'normalization' is missing; re-export the model")
        try:
            out[key] = None if text is None else read(text)
        except (ValueError, TypeError) as e:
            raise CheckpointError(
                f"{source}: metadata key {key!r} = {text[:120]!r} cannot be read ({e}); re-export the model"
            ) from e
    version = out.pop("pebal_onnx_format")
    if version > FORMAT_VERSION:
        raise ExportError(
            f"{source} uses PEBAL export format {version}, newer than this version's {FORMAT_VERSION}; "
            "upgrade pebal or re-export the model"
        )
    for key in OPERATING_POINT_KEYS:
        if key in props:
            try:
                out[key] = json.loads(props[key])
            except ValueError as e:
                raise CheckpointError(
                    f"{source}: metadata key {key!r} cannot be read ({e}); re-export the model"
                ) from e
        else:
            out[key] = out["checkpoint_metadata"].get(key) if isinstance(out["checkpoint_metadata"], Mapping) else None
    check_metadata({k: v for k, v in out.items() if k in props or v is not None}, source, ONNX_RULES)
    check_metadata(out["checkpoint_metadata"], f"{source} (inside metadata key 'checkpoint_metadata')")
    return out


def read_metadata(path: str | os.PathLike) -> dict:
    """:func:`parse_metadata` of an ``.onnx`` file (reads the graph, not the weights)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError and friends from protobuf
        raise ExportError(f"cannot read {path} as an ONNX model: {e}") from e
    return parse_metadata({p.key: p.value for p in proto.metadata_props}, path)
