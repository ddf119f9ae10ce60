"""Recording stand-ins for the ``tensorrt`` and ``pycuda.driver`` modules.

TensorRT and a CUDA GPU cannot exist on the CI machine, so :func:`install` puts these fakes
into ``sys.modules``: they record every builder call that
:func:`pebal_core.export.tensorrt.build_engine` makes, in order, return a placeholder plan
(``b"PLAN"``) and drive the INT8 calibrator the way TensorRT does (read the cache, pull
batches until ``None``, write the table). They build nothing; the real build is tested by the
GPU tests in ``test_export_tensorrt.py``.
"""

from __future__ import annotations

import sys
import types

import numpy as np

PLAN = b"PLAN"
CALIBRATION_TABLE = b"calibration table"


def install(
    monkeypatch,
    calls: list[tuple],
    version: str = "10.3.0",
    parse_ok: bool = True,
    build_ok: bool = True,
    accept_timing_cache: bool = True,
) -> None:
    """Replace tensorrt and pycuda.driver for this test; every call is appended to ``calls``."""
    log = calls.append

    class Logger:
        WARNING = "WARNING"

        def __init__(self, severity):
            log(("Logger", severity))

    class TimingCache:
        def __init__(self, data: bytes):
            self.data = data

        def serialize(self) -> bytes:
            return b"timing:" + self.data

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            log(("profile.set_shape", name, lo, opt, hi))

    class Config:
        def __init__(self):
            self.calibrator = None
            self.timing_cache = None

        def set_memory_pool_limit(self, pool, size):
            log(("config.set_memory_pool_limit", pool, size))

        def add_optimization_profile(self, profile):
            log(("config.add_optimization_profile",))

        def clear_flag(self, flag):
            log(("config.clear_flag", flag))

        def set_flag(self, flag):
            log(("config.set_flag", flag))

        @property
        def int8_calibrator(self):
            return self.calibrator

        @int8_calibrator.setter
        def int8_calibrator(self, calibrator):
            log(("config.int8_calibrator",))
            self.calibrator = calibrator

        def set_calibration_profile(self, profile):
            log(("config.set_calibration_profile",))

        def create_timing_cache(self, data):
            log(("config.create_timing_cache", bytes(data)))
            return TimingCache(bytes(data))

        def set_timing_cache(self, cache, ignore_mismatch):
            ok = accept_timing_cache or cache.data == b""
            log(("config.set_timing_cache", cache.data, ignore_mismatch))
            if ok:
                self.timing_cache = cache
            return ok

        def get_timing_cache(self):
            return self.timing_cache

    class Builder:
        def __init__(self, logger):
            log(("Builder",))

        def create_network(self, flags):
            log(("builder.create_network", flags))
            return "network"

        def create_builder_config(self):
            log(("builder.create_builder_config",))
            return Config()

        def create_optimization_profile(self):
            log(("builder.create_optimization_profile",))
            return Profile()

        def build_serialized_network(self, network, config):
            log(("builder.build_serialized_network", network))
            calibrator = config.calibrator
            if calibrator is not None and calibrator.read_calibration_cache() is None:
                while calibrator.get_batch(["image"]) is not None:
                    log(("calibration batch",))
                calibrator.write_calibration_cache(CALIBRATION_TABLE)
            return PLAN if build_ok else None

    class OnnxParser:
        def __init__(self, network, logger):
            log(("OnnxParser", network))
            self.num_errors = 0 if parse_ok else 2

        def parse_from_file(self, path):
            log(("parser.parse_from_file", path))
            return parse_ok

        def get_error(self, i):
            return f"unsupported node {i}"

    class EntropyCalibrator2:
        def __init__(self):
            log(("IInt8EntropyCalibrator2",))

    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.Logger, trt.Builder, trt.OnnxParser, trt.IInt8EntropyCalibrator2 = (
        Logger,
        Builder,
        OnnxParser,
        EntropyCalibrator2,
    )
    trt.BuilderFlag = types.SimpleNamespace(TF32="TF32", FP16="FP16", INT8="INT8")
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(EXPLICIT_BATCH=0)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")

    class Context:
        def push(self):
            log(("context.push",))

        def pop(self):
            log(("context.pop",))

    class Device:
        def __init__(self, index):
            self.index = index

        @staticmethod
        def count():
            return 1

        def compute_capability(self):
            return (8, 7)

        def name(self):
            return "Orin (nvgpu)"

        def retain_primary_context(self):
            return Context()

    cuda = types.ModuleType("pycuda.driver")
    cuda.init = lambda: None
    cuda.Device = Device
    cuda.pagelocked_empty = lambda shape, dtype: np.zeros(shape, dtype)
    cuda.mem_alloc = lambda nbytes: 0
    cuda.memcpy_htod = lambda device, host: log(("memcpy_htod", host.shape, int(host.sum())))
    pycuda = types.ModuleType("pycuda")
    pycuda.driver = cuda
    for name, module in (("tensorrt", trt), ("pycuda", pycuda), ("pycuda.driver", cuda)):
        monkeypatch.setitem(sys.modules, name, module)
