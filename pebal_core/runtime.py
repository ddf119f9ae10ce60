"""``Predictor``: one inference interface over the backends of :mod:`pebal_core.backends`.

``Predictor.predict(rgb)`` takes one RGB ``uint8`` image ``H x W x 3`` and returns
``(labels uint8 H x W, score float32 H x W)`` at the image's own resolution: labels are
Cityscapes trainIds 0..18, the score is the PEBAL anomaly score (inlier free energy, Gaussian
smoothed; higher = more anomalous).

The Predictor owns frame sizing (:meth:`Predictor.network_size`): the network runs at the
caller's ``input_size``, else the model's own (a fixed-size export's, or the size its metadata
records as the one it was evaluated and thresholded at), else the image's own size bounded by
``max_network_pixels`` and the side limit (:func:`pebal_core.protocols.bounded_size`). The image
is resized to it and the outputs are resized back as the resize protocol says
(:mod:`pebal_core.protocols`; ``predictor``: OpenCV bilinear, labels nearest, score bilinear).

This is the project's one inference path: ``pebal eval`` (:mod:`pebal_core.evaluate`), the
offline scorer of recorded bags, the real-data benchmarks and the ROS node all run images
through a ``Predictor``. :meth:`Predictor.scores` gives any set of
:data:`pebal_core.scoring.METHODS` (and the labels) at the image's size, the network's or a
requested one; :meth:`Predictor.logits` the raw logits (torch backend). At the network size
the torch backend pads the normalised image with zeros to the model's ``size_divisor``
(:meth:`~pebal_core.models.base.SegmentationModel.forward_padded`) and crops the padding
from the logits.

The backends (torch, onnxruntime, openvino, tensorrt, and ``auto``, the fastest of the CPU ones
as measured on this machine) live in :mod:`pebal_core.backends`, one module each.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from pebal_core.backends import Backend, TorchBackend, create_backend
from pebal_core.backends.base import recorded_input_size
from pebal_core.model_store import model_path, resolve_model
from pebal_core.models.base import SegmentationModel
from pebal_core.protocols import (
    MAX_NETWORK_PIXELS,
    bounded_size,
    resize_image,
    resize_label_map,
    resize_protocol,
    resize_score,
)
from pebal_core.scoring import METHODS, all_scores, inlier_labels


@dataclass
class Prediction:
    """What :meth:`Predictor.scores` returns, every map at one size ``H x W``.

    Attributes:
        scores: ``{method: float32 H x W}`` (higher = more anomalous; see ``pebal_core.scoring``).
        labels: uint8 ``H x W`` inlier trainIds 0..18 (``None`` unless asked for).
        network_size: ``(height, width)`` the network ran at.
    """

    scores: dict[str, np.ndarray]
    labels: np.ndarray | None
    network_size: tuple[int, int]


class Predictor:
    """Labels and anomaly scores for RGB images, whatever the backend.

    Args:
        backend: a constructed :class:`Backend`.
        input_size: ``(height, width)`` the network runs at; ``None`` = each image's own size,
            bounded by ``max_network_pixels``.
        protocol: the resize protocol (:data:`pebal_core.protocols.RESIZE_PROTOCOLS`) used when
            the network size differs from the image's size: ``predictor`` (OpenCV bilinear, the
            deployed behaviour) or ``course`` (PIL bilinear, the published protocol of
            ``docs/data_sources.md``).
        max_network_pixels: without ``input_size``, larger images run at a scaled-down size (aspect
            kept) of at most this many pixels.
    """

    def __init__(
        self,
        backend: Backend,
        input_size: tuple[int, int] | None = None,
        protocol: str = "predictor",
        max_network_pixels: int = MAX_NETWORK_PIXELS,
    ) -> None:
        self.backend = backend
        if input_size is not None:
            h, w = (int(v) for v in input_size)
            if h <= 0 or w <= 0:
                raise ValueError(f"input_size must be positive (height, width), got {input_size}")
            input_size = (h, w)
        if int(max_network_pixels) < 1:
            raise ValueError(f"max_network_pixels must be >= 1, got {max_network_pixels}")
        self.input_size = input_size
        self.protocol = resize_protocol(protocol).name
        self.max_network_pixels = int(max_network_pixels)

    @classmethod
    def from_model(
        cls,
        model: SegmentationModel,
        input_size: tuple[int, int] | None = None,
        protocol: str = "predictor",
        device: str | None = None,
        smoothing: bool = True,
    ) -> Predictor:
        """A torch-backend Predictor over a loaded model (``input_size`` as given: no default)."""
        return cls(TorchBackend.from_model(model, device, smoothing), input_size, protocol)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike,
        backend: str = "torch",
        device: str = "cpu",
        input_size: tuple[int, int] | None = None,
        smoothing: bool = True,
        arch: str | None = None,
        max_network_pixels: int = MAX_NETWORK_PIXELS,
        **backend_options: object,
    ) -> Predictor:
        """Load a model file, or a shipped or zoo model by name (``"default"``, ``"synthetic"``;
        :func:`pebal_core.model_store.resolve_model`), with the named backend
        (:mod:`pebal_core.backends`; ``torch`` takes any checkpoint format, ``auto`` the fastest CPU
        backend measured here for this model).

        ``arch`` names the network of a file without project metadata (``torch`` and ``auto``: a
        bare state_dict, e.g. ``arch="espnet_p2q8"`` for a real Cityscapes ESPNet); for a file
        that carries its architecture it must agree with it. ``input_size`` defaults to the
        model's fixed size when it has one (a fixed-size ONNX export or TensorRT plan), else to
        the size its metadata records (:func:`recorded_input_size`), else each image's own size
        (bounded by ``max_network_pixels``); ``backend_options`` go to the backend (see the module docstring), e.g.
        ``engine_auto_build=True`` for ``tensorrt``.
        """
        path = resolve_model(path)
        if arch is not None and backend in ("torch", "auto"):  # other backends' files carry their architecture
            backend_options = {**backend_options, "arch": arch}
        engine = create_backend(
            backend, path, device=device, smoothing=smoothing, input_size=input_size, **backend_options
        )
        if arch is not None and engine.metadata.get("arch") != arch:
            raise ValueError(f"{path} holds architecture {engine.metadata.get('arch')!r}, not the {arch!r} asked for")
        size = input_size or engine.input_size or recorded_input_size(engine.metadata)
        return cls(engine, size, max_network_pixels=max_network_pixels)

    @classmethod
    def default(cls, **kwargs: object) -> Predictor:
        """The shipped default model (``pebal_core.model_store``; torch backend unless ``backend=`` says
        otherwise)."""
        return cls.from_checkpoint(model_path(), **kwargs)

    @property
    def metadata(self) -> dict:
        return self.backend.metadata

    @property
    def model_id(self) -> str:
        """Short identifier of the model: architecture and the first 12 hex digits of the SHA-256 of
        the checkpoint it came from. An ONNX or OpenVINO export carries its source checkpoint's hash
        (``source_sha256``), so one model reports one id on every backend (the backend and its
        precision are reported beside it); a checkpoint reports its own file's hash."""
        meta = self.metadata
        digest = meta.get("source_sha256") or meta.get("sha256", "")
        return f"{meta.get('arch', '?')}@{str(digest)[:12]}"

    def network_size(self, image_size: tuple[int, int]) -> tuple[int, int]:
        """``(height, width)`` the network runs an image of ``image_size`` (height, width) at: the
        input size, else the image's own size bounded by ``max_network_pixels`` (module docstring)."""
        return self.input_size or bounded_size(int(image_size[0]), int(image_size[1]), self.max_network_pixels)

    def network_image(self, rgb: np.ndarray) -> np.ndarray:
        """``rgb`` checked (non-empty uint8 ``H x W x 3``) and resized to :meth:`network_size`."""
        rgb = np.asarray(rgb)
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
            raise ValueError(f"predict expects a non-empty uint8 H x W x 3 RGB image, got {rgb.dtype} {rgb.shape}")
        return resize_image(rgb, self.network_size(rgb.shape[:2]), self.protocol)

    def logits(self, rgb: np.ndarray) -> torch.Tensor:
        """``1 x C x h x w`` logits at the network size (torch backend only)."""
        return self.backend.logits(self.network_image(rgb))

    def scores(
        self,
        rgb: np.ndarray,
        methods: tuple[str, ...] = ("pebal",),
        labels: bool = False,
        output_size: tuple[int, int] | str | None = None,
    ) -> Prediction:
        """Any set of :data:`pebal_core.scoring.METHODS` for one image, from one forward pass.

        Args:
            rgb: uint8 ``H x W x 3``.
            methods: score names; ``abstention`` is left out for models without channel 19.
                Scores other than ``pebal`` need the torch backend.
            labels: also return the inlier labels.
            output_size: ``(height, width)`` of the returned maps; ``None`` = the image's
                (what :meth:`predict` returns), ``"network"`` = the network's.
        """
        unknown = set(methods) - set(METHODS)
        if unknown:
            raise ValueError(f"unknown score methods {sorted(unknown)}; choose from {', '.join(METHODS)}")
        x = self.network_image(rgb)
        net = (int(x.shape[0]), int(x.shape[1]))
        size = net if output_size == "network" else tuple(output_size or np.asarray(rgb).shape[:2])
        if set(methods) <= {"pebal"} and not isinstance(self.backend, TorchBackend):  # what run() returns
            lab, score = self.backend.run(x)
            maps, lab = ({"pebal": score} if methods else {}), (lab if labels else None)
        else:
            with torch.inference_mode():
                logits = self.backend.logits(x)
                maps = {m: s[0].float().cpu().numpy() for m, s in all_scores(logits, tuple(methods)).items()}
                lab = inlier_labels(logits)[0].cpu().numpy() if labels else None
        return Prediction(
            {m: resize_score(s, size) for m, s in maps.items()},
            None if lab is None else resize_label_map(lab, size),
            net,
        )

    def predict(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``rgb`` uint8 ``H x W x 3`` -> ``(labels uint8 H x W, score float32 H x W)``."""
        h, w = np.asarray(rgb).shape[:2]
        labels, score = self.backend.run(self.network_image(rgb))
        return resize_label_map(labels, (h, w)), resize_score(score, (h, w))
