"""The ``tensorrt`` backend: a TensorRT plan on one CUDA device (``pebal export tensorrt``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from pebal_core.backends.base import Backend, BackendError, check_fixed_size, check_smoothing, parse_device
from pebal_core.export import tensorrt as trt_export
from pebal_core.fileio import sha256_file
from pebal_core.model_metadata import check_metadata
from pebal_core.onnx_contract import ONNX_RULES


class TensorRTBackend(Backend):
    """A TensorRT plan on one CUDA device, fed through pinned host buffers and async copies.

    Args:
        path: a plan (``.engine``/``.plan`` with its ``.json`` sidecar) or a ``pebal export
            onnx`` file, whose plan is cached beside it (``model.<precision>.engine``).
        device: ``cuda`` or ``cuda:N``.
        smoothing: must match how the ONNX file was exported.
        input_size: the size the Predictor will feed (checked against the plan's profile).
        engine_auto_build: build a missing plan, rebuild one made by another TensorRT version
            or GPU, from another ONNX file or for other sizes (as Autoware does); otherwise
            such a plan is refused with an :class:`~pebal_core.export.tensorrt.EngineError`.
        precision: ``fp16`` (default for new plans), ``fp32`` or ``int8``.
        build_options: passed to :func:`pebal_core.export.tensorrt.build_engine` when building
            (``workspace_mb``, ``calibration_images``, ``timing_cache``, ``min_size``, ...).
    """

    name = "tensorrt"

    def __init__(
        self,
        path: str | os.PathLike,
        device: str = "cuda",
        smoothing: bool = True,
        input_size: tuple[int, int] | None = None,
        engine_auto_build: bool = False,
        precision: str | None = None,
        **build_options: object,
    ) -> None:
        kind, index = parse_device(device, ("cuda", "cpu"))
        if kind != "cuda":
            raise ValueError("the tensorrt backend runs on an NVIDIA GPU: use device 'cuda' (or 'cuda:N')")
        try:
            import pycuda.driver as cuda
            import tensorrt as trt
        except ImportError as e:
            raise BackendError(
                f"the tensorrt backend needs tensorrt and pycuda ({e}); {trt_export.INSTALL_HINT}"
            ) from e
        self._cuda, self._trt = cuda, trt
        env = trt_export.DeviceEnv.current(index)
        plan, info = trt_export.resolve_engine(
            path, env, precision, input_size, bool(engine_auto_build), device=index, **build_options
        )
        model = dict(check_metadata(info.model, f"{plan} (the model metadata of its sidecar)", ONNX_RULES))
        check_smoothing(Path(path), model.get("smoothing", True), smoothing)
        fixed = model.get("input_size")
        self.input_size = tuple(fixed) if fixed else None
        check_fixed_size(Path(path), self.input_size, input_size)
        self.precision = info.precision
        self.metadata = {
            **model,
            "input_size": self.input_size,
            "sha256": sha256_file(plan),
            "source_format": "tensorrt",
            "engine": {"path": str(plan), "precision": info.precision, "tensorrt_version": info.tensorrt_version},
        }

        self._context_cuda = cuda.Device(index).retain_primary_context()
        self._context_cuda.push()
        try:
            self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
            self.engine = self._runtime.deserialize_cuda_engine(plan.read_bytes())
            if self.engine is None:
                raise trt_export.EngineError(
                    f"TensorRT {trt.__version__} could not deserialise {plan} (a plan from another TensorRT version "
                    "or GPU, or a damaged file); rebuild it with `pebal export tensorrt` or engine_auto_build=True"
                )
            names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
            missing = {"image", "labels", "score"} - set(names)
            if missing:
                raise trt_export.EngineError(
                    f"{plan} has tensors {names}, lacking {sorted(missing)}: it was not built from a "
                    "`pebal export onnx` file"
                )
            self._names = names
            self._profile = self.engine.get_tensor_profile_shape("image", 0)
            self.context = self.engine.create_execution_context()
            self._stream = cuda.Stream()
        finally:
            self._context_cuda.pop()
        self._bound: tuple[int, int] | None = None
        self._host: dict[str, np.ndarray] = {}
        self._device: dict[str, object] = {}

    def _bind(self, h: int, w: int) -> None:
        """Set the input shape and (re)allocate pinned host + device buffers for every I/O tensor."""
        lo, hi = self._profile[0], self._profile[2]
        if not (lo[2] <= h <= hi[2] and lo[3] <= w <= hi[3]):
            raise ValueError(
                f"input {h}x{w} is outside the engine's profile {lo[2]}x{lo[3]}..{hi[2]}x{hi[3]}; set input_size "
                "inside it or rebuild the engine for this size"
            )
        cuda, trt = self._cuda, self._trt
        self.context.set_input_shape("image", (1, 3, h, w))
        self._device.clear()
        for name in self._names:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = trt.nptype(self.engine.get_tensor_dtype(name))
            self._host[name] = cuda.pagelocked_empty(shape, dtype)
            self._device[name] = cuda.mem_alloc(max(1, self._host[name].nbytes))
            self.context.set_tensor_address(name, int(self._device[name]))
        self._bound = (h, w)

    def run(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cuda = self._cuda
        h, w = rgb.shape[:2]
        self._context_cuda.push()
        try:
            if self._bound != (h, w):
                self._bind(h, w)
            np.copyto(self._host["image"][0], rgb.transpose(2, 0, 1))
            cuda.memcpy_htod_async(self._device["image"], self._host["image"], self._stream)
            if not self.context.execute_async_v3(self._stream.handle):
                raise BackendError("TensorRT execute_async_v3 failed (see the TensorRT log)")
            for name in ("labels", "score"):
                cuda.memcpy_dtoh_async(self._host[name], self._device[name], self._stream)
            self._stream.synchronize()
        finally:
            self._context_cuda.pop()
        return self._host["labels"][0].copy(), self._host["score"][0].copy()
