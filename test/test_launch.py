"""The launch file, the RViz layout and the parameter file, as a full ROS install will use them.

Where ``launch_ros`` is importable the launch description is loaded and expanded; here (ROS from
PyPI, no ``launch``) the file is checked statically: it must name the installed executable, the
parameter file and the launch arguments, and setup.py must install all three files.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
from glob import glob
from importlib import metadata

import pytest
import yaml
from conftest import ROOT

from pebal_ros.node import OUTPUTS, PARAMETERS

LAUNCH = ROOT / "launch" / "pebal.launch.py"
LAUNCH_ARGUMENTS = {"params_file", "image_topic", "camera_info_topic", "model", "use_rviz"}


def _launch_module():
    spec = importlib.util.spec_from_file_location("pebal_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launch_description_loads_where_launch_ros_is_installed():
    pytest.importorskip("launch_ros", reason="launch_ros comes with a full ROS install, not from PyPI")
    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument

    module = _launch_module()
    description = module.generate_launch_description()
    declared = {e.name for e in description.entities if isinstance(e, DeclareLaunchArgument)}
    assert declared == LAUNCH_ARGUMENTS
    context = LaunchContext()
    context.launch_configurations.update(
        {
            "params_file": str(ROOT / "config" / "pebal.yaml"),
            "image_topic": "/front/image_raw",
            "camera_info_topic": "/front/camera_info",
            "model": "/models/m.safetensors",
            "use_rviz": "false",
        }
    )
    (node,) = module._pebal_node(context)
    assert node.node_package == "pebal_ros" and node.node_executable == "pebal_node"


def test_launch_file_names_installed_executable_parameters_and_arguments():
    tree = ast.parse(LAUNCH.read_text())
    constants = {
        t.id: n.value.value
        for n in tree.body
        if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant)
        for t in n.targets
        if isinstance(t, ast.Name)
    }
    assert constants["PACKAGE"] == "pebal_ros"
    assert constants["EXECUTABLE"] == "pebal_node"
    assert (ROOT / "config" / constants["PARAMS_FILE"]).is_file()
    assert (ROOT / "config" / constants["RVIZ_FILE"]).is_file()
    declared = {
        call.args[0].value
        for call in ast.walk(tree)
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "DeclareLaunchArgument"
    }
    assert declared == LAUNCH_ARGUMENTS
    names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    assert "generate_launch_description" in names
    # every launch argument is used
    used = {
        call.args[0].value
        for call in ast.walk(tree)
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) == "LaunchConfiguration"
    }
    assert used == LAUNCH_ARGUMENTS


def test_setup_installs_the_executable_launch_and_config_files():
    scripts = {ep.name: ep.value for ep in metadata.entry_points(group="console_scripts")}
    assert scripts.get("pebal_node") == "pebal_ros.node:main"
    assert os.access(os.path.join(os.path.dirname(sys.executable), "pebal_node"), os.X_OK)
    setup = (ROOT / "setup.py").read_text()
    assert '"pebal_node = pebal_ros.node:main"' in setup
    for pattern, expected in (
        ("launch/*.launch.py", "launch/pebal.launch.py"),
        ("config/*.yaml", "config/pebal.yaml"),
        ("config/*.rviz", "config/pebal.rviz"),
        ("config/*.xml", "config/fastdds_large_images.xml"),
    ):
        assert f'glob("{pattern}")' in setup
        assert expected in glob(pattern, root_dir=ROOT)


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def test_parameter_file_matches_the_declared_parameters():
    doc = yaml.safe_load((ROOT / "config" / "pebal.yaml").read_text())
    values = _flatten(doc["/**"]["ros__parameters"])
    specs = {s.name: s for s in PARAMETERS}
    # every declared parameter is in the file, except score_threshold (unset = the model's threshold)
    assert set(values) == set(specs) - {"score_threshold"}
    for name, value in values.items():
        spec = specs[name]
        assert type(value) is type(spec.default), (name, value)
        assert value == spec.default, f"{name}: the file and the code disagree on the default"
        if spec.bounds:
            assert spec.bounds[0] <= value <= spec.bounds[1], name
        if spec.choices:
            assert value in spec.choices, name


def test_rviz_layout_shows_overlay_labels_and_grid_with_matching_qos():
    layout = yaml.safe_load((ROOT / "config" / "pebal.rviz").read_text())
    displays = layout["Visualization Manager"]["Displays"]
    topics = {(d["Class"], d["Topic"]["Value"]) for d in displays if "Topic" in d}
    assert ("rviz_default_plugins/Image", "/anomaly_overlay") in topics
    assert ("rviz_default_plugins/Image", "/semantic_color") in topics
    assert ("rviz_default_plugins/Map", "/anomaly_grid") in topics
    assert ("rviz_default_plugins/MarkerArray", "/obstacles") in topics
    assert {t.lstrip("/") for _, t in topics} <= set(OUTPUTS)
    for d in displays:
        if "Topic" in d:  # the node publishes reliable + volatile: a transient-local reader would not match
            assert d["Topic"]["Durability Policy"] == "Volatile" and d["Topic"]["Reliability Policy"] == "Reliable"
    params = yaml.safe_load((ROOT / "config" / "pebal.yaml").read_text())["/**"]["ros__parameters"]
    assert layout["Visualization Manager"]["Global Options"]["Fixed Frame"] == params["grid"]["frame_id"]
