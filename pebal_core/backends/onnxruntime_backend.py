"""The ``onnxruntime`` backend: a ``pebal export onnx`` file run by ONNX Runtime (CPU, CUDA or TensorRT provider)."""

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
from pebal_core.fileio import sha256_file
from pebal_core.onnx_contract import INPUT_NAME, OUTPUT_NAMES, parse_metadata


class OnnxRuntimeBackend(Backend):
    """A ``pebal export onnx`` file run by ONNX Runtime.

    Args:
        path: the ``.onnx`` file; its metadata supplies ``metadata`` (architecture,
            normalisation, score threshold, ...); ``metadata["sha256"]`` is the ONNX file's
            hash, ``metadata["source_sha256"]`` the checkpoint's.
        device: ``cpu``, ``cuda[:N]`` or ``tensorrt[:N]`` (execution providers, CPU fallback
            for unsupported nodes).
        smoothing: must match how the file was exported (the smoothing is inside the graph).
        input_size: the size the Predictor will feed; must equal a fixed-size model's size.
        threads: intra-op threads on the CPU (default: every core this process may use; idle
            threads sleep rather than spin).
        trt_fp16: let the TensorRT execution provider use FP16 kernels.
        trt_cache_dir: where the TensorRT execution provider caches engines and timing
            (default ``<model>.ort-trt/`` beside the ONNX file).
        Options meant for other backends (``engine_auto_build``) are ignored.
    """

    name = "onnxruntime"

    def __init__(
        self,
        path: str | os.PathLike,
        device: str = "cpu",
        smoothing: bool = True,
        input_size: tuple[int, int] | None = None,
        threads: int | None = None,
        trt_fp16: bool = True,
        trt_cache_dir: str | os.PathLike | None = None,
        **_: object,
    ) -> None:
        path = Path(path)
        if path.suffix != ".onnx":
            raise ValueError(
                f"the onnxruntime backend runs .onnx files, got {path}; export one with `pebal export onnx {path}`"
            )
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise BackendError(f"the onnxruntime backend needs onnxruntime ({e}); pip install .[export]") from e
        if not path.is_file():
            raise FileNotFoundError(f"ONNX file not found: {path}")

        kind, index = parse_device(device, ("cpu", "cuda", "tensorrt"))
        cuda = ("CUDAExecutionProvider", {"device_id": index})
        providers: list = ["CPUExecutionProvider"]
        if kind == "cuda":
            providers = [cuda, *providers]
        elif kind == "tensorrt":
            cache = Path(trt_cache_dir) if trt_cache_dir else path.with_name(f"{path.stem}.ort-trt")
            cache.mkdir(parents=True, exist_ok=True)
            trt = {
                "device_id": index,
                "trt_fp16_enable": bool(trt_fp16),
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache),
                "trt_timing_cache_enable": True,
                "trt_timing_cache_path": str(cache),
            }
            providers = [("TensorrtExecutionProvider", trt), cuda, *providers]
        wanted = providers[0] if isinstance(providers[0], str) else providers[0][0]
        if wanted not in ort.get_available_providers():
            raise BackendError(
                f"device {device!r} needs onnxruntime's {wanted}, which this onnxruntime build lacks (it has "
                f"{', '.join(ort.get_available_providers())}); install onnxruntime-gpu, or use device 'cpu'"
            )
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = int(threads) if threads else usable_cores()
        # waiting pool threads sleep instead of spinning, as OMP_WAIT_POLICY=PASSIVE makes torch's do
        # (pebal_core/__init__.py): on cores shared with other processes spinning costs far more than it saves
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as e:  # onnxruntime raises its own classes (Fail, InvalidProtobuf, ...)
            raise BackendError(
                f"onnxruntime cannot load {path} ({e}); export the model again with `pebal export onnx CHECKPOINT`"
            ) from e
        meta = parse_metadata(self.session.get_modelmeta().custom_metadata_map, path)
        check_smoothing(path, meta["smoothing"], smoothing)
        check_fixed_size(path, meta["input_size"], input_size)
        self.input_size = meta["input_size"]
        self.metadata = {**meta, "sha256": sha256_file(path), "source_format": "onnx"}
        if wanted not in self.session.get_providers():
            raise BackendError(
                f"onnxruntime could not start {wanted} for {path} (it fell back to {self.session.get_providers()}); "
                "check the CUDA / TensorRT libraries onnxruntime-gpu needs"
            )
        self.providers = self.session.get_providers()
        self._outputs = list(OUTPUT_NAMES[:2])

    def run(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        labels, score = self.session.run(self._outputs, {INPUT_NAME: image_nchw(rgb)})
        return labels[0], score[0]
