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

:func:`register_backend` adds more; :func:`create_backend` builds one by name.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from pebal_core.backends.base import Backend, BackendError, parse_device, usable_cores
from pebal_core.backends.onnxruntime_backend import OnnxRuntimeBackend
from pebal_core.backends.openvino_backend import OpenVinoBackend
from pebal_core.backends.tensorrt_backend import TensorRTBackend
from pebal_core.backends.torch_backend import TorchBackend

__all__ = [
    "Backend",
    "BackendError",
    "OnnxRuntimeBackend",
    "OpenVinoBackend",
    "TensorRTBackend",
    "TorchBackend",
    "available_backends",
    "create_backend",
    "parse_device",
    "register_backend",
    "usable_cores",
]


def _auto(path: str | os.PathLike, **options: object) -> Backend:
    from pebal_core.backends.auto import choose_backend

    return choose_backend(path, **options)


_BACKENDS: dict[str, Callable[..., Backend]] = {
    "auto": _auto,
    "torch": TorchBackend,
    "onnxruntime": OnnxRuntimeBackend,
    "openvino": OpenVinoBackend,
    "tensorrt": TensorRTBackend,
}


def register_backend(name: str, factory: Callable[..., Backend]) -> None:
    """Make a backend selectable by name (``Predictor.from_checkpoint(..., backend=name)``)."""
    _BACKENDS[name] = factory


def available_backends() -> list[str]:
    """Names :func:`create_backend` accepts."""
    return sorted(_BACKENDS)


def create_backend(name: str, path: str | os.PathLike, **options: object) -> Backend:
    """The backend ``name`` over the model file ``path`` (``options``: ``device``, ``smoothing``,
    ``input_size`` and the backend's own, see the module docstring)."""
    if name not in _BACKENDS:
        raise ValueError(f"unknown backend {name!r}; available: {', '.join(available_backends())}")
    return _BACKENDS[name](path, **options)
