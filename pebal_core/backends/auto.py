"""Backend ``auto``: the fastest CPU backend installed here, as measured on this machine for this model.

Which backend is fastest depends on the CPU (its vector units, how it handles denormal numbers,
its cache sizes), the libraries' versions and the network, so ``auto`` never assumes an order.
At the first use of a model on a machine it builds every candidate that can run the file, times
each on the same image at the network size (rounds interleaved, so other load on the machine
hits all alike; median of :data:`FRAMES` calls after one warm-up call) and keeps the fastest. The
answer is cached; later starts build only the chosen backend.

Candidates (``fp32`` arithmetic only, so every one gives the same answers up to rounding):

* a checkpoint: ``torch``, and ``onnxruntime`` and ``openvino`` over an ONNX export of it that is
  built once and cached (a failed export leaves ``torch`` alone);
* an ``.onnx`` file: ``onnxruntime`` and ``openvino``;
* an OpenVINO ``.xml`` IR: ``openvino`` alone (nothing to choose).

A backend whose library is not installed is skipped (and named in the choice). TensorRT is
never chosen: it needs a GPU and is used only when named (``backend tensorrt``); ``auto``
refuses any device but ``cpu``.

Cache, in :func:`pebal_core.fileio.user_cache_dir` (``$XDG_CACHE_HOME/pebal``)::

    auto/<machine>-<model sha256[:16]>-<H>x<W>-<smoothed|raw>.json   the measured choice
    onnx/<model sha256[:16]>-<H>x<W>|dynamic-<smoothed|raw>.onnx       ONNX export of a checkpoint

``<machine>`` hashes what a timing depends on: CPU model and flags, usable cores, and the
versions of torch, onnxruntime and openvino. A new model file (another hash), another machine or
an upgraded library therefore gets a new measurement. Files are written atomically; a cache
file that cannot be read (damaged, from another version) is measured or exported again, with a
warning, never an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from datetime import UTC, datetime
from importlib import metadata as package_metadata
from pathlib import Path

import numpy as np

from pebal_core.backends.base import Backend, BackendError, parse_device, recorded_input_size, usable_cores
from pebal_core.backends.onnxruntime_backend import OnnxRuntimeBackend
from pebal_core.backends.openvino_backend import OpenVinoBackend
from pebal_core.backends.torch_backend import TorchBackend
from pebal_core.fileio import atomic_write_text, sha256_file, user_cache_dir
from pebal_core.onnx_contract import ExportError

FRAMES = 5
"""Timed calls per candidate (after one warm-up call); the median counts."""
TIMING_SIZE = (512, 1024)
"""Network size ``(H, W)`` timed for a model without a fixed or recorded input size."""
CACHE_FORMAT = 1
_FACTORIES = {"torch": TorchBackend, "onnxruntime": OnnxRuntimeBackend, "openvino": OpenVinoBackend}
_LIBRARIES = {"torch": "torch", "onnxruntime": "onnxruntime", "openvino": "openvino"}

log = logging.getLogger(__name__)


def machine_fingerprint() -> dict:
    """What a timing depends on: CPU model and flags, usable cores, architecture, library versions."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                info.setdefault(key.strip(), value.strip())  # the first processor's
    except OSError:  # not Linux
        pass
    cpu = info.get("model name") or platform.processor() or platform.machine()
    flags = info.get("flags", "")
    versions = {}
    for name in ("torch", "onnxruntime", "openvino"):
        try:
            versions[name] = package_metadata.version(name)
        except package_metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu": cpu,
        "cpu_flags_sha256": hashlib.sha256(flags.encode()).hexdigest()[:16],
        "usable_cores": usable_cores(),
        "machine": platform.machine(),
        "versions": versions,
    }


def machine_key(fingerprint: dict | None = None) -> str:
    """16 hex digits naming this machine in cache file names."""
    text = json.dumps(fingerprint or machine_fingerprint(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _size_text(size: tuple[int, int] | None) -> str:
    return "dynamic" if size is None else f"{size[0]}x{size[1]}"


def choice_path(cache: Path, machine: str, model_sha: str, size: tuple[int, int], smoothing: bool) -> Path:
    """The cache file of a measured choice."""
    return cache / "auto" / f"{machine}-{model_sha[:16]}-{_size_text(size)}-{'smoothed' if smoothing else 'raw'}.json"


def onnx_cache_path(cache: Path, model_sha: str, size: tuple[int, int] | None, smoothing: bool) -> Path:
    """The cached ONNX export of a checkpoint (``size`` ``None``: a dynamic-size export)."""
    return cache / "onnx" / f"{model_sha[:16]}-{_size_text(size)}-{'smoothed' if smoothing else 'raw'}.onnx"


def read_choice(path: Path, candidates: list[str]) -> dict | None:
    """The cached choice in ``path``, or ``None`` when absent, unreadable or no longer possible
    (its backend is not a candidate now); an unreadable file is reported as a warning."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != CACHE_FORMAT or not isinstance(data.get("times_ms"), dict):
            raise ValueError("not a backend choice of this version")
        choice = str(data["choice"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        log.warning("backend auto: the cached choice %s is unreadable (%s); measuring again", path, e)
        return None
    return data if choice in candidates else None


def _timing_image(size: tuple[int, int]) -> np.ndarray:
    """A fixed uint8 ``H x W x 3`` image: smooth colour gradients plus noise, like a camera frame."""
    h, w = size
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(5 * xx + p) * np.cos(3 * yy - p) for p in (0.0, 1.5, 3.0)], axis=-1) * 90 + 128
    return np.clip(base + rng.normal(0, 15, base.shape), 0, 255).astype(np.uint8)


def measure(backends: dict[str, Backend], size: tuple[int, int], frames: int = FRAMES) -> dict[str, float]:
    """Median milliseconds of ``backend.run`` on one image at ``size``, rounds interleaved."""
    rgb = _timing_image(size)
    for backend in backends.values():
        backend.run(rgb)
    times: dict[str, list[float]] = {name: [] for name in backends}
    for _ in range(frames):
        for name, backend in backends.items():
            t0 = time.perf_counter()
            backend.run(rgb)
            times[name].append(1000 * (time.perf_counter() - t0))
    return {name: float(np.median(t)) for name, t in times.items()}


def installed(name: str) -> bool:
    """Whether the library of candidate ``name`` is installed (without importing it)."""
    try:
        package_metadata.version(_LIBRARIES[name])
        return True
    except package_metadata.PackageNotFoundError:
        return False


def _export(model_backend: TorchBackend, path: Path, out: Path, size: tuple[int, int] | None, smoothing: bool) -> Path:
    from pebal_core.export.onnx import export_model

    meta = dict(model_backend.model.checkpoint_metadata, path=str(path))
    example = size or TIMING_SIZE
    return export_model(model_backend.model, out, meta, input_size=example, dynamic=size is None, smoothing=smoothing)


def _onnx_backends(
    onnx_path: Path, names: list[str], options: dict, rebuild: object | None = None
) -> tuple[dict[str, Backend], dict[str, str]]:
    """Build the ONNX candidates ``names`` over ``onnx_path``; ``rebuild()`` (when given) writes
    the file anew once if it cannot be loaded (a damaged cache file). Returns the backends and,
    for each one that could not be built, why."""
    built: dict[str, Backend] = {}
    problems: dict[str, str] = {}
    for name in names:
        try:
            built[name] = _FACTORIES[name](onnx_path, **options)
        except BackendError as e:
            if rebuild is None:
                problems[name] = str(e)
                continue
            log.warning("backend auto: the cached export %s cannot be loaded (%s); exporting again", onnx_path, e)
            rebuild()
            rebuild = None
            try:
                built[name] = _FACTORIES[name](onnx_path, **options)
            except BackendError as e2:
                problems[name] = str(e2)
    return built, problems


def choose_backend(
    path: str | os.PathLike,
    device: str = "cpu",
    smoothing: bool = True,
    input_size: tuple[int, int] | None = None,
    arch: str | None = None,
    threads: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    frames: int = FRAMES,
    **_: object,
) -> Backend:
    """The fastest CPU backend for the model file ``path`` on this machine (see the module docstring).

    Args:
        path: a checkpoint (any format the torch backend reads), a ``.onnx`` export or an
            OpenVINO ``.xml`` IR.
        device: must be ``cpu``.
        smoothing, input_size, arch: as for the backends.
        threads: CPU threads of onnxruntime and openvino (default every usable core; torch uses
            its own setting, ``torch.set_num_threads``).
        cache_dir: default :func:`pebal_core.fileio.user_cache_dir`.
        frames: timed calls per candidate.

    Returns:
        the chosen backend; its ``choice`` holds ``backend``, ``times_ms`` (every candidate's
        median), ``skipped`` (candidates that could not run, and why), ``cached`` (whether the
        choice came from the cache), ``measured_at``, ``cache_file`` and a one-line ``summary``.
    """
    path = Path(path)
    kind, _ = parse_device(device, ("cpu", "cuda", "tensorrt"))
    if kind != "cpu":
        raise ValueError(
            f"backend auto chooses among the CPU backends, but device {device!r} was asked for; name the backend "
            "for a GPU (backend tensorrt with device cuda, or torch / onnxruntime with device cuda)"
        )
    if path.suffix in (".engine", ".plan"):
        raise ValueError(f"{path} is a TensorRT plan: use backend tensorrt (auto never picks TensorRT)")
    cache = Path(cache_dir) if cache_dir else user_cache_dir()
    options = {"device": "cpu", "smoothing": smoothing, "input_size": input_size, "threads": threads}
    if path.suffix == ".xml":
        backend = OpenVinoBackend(path, **options)
        backend.choice = _choice_record("openvino", {}, {}, False, None, "the only backend that runs an OpenVINO IR")
        return backend

    candidates = [name for name in ("torch", "onnxruntime", "openvino") if installed(name)]
    skipped = {name: f"{_LIBRARIES[name]} is not installed" for name in _FACTORIES if name not in candidates}
    built: dict[str, Backend] = {}
    onnx_path = path
    rebuild = None
    if path.suffix == ".onnx":
        candidates = [c for c in candidates if c != "torch"]
        if not candidates:
            raise BackendError(f"backend auto: neither onnxruntime nor openvino is installed to run {path}")
        probe, problems = _onnx_backends(path, candidates[:1], options)
        if not probe:
            raise BackendError(f"backend auto cannot run {path}: {problems}")
        built.update(probe)
        first = next(iter(probe.values()))
        size = input_size or first.input_size or recorded_input_size(first.metadata)
    else:
        torch_backend = TorchBackend(path, device="cpu", smoothing=smoothing, arch=arch)
        built["torch"] = torch_backend
        size = input_size or recorded_input_size(torch_backend.metadata)
        onnx_path = onnx_cache_path(cache, torch_backend.metadata["sha256"], size, smoothing)

        def rebuild() -> None:
            _export(torch_backend, path, onnx_path, size, smoothing)

    model_sha = sha256_file(path)  # the file was read above: a missing one was reported there
    timing_size = size or TIMING_SIZE
    machine = machine_key()
    record_path = choice_path(cache, machine, model_sha, timing_size, smoothing)
    cached = read_choice(record_path, candidates)
    if cached is not None:
        chosen = cached["choice"]
        if chosen not in built:
            if chosen != "torch" and path.suffix != ".onnx" and not onnx_path.is_file():
                rebuild()
            got, problems = _onnx_backends(onnx_path, [chosen], options, rebuild)
            built.update(got)
        if chosen in built:
            backend = built[chosen]
            backend.choice = _choice_record(
                chosen, cached["times_ms"], cached.get("skipped", {}), True, record_path, cached.get("measured_at")
            )
            log.info("backend auto: %s (cached in %s)", backend.choice["summary"], record_path)
            return backend
        log.warning("backend auto: the cached choice %s cannot be built now (%s); measuring again", chosen, problems)

    onnx_names = [c for c in candidates if c != "torch" and c not in built]
    if onnx_names and path.suffix != ".onnx":
        try:
            if not onnx_path.is_file():
                log.info("backend auto: exporting %s to ONNX once (cached as %s)", path.name, onnx_path)
                rebuild()
        except (ExportError, ValueError) as e:
            skipped.update({name: f"the ONNX export failed: {e}" for name in onnx_names})
            onnx_names = []
    got, problems = _onnx_backends(onnx_path, onnx_names, options, rebuild if path.suffix != ".onnx" else None)
    built.update(got)
    skipped.update(problems)
    log.info("backend auto: timing %s at %s on this machine", ", ".join(built), _size_text(timing_size))
    times = measure(built, timing_size, frames)
    chosen = min(times, key=times.get)
    measured_at = datetime.now(UTC).isoformat(timespec="seconds")
    record = {
        "format": CACHE_FORMAT,
        "choice": chosen,
        "times_ms": times,
        "skipped": skipped,
        "frames": frames,
        "network_size": list(timing_size),
        "model": str(path),
        "model_sha256": model_sha,
        "machine": machine_fingerprint(),
        "measured_at": measured_at,
    }
    try:
        atomic_write_text(record_path, json.dumps(record, indent=1, sort_keys=True) + "\n")
    except OSError as e:  # a read-only home: choose anyway, measure again next time
        log.warning("backend auto: cannot write the cache file %s (%s)", record_path, e)
    backend = built.pop(chosen)
    built.clear()
    backend.choice = _choice_record(chosen, times, skipped, False, record_path, measured_at)
    log.info("backend auto: %s", backend.choice["summary"])
    return backend


def _choice_record(
    chosen: str, times: dict, skipped: dict, cached: bool, cache_file: Path | None, when: str | None
) -> dict:
    ranked = sorted(times.items(), key=lambda kv: kv[1])
    others = ", ".join(f"{name} {ms:.0f} ms" for name, ms in ranked if name != chosen)
    if chosen in times:
        summary = f"{chosen} {times[chosen]:.0f} ms per frame" + (f" (vs {others})" if others else "")
        summary += f", {'cached measurement of ' if cached else 'measured '}{when}"
    else:
        summary = f"{chosen}: {when}"
    return {
        "backend": chosen,
        "times_ms": dict(times),
        "skipped": dict(skipped),
        "cached": cached,
        "cache_file": None if cache_file is None else str(cache_file),
        "measured_at": when,
        "summary": summary,
    }
