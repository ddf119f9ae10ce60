"""``Predictor``: one inference interface over the torch / onnxruntime / tensorrt backends.

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

Backends implement :class:`Backend`; this module registers three (each imports its toolkit
only when constructed, so importing this module never loads onnxruntime, tensorrt or pycuda):

``torch``
    Eager PyTorch on any checkpoint format (``device`` ``cpu`` or ``cuda[:N]``).
``onnxruntime``
    A ``pebal export onnx`` file (normalisation and energy head inside the graph); ``device``
    ``cpu``, ``cuda[:N]`` (CUDA execution provider) or ``tensorrt[:N]`` (TensorRT execution
    provider with its engine cache beside the ONNX file); needs ``onnxruntime-gpu`` for the
    GPU providers.
``tensorrt``
    A TensorRT plan built by ``pebal export tensorrt`` (or the ONNX file it is cached beside),
    run with pycuda buffers on one CUDA stream; ``device`` ``cuda[:N]``; backend option
    ``engine_auto_build=True`` (re)builds a missing or incompatible plan
    (:func:`pebal_core.export.tensorrt.resolve_engine`).

:func:`register_backend` adds more.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pebal_core.fileio import sha256_file
from pebal_core.model_store import model_path
from pebal_core.models.base import SegmentationModel
from pebal_core.models.checkpoint import load_model
from pebal_core.onnx_contract import OUTPUT_NAMES, parse_metadata
from pebal_core.preprocessing import image_to_tensor
from pebal_core.protocols import (
    MAX_NETWORK_PIXELS,
    bounded_size,
    resize_image,
    resize_label_map,
    resize_protocol,
    resize_score,
)
from pebal_core.scoring import METHODS, all_scores, inlier_labels, labels_and_score


class Backend:
    """An inference engine for one model at one device.

    Attributes:
        name: backend name (``torch``, ``onnxruntime``, ``tensorrt``).
        metadata: the model's metadata (architecture, normalisation, operating points, ...).
    """

    name = "abstract"
    metadata: dict
    input_size: tuple[int, int] | None = None
    """The model's fixed network input ``(height, width)``, or ``None`` when any size runs."""

    def run(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``rgb`` uint8 ``H x W x 3`` (already at network size) -> ``(labels uint8, score float32)``."""
        raise NotImplementedError

    def logits(self, rgb: np.ndarray) -> torch.Tensor:
        """``1 x C x H x W`` float logits of ``rgb`` (at network size); only backends that keep them."""
        raise BackendError(
            f"the {self.name} backend returns labels and the PEBAL score only; scores other than 'pebal' "
            "and logits need the torch backend (backend='torch')"
        )


class TorchBackend(Backend):
    """Eager PyTorch inference (CPU or CUDA) of a checkpoint file, or of a loaded model
    (:meth:`from_model`); ``arch`` names the network of a checkpoint without project metadata (a
    bare state_dict such as a real Cityscapes ESPNet; see ``pebal models``)."""

    name = "torch"

    def __init__(
        self, path: str | os.PathLike, device: str = "cpu", smoothing: bool = True, arch: str | None = None, **_: object
    ) -> None:
        self._setup(load_model(path, arch=arch), device, smoothing)

    @classmethod
    def from_model(cls, model: SegmentationModel, device: str | None = None, smoothing: bool = True) -> TorchBackend:
        """A backend over an already loaded ``model`` (moved to ``device``, default: where it is)."""
        backend = cls.__new__(cls)
        backend._setup(model, device or str(next(model.parameters()).device), smoothing)
        return backend

    def _setup(self, model: SegmentationModel, device: str, smoothing: bool) -> None:
        self.device = torch.device(device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but torch sees no CUDA GPU; use device 'cpu'")
        self.model = model.to(self.device).eval()
        self.metadata = {"arch": getattr(model, "arch", None), **getattr(model, "checkpoint_metadata", {})}
        self.smoothing = smoothing

    @torch.inference_mode()
    def logits(self, rgb: np.ndarray) -> torch.Tensor:
        """Normalised with the model's normalisation, zero-padded to its ``size_divisor``, run,
        padding cropped: ``1 x C x H x W`` logits on the backend's device."""
        x = image_to_tensor(rgb, self.model.normalization).to(self.device)
        return self.model.forward_padded(x)

    @torch.inference_mode()
    def run(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        labels, score = labels_and_score(self.logits(rgb), self.smoothing)
        return labels[0].cpu().numpy(), score[0].float().cpu().numpy()


class BackendError(RuntimeError):
    """A backend cannot run here: library or device missing, or the model file does not fit."""


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def parse_device(device: str, kinds: tuple[str, ...]) -> tuple[str, int]:
    """``"cuda:1"`` -> ``("cuda", 1)``; ``"cpu"`` -> ``("cpu", 0)``; kind must be in ``kinds``."""
    kind, _, index = device.partition(":")
    if kind not in kinds or (index and not index.isdigit()):
        raise ValueError(f"unknown device {device!r} for this backend; use one of {', '.join(kinds)} (GPU: kind:N)")
    return kind, int(index or 0)


def _check_smoothing(path: Path, baked: bool, wanted: bool) -> None:
    if bool(baked) != bool(wanted):
        raise ValueError(
            f"{path} was exported with score smoothing {'on' if baked else 'off'}, but smoothing="
            f"{wanted} was asked for; re-export it {'with' if baked else 'without'} --no-smoothing, "
            "or change the smoothing setting to match"
        )


def _check_fixed_size(path: Path, fixed: tuple[int, int] | None, wanted: tuple[int, int] | None) -> None:
    if fixed is not None and wanted is not None and tuple(wanted) != tuple(fixed):
        raise ValueError(
            f"{path} has a fixed input of {fixed[0]}x{fixed[1]}, but input_size {wanted[0]}x{wanted[1]} was "
            "asked for; set input_size to the model's size (or leave it unset) or re-export with --dynamic"
        )


def _image_nchw(rgb: np.ndarray) -> np.ndarray:
    """uint8 ``H x W x 3`` -> contiguous uint8 ``1 x 3 x H x W`` (the exported graphs' input)."""
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))[None]


class OnnxRuntimeBackend(Backend):
    """A ``pebal export onnx`` file run by ONNX Runtime.

    Args:
        path: the ``.onnx`` file; its metadata supplies ``metadata`` (architecture,
            normalisation, operating points, ...); ``metadata["sha256"]`` is the ONNX file's
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
        meta = parse_metadata(self.session.get_modelmeta().custom_metadata_map)
        _check_smoothing(path, meta["smoothing"], smoothing)
        _check_fixed_size(path, meta["input_size"], input_size)
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
        labels, score = self.session.run(self._outputs, {"image": _image_nchw(rgb)})
        return labels[0], score[0]


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
        from pebal_core.export import tensorrt as trt_export

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
        model = info.model
        _check_smoothing(Path(path), model.get("smoothing", True), smoothing)
        fixed = model.get("input_size")
        self.input_size = tuple(fixed) if fixed else None
        _check_fixed_size(Path(path), self.input_size, input_size)
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


_BACKENDS: dict[str, Callable[..., Backend]] = {
    "torch": TorchBackend,
    "onnxruntime": OnnxRuntimeBackend,
    "tensorrt": TensorRTBackend,
}


def register_backend(name: str, factory: Callable[..., Backend]) -> None:
    """Make a backend selectable by name (``Predictor.from_checkpoint(..., backend=name)``)."""
    _BACKENDS[name] = factory


def available_backends() -> list[str]:
    return sorted(_BACKENDS)


def recorded_input_size(metadata: dict) -> tuple[int, int] | None:
    """The ``(height, width)`` a model's metadata records as its input size, or ``None``.

    ``input_size`` in a checkpoint's metadata is the network size its operating points were measured
    at (``pebal threshold --write``, ``pebal eval --write-threshold``); in an ONNX export's metadata
    it is the graph's fixed size, and a dynamic export carries the checkpoint's in
    ``checkpoint_metadata``."""
    for meta in (metadata, metadata.get("checkpoint_metadata") or {}):
        size = meta.get("input_size")
        if size:
            return tuple(int(v) for v in size)
    return None


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
        """Load a model file with the named backend (``torch`` takes any checkpoint format).

        ``arch`` names the network of a file without project metadata (``torch`` backend: a
        bare state_dict, e.g. ``arch="espnet_p2q8"`` for a real Cityscapes ESPNet); for a file
        that carries its architecture it must agree with it. ``input_size`` defaults to the
        model's fixed size when it has one (a fixed-size ONNX export or TensorRT plan), else to
        the size its metadata records (:func:`recorded_input_size`), else each image's own size
        (bounded by ``max_network_pixels``); ``backend_options`` go to the backend (see the module docstring), e.g.
        ``engine_auto_build=True`` for ``tensorrt``.
        """
        if backend not in _BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; available: {', '.join(available_backends())}")
        if arch is not None and backend == "torch":  # other backends' files always carry their architecture
            backend_options = {**backend_options, "arch": arch}
        engine = _BACKENDS[backend](path, device=device, smoothing=smoothing, input_size=input_size, **backend_options)
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
        """Short identifier: architecture and the first 12 hex digits of the file's SHA-256."""
        meta = self.metadata
        return f"{meta.get('arch', '?')}@{str(meta.get('sha256', ''))[:12]}"

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
