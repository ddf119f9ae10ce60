"""TensorRT engines: the plan cache and compatibility rules (plain Python, tested for real here)
and the build / run path (needs TensorRT, pycuda and an NVIDIA GPU; skipped with a reason
otherwise).

Where a test below needs "a plan TensorRT built", a stand-in builder writes placeholder bytes
and the sidecar TensorRT's builder would write: TensorRT cannot run on this machine, and the
logic under test (refuse / rebuild / accept) only reads the sidecar. The ``build_engine`` tests
without a GPU run it against recording stand-ins for the tensorrt and pycuda modules
(``_fake_tensorrt``): they check which TensorRT calls it makes, in which order, and what it
writes; that TensorRT builds a working engine from those calls is what the GPU tests check.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import _fake_tensorrt
import numpy as np
import pytest
from _export_models import STORED_POINT, camera_like, realistic_checkpoint

from pebal_core.alarms.operating_point import resolve_operating_point
from pebal_core.export.calibration import calibration_batch, calibration_files
from pebal_core.export.onnx import export_onnx
from pebal_core.export.tensorrt import (
    DeviceEnv,
    EngineError,
    EngineInfo,
    build_engine,
    calibration_cache_path,
    compatibility_problems,
    engine_path_for,
    profile_covers,
    profile_shapes,
    resolve_engine,
    sidecar_path,
    timing_cache_path,
)
from pebal_core.images import write_rgb
from pebal_core.onnx_contract import read_metadata

ORIN = DeviceEnv("10.3.0", "Orin (nvgpu)", "8.7")
SIZE = (64, 96)


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    root = tmp_path_factory.mktemp("trt")
    ckpt = realistic_checkpoint(root, "resnet18")
    return export_onnx(ckpt, root / "model.onnx", input_size=SIZE)


@pytest.fixture
def onnx_copy(tmp_path, onnx_file):
    """A private copy of the export (tests write plans beside it)."""
    path = tmp_path / "model.onnx"
    path.write_bytes(onnx_file.read_bytes())
    return path


class StandInBuilder:
    """Stands in for build_engine (TensorRT): records the call, writes a placeholder plan and the sidecar."""

    def __init__(self, env: DeviceEnv) -> None:
        self.env = env
        self.calls: list[dict] = []

    def __call__(self, onnx_path, engine_path, precision, input_size, min_size=None, max_size=None, **options):
        self.calls.append(
            dict(onnx=onnx_path, engine=engine_path, precision=precision, input_size=input_size, **options)
        )
        meta = read_metadata(onnx_path)
        info = EngineInfo(
            tensorrt_version=self.env.tensorrt_version,
            gpu_name=self.env.gpu_name,
            compute_capability=self.env.compute_capability,
            precision=precision,
            input_shapes=profile_shapes(meta["input_size"], input_size, min_size, max_size),
            onnx_file=Path(onnx_path).name,
            onnx_sha256=hashlib.sha256(Path(onnx_path).read_bytes()).hexdigest(),
        )
        Path(engine_path).write_bytes(b"placeholder plan")
        info.write(sidecar_path(engine_path))
        return info


def plan_for(onnx_path: Path, env: DeviceEnv, precision: str = "fp16") -> Path:
    engine = engine_path_for(onnx_path, precision)
    StandInBuilder(env)(onnx_path, engine, precision, None)
    return engine


# ----------------------------------------------------------------------------- paths and sidecar
def test_cache_paths_follow_the_autoware_layout(tmp_path):
    onnx_path = tmp_path / "net" / "model.onnx"
    assert engine_path_for(onnx_path, "fp16") == tmp_path / "net" / "model.fp16.engine"
    assert engine_path_for(onnx_path, "int8") == tmp_path / "net" / "model.int8.engine"
    assert sidecar_path(tmp_path / "model.fp16.engine") == tmp_path / "model.fp16.engine.json"
    assert calibration_cache_path(onnx_path) == tmp_path / "net" / "model.int8.calib"
    assert timing_cache_path(tmp_path, ORIN).name == "timing-trt10.3.0-orin-nvgpu-sm8.7.cache"
    with pytest.raises(ValueError, match="unknown precision 'bf8'"):
        engine_path_for(onnx_path, "bf8")


def test_sidecar_round_trip_and_damage(tmp_path):
    info = EngineInfo(
        "10.3.0",
        "Orin",
        "8.7",
        "int8",
        {"min": [1, 3, 64, 96], "opt": [1, 3, 64, 96], "max": [1, 3, 64, 96]},
        "model.onnx",
        "ab" * 32,
        calibration={"cache": "model.int8.calib", "images": 12},
        model={"arch": "resnet18", "score_threshold": -4.25},
    )
    info.write(tmp_path / "p.engine.json")
    assert EngineInfo.read(tmp_path / "p.engine.json") == info
    (tmp_path / "bad.json").write_text('{"precision": "fp16"}')
    with pytest.raises(EngineError, match="lacks"):
        EngineInfo.read(tmp_path / "bad.json")
    (tmp_path / "worse.json").write_text("{not json")
    with pytest.raises(EngineError, match="not valid JSON"):
        EngineInfo.read(tmp_path / "worse.json")


# ----------------------------------------------------------------------------- profile
def test_profile_of_fixed_and_dynamic_exports():
    fixed = profile_shapes((64, 96))
    assert fixed == {"min": [1, 3, 64, 96], "opt": [1, 3, 64, 96], "max": [1, 3, 64, 96]}
    with pytest.raises(ValueError, match="fixed input of 64x96.*--dynamic"):
        profile_shapes((64, 96), input_size=(128, 256))
    with pytest.raises(ValueError, match="dynamic input size"):
        profile_shapes(None)
    dyn = profile_shapes(None, (512, 1024), min_size=(256, 512), max_size=(1024, 2048))
    assert dyn == {"min": [1, 3, 256, 512], "opt": [1, 3, 512, 1024], "max": [1, 3, 1024, 2048]}
    assert profile_covers(dyn, (300, 2048)) and not profile_covers(dyn, (300, 2049))
    with pytest.raises(ValueError, match="min <= opt <= max"):
        profile_shapes(None, (512, 1024), min_size=(600, 512))


# ----------------------------------------------------------------------------- compatibility
def test_compatibility_problems_name_what_differs():
    info = EngineInfo("10.3.0", "Orin (nvgpu)", "8.7", "fp16", profile_shapes(SIZE), "model.onnx", "a" * 64)
    assert compatibility_problems(info, ORIN, "a" * 64, SIZE, "fp16") == []

    (version,) = compatibility_problems(info, DeviceEnv("10.7.0", "Orin (nvgpu)", "8.7"))
    assert "TensorRT 10.3.0" in version and "TensorRT 10.7.0" in version
    (gpu,) = compatibility_problems(info, DeviceEnv("10.3.0", "NVIDIA GeForce RTX 4090", "8.9"))
    assert "Orin (nvgpu)" in gpu and "RTX 4090" in gpu and "8.9" in gpu
    (changed,) = compatibility_problems(info, ORIN, onnx_sha256="b" * 64)
    assert "ONNX file changed" in changed
    (size,) = compatibility_problems(info, ORIN, input_size=(128, 192))
    assert "does not cover the input size 128x192" in size
    (precision,) = compatibility_problems(info, ORIN, precision="int8")
    assert "precision fp16" in precision
    assert len(compatibility_problems(info, DeviceEnv("8.6.2", "Xavier", "7.2"), "c" * 64, (32, 32), "fp32")) == 5


def test_plan_from_another_tensorrt_version_is_refused_with_the_fix(onnx_copy):
    engine = plan_for(onnx_copy, ORIN)
    newer = DeviceEnv("10.7.0", ORIN.gpu_name, ORIN.compute_capability)
    builder = StandInBuilder(newer)
    with pytest.raises(EngineError) as err:
        resolve_engine(onnx_copy, newer, build=builder)
    message = str(err.value)
    assert "TensorRT 10.3.0" in message and "TensorRT 10.7.0" in message
    assert f"pebal export tensorrt {onnx_copy} --precision fp16" in message and "engine_auto_build" in message
    assert builder.calls == [], "nothing is rebuilt without engine_auto_build"
    assert EngineInfo.read(sidecar_path(engine)).tensorrt_version == "10.3.0", "the old plan is left untouched"


def test_plan_for_another_gpu_is_rebuilt_when_auto_build_is_set(onnx_copy):
    engine = plan_for(onnx_copy, ORIN)
    desktop = DeviceEnv("10.3.0", "NVIDIA RTX A4000", "8.6")
    builder = StandInBuilder(desktop)
    path, info = resolve_engine(onnx_copy, desktop, auto_build=True, build=builder)
    assert path == engine
    (call,) = builder.calls
    assert call["onnx"] == onnx_copy and call["engine"] == engine and call["precision"] == "fp16"
    assert call["input_size"] == SIZE, "the rebuild keeps the old plan's profile"
    assert info.gpu_name == "NVIDIA RTX A4000"
    assert EngineInfo.read(sidecar_path(engine)).gpu_name == "NVIDIA RTX A4000"
    # now compatible: accepted as is
    again = StandInBuilder(desktop)
    assert resolve_engine(onnx_copy, desktop, auto_build=True, build=again)[0] == engine and again.calls == []


def test_missing_plan_is_built_only_with_auto_build(onnx_copy):
    builder = StandInBuilder(ORIN)
    with pytest.raises(EngineError, match="there is no plan file"):
        resolve_engine(onnx_copy, ORIN, precision="fp32", build=builder)
    path, info = resolve_engine(onnx_copy, ORIN, precision="fp32", auto_build=True, build=builder)
    assert path == onnx_copy.with_name("model.fp32.engine") and info.precision == "fp32"
    assert len(builder.calls) == 1


def test_changed_onnx_file_or_uncovered_size_triggers_a_rebuild(onnx_copy, tmp_path):
    plan_for(onnx_copy, ORIN)
    builder = StandInBuilder(ORIN)
    assert resolve_engine(onnx_copy, ORIN, input_size=SIZE, build=builder)[1].precision == "fp16"
    with pytest.raises(EngineError, match="does not cover the input size 128x192"):
        resolve_engine(onnx_copy, ORIN, input_size=(128, 192), build=builder)
    other = export_onnx(realistic_checkpoint(tmp_path, "resnet18", seed=1), tmp_path / "other.onnx", input_size=SIZE)
    onnx_copy.write_bytes(other.read_bytes())  # the model file was replaced by a retrained one
    resolve_engine(onnx_copy, ORIN, auto_build=True, build=builder)
    (call,) = builder.calls
    assert EngineInfo.read(sidecar_path(call["engine"])).onnx_sha256 == hashlib.sha256(other.read_bytes()).hexdigest()


def test_plan_given_directly_rebuilds_from_the_onnx_named_in_its_sidecar(onnx_copy):
    engine = plan_for(onnx_copy, ORIN, precision="int8")
    newer = DeviceEnv("10.7.0", ORIN.gpu_name, ORIN.compute_capability)
    builder = StandInBuilder(newer)
    path, info = resolve_engine(engine, newer, auto_build=True, build=builder)
    assert path == engine and builder.calls[0]["onnx"] == onnx_copy and builder.calls[0]["precision"] == "int8"

    onnx_copy.unlink()
    with pytest.raises(EngineError, match="source ONNX file named in the sidecar was not found"):
        resolve_engine(engine, DeviceEnv("10.8.0", ORIN.gpu_name, "8.7"), auto_build=True, build=builder)


def test_plan_without_sidecar_is_refused(tmp_path):
    engine = tmp_path / "foreign.engine"
    engine.write_bytes(b"built by trtexec")
    with pytest.raises(EngineError, match="has no sidecar"):
        resolve_engine(engine, ORIN, auto_build=True, build=StandInBuilder(ORIN))


# ----------------------------------------------------------------------------- calibration
def test_calibration_files_are_sorted_and_evenly_thinned(tmp_path):
    for i in range(10):
        (tmp_path / "seq" if i % 2 else tmp_path).mkdir(exist_ok=True)
        write_rgb((tmp_path / "seq" if i % 2 else tmp_path) / f"{i:02d}.png", np.zeros((4, 4, 3), np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    files = calibration_files(tmp_path)
    assert len(files) == 10 and files == sorted(files)
    thinned = calibration_files(tmp_path, limit=4)
    assert len(thinned) == 4 and thinned[0] == files[0] and thinned[-1] == files[-1]
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        calibration_files(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="folder not found"):
        calibration_files(tmp_path / "absent")


def test_calibration_batch_is_rgb_nchw_uint8_at_the_profile_size(tmp_path):
    rgb = np.zeros((40, 60, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 10, 20, 30
    write_rgb(tmp_path / "a.png", rgb)
    batch = calibration_batch(tmp_path / "a.png", (64, 96))
    assert batch.shape == (1, 3, 64, 96) and batch.dtype == np.uint8 and batch.flags.c_contiguous
    assert [int(batch[0, c].min()) for c in range(3)] == [10, 20, 30]
    assert [int(batch[0, c].max()) for c in range(3)] == [10, 20, 30]


# ----------------------------------------------------------------------------- build_engine (stand-in TensorRT)
def _builder_calls(onnx_path: Path, flag_calls: list[tuple], timing: bytes = b"", workspace_mb: int = 2048) -> list:
    """The TensorRT calls of one build, written out by hand from the TensorRT builder API."""
    shape = [1, 3, *SIZE]
    return [
        ("context.push",),
        ("Logger", "WARNING"),
        ("Builder",),
        ("builder.create_network", 0),
        ("OnnxParser", "network"),
        ("parser.parse_from_file", str(onnx_path)),
        ("builder.create_builder_config",),
        ("config.set_memory_pool_limit", "WORKSPACE", workspace_mb * 1024 * 1024),
        ("builder.create_optimization_profile",),
        ("profile.set_shape", "image", shape, shape, shape),
        ("config.add_optimization_profile",),
        *flag_calls,
        ("config.create_timing_cache", timing),
        ("config.set_timing_cache", timing, False),
        ("builder.build_serialized_network", "network"),
        ("context.pop",),
    ]


def test_build_engine_makes_the_tensorrt_calls_in_order_and_writes_plan_timing_cache_and_sidecar(
    monkeypatch, onnx_copy
):
    calls: list[tuple] = []
    _fake_tensorrt.install(monkeypatch, calls)
    info = build_engine(onnx_copy, precision="fp16")
    assert calls == _builder_calls(onnx_copy, [("config.set_flag", "FP16")])
    engine = onnx_copy.with_name("model.fp16.engine")
    timing = onnx_copy.with_name("timing-trt10.3.0-orin-nvgpu-sm8.7.cache")
    assert engine.read_bytes() == _fake_tensorrt.PLAN and timing.read_bytes() == b"timing:"
    assert EngineInfo.read(sidecar_path(engine)) == info
    assert (info.tensorrt_version, info.gpu_name, info.compute_capability) == ("10.3.0", "Orin (nvgpu)", "8.7")
    assert info.onnx_file == "model.onnx" and info.onnx_sha256 == hashlib.sha256(onnx_copy.read_bytes()).hexdigest()
    assert info.timing_cache == timing.name and info.calibration is None and info.workspace_mb == 2048
    assert info.model == read_metadata(onnx_copy) | {"input_size": list(SIZE)}

    calls.clear()  # fp32: IEEE kernels (TF32 off, no FP16); the timing cache of the first build is loaded
    build_engine(onnx_copy, precision="fp32", workspace_mb=512)
    assert calls == _builder_calls(onnx_copy, [("config.clear_flag", "TF32")], b"timing:", 512)
    assert timing.read_bytes() == b"timing:timing:"


def test_build_engine_int8_calibrates_on_the_images_then_reuses_the_cache(monkeypatch, onnx_copy, tmp_path):
    images = tmp_path / "calib"
    images.mkdir()
    for value in (10, 20, 30):
        write_rgb(images / f"{value}.png", np.full((40, 60, 3), value, np.uint8))
    calls: list[tuple] = []
    _fake_tensorrt.install(monkeypatch, calls)
    info = build_engine(onnx_copy, precision="int8", calibration_images=images)
    int8_calls = [
        ("config.set_flag", "FP16"),
        ("config.set_flag", "INT8"),
        ("IInt8EntropyCalibrator2",),
        ("config.int8_calibrator",),
        ("config.set_calibration_profile",),
    ]
    batches = [c for c in calls if c[0] in ("memcpy_htod", "calibration batch")]
    assert [c for c in calls if c not in batches] == _builder_calls(onnx_copy, int8_calls)
    pixels = 3 * SIZE[0] * SIZE[1]  # each image resized to the profile's opt size, one per batch
    assert batches == [
        x for v in (10, 20, 30) for x in (("memcpy_htod", (1, 3, *SIZE), v * pixels), ("calibration batch",))
    ]
    assert calibration_cache_path(onnx_copy).read_bytes() == _fake_tensorrt.CALIBRATION_TABLE
    assert info.calibration == {"cache": "model.int8.calib", "images": 3}

    calls.clear()  # no images: the calibration cache of the first build is used
    info = build_engine(onnx_copy, precision="int8")
    assert not [c for c in calls if c[0] == "memcpy_htod"] and info.calibration == {
        "cache": "model.int8.calib",
        "images": None,
    }
    with pytest.raises(ValueError, match="INT8 needs calibration images"):
        build_engine(onnx_copy, precision="int8", calibration_cache=tmp_path / "absent.calib")


def test_build_engine_failures_name_the_cause_and_release_the_cuda_context(monkeypatch, onnx_copy):
    engine = onnx_copy.with_name("model.fp16.engine")
    calls: list[tuple] = []
    _fake_tensorrt.install(monkeypatch, calls, version="11.0.0")
    with pytest.raises(EngineError, match="TensorRT 11.0.0 removed the weakly-typed FP16/INT8 builder flags"):
        build_engine(onnx_copy, precision="fp16")
    assert calls == [("context.push",), ("context.pop",)]

    calls.clear()
    _fake_tensorrt.install(monkeypatch, calls, parse_ok=False)
    with pytest.raises(EngineError, match="cannot parse .*model.onnx:\n  - unsupported node 0\n  - unsupported node 1"):
        build_engine(onnx_copy, precision="fp16")
    assert calls == _builder_calls(onnx_copy, [])[:6] + [("context.pop",)]

    calls.clear()
    _fake_tensorrt.install(monkeypatch, calls, build_ok=False)
    with pytest.raises(EngineError, match="failed to build an engine .* larger --workspace-mb than 2048"):
        build_engine(onnx_copy, precision="fp16")
    assert calls[-1] == ("context.pop",) and not engine.exists() and not sidecar_path(engine).exists()


def test_build_engine_replaces_a_foreign_timing_cache_and_sets_explicit_batch_before_tensorrt_10(
    monkeypatch, onnx_copy, tmp_path
):
    stale = tmp_path / "elsewhere.cache"
    stale.write_bytes(b"from another GPU")
    calls: list[tuple] = []
    _fake_tensorrt.install(monkeypatch, calls, version="8.6.1", accept_timing_cache=False)
    info = build_engine(onnx_copy, precision="fp16", timing_cache=stale)
    expected = _builder_calls(onnx_copy, [("config.set_flag", "FP16")], b"from another GPU")
    expected[3] = ("builder.create_network", 1)  # 1 << EXPLICIT_BATCH
    expected[-2:-2] = [("config.create_timing_cache", b""), ("config.set_timing_cache", b"", False)]
    assert calls == expected
    assert stale.read_bytes() == b"timing:" and info.timing_cache == "elsewhere.cache"


# ----------------------------------------------------------------------------- real TensorRT (GPU)
def _gpu_ready() -> str | None:
    missing = [m for m in ("tensorrt", "pycuda") if importlib.util.find_spec(m) is None]
    if missing:
        return f"needs {' and '.join(missing)} (pip install .[tensorrt]) and an NVIDIA GPU"
    try:
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count() == 0:
            return "no CUDA GPU visible"
    except Exception as e:  # driver missing or broken
        return f"CUDA driver unusable: {e}"
    return None


GPU_SKIP = _gpu_ready()


@pytest.fixture
def gpu() -> None:
    """Skip without TensorRT, pycuda or a GPU; fail instead when ``PEBAL_REQUIRE_GPU=1`` (the GPU check,
    ``benchmarks/gpu_check.sh``, must not pass by skipping)."""
    if GPU_SKIP is not None:
        if os.environ.get("PEBAL_REQUIRE_GPU") == "1":
            pytest.fail(f"PEBAL_REQUIRE_GPU=1 but the TensorRT tests cannot run: {GPU_SKIP}")
        pytest.skip(GPU_SKIP)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_backend_matches_torch(tmp_path, precision, gpu):
    from pebal_core.runtime import Predictor

    ckpt = realistic_checkpoint(tmp_path, "resnet18")
    onnx_path = export_onnx(ckpt, tmp_path / "m.onnx", input_size=SIZE)
    trt_pred = Predictor.from_checkpoint(
        onnx_path, backend="tensorrt", device="cuda", precision=precision, engine_auto_build=True
    )
    torch_pred = Predictor.from_checkpoint(ckpt)
    rgb = np.ascontiguousarray(camera_like(*SIZE, seed=9)[0].transpose(1, 2, 0))
    labels, score = trt_pred.predict(rgb)
    ref_labels, ref_score = torch_pred.predict(rgb)
    assert resolve_operating_point(trt_pred.metadata).point == STORED_POINT
    if precision == "fp32":
        assert (labels == ref_labels).mean() >= 0.999 and np.abs(score - ref_score).max() <= 1e-3
    else:
        assert (labels == ref_labels).mean() >= 0.99 and np.median(np.abs(score - ref_score)) <= 0.05
    info = EngineInfo.read(sidecar_path(engine_path_for(onnx_path, precision)))
    import tensorrt

    assert info.tensorrt_version == tensorrt.__version__ and info.precision == precision


@pytest.mark.gpu
def test_tensorrt_int8_with_calibration_folder(tmp_path, gpu):
    from pebal_core.export.tensorrt import build_engine

    ckpt = realistic_checkpoint(tmp_path, "resnet18")
    onnx_path = export_onnx(ckpt, tmp_path / "m.onnx", input_size=SIZE)
    images = tmp_path / "calib"
    images.mkdir()
    for i in range(8):
        write_rgb(images / f"{i}.png", np.ascontiguousarray(camera_like(*SIZE, seed=i)[0].transpose(1, 2, 0)))
    info = build_engine(onnx_path, precision="int8", calibration_images=images)
    assert info.precision == "int8" and calibration_cache_path(onnx_path).is_file()
    assert engine_path_for(onnx_path, "int8").stat().st_size > 0
