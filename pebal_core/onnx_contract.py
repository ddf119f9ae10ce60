"""The contract of a PEBAL ONNX export that runtimes read: tensor names, size limits, metadata.

:mod:`pebal_core.export.onnx` writes files to this contract; :mod:`pebal_core.runtime` and
:mod:`pebal_core.export.tensorrt` read them. The metadata travels in the model's
``metadata_props`` (string key/value pairs, JSON for structured values); :func:`parse_metadata`
types them. Reading needs neither the exporter nor the ``onnx`` package: onnxruntime returns the
same pairs (``InferenceSession.get_modelmeta().custom_metadata_map``); without a session,
:func:`read_metadata` reads them from the file with the ``onnx`` package.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

FORMAT_VERSION = 1
"""Version of the input/output/metadata contract below (``pebal_onnx_format`` in the metadata)."""
INPUT_NAME = "image"
OUTPUT_NAMES = ("labels", "score", "logits")
MIN_SIDE = 32
"""Smallest height/width a dynamic-size export accepts."""
MAX_SIDE = 8192
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


def parse_metadata(props: Mapping[str, str]) -> dict:
    """Typed metadata of a PEBAL ONNX export from its ``metadata_props`` (see :func:`metadata_props`).

    Returns a dict with ``arch`` (str), ``arch_kwargs`` (dict), ``num_classes`` (int),
    ``input_size`` (``(H, W)`` or ``None`` for dynamic), ``normalization`` (dict),
    ``smoothing`` (bool), ``outputs`` (list), ``pebal_version``, ``source_checkpoint``,
    ``source_sha256``, ``checkpoint_metadata`` and the entries of :data:`OPERATING_POINT_KEYS`
    (from ``checkpoint_metadata``; a file with its own ``score_threshold`` entry keeps that one).

    Raises:
        ExportError: the file was not written by :func:`export_onnx` (no ``pebal_onnx_format``)
            or by a newer, incompatible version.
    """
    if "pebal_onnx_format" not in props:
        raise ExportError(
            "the ONNX file carries no PEBAL metadata (metadata_props 'pebal_onnx_format'); export it with "
            "`pebal export onnx CHECKPOINT`"
        )
    version = int(props["pebal_onnx_format"])
    if version > FORMAT_VERSION:
        raise ExportError(
            f"the ONNX file uses PEBAL export format {version}, newer than this version's {FORMAT_VERSION}; "
            "upgrade pebal or re-export the model"
        )
    size = props.get("input_size", DYNAMIC)
    checkpoint_metadata = json.loads(props.get("checkpoint_metadata", "{}"))
    points = {
        key: json.loads(props[key]) if key in props else checkpoint_metadata.get(key) for key in OPERATING_POINT_KEYS
    }
    return {
        "arch": props.get("arch"),
        "arch_kwargs": json.loads(props.get("arch_kwargs", "{}")),
        "num_classes": int(props.get("num_classes", 20)),
        "input_size": None if size == DYNAMIC else tuple(int(v) for v in size.split("x")),
        "normalization": json.loads(props["normalization"]),
        "smoothing": json.loads(props.get("smoothing", "true")),
        "outputs": json.loads(props.get("outputs", json.dumps(list(OUTPUT_NAMES[:2])))),
        "pebal_version": props.get("pebal_version"),
        "source_checkpoint": props.get("source_checkpoint"),
        "source_sha256": props.get("source_sha256"),
        "checkpoint_metadata": checkpoint_metadata,
        "opset": int(props.get("opset", 0)),
        **points,
    }


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
    return parse_metadata({p.key: p.value for p in proto.metadata_props})
