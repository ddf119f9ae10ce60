"""A colcon workspace holding this package, and the ROS 2 launch tools, for the tests that run the
package the way a ROS user does (``test_ros_package.py``, ``test_launch.py``).

* :func:`colcon_workspace` copies the package into ``<base>/ws[_symlink]/src`` and runs the real
  ``colcon build`` (optionally ``--symlink-install``); built once per test session.
* :func:`launch_tools` installs the unmodified ``launch``, ``launch_ros``, ``ros2launch`` and ``ros2``
  CLI sources of ``../shared/ros2-launch`` (not on the registries this project can use) into
  ``<base>/launch_tools`` with ``pip --target``, plus a stand-in ``composition_interfaces`` (a
  message package without a wheel that ``launch_ros`` imports for composable nodes, which this
  package does not use). The package never depends on that folder; on a full ROS install these
  tools come from the distribution.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

ROS2_LAUNCH = Path(os.environ.get("PEBAL_ROS2_LAUNCH", ROOT.parent / "shared" / "ros2-launch"))
LAUNCH_PACKAGES = ("launch", "launch_xml", "launch_yaml", "launch_ros", "ros2launch", "ros2cli", "ros2pkg")
COPY_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    "build",
    "install",
    "log",
    "demo_out",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".hypothesis",
    "*.egg-info",
)
COMPOSITION_STAND_IN = '''"""Test stand-in for the composition_interfaces message package (it has no wheel).

launch_ros imports it at import time for composable nodes, which pebal_ros does not use; using it
fails loudly."""


class _Unavailable:
    class Request:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("composition_interfaces is a test stand-in: composable nodes are unavailable")

    Response = Request


class LoadNode(_Unavailable):
    pass


class UnloadNode(_Unavailable):
    pass


class ListNodes(_Unavailable):
    pass
'''

_built: dict[tuple[Path, bool], Path] = {}


def colcon_workspace(base: Path, symlink: bool = False) -> Path:
    """A workspace with this package in ``src/``, built with colcon (once per session and kind)."""
    key = (base, symlink)
    if key in _built:
        return _built[key]
    colcon = Path(sys.executable).parent / "colcon"
    assert colcon.exists(), "colcon is missing: it is pinned in requirements-dev.txt (make venv)"
    ws = base / ("ws_symlink" if symlink else "ws")
    shutil.copytree(ROOT, ws / "src" / "pebal_ros", ignore=COPY_IGNORE)
    env = {**os.environ, "PATH": f"{colcon.parent}{os.pathsep}{os.environ['PATH']}"}
    cmd = [str(colcon), "build", "--event-handlers", "console_direct-"] + (["--symlink-install"] if symlink else [])
    out = subprocess.run(cmd, cwd=ws, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    _built[key] = ws
    return ws


def sourced_env(ws: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment after ``source install/setup.bash`` (as a ROS user's shell has it)."""
    out = subprocess.run(
        ["bash", "-c", f"source {ws / 'install' / 'setup.bash'} && env -0"],
        env={**os.environ, **(extra or {})},
        capture_output=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr.decode()
    return dict(item.split("=", 1) for item in out.stdout.decode().split("\0") if "=" in item)


_tools: dict[Path, Path] = {}


def launch_tools(base: Path) -> Path:
    """``<base>/launch_tools``: ``ros2 launch`` installed from ``../shared/ros2-launch`` (see the module
    docstring). Skips when that folder is absent, except in CI (``PEBAL_CI=1``), where it must be there."""
    if base in _tools:
        return _tools[base]
    if not ROS2_LAUNCH.is_dir():
        if os.environ.get("PEBAL_CI"):
            pytest.fail(f"{ROS2_LAUNCH} is missing; CI (PEBAL_CI=1) runs the real launch tests with it")
        pytest.skip(f"ROS 2 launch sources {ROS2_LAUNCH} are absent (set PEBAL_ROS2_LAUNCH to their location)")
    target = base / "launch_tools"
    sources = base / "launch_sources"  # pip builds in the source tree: build a copy, the folder may be read-only
    for name in LAUNCH_PACKAGES:
        shutil.copytree(ROS2_LAUNCH / name, sources / name, ignore=COPY_IGNORE)
    out = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "--quiet", "--no-deps"]
        + ["--no-build-isolation", "--no-index", "--target", str(target)]
        + [str(sources / name) for name in LAUNCH_PACKAGES],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    (target / "composition_interfaces").mkdir()
    (target / "composition_interfaces" / "__init__.py").write_text("")
    (target / "composition_interfaces" / "srv.py").write_text(COMPOSITION_STAND_IN)
    _tools[base] = target
    return target


def launch_env(ws: Path, tools: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """A sourced workspace environment with ``ros2`` (and its Python packages) from ``tools``."""
    env = sourced_env(ws, extra)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tools), env.get("PYTHONPATH", "")) if p)
    env["PATH"] = f"{tools / 'bin'}{os.pathsep}{env['PATH']}"
    env["PYTHONUNBUFFERED"] = "1"
    return env
