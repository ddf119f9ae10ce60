"""The inference backends behind :class:`pebal_core.runtime.Predictor`, one module each, registered here.

Every backend implements :class:`~pebal_core.backends.base.Backend` and imports its toolkit only
when constructed, so importing this package never loads onnxruntime, openvino, tensorrt or
pycuda:

``torch`` (:mod:`~pebal_core.backends.torch_backend`)
    Eager PyTorch on any checkpoint format (``device`` ``cpu`` or ``cuda[:N]``); flush-to-zero on
    the CPU.
``onnxruntime`` (:mod:`~pebal_core.backends.onnxruntime_backend`)
    A ``pebal export onnx`` file (normalisation and energy head inside the graph); ``device``
    ``cpu``, ``cuda[:N]`` (CUDA execution provider) or ``tensorrt[:N]`` (TensorRT execution
    provider with its engine cache beside the ONNX file); needs ``onnxruntime-gpu`` for the
    GPU providers.
``openvino`` (:mod:`~pebal_core.backends.openvino_backend`)
    The same ONNX file, or an OpenVINO IR from ``pebal export openvino`` (int8), on the CPU;
    ``precision`` ``fp32`` or ``bf16``.
``tensorrt`` (:mod:`~pebal_core.backends.tensorrt_backend`)
    A TensorRT plan built by ``pebal export tensorrt`` (or the ONNX file it is cached beside),
    run with pycuda buffers on one CUDA stream; ``device`` ``cuda[:N]``; backend option
    ``engine_auto_build=True`` (re)builds a missing or incompatible plan.
``auto`` (:mod:`~pebal_core.backends.auto`)
    The fastest of the CPU backends installed here, as measured on this machine for this model
    (cached per machine and model hash); never TensorRT.

:data:`BACKENDS` holds them by name; :func:`create_backend` builds one.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from pebal_core.backends.auto import choose_backend
from pebal_core.backends.base import Backend, BackendError, parse_device, usable_cores
from pebal_core.backends.onnxruntime_backend import OnnxRuntimeBackend
from pebal_core.backends.openvino_backend import OpenVinoBackend
from pebal_core.backends.tensorrt_backend import TensorRTBackend
from pebal_core.backends.torch_backend import TorchBackend
from pebal_core.registry import Registry

__all__ = [
    "BACKENDS",
    "Backend",
    "BackendError",
    "OnnxRuntimeBackend",
    "OpenVinoBackend",
    "TensorRTBackend",
    "TorchBackend",
    "create_backend",
    "parse_device",
    "usable_cores",
]

BACKENDS: Registry[Callable[..., Backend]] = Registry("backend")
"""Backend name -> factory ``f(path, **options) -> Backend`` (``BACKENDS.register(name, factory)``
makes another one selectable by name, e.g. ``Predictor.from_checkpoint(..., backend=name)``)."""
BACKENDS.register("auto", choose_backend)
BACKENDS.register("torch", TorchBackend)
BACKENDS.register("onnxruntime", OnnxRuntimeBackend)
BACKENDS.register("openvino", OpenVinoBackend)
BACKENDS.register("tensorrt", TensorRTBackend)


def create_backend(name: str, path: str | os.PathLike, **options: object) -> Backend:
    """The backend ``name`` over the model file ``path`` (``options``: ``device``, ``smoothing``,
    ``input_size`` and the backend's own, see the module docstring); an unknown name raises
    :class:`~pebal_core.registry.UnknownNameError` (a ``ValueError``) listing the names."""
    return BACKENDS[name](path, **options)
