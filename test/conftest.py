"""Shared fixtures and options for the test suite.

* ``--skip-colcon`` skips the colcon workspace build locally; it is refused in CI
  (``PEBAL_CI=1``), where that test must run.
* ``realdata``: path of ``../shared/realdata``; tests using it skip with a reason when absent.
* ``ros_env``: environment variables that keep DDS traffic on this machine (localhost
  discovery, a random domain id), applied to the test process and handed to subprocesses.
* ``shared_exports``: realistic test checkpoints and their ONNX exports
  (``test/_export_models.py`` ``SharedExports``), made once per session on first use and shared
  by the export and backend tests.
* The user cache folder (``pebal_core.fileio.user_cache_dir``: backend ``auto``'s measured
  choices and ONNX exports) is one temporary folder per test session (``PEBAL_CACHE_DIR``, handed
  to subprocesses too), so tests neither read nor fill the user's own cache.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REALDATA = Path(os.environ.get("PEBAL_REALDATA", ROOT.parent / "shared" / "realdata"))
REFERENCE = Path(os.environ.get("PEBAL_REFERENCE", ROOT.parent / "shared" / "reference"))


_OWN_CACHE_DIRS: list[str] = []
"""The user-cache folder this session made for backend ``auto`` (removed when it ends)."""


def pytest_configure(config: pytest.Config) -> None:
    if "PEBAL_CACHE_DIR" not in os.environ:
        os.environ["PEBAL_CACHE_DIR"] = tempfile.mkdtemp(prefix="pebal_test_cache_")
        _OWN_CACHE_DIRS.append(os.environ["PEBAL_CACHE_DIR"])


def pytest_unconfigure(config: pytest.Config) -> None:
    for path in _OWN_CACHE_DIRS:  # ONNX exports and timing records of every test model: tens of MB per session
        shutil.rmtree(path, ignore_errors=True)
    _OWN_CACHE_DIRS.clear()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--skip-colcon", action="store_true", help="skip the colcon workspace build test (not in CI)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--skip-colcon"):
        return
    if os.environ.get("PEBAL_CI"):
        raise pytest.UsageError("--skip-colcon is not allowed in CI (PEBAL_CI is set)")
    skip = pytest.mark.skip(reason="--skip-colcon given")
    for item in items:
        if "colcon" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def realdata() -> Path:
    if not REALDATA.is_dir():
        pytest.skip(f"real data folder {REALDATA} is absent (set PEBAL_REALDATA to its location)")
    return REALDATA


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not REFERENCE.is_dir():
        pytest.skip(f"reference layouts folder {REFERENCE} is absent (set PEBAL_REFERENCE)")
    return REFERENCE


def _ros_env() -> dict[str, str]:
    return {
        "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
        "ROS_LOCALHOST_ONLY": "1",
        "ROS_DOMAIN_ID": str(random.SystemRandom().randint(1, 101)),
        "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
    }


@pytest.fixture(scope="session")
def ros_env() -> dict[str, str]:
    """DDS kept on loopback with a random domain id; also set in this process's environment."""
    env = _ros_env()
    os.environ.update(env)
    return env


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Tests that train with ``threads=1`` must not change the thread count (and so the float
    summation order) of the tests after them."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shared_exports(tmp_path_factory):
    """Realistic checkpoints and their ONNX exports, each made once per session (read-only files)."""
    from _export_models import SharedExports

    return SharedExports(tmp_path_factory.mktemp("shared_exports"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny random ``resnet18`` (width 0.25) in the project format: fast enough for node tests."""
    from pebal_core.models import build_model
    from pebal_core.models.checkpoint import save_checkpoint

    return save_checkpoint(build_model("resnet18", width=0.25), tmp_path_factory.mktemp("tiny") / "tiny.safetensors")


@pytest.fixture(scope="module")
def predictor(checkpoint):
    """A torch-backend ``Predictor`` of :func:`checkpoint`."""
    from pebal_core.runtime import Predictor

    return Predictor.from_checkpoint(checkpoint)
