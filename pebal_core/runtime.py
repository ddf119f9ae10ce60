"""``Predictor``: one inference interface over the torch / onnxruntime / tensorrt backends.

``Predictor.predict(rgb)`` takes one RGB ``uint8`` image ``H x W x 3`` and returns
``(labels uint8 H x W, score float32 H x W)`` at the image's own resolution: labels are
Cityscapes trainIds 0..18, the score is the PEBAL anomaly score (inlier free energy, Gaussian
smoothed; higher = more anomalous). When an ``input_size`` is configured the image is resized
to it for the network (bilinear) and the outputs are resized back (labels nearest, score
bilinear).

Backends implement :class:`Backend`; this module registers ``torch``. The export modules add
``onnxruntime`` and ``tensorrt`` through :func:`register_backend`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import torch

from pebal_core.models.checkpoint import load_model
from pebal_core.preprocessing import image_to_tensor
from pebal_core.scoring import labels_and_score

DEFAULT_MODEL_RESOURCE = "default_model.safetensors"
"""File name of the shipped default model inside the ``pebal_core.assets`` package."""


class Backend:
    """An inference engine for one model at one device.

    Attributes:
        name: backend name (``torch``, ``onnxruntime``, ``tensorrt``).
        metadata: the model's metadata (architecture, normalisation, score threshold, ...).
    """

    name = "abstract"
    metadata: dict

    def run(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``rgb`` uint8 ``H x W x 3`` (already at network size) -> ``(labels uint8, score float32)``."""
        raise NotImplementedError


class TorchBackend(Backend):
    """Eager PyTorch inference (CPU or CUDA)."""

    name = "torch"

    def __init__(self, path: str | os.PathLike, device: str = "cpu", smoothing: bool = True, **_: object) -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but torch sees no CUDA GPU; use device 'cpu'")
        self.model = load_model(path).to(self.device).eval()
        self.metadata = self.model.checkpoint_metadata
        self.smoothing = smoothing

    @torch.inference_mode()
    def run(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = image_to_tensor(rgb, self.model.normalization).to(self.device)
        labels, score = labels_and_score(self.model(x), self.smoothing)
        return labels[0].cpu().numpy(), score[0].float().cpu().numpy()


_BACKENDS: dict[str, Callable[..., Backend]] = {"torch": TorchBackend}


def register_backend(name: str, factory: Callable[..., Backend]) -> None:
    """Make a backend selectable by name (``Predictor.from_checkpoint(..., backend=name)``)."""
    _BACKENDS[name] = factory


def available_backends() -> list[str]:
    return sorted(_BACKENDS)


def default_model_path() -> Path:
    """Path of the shipped default model (raises ``FileNotFoundError`` if it is not installed)."""
    path = Path(str(resources.files("pebal_core.assets").joinpath(DEFAULT_MODEL_RESOURCE)))
    if not path.is_file():
        raise FileNotFoundError(
            f"the default model {path} is not installed; build it with `make default-model` or pass a checkpoint path"
        )
    return path


class Predictor:
    """Labels and anomaly scores for RGB images, whatever the backend.

    Args:
        backend: a constructed :class:`Backend`.
        input_size: ``(height, width)`` the network runs at; ``None`` = each image's own size.
    """

    def __init__(self, backend: Backend, input_size: tuple[int, int] | None = None) -> None:
        self.backend = backend
        if input_size is not None:
            h, w = (int(v) for v in input_size)
            if h <= 0 or w <= 0:
                raise ValueError(f"input_size must be positive (height, width), got {input_size}")
            input_size = (h, w)
        self.input_size = input_size

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        backend: str = "torch",
        device: str = "cpu",
        input_size: tuple[int, int] | None = None,
        smoothing: bool = True,
        **backend_options: object,
    ) -> Predictor:
        """Load a model file with the named backend (``torch`` takes any checkpoint format)."""
        if backend not in _BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; available: {', '.join(available_backends())}")
        return cls(_BACKENDS[backend](path, device=device, smoothing=smoothing, **backend_options), input_size)

    @classmethod
    def default(cls, **kwargs: object) -> Predictor:
        """The shipped default model (torch backend unless ``backend=`` says otherwise)."""
        return cls.from_checkpoint(default_model_path(), **kwargs)

    @property
    def metadata(self) -> dict:
        return self.backend.metadata

    @property
    def model_id(self) -> str:
        """Short identifier: architecture and the first 12 hex digits of the file's SHA-256."""
        meta = self.metadata
        return f"{meta.get('arch', '?')}@{str(meta.get('sha256', ''))[:12]}"

    @property
    def score_threshold(self) -> float | None:
        """The energy threshold stored with the model (95%-TPR point of its evaluation), if any."""
        value = self.metadata.get("score_threshold")
        return None if value is None else float(value)

    def predict(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``rgb`` uint8 ``H x W x 3`` -> ``(labels uint8 H x W, score float32 H x W)``."""
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
            raise ValueError(f"predict expects a non-empty uint8 H x W x 3 RGB image, got {rgb.dtype} {rgb.shape}")
        h, w = rgb.shape[:2]
        if self.input_size is None or self.input_size == (h, w):
            return self.backend.run(rgb)
        nh, nw = self.input_size
        labels, score = self.backend.run(cv2.resize(rgb, (nw, nh), interpolation=cv2.INTER_LINEAR))
        labels = cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)
        score = cv2.resize(score, (w, h), interpolation=cv2.INTER_LINEAR)
        return labels, score
