"""The package layout a ROS 2 workspace and a pip install both rely on (``docs/architecture.md``,
``docs/deployment.md``), and citations only of documents the repository holds."""

import configparser
import os
import re
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


# Citations of documents the repository does not hold: the design notes and the real-data folder's
# README live outside it, so a reader of the package cannot follow them; their facts are written
# into docs/ (docs/data_sources.md, docs/evaluation.md, docs/training.md, ...).
FOREIGN_CITATION = re.compile(r"DESIGN(\.md|\s*§|\s+\d[ab]?\b)|realdata[/ ]README|README(\.md)?\s*§")
CITING_TREES = ("pebal_core", "pebal_ros", "benchmarks", "test", "launch", "config", "docs")
CITING_FILES = ("setup.py", "Makefile", "requirements.txt", "requirements-ros.txt", "package.xml")
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".xml", ".txt", ".cfg", ".toml"}


def _citing_files() -> list:
    files = [ROOT / name for name in CITING_FILES if (ROOT / name).exists()]
    for tree in CITING_TREES:
        files += [p for p in sorted((ROOT / tree).rglob("*")) if p.is_file() and p.suffix in TEXT_SUFFIXES]
    return [p for p in files if "__pycache__" not in p.parts]


def test_foreign_citation_pattern_matches_what_it_must():
    """The pattern is checked on the forms that were in the code, and spares the protocol name."""
    design, readme = "DES" "IGN", "READ" "ME"  # split so that this file does not match the pattern itself
    for text in (f"({design} §4b)", f"{design} 4a", f"see {design}.md", f"realdata {readme} §2",
                 f"realdata/{readme}.md", f"{readme} §2 sanity check"):
        assert FOREIGN_CITATION.search(text), text
    for text in ("--protocol course", "docs/data_sources.md", "the README recommends", "DESIGNER 4"):
        assert not FOREIGN_CITATION.search(text), text


def test_code_and_docs_cite_only_what_the_repository_holds():
    offenders = []
    for path in _citing_files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if FOREIGN_CITATION.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not offenders, "cite a page of docs/ instead:\n" + "\n".join(offenders)


def test_cited_docs_pages_exist():
    cited = re.compile(r"docs/([\w./-]+?\.md)\b")
    missing = []
    for path in _citing_files():
        for name in cited.findall(path.read_text(encoding="utf-8")):
            if not (ROOT / "docs" / name).is_file():
                missing.append(f"{path.relative_to(ROOT)} cites docs/{name}")
    assert not missing, "\n".join(missing)
