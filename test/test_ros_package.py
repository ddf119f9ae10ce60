"""The ROS user's path: package.xml dependencies, `colcon build`, and the installed node.

A ROS engineer puts this package in a workspace's ``src/``, runs ``rosdep install`` and ``colcon
build``, sources ``install/setup.bash`` and uses ``ros2 run pebal_ros pebal_node``. The colcon
tests copy the package into a temporary workspace, build it with the real colcon (ament_python),
check the installed layout ``ros2 run``/``ros2 launch`` rely on, and start the *installed*
``pebal_node`` with the *installed* ``config/pebal.yaml``. They are marked ``colcon``:
``pytest --skip-colcon`` skips them locally; CI (``PEBAL_CI=1``) refuses that flag.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT
from node_harness import Probe, RosSession, as_array, camera_info_msg, first_outputs_from_process, stop_process
from ros_workspace import colcon_workspace, sourced_env

from pebal_core.models import build_model
from pebal_core.models.checkpoint import save_checkpoint
from pebal_core.runtime import Predictor

# --------------------------------------------------------------------------- dependencies
# Every third-party module pebal_core / pebal_ros import (at module level or lazily), and how a
# ROS user gets it. Keys of the first table must be <exec_depend>s of package.xml (rosdep keys
# from rosdistro's base.yaml/python.yaml or ROS package names); the second table's packages have
# no usable rosdep key and are pip-installed from requirements-ros.txt (docs/deployment.md, "Install into a
# ROS 2 workspace"); the third are the GPU extras (`pip install .[tensorrt]`).
ROSDEP_KEYS = {
    "rclpy": "rclpy",
    "rcl_interfaces": "rcl_interfaces",
    "sensor_msgs": "sensor_msgs",
    "nav_msgs": "nav_msgs",
    "std_msgs": "std_msgs",
    "diagnostic_msgs": "diagnostic_msgs",
    "visualization_msgs": "visualization_msgs",
    "rosgraph_msgs": "rosgraph_msgs",
    "vision_msgs": "vision_msgs",
    "cv_bridge": "cv_bridge",
    "numpy": "python3-numpy",
    "cv2": "python3-opencv",
    "yaml": "python3-yaml",
    "tqdm": "python3-tqdm",
    "scipy": "python3-scipy",
    "matplotlib": "python3-matplotlib",
    "onnxruntime": "python3-onnxruntime-pip",
    "PIL": "python3-pil",
}
PIP_ONLY = {
    # rosdistro retired python3-pytorch-pip (2025); distro torch packages are far too old
    "torch": "torch",
    "safetensors": "safetensors",
    "onnx": "onnx",
    "onnx_ir": "onnx-ir",
    "pycocotools": "pycocotools",
    "rosbags": "rosbags",
    "simplejpeg": "simplejpeg",
    "openvino": "openvino",
    "nncf": "nncf",
}
GPU_EXTRAS = {"tensorrt": "tensorrt", "pycuda": "pycuda"}


def imported_modules() -> set[str]:
    """Top-level names of the third-party modules the two packages import anywhere."""
    first_party = {"pebal_core", "pebal_ros"}
    found = set()
    for package in first_party:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                found |= {n.split(".")[0] for n in names}
    return found - first_party - set(sys.stdlib_module_names)


# What the launch files need at run time, by module they import (rosdep keys / ROS package names);
# every package shipping launch files also needs `ros2launch` (the `ros2 launch` command), and a
# `Node(package=...)` of another package needs that package (rviz2: the optional viewer).
LAUNCH_IMPORT_KEYS = {
    "launch": "launch",
    "launch_ros": "launch_ros",
    "ament_index_python": "ament_index_python",
    "yaml": "python3-yaml",
}


def launch_file_depends() -> set[str]:
    """Run-time dependencies of ``launch/*.launch.py``: their imports, ``ros2launch``, and the packages
    of the nodes they start."""
    files = sorted((ROOT / "launch").glob("*.launch.py"))
    needed = {"ros2launch"} if files else set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Node":
                package = next((k.value for k in node.keywords if k.arg == "package"), None)
                if isinstance(package, ast.Constant) and package.value != "pebal_ros":
                    needed.add(package.value)
                continue
            else:
                continue
            for top in {m.split(".")[0] for m in modules} - set(sys.stdlib_module_names) - {"pebal_ros"}:
                assert top in LAUNCH_IMPORT_KEYS, f"{path.name} imports {top}: add its rosdep key to LAUNCH_IMPORT_KEYS"
                needed.add(LAUNCH_IMPORT_KEYS[top])
    return needed


def exec_depends() -> set[str]:
    root = ET.parse(ROOT / "package.xml").getroot()
    return {e.text for e in root.findall("exec_depend")} | {e.text for e in root.findall("depend")}


def requirement_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            names.add(re.split(r"[=<>!~\[; ]", line)[0].lower())
    return names


def test_every_runtime_import_is_declared():
    modules = imported_modules()
    unknown = modules - ROSDEP_KEYS.keys() - PIP_ONLY.keys() - GPU_EXTRAS.keys()
    assert not unknown, f"new third-party imports {sorted(unknown)}: add them to the tables above and package.xml"
    missing = {ROSDEP_KEYS[m] for m in modules & ROSDEP_KEYS.keys()} - exec_depends()
    assert not missing, f"package.xml lacks <exec_depend> for {sorted(missing)}"
    pip_names = requirement_names(ROOT / "requirements-ros.txt")
    not_pinned = {PIP_ONLY[m] for m in modules & PIP_ONLY.keys()} - pip_names
    assert not not_pinned, f"requirements-ros.txt lacks {sorted(not_pinned)}"
    setup_py = (ROOT / "setup.py").read_text()
    assert all(f'"{pkg}"' in setup_py for pkg in GPU_EXTRAS.values()), "GPU extras must be declared in setup.py"


def test_launch_file_depends_are_declared():
    needed = launch_file_depends()
    assert {"ros2launch", "launch", "launch_ros", "rviz2"} <= needed  # what pebal.launch.py uses today
    missing = needed - exec_depends()
    assert not missing, f"package.xml lacks <exec_depend> for {sorted(missing)} (used by launch/)"


def test_no_stale_exec_depends():
    used = {ROSDEP_KEYS[m] for m in imported_modules() & ROSDEP_KEYS.keys()} | launch_file_depends()
    assert exec_depends() <= used, f"declared but never used: {sorted(exec_depends() - used)}"


def test_requirements_ros_installs_no_ros_packages():
    # a ROS user's apt-installed rclpy and messages must not be shadowed by PyPI copies
    names = requirement_names(ROOT / "requirements-ros.txt")
    assert not {n for n in names if n.startswith("ros-") or n == "rclpy"}
    assert "torch" in names


# --------------------------------------------------------------------------- colcon
@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> Path:
    """A colcon workspace with this package in ``src/``, built (``colcon build``)."""
    return colcon_workspace(tmp_path_factory.getbasetemp())


SCRIPTS = ("pebal_node", "pebal", "pebal_bag", "pebal_demo")


@pytest.mark.colcon
def test_installed_layout(workspace):
    prefix = workspace / "install" / "pebal_ros"
    for script in SCRIPTS:
        path = prefix / "lib" / "pebal_ros" / script
        assert path.is_file() and os.access(path, os.X_OK), f"ros2 run needs lib/pebal_ros/{script}"
    share = prefix / "share" / "pebal_ros"
    for name in ("package.xml", "launch/pebal.launch.py", "config/pebal.yaml", "config/pebal.rviz"):
        assert (share / name).is_file(), name
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / "pebal_ros").is_file()
    assert not (prefix / "bin").exists(), "console scripts belong in lib/pebal_ros, not bin/"


@pytest.mark.colcon
def test_symlink_install_builds_and_links_the_sources(tmp_path_factory, tmp_path):
    """`colcon build --symlink-install` (setup.py must find its files through the build/ symlink)."""
    ws = colcon_workspace(tmp_path_factory.getbasetemp(), symlink=True)
    share = ws / "install" / "pebal_ros" / "share" / "pebal_ros"
    src = ws / "src" / "pebal_ros"
    for name in ("launch/pebal.launch.py", "config/pebal.yaml", "config/pebal.rviz", "package.xml"):
        assert (share / name).is_symlink(), f"{name} is copied, not linked"
        assert (share / name).resolve() == (src / name).resolve()
    code = "import pebal_ros.bag_storage as m; print(m.__file__)"
    out = subprocess.run(
        [sys.executable, "-c", code], env=sourced_env(ws), cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).resolve() == (src / "pebal_ros" / "bag_storage.py").resolve()
    script = ws / "install" / "pebal_ros" / "lib" / "pebal_ros" / "pebal_bag"
    out = subprocess.run(
        [str(script), "--help"], env=sourced_env(ws), cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and "recover" in out.stdout, out.stdout + out.stderr


@pytest.mark.colcon
def test_python_packages_import_from_the_install_prefix(workspace, tmp_path):
    env = sourced_env(workspace)
    code = "import pebal_core, pebal_ros, pebal_ros.node; print(pebal_core.__file__); print(pebal_ros.__file__)"
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    install = str(workspace / "install")
    assert all(line.startswith(install) for line in out.stdout.split()), out.stdout


@pytest.mark.colcon
@pytest.mark.ros
def test_installed_node_runs_from_its_installed_params_file(workspace, ros_env, tmp_path):
    model = save_checkpoint(build_model("resnet18", width=0.25), tmp_path / "tiny.safetensors")
    h, w = 48, 64
    rgb = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    labels, score = Predictor.from_checkpoint(model).predict(rgb)
    share = workspace / "install" / "pebal_ros" / "share" / "pebal_ros"
    cmd = [
        str(workspace / "install" / "pebal_ros" / "lib" / "pebal_ros" / "pebal_node"),
        "--ros-args",
        "--params-file",
        str(share / "config" / "pebal.yaml"),
        "-p",
        f"model:={model}",
    ]
    env = sourced_env(workspace, {**ros_env, "PYTHONUNBUFFERED": "1"})
    proc = subprocess.Popen(cmd, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with RosSession() as session:
            probe = Probe(session)
            out = first_outputs_from_process(proc, probe, rgb, camera_info_msg(h, w, 60.0, 60.0), "cam")
            np.testing.assert_array_equal(as_array(out["semantic"]), labels)
            np.testing.assert_allclose(as_array(out["anomaly_score"]), score, rtol=1e-5, atol=1e-5)
            assert out["anomaly_grid"].header.frame_id == "base_footprint"
    finally:
        rc, log = stop_process(proc)
    assert rc == 0, log
