"""The ``openvino`` backend: a ``pebal export onnx`` file, or an OpenVINO IR written by ``pebal export
openvino`` (e.g. int8), run by OpenVINO's CPU plugin.

Both carry the same contract (:mod:`pebal_core.onnx_contract`): uint8 RGB ``image`` in, ``labels``
and ``score`` out, normalisation and energy head inside, the PEBAL metadata in the model (OpenVINO
keeps an ONNX file's ``metadata_props`` as the model's ``framework`` run-time info, and writes
them into the IR).

Precision: ``fp32`` runs every operation in float32 (OpenVINO's CPU plugin otherwise picks bf16
by itself on CPUs with AMX); ``bf16`` runs the network in bfloat16 where the CPU has native
bf16 arithmetic (AVX512_BF16 or AMX) and is refused on a CPU without it; an IR quantised to int8
(:func:`pebal_core.export.openvino.quantize_int8`) runs its quantised convolutions in int8 (with
VNNI where the CPU has it) and everything else, the energy head included, in float32.
:attr:`OpenVinoBackend.precision` is what the compiled model reports it runs.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pebal_core.backends.base import (
    Backend,
    BackendError,
    check_fixed_size,
    check_smoothing,
    image_nchw,
    parse_device,
    usable_cores,
)
from pebal_core.export.openvino import quantization_info, read_metadata
from pebal_core.fileio import sha256_file
from pebal_core.onnx_contract import INPUT_NAME, OUTPUT_NAMES, ExportError

PRECISIONS = ("fp32", "bf16")
"""Precisions the backend can ask OpenVINO for on a float model (an int8 IR carries its own)."""
_HINTS = {"fp32": "f32", "bf16": "bf16"}
INSTALL_HINT = "pip install openvino (requirements.txt pins it)"


def cpu_capabilities(core: object | None = None) -> list[str]:
    """OpenVINO's ``OPTIMIZATION_CAPABILITIES`` of the CPU (e.g. ``FP32``, ``BF16``, ``INT8``)."""
    if core is None:
        import openvino as ov

        core = ov.Core()
    return [str(c) for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


class OpenVinoBackend(Backend):
    """A PEBAL ONNX file or OpenVINO IR run by OpenVINO on the CPU.

    Args:
        path: ``.onnx`` from ``pebal export onnx``, or ``.xml`` (with its ``.bin``) from
            ``pebal export openvino``.
        device: ``cpu``.
        smoothing: must match how the file was exported (the smoothing is inside the graph).
        input_size: the size the Predictor will feed; must equal a fixed-size model's size.
        threads: inference threads (default: every core this process may use).
        precision: ``fp32`` (default) or ``bf16`` for a float model; an int8 IR runs int8 and
            refuses ``bf16``.
        Options meant for other backends are ignored.
    """

    name = "openvino"

    def __init__(
        self,
        path: str | os.PathLike,
        device: str = "cpu",
        smoothing: bool = True,
        input_size: tuple[int, int] | None = None,
        threads: int | None = None,
        precision: str | None = None,
        **_: object,
    ) -> None:
        path = Path(path)
        if path.suffix not in (".onnx", ".xml"):
            raise ValueError(
                f"the openvino backend runs .onnx files (`pebal export onnx`) and .xml IR files (`pebal export "
                f"openvino`), got {path}; export one with `pebal export onnx {path}`"
            )
        parse_device(device, ("cpu",))
        if not path.is_file():
            raise FileNotFoundError(f"model file not found: {path}")
        try:
            import openvino as ov
        except ImportError as e:
            raise BackendError(f"the openvino backend needs openvino ({e}); {INSTALL_HINT}") from e
        core = ov.Core()
        try:
            model = core.read_model(str(path))
        except RuntimeError as e:
            raise BackendError(f"OpenVINO cannot read {path} ({str(e).splitlines()[0]}); export the model again") from e
        try:
            meta = read_metadata(model, path)
        except ExportError as e:
            raise BackendError(str(e)) from e
        quant = quantization_info(model)
        check_smoothing(path, meta["smoothing"], smoothing)
        check_fixed_size(path, meta["input_size"], input_size)
        quantized = quant.get("precision") == "int8"
        wanted = precision or "fp32"
        if wanted not in PRECISIONS or (quantized and wanted != "fp32"):
            allowed = "fp32 (the int8 IR's float parts)" if quantized else " or ".join(PRECISIONS)
            raise ValueError(f"precision {precision!r} for {path}: use {allowed}")
        capabilities = cpu_capabilities(core)
        if wanted == "bf16" and "BF16" not in capabilities:
            raise BackendError(
                f"this CPU has no native bf16 arithmetic (OpenVINO sees {', '.join(capabilities)}): use precision "
                "fp32 (or an int8 IR)"
            )
        config = {
            "INFERENCE_PRECISION_HINT": _HINTS[wanted],
            "INFERENCE_NUM_THREADS": int(threads) if threads else usable_cores(),
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
        }
        try:
            self.compiled = core.compile_model(model, "CPU", config)
        except RuntimeError as e:
            raise BackendError(f"OpenVINO cannot compile {path} for the CPU ({str(e).splitlines()[0]})") from e
        ran = self.compiled.get_property("INFERENCE_PRECISION_HINT")  # an openvino.Type
        floats = {ov.Type.bf16: "bf16", ov.Type.f16: "fp16", ov.Type.f32: "fp32"}
        self.precision = "int8" if quantized else floats.get(ran, str(ran))
        self.capabilities = capabilities
        self.input_size = meta["input_size"]
        self.metadata = {**meta, "sha256": sha256_file(path), "source_format": path.suffix[1:]}
        if quant:
            self.metadata["quantization"] = quant
        self._request = self.compiled.create_infer_request()
        self._outputs = [self.compiled.output(name) for name in OUTPUT_NAMES[:2]]

    def run(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        result = self._request.infer({INPUT_NAME: image_nchw(rgb)})
        labels, score = (result[out] for out in self._outputs)
        return labels[0].astype(np.uint8, copy=False), score[0].astype(np.float32, copy=False)
