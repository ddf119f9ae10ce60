"""TensorRT engines from PEBAL ONNX exports: build, describe, check, cache.

An engine ("plan") is tied to the TensorRT version and the GPU that built it (``docs/deployment.md``): a
plan from another version fails to deserialise ("Version tag does not match"), one from
another GPU may fail or run slowly. Every plan therefore gets a JSON **sidecar**
(``<plan>.json``, :class:`EngineInfo`) recording the TensorRT version, GPU name and compute
capability, precision, input profile and the SHA-256 of the ONNX file it came from. At load
time :func:`resolve_engine` compares the sidecar with the machine (:class:`DeviceEnv`) and
either accepts the plan, rebuilds it (``auto_build=True``, the ``engine_auto_build`` backend
option / node parameter, as Autoware's ``tensorrt_common`` does), or refuses it with a
message that says how to fix it.

Cache layout, next to the ONNX file ``model.onnx`` (Autoware style)::

    model.fp16.engine           the plan (one per precision)
    model.fp16.engine.json      its sidecar
    model.int8.calib            INT8 calibration cache (reused by later INT8 builds)
    timing-trt<ver>-<gpu>-sm<cc>.cache   builder timing cache for this TensorRT + GPU

The bookkeeping (:class:`EngineInfo`, :class:`DeviceEnv`, :func:`compatibility_problems`,
:func:`resolve_engine`, :func:`profile_shapes`, paths, calibration images) is plain Python;
only :func:`build_engine` and :meth:`DeviceEnv.current` import ``tensorrt`` / ``pycuda``
(``pip install .[tensorrt]``). The builder is written for TensorRT 8.6 to 10.x (weakly-typed
FP16/INT8 builder flags and the INT8 calibrator API, which TensorRT 11 removed).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pebal_core.export.calibration import calibration_batch, calibration_files
from pebal_core.fileio import atomic_write, atomic_write_text, sha256_file
from pebal_core.onnx_contract import INPUT_NAME, MAX_SIDE, MIN_SIDE, read_metadata
from pebal_core.version import __version__

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_PRECISION = "fp16"
DEFAULT_WORKSPACE_MB = 2048
INSTALL_HINT = "install the optional extra on a machine with an NVIDIA GPU: pip install .[tensorrt]"

log = logging.getLogger(__name__)


class EngineError(RuntimeError):
    """A TensorRT plan cannot be built, or cannot be used on this machine (the message says why and how to fix it)."""


@dataclass(frozen=True)
class DeviceEnv:
    """What a plan must match: the TensorRT version and the GPU of this machine."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    """``"major.minor"``, e.g. ``"8.7"`` for Jetson Orin."""

    @classmethod
    def current(cls, device: int = 0) -> DeviceEnv:
        """The installed TensorRT and CUDA device ``device`` (needs tensorrt and pycuda)."""
        try:
            import pycuda.driver as cuda
            import tensorrt as trt
        except ImportError as e:
            raise EngineError(f"TensorRT engines need the tensorrt and pycuda packages ({e}); {INSTALL_HINT}") from e
        cuda.init()
        if device >= cuda.Device.count():
            raise EngineError(f"CUDA device {device} requested but this machine has {cuda.Device.count()} GPU(s)")
        dev = cuda.Device(device)
        major, minor = dev.compute_capability()
        return cls(str(trt.__version__), str(dev.name()), f"{major}.{minor}")


@dataclass
class EngineInfo:
    """The JSON sidecar of a plan.

    ``input_shapes`` holds the optimisation profile of the input ``image`` as
    ``{"min": [1, 3, H, W], "opt": [...], "max": [...]}``; ``model`` holds the PEBAL metadata
    of the ONNX file (:func:`pebal_core.export.onnx.parse_metadata`), so that the runtime
    knows the operating points and architecture without reading the ONNX file.
    """

    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    input_shapes: dict[str, list[int]]
    onnx_file: str
    """The ONNX file's name, relative to the plan's directory when it lies there."""
    onnx_sha256: str
    workspace_mb: int = DEFAULT_WORKSPACE_MB
    calibration: dict | None = None
    timing_cache: str | None = None
    model: dict = field(default_factory=dict)
    pebal_version: str = __version__
    built: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> EngineInfo:
        data = json.loads(text)
        known = set(cls.__dataclass_fields__)
        missing = {"tensorrt_version", "gpu_name", "compute_capability", "precision", "input_shapes"} - set(data)
        if missing:
            raise EngineError(f"engine sidecar lacks {sorted(missing)}")
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def read(cls, path: str | os.PathLike) -> EngineInfo:
        path = Path(path)
        try:
            return cls.from_json(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, TypeError) as e:
            raise EngineError(f"engine sidecar {path} is not valid JSON of a pebal engine: {e}") from e

    def write(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, self.to_json())

    def onnx_path(self, engine_path: str | os.PathLike) -> Path:
        """Where the source ONNX file is (resolved against the plan's directory)."""
        p = Path(self.onnx_file)
        return p if p.is_absolute() else Path(engine_path).parent / p


# ----------------------------------------------------------------------------- paths
def engine_path_for(onnx_path: str | os.PathLike, precision: str = DEFAULT_PRECISION) -> Path:
    """The cached plan of an ONNX file: ``model.onnx`` -> ``model.<precision>.engine`` beside it."""
    _check_precision(precision)
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(f"{onnx_path.stem}.{precision}.engine")


def sidecar_path(engine_path: str | os.PathLike) -> Path:
    """``model.fp16.engine`` -> ``model.fp16.engine.json``."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


def calibration_cache_path(onnx_path: str | os.PathLike) -> Path:
    """Default INT8 calibration cache: ``model.onnx`` -> ``model.int8.calib`` beside it."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(f"{onnx_path.stem}.int8.calib")


def timing_cache_path(directory: str | os.PathLike, env: DeviceEnv) -> Path:
    """Default timing cache in ``directory``, named after the TensorRT version and GPU it is valid for."""
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", env.gpu_name).strip("-").lower() or "gpu"
    return Path(directory) / f"timing-trt{env.tensorrt_version}-{gpu}-sm{env.compute_capability}.cache"


def _check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")


# ----------------------------------------------------------------------------- profile
def profile_shapes(
    onnx_input_size: tuple[int, int] | None,
    input_size: tuple[int, int] | None = None,
    min_size: tuple[int, int] | None = None,
    max_size: tuple[int, int] | None = None,
) -> dict[str, list[int]]:
    """The optimisation profile ``{"min", "opt", "max"}`` (each ``[1, 3, H, W]``) of the input.

    Args:
        onnx_input_size: the ONNX file's fixed ``(H, W)``, or ``None`` for a dynamic export.
        input_size: the size the engine is optimised for (``opt``); required for a dynamic
            export, must equal the fixed size otherwise.
        min_size, max_size: the accepted range of a dynamic export (default: ``input_size``
            only, which gives the fastest engine).
    """

    def shape(hw: Sequence[int]) -> list[int]:
        return [1, 3, int(hw[0]), int(hw[1])]

    if onnx_input_size is not None:
        fixed = tuple(int(v) for v in onnx_input_size)
        for name, value in (("input size", input_size), ("min size", min_size), ("max size", max_size)):
            if value is not None and tuple(int(v) for v in value) != fixed:
                raise ValueError(
                    f"the ONNX file has a fixed input of {fixed[0]}x{fixed[1]}, but {name} {value[0]}x{value[1]} "
                    "was asked for; re-export with `pebal export onnx --dynamic` or drop the size option"
                )
        return {"min": shape(fixed), "opt": shape(fixed), "max": shape(fixed)}
    if input_size is None:
        raise ValueError("the ONNX file has a dynamic input size: give the size to optimise for (--input-size H W)")
    opt = shape(input_size)
    lo = shape(min_size) if min_size is not None else opt
    hi = shape(max_size) if max_size is not None else opt
    for i, axis in ((2, "height"), (3, "width")):
        if not MIN_SIDE <= lo[i] <= opt[i] <= hi[i] <= MAX_SIDE:
            raise ValueError(
                f"profile {axis}s must satisfy {MIN_SIDE} <= min <= opt <= max <= {MAX_SIDE}, "
                f"got min {lo[i]}, opt {opt[i]}, max {hi[i]}"
            )
    return {"min": lo, "opt": opt, "max": hi}


def profile_covers(shapes: dict[str, list[int]], size: tuple[int, int]) -> bool:
    """Whether ``(H, W)`` lies inside the profile's ``[min, max]`` range."""
    h, w = size
    return shapes["min"][2] <= h <= shapes["max"][2] and shapes["min"][3] <= w <= shapes["max"][3]


# ----------------------------------------------------------------------------- compatibility
def compatibility_problems(
    info: EngineInfo,
    env: DeviceEnv,
    onnx_sha256: str | None = None,
    input_size: tuple[int, int] | None = None,
    precision: str | None = None,
) -> list[str]:
    """Every reason why the plan described by ``info`` must not be used here (empty = usable).

    Checks the TensorRT version (exact: plans are not portable across releases), the GPU name
    and compute capability, and, when given, the source ONNX hash, the input size (inside the
    profile) and the precision.
    """
    problems = []
    if info.tensorrt_version != env.tensorrt_version:
        problems.append(
            f"it was built with TensorRT {info.tensorrt_version}, this machine runs TensorRT {env.tensorrt_version}"
        )
    if (info.gpu_name, info.compute_capability) != (env.gpu_name, env.compute_capability):
        problems.append(
            f"it was built for the GPU {info.gpu_name} (compute capability {info.compute_capability}), "
            f"this machine has {env.gpu_name} (compute capability {env.compute_capability})"
        )
    if onnx_sha256 is not None and info.onnx_sha256 != onnx_sha256:
        problems.append(
            f"the ONNX file changed since the plan was built (sha256 {onnx_sha256[:12]}, plan built from "
            f"{info.onnx_sha256[:12]})"
        )
    if input_size is not None and not profile_covers(info.input_shapes, input_size):
        lo, hi = info.input_shapes["min"], info.input_shapes["max"]
        problems.append(
            f"its input profile {lo[2]}x{lo[3]}..{hi[2]}x{hi[3]} does not cover the input size "
            f"{input_size[0]}x{input_size[1]}"
        )
    if precision is not None and info.precision != precision:
        problems.append(f"it has precision {info.precision}, {precision} was asked for")
    return problems


BuildFn = Callable[..., EngineInfo]


def resolve_engine(
    path: str | os.PathLike,
    env: DeviceEnv,
    precision: str | None = None,
    input_size: tuple[int, int] | None = None,
    auto_build: bool = False,
    build: BuildFn | None = None,
    **build_options: object,
) -> tuple[Path, EngineInfo]:
    """Find a usable plan for ``path``, (re)building it when allowed.

    Args:
        path: an ``.onnx`` file (its plan is cached beside it, :func:`engine_path_for`) or a
            plan (``.engine``/``.plan``) with its sidecar.
        env: this machine (:meth:`DeviceEnv.current`).
        precision: wanted precision (default: the plan's when ``path`` is a plan, else fp16).
        input_size: the ``(H, W)`` the engine will be run at, when known.
        auto_build: build a missing plan and rebuild an incompatible one (from the ONNX file)
            instead of refusing it.
        build: the builder (default :func:`build_engine`), called as
            ``build(onnx_path, engine_path, precision=..., input_size=..., **build_options)``.

    Returns:
        ``(plan path, its EngineInfo)``.

    Raises:
        EngineError: the plan is missing or incompatible and ``auto_build`` is off (or there
            is no ONNX file to rebuild from); the message lists every problem and the fix.
    """
    path = Path(path)
    if path.suffix == ".onnx":
        if not path.is_file():
            raise FileNotFoundError(f"ONNX file not found: {path}")
        onnx_path: Path | None = path
        engine = engine_path_for(path, precision or DEFAULT_PRECISION)
    else:
        engine = path
        onnx_path = None
    sidecar = sidecar_path(engine)
    info = EngineInfo.read(sidecar) if engine.is_file() and sidecar.is_file() else None
    if onnx_path is None and info is not None and info.onnx_path(engine).is_file():
        onnx_path = info.onnx_path(engine)

    if not engine.is_file():
        problems = [f"there is no plan file {engine}"]
    elif info is None:
        problems = [f"the plan {engine} has no sidecar {sidecar.name} saying which TensorRT and GPU built it"]
    else:
        onnx_sha = sha256_file(onnx_path) if onnx_path is not None else None
        problems = compatibility_problems(info, env, onnx_sha, input_size, precision)
    if not problems:
        return engine, info

    want = precision or (info.precision if info is not None else DEFAULT_PRECISION)
    if not auto_build or onnx_path is None:
        source = str(onnx_path) if onnx_path is not None else "MODEL.onnx"
        size = f" --input-size {input_size[0]} {input_size[1]}" if input_size else ""
        fix = f"Rebuild it on this machine with `pebal export tensorrt {source} --precision {want}{size}`"
        if onnx_path is None:
            fix += " (the source ONNX file named in the sidecar was not found next to the plan)"
        else:
            fix += ", or pass engine_auto_build=True (node parameter engine_auto_build: true) to rebuild it at start-up"
        reasons = "\n".join(f"  - {p}" for p in problems)
        raise EngineError(f"cannot use the TensorRT plan {engine}:\n{reasons}\n{fix}.")
    if info is not None and input_size is None:  # rebuild with the old plan's profile
        input_size = tuple(info.input_shapes["opt"][2:])
        build_options.setdefault("min_size", tuple(info.input_shapes["min"][2:]))
        build_options.setdefault("max_size", tuple(info.input_shapes["max"][2:]))
    log.warning("building the TensorRT plan %s (takes minutes): %s", engine, "; ".join(problems))
    builder = build or build_engine
    info = builder(onnx_path, engine, precision=want, input_size=input_size, **build_options)
    return engine, info


# ----------------------------------------------------------------------------- calibration
def _entropy_calibrator(trt, cuda, files: list[Path], shape: list[int], cache: Path):
    """An ``IInt8EntropyCalibrator2`` feeding ``files`` one image per batch, caching its table in ``cache``."""

    class ImageFolderCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.host = cuda.pagelocked_empty(tuple(shape), np.uint8)
            self.device = cuda.mem_alloc(self.host.nbytes)
            self.index = 0
            self.progress = tqdm(total=len(files), desc="INT8 calibration", unit="image")

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names: list[str]) -> list[int] | None:
            if self.index >= len(files):
                self.progress.close()
                return None
            self.host[...] = calibration_batch(files[self.index], (shape[2], shape[3]))
            cuda.memcpy_htod(self.device, self.host)
            self.index += 1
            self.progress.update(1)
            return [int(self.device)]

        def read_calibration_cache(self) -> bytes | None:
            return cache.read_bytes() if cache.is_file() else None

        def write_calibration_cache(self, data) -> None:
            _write_bytes(cache, data)

    return ImageFolderCalibrator()


# ----------------------------------------------------------------------------- build
@dataclass
class _TrtBuild:
    """The TensorRT objects of one build, kept referenced together until the plan is serialised.

    TensorRT's Python objects must outlive the build: the ONNX parser owns the network's
    weights, the builder the network, and the config refers to the logger's builder, the
    optimisation profile, the INT8 calibrator and the timing cache.
    """

    logger: object
    builder: object
    network: object
    parser: object
    config: object = None
    profile: object = None
    calibrator: object = None
    timing_cache: object = None


def _tensorrt_major_version(trt, precision: str) -> int:
    """TensorRT's major version; refuses FP16/INT8 builds on TensorRT 11+ (weakly-typed flags removed)."""
    major = int(trt.__version__.split(".")[0])
    if major >= 11 and precision != "fp32":
        raise EngineError(
            f"TensorRT {trt.__version__} removed the weakly-typed FP16/INT8 builder flags this builder uses "
            "(supported: TensorRT 8.6 to 10.x); build an fp32 plan, or use TensorRT 10"
        )
    return major


def _int8_calibration_inputs(
    onnx_path: Path,
    precision: str,
    images: str | os.PathLike | None,
    cache: str | os.PathLike | None,
    limit: int,
) -> tuple[Path, list[Path]]:
    """``(calibration cache path, calibration images)``; the images are empty unless ``precision`` is int8.

    INT8 needs either images or an existing cache (default cache: :func:`calibration_cache_path`).
    """
    calib_cache = Path(cache) if cache else calibration_cache_path(onnx_path)
    calib_files: list[Path] = []
    if precision == "int8":
        if images is not None:
            calib_files = calibration_files(images, limit)
        elif not calib_cache.is_file():
            raise ValueError(
                "INT8 needs calibration images (--calibration-images DIR) or an existing calibration cache "
                f"{calib_cache}"
            )
    return calib_cache, calib_files


def _parse_onnx(trt, onnx_path: Path, major: int) -> _TrtBuild:
    """Builder and explicit-batch network parsed from the ONNX file (the flag is implicit from TensorRT 10)."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0 if major >= 10 else 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "\n".join(f"  - {parser.get_error(i)}" for i in range(parser.num_errors))
        raise EngineError(f"TensorRT cannot parse {onnx_path}:\n{errors}")
    return _TrtBuild(logger, builder, network, parser)


def _configure(
    build: _TrtBuild,
    trt,
    cuda,
    precision: str,
    shapes: dict[str, list[int]],
    workspace_mb: int,
    calib_files: list[Path],
    calib_cache: Path,
) -> None:
    """The builder config: workspace pool (MiB), the input's optimisation profile and the precision flags.

    ``fp32`` switches TF32 off (IEEE fp32 kernels); ``fp16`` and ``int8`` allow FP16 kernels;
    ``int8`` adds the entropy calibrator over ``calib_files`` at the profile's ``opt`` shape.
    """
    config = build.builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    profile = build.builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)
    if precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # on by default; fp32 here means IEEE fp32 kernels
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        build.calibrator = _entropy_calibrator(trt, cuda, calib_files, shapes["opt"], calib_cache)
        config.int8_calibrator = build.calibrator
        config.set_calibration_profile(profile)
    build.config, build.profile = config, profile


def _load_timing_cache(build: _TrtBuild, timing: Path) -> None:
    """Give the builder the timing cache in ``timing`` (an empty one when absent or from another device/version)."""
    config = build.config
    cache = config.create_timing_cache(timing.read_bytes() if timing.is_file() else b"")
    if not config.set_timing_cache(cache, False):
        cache = config.create_timing_cache(b"")  # a cache from another device/version: start afresh
        config.set_timing_cache(cache, False)
    build.timing_cache = cache


def _serialize_plan(build: _TrtBuild, onnx_path: Path, workspace_mb: int):
    """Build the engine; the serialised plan (TensorRT host memory)."""
    plan = build.builder.build_serialized_network(build.network, build.config)
    if plan is None:
        raise EngineError(
            f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above); "
            f"a larger --workspace-mb than {workspace_mb} may help"
        )
    return plan


def _write_bytes(path: Path, data) -> None:
    """Write a bytes-like TensorRT buffer to ``path`` atomically."""
    with atomic_write(path) as tmp:
        tmp.write_bytes(bytes(data))


def build_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike | None = None,
    precision: str = DEFAULT_PRECISION,
    input_size: tuple[int, int] | None = None,
    min_size: tuple[int, int] | None = None,
    max_size: tuple[int, int] | None = None,
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
    calibration_images: str | os.PathLike | None = None,
    calibration_cache: str | os.PathLike | None = None,
    calibration_limit: int = 500,
    timing_cache: str | os.PathLike | None = None,
    device: int = 0,
) -> EngineInfo:
    """Build a plan from a PEBAL ONNX export with the TensorRT Python API and write it with its sidecar.

    Explicit-batch network parsed by ``trt.OnnxParser``; one optimisation profile for the
    input (:func:`profile_shapes`); workspace pool limited to ``workspace_mb``; ``fp32`` with
    TF32 switched off, FP16 kernels allowed for ``fp16`` and ``int8``; for ``int8`` (implicit
    quantisation, deprecated by TensorRT 10 but still supported) an entropy calibrator (v2) over the images
    of ``calibration_images`` (resized to the profile's ``opt`` size) whose table is cached in
    ``calibration_cache`` (default ``model.int8.calib``; an existing cache is reused and the
    images are then optional). The builder's timing cache is loaded from and saved back to
    ``timing_cache`` (default: per TensorRT version and GPU, beside the plan).

    Returns:
        the sidecar written next to the plan.
    """
    _check_precision(precision)
    onnx_path = Path(onnx_path)
    engine_path = Path(engine_path) if engine_path is not None else engine_path_for(onnx_path, precision)
    model_meta = read_metadata(onnx_path)
    shapes = profile_shapes(model_meta["input_size"], input_size, min_size, max_size)
    calib_cache, calib_files = _int8_calibration_inputs(
        onnx_path, precision, calibration_images, calibration_cache, calibration_limit
    )

    env = DeviceEnv.current(device)
    import pycuda.driver as cuda
    import tensorrt as trt

    timing = Path(timing_cache) if timing_cache else timing_cache_path(engine_path.parent, env)
    context = cuda.Device(device).retain_primary_context()
    context.push()
    try:
        build = _parse_onnx(trt, onnx_path, _tensorrt_major_version(trt, precision))
        _configure(build, trt, cuda, precision, shapes, workspace_mb, calib_files, calib_cache)
        _load_timing_cache(build, timing)
        plan = _serialize_plan(build, onnx_path, workspace_mb)
        _write_bytes(timing, build.config.get_timing_cache().serialize())
        _write_bytes(engine_path, plan)
    finally:
        context.pop()

    same_dir = onnx_path.parent.resolve() == engine_path.parent.resolve()
    info = EngineInfo(
        tensorrt_version=env.tensorrt_version,
        gpu_name=env.gpu_name,
        compute_capability=env.compute_capability,
        precision=precision,
        input_shapes=shapes,
        onnx_file=onnx_path.name if same_dir else str(onnx_path.resolve()),
        onnx_sha256=sha256_file(onnx_path),
        workspace_mb=int(workspace_mb),
        calibration=({"cache": calib_cache.name, "images": len(calib_files) or None} if precision == "int8" else None),
        timing_cache=timing.name,
        model=_jsonable(model_meta),
        built=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    info.write(sidecar_path(engine_path))
    return info


def _jsonable(meta: dict) -> dict:
    """Metadata with tuples as lists (what a JSON round trip gives back)."""
    return json.loads(json.dumps(meta))
