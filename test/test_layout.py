"""The package layout a ROS 2 workspace and a pip install both rely on (DESIGN §2, §7)."""

import configparser
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from importlib import metadata

from conftest import ROOT

from pebal_core.version import __version__


def test_top_level_layout():
    for name in (
        "pebal_core",
        "pebal_ros",
        "test",
        "package.xml",
        "setup.py",
        "setup.cfg",
        "resource/pebal_ros",
        "README.md",
        "Makefile",
        ".ci/run",
    ):
        assert (ROOT / name).exists(), name
    assert os.access(ROOT / ".ci/run", os.X_OK)
    assert "make test" in (ROOT / ".ci/run").read_text()


def test_package_xml_format3_ament_python():
    root = ET.parse(ROOT / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == "pebal_ros"
    assert root.findtext("version") == __version__
    assert root.find("export/build_type").text == "ament_python"
    exec_deps = {e.text for e in root.findall("exec_depend")}
    assert {
        "rclpy",
        "sensor_msgs",
        "nav_msgs",
        "std_msgs",
        "diagnostic_msgs",
        "cv_bridge",
        "python3-numpy",
        "python3-opencv",
    } <= exec_deps
    assert "python3-pytest" in {e.text for e in root.findall("test_depend")}


def test_setup_cfg_script_dirs_for_ros2_run():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    assert cfg["develop"]["script_dir"] == "$base/lib/pebal_ros"
    assert cfg["install"]["install_scripts"] == "$base/lib/pebal_ros"


def test_console_script_installed_in_venv():
    scripts = {ep.name: ep.value for ep in metadata.entry_points(group="console_scripts")}
    assert scripts.get("pebal") == "pebal_core.cli:main"
    bin_dir = os.path.dirname(sys.executable)
    assert os.access(os.path.join(bin_dir, "pebal"), os.X_OK), "pip install -e . must put `pebal` in the venv's bin/"


def test_pebal_core_never_imports_ros():
    banned = ("rclpy", "sensor_msgs", "nav_msgs", "std_msgs", "diagnostic_msgs", "cv_bridge", "rosbags", "launch")
    for path in (ROOT / "pebal_core").rglob("*.py"):
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith(("import ", "from ")):
                module = stripped.split()[1].split(".")[0]
                assert module not in banned, f"{path.relative_to(ROOT)} imports {module}"


def test_rclpy_imports_and_initialises(ros_env):
    code = (
        "import rclpy\n"
        "from sensor_msgs.msg import Image\n"
        "from nav_msgs.msg import OccupancyGrid\n"
        "from diagnostic_msgs.msg import DiagnosticArray\n"
        "rclpy.init()\n"
        "node = rclpy.create_node('pebal_smoke')\n"
        "print(node.get_name())\n"
        "node.destroy_node()\n"
        "rclpy.shutdown()\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **ros_env}, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "pebal_smoke"


def test_ruff_check_is_clean():
    out = subprocess.run([sys.executable, "-m", "ruff", "check", str(ROOT)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
