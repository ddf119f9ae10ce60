"""The launch file run for real: ``ros2 launch pebal_ros pebal.launch.py`` against a colcon-built
workspace, with ``ros2 launch`` installed from the unmodified ROS 2 sources (test/ros_workspace.py;
skipped with a reason where ``../shared/ros2-launch`` is absent, required in CI). Plus the static
facts about the files it installs (parameter file, RViz layout).

The launch runs are marked ``colcon`` (they need the workspace build) and ``ros`` (DDS on loopback,
random domain id).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from glob import glob
from importlib import metadata
from pathlib import Path

import numpy as np
import psutil
import pytest
import yaml
from conftest import ROOT
from node_harness import RELIABLE, Probe, RosSession, as_array, camera_info_msg, first_outputs_from_process, wait_until
from rcl_interfaces.srv import GetParameters
from ros_workspace import colcon_workspace, launch_env, launch_tools
from sensor_msgs.msg import CameraInfo, Image

from pebal_core.models import build_model
from pebal_core.models.checkpoint import save_checkpoint
from pebal_core.runtime import Predictor
from pebal_ros.dds_profile import PROFILE_VARIABLE
from pebal_ros.node import OUTPUTS, PARAMETERS
from pebal_ros.node_parameters import POINT_PARAMETERS

LAUNCH_ARGUMENTS = {
    "namespace",
    "image_topic",
    "camera_info_topic",
    "params_file",
    "model",
    "use_sim_time",
    "log_level",
    "fastdds_profile",
    "use_rviz",
    "source",
    "publish_rate",
    "loop",
    "camera_info_url",
}


# --------------------------------------------------------------------------- real `ros2 launch`
@pytest.fixture(scope="module")
def launch_setup(tmp_path_factory):
    """(workspace, launch tools folder) — the tools first: they skip when the sources are absent."""
    base = tmp_path_factory.getbasetemp()
    tools = launch_tools(base)
    return colcon_workspace(base), tools


def _ros2_launch(launch_setup, *args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.Popen:
    ws, tools = launch_setup
    return subprocess.Popen(
        [str(tools / "bin" / "ros2"), "launch", "pebal_ros", "pebal.launch.py", *args],
        env=launch_env(ws, tools, env),
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: cleaned up as a whole if a test fails
    )


def _finish(proc: subprocess.Popen, timeout: float = 60.0) -> tuple[int, str]:
    """Wait for ``ros2 launch`` to exit; ``(exit status, its output)``.

    The output is read on a thread while this waits for the process itself (not for the end of
    its output, which a leftover process holding the pipe would delay). The test fails, with the
    output captured so far and every process still alive, when ``ros2 launch`` runs past
    ``timeout`` s (the processes of its group, then killed) or when it exited but its output pipe
    stays open (the processes holding it)."""
    chunks: list[str] = []
    reader = threading.Thread(target=lambda: chunks.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        alive = _group_processes(proc.pid)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        reader.join(10.0)
        pytest.fail(
            f"ros2 launch (pid {proc.pid}) did not exit within {timeout} s; processes of its group still alive:\n"
            + "\n".join(alive)
            + "\n--- its output ---\n"
            + "".join(chunks)
        )
    reader.join(10.0)
    if reader.is_alive():
        holders = _pipe_holders(proc.stdout.fileno())
        for pid in holders:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        pytest.fail(
            f"ros2 launch exited (status {proc.returncode}) but its output pipe stayed open, held by:\n"
            + "\n".join(_describe(pid) for pid in holders)
            + "\n--- its output ---\n"
            + "".join(chunks)
        )
    return proc.returncode, "".join(chunks)


def _describe(pid: int) -> str:
    try:
        p = psutil.Process(pid)
        return f"{pid} ({p.status()}) {' '.join(p.cmdline())}"
    except psutil.Error:
        return f"{pid} (gone)"


def _group_processes(pgid: int) -> list[str]:
    """``pid (state) command line`` of every live process in process group ``pgid``."""
    found = []
    for pid in psutil.pids():
        with contextlib.suppress(OSError):
            if os.getpgid(pid) == pgid:
                found.append(_describe(pid))
    return found


def _pipe_holders(fd: int) -> list[int]:
    """Pids of the other processes with the pipe behind our ``fd`` open."""
    target = f"pipe:[{os.fstat(fd).st_ino}]"
    holders = []
    for pid in psutil.pids():
        if pid == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if any(os.readlink(f"/proc/{pid}/fd/{n}") == target for n in os.listdir(f"/proc/{pid}/fd")):
                holders.append(pid)
    return holders


def _tiny_model(folder: Path, size: tuple[int, int]) -> Path:
    """A tiny resnet18 (width 0.25) that records its input size. The launched node runs backend
    ``auto`` (the parameter file's), which on a model's first start exports it and times every
    CPU backend at the recorded size, else at 512x1024: seconds at 512x1024 on an idle machine,
    more than the tests' 60 s wait for the node on a loaded one; at ``size`` a fraction of one."""
    return save_checkpoint(build_model("resnet18", width=0.25), folder / "tiny.safetensors", input_size=list(size))


def _processes_with(marker: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        if any(marker in part for part in p.info["cmdline"] or ()):
            found.append(p)
    return found


@pytest.mark.colcon
def test_show_args_lists_every_argument_with_its_default(launch_setup):
    rc, out = _finish(_ros2_launch(launch_setup, "--show-args"))
    assert rc == 0, out
    shown = dict(re.findall(r"^    '(\w+)':\n(?:.*\n)*?\s+\(default: (.*)\)$", out, re.M))
    assert set(shown) == LAUNCH_ARGUMENTS, out
    assert shown["image_topic"] == "'camera/image_raw'"  # relative: follows the namespace
    assert "camera_info" in shown["camera_info_topic"] and "image_topic" in shown["camera_info_topic"]
    assert "fastdds_large_images.xml" in shown["fastdds_profile"]
    assert "model" in shown["model"] and "params_file" in shown["model"]
    assert shown["source"] == "''" and shown["publish_rate"] == "'10.0'"  # no camera unless a source is given


@pytest.mark.colcon
def test_print_shows_the_node(launch_setup):
    """No OpaqueFunction hides the node: `ros2 launch --print` names its executable."""
    ws, tools = launch_setup
    proc = subprocess.Popen(
        [str(tools / "bin" / "ros2"), "launch", "--print", "pebal_ros", "pebal.launch.py"],
        env=launch_env(ws, tools),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    rc, out = _finish(proc)
    assert rc == 0, out
    assert "ExecInPkg(pkg='pebal_ros', exec='pebal_node')" in out
    assert "OnProcessExit" in out


def _get_parameters(session: RosSession, node: str, names: list[str]) -> list:
    client = session.nodes[0].create_client(GetParameters, f"{node}/get_parameters")
    assert client.wait_for_service(timeout_sec=30.0), f"{node}/get_parameters"
    future = client.call_async(GetParameters.Request(names=names))
    wait_until(future.done, 30.0, "get_parameters")
    return list(future.result().values)


@pytest.mark.colcon
@pytest.mark.ros
def test_namespaced_launch_with_arguments_serves_outputs(launch_setup, ros_env, tmp_path):
    """namespace, image_topic (camera_info beside it), model, use_sim_time, log_level and the Fast DDS
    profile reach the node; its outputs arrive over rclpy under the namespace; Ctrl-C ends the launch."""
    ws, _ = launch_setup
    h, w = 48, 64
    model = _tiny_model(tmp_path, (h, w))
    rgb = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    labels, score = Predictor.from_checkpoint(model).predict(rgb)
    ns = f"car_{uuid.uuid4().hex[:8]}"
    proc = _ros2_launch(
        launch_setup,
        f"namespace:={ns}",
        "image_topic:=front/image_raw",
        f"model:={model}",
        "use_sim_time:=true",
        "log_level:=debug",
        env=ros_env,
        cwd=tmp_path,
    )
    try:
        with RosSession() as session:
            probe = Probe(session, prefix=f"/{ns}/", outputs=("semantic", "anomaly_score", "anomaly_grid"))
            # the camera: image_topic relative to the namespace, camera_info beside it by default
            probe.image_pub = probe.node.create_publisher(Image, f"/{ns}/front/image_raw", RELIABLE)
            probe.info_pub = probe.node.create_publisher(CameraInfo, f"/{ns}/front/camera_info", RELIABLE)
            out = first_outputs_from_process(proc, probe, rgb, camera_info_msg(h, w, 60.0, 60.0), "cam")
            np.testing.assert_array_equal(as_array(out["semantic"]), labels)
            np.testing.assert_allclose(as_array(out["anomaly_score"]), score, rtol=1e-5, atol=1e-5)
            assert out["anomaly_grid"].info.width > 0  # the grid needs the CameraInfo: it came on front/camera_info
            model_value, sim_time = _get_parameters(session, f"/{ns}/pebal_node", ["model", "use_sim_time"])
            assert model_value.string_value == str(model)
            assert sim_time.bool_value is True
        (node,) = [p for p in _processes_with(f"__ns:=/{ns}") if "pebal_node" in " ".join(p.cmdline())]
        profile = node.environ().get(PROFILE_VARIABLE)  # FASTDDS_DEFAULT_PROFILES_FILE: no Fast DDS 2 distro here
        installed = ws / "install" / "pebal_ros" / "share" / "pebal_ros" / "config" / "fastdds_large_images.xml"
        assert profile == str(installed)
        # Ctrl-C: the terminal sends SIGINT to the whole foreground process group. A SIGINT to
        # `ros2 launch` alone was lost under load (docs/recording_and_launch.md, "Stopping it from
        # a supervisor").
        os.killpg(proc.pid, signal.SIGINT)
        rc, log = _finish(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert "[DEBUG]" in log, "log_level:=debug reached the node"
    assert rc == 0, log
    assert not _processes_with(f"__ns:=/{ns}"), "the node outlived the launch"


@pytest.mark.colcon
@pytest.mark.ros
def test_source_starts_a_camera_beside_the_node(launch_setup, ros_env, realdata, tmp_path):
    """source:= starts pebal_camera in the node's namespace on image_topic / camera_info_topic: real
    1280x720 frames reach the node, whose outputs carry the camera's frame_id, and its grid shows that
    the camera's CameraInfo (the stated default intrinsics) arrived too."""
    model = _tiny_model(tmp_path, (72, 128))  # the frames' 16:9; outputs still come at their own size
    frames = tmp_path / "frames"
    frames.mkdir()
    for name in ("0.jpg", "1.jpg", "2.jpg"):
        (frames / name).write_bytes((realdata / "Validation_Dataset" / "RoadAnomaly" / "images" / name).read_bytes())
    ns = f"cam_{uuid.uuid4().hex[:8]}"
    proc = _ros2_launch(
        launch_setup,
        f"namespace:={ns}",
        "image_topic:=front/image_raw",
        f"model:={model}",
        f"source:={frames}",
        "loop:=true",
        "publish_rate:=2.0",
        env=ros_env,
        cwd=tmp_path,
    )
    try:
        with RosSession() as session:
            probe = Probe(session, prefix=f"/{ns}/", outputs=("anomaly_score", "anomaly_grid"))
            wait_until(lambda: all(probe.received.values()) or proc.poll() is not None, 120.0, "outputs of a frame")
            assert proc.poll() is None, proc.stdout.read()
            score = as_array(probe.received["anomaly_score"][-1])
            assert score.shape == (720, 1280)  # the real frames, at their own size
            assert probe.received["anomaly_score"][-1].header.frame_id == "camera_optical_frame"
            assert probe.received["anomaly_grid"][-1].info.width > 0  # CameraInfo came on front/camera_info
        (camera,) = [p for p in _processes_with(f"__ns:=/{ns}") if "pebal_camera" in " ".join(p.cmdline())]
        assert camera.is_running()
        proc.send_signal(signal.SIGINT)
        rc, log = _finish(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert rc == 0, log
    assert f"on /{ns}/front/image_raw" in log, log  # the camera's own announcement of its topic
    assert not _processes_with(f"__ns:=/{ns}"), "the camera or the node outlived the launch"


@pytest.mark.colcon
@pytest.mark.ros
def test_node_failure_fails_the_launch(launch_setup, ros_env, tmp_path):
    """A node that exits (here: a model file that does not exist) ends the launch with a failure.
    (`fastdds_profile:=none` leaves the environment alone: Fast DDS then says nothing about profiles.)"""
    missing = tmp_path / "no_such_model.safetensors"
    rc, log = _finish(_ros2_launch(launch_setup, f"model:={missing}", "fastdds_profile:=none", env=ros_env), 120)
    assert rc == 1, log
    assert "does not exist" in log and "pebal_node exited with status 2" in log
    assert "PROFILES_FILE" not in log


@pytest.mark.colcon
@pytest.mark.ros
def test_rviz_requested_but_missing_fails_before_starting_anything(launch_setup, ros_env):
    ws, tools = launch_setup
    probe_env = launch_env(ws, tools)
    out = subprocess.run(
        [sys.executable, "-c", "from ament_index_python.packages import get_package_prefix as g; g('rviz2')"],
        env=probe_env,
        capture_output=True,
    )
    if out.returncode == 0:
        pytest.skip("rviz2 is installed here; this test is about its absence")
    ns = f"rviz_{uuid.uuid4().hex[:8]}"
    rc, log = _finish(_ros2_launch(launch_setup, "use_rviz:=true", f"namespace:={ns}", env=ros_env))
    assert rc == 1, log
    assert "RViz 2 is not installed" in log
    assert "process started" not in log
    time.sleep(1.0)
    assert not _processes_with(f"__ns:=/{ns}"), "a node was left running"


# --------------------------------------------------------------------------- the installed files
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
    # every declared parameter is in the file, except those left unset so that the model's operating
    # point holds as it was chosen (the file shows each of them commented out) and the deprecated QoS
    # aliases (the file shows the qos_overrides way)
    assert set(values) == set(specs) - set(POINT_PARAMETERS) - {"input_reliability", "output_reliability"}
    text = (ROOT / "config" / "pebal.yaml").read_text()
    for name in POINT_PARAMETERS:
        assert specs[name].default is None and f"# {name.rsplit('.', 1)[-1]}:" in text, name
    for name, value in values.items():
        spec = specs[name]
        assert type(value) is type(spec.default), (name, value)
        assert value == spec.default, f"{name}: the file and the code disagree on the default"
        if spec.bounds:
            assert spec.bounds[0] <= value <= spec.bounds[1], name
        if spec.choices:
            assert value in spec.choices, name


def test_rviz_layout_shows_overlay_labels_and_grid_in_the_node_namespace():
    layout = yaml.safe_load((ROOT / "config" / "pebal.rviz").read_text())
    displays = layout["Visualization Manager"]["Displays"]
    topics = {(d["Class"], d["Topic"]["Value"]) for d in displays if "Topic" in d}
    assert ("rviz_default_plugins/Image", "anomaly_overlay") in topics
    assert ("rviz_default_plugins/Image", "semantic_color") in topics
    assert ("rviz_default_plugins/Map", "anomaly_grid") in topics
    assert ("rviz_default_plugins/MarkerArray", "obstacles") in topics
    # relative names: RViz runs in the node's namespace (launch argument `namespace`)
    assert all(not t.startswith("/") for _, t in topics)
    assert {t for _, t in topics} <= set(OUTPUTS)
    updates = [d["Update Topic"]["Value"] for d in displays if "Update Topic" in d]
    assert updates == ["anomaly_grid_updates"]
    for d in displays:
        if "Topic" in d:  # the node publishes reliable + volatile: a transient-local reader would not match
            assert d["Topic"]["Durability Policy"] == "Volatile" and d["Topic"]["Reliability Policy"] == "Reliable"
    params = yaml.safe_load((ROOT / "config" / "pebal.yaml").read_text())["/**"]["ros__parameters"]
    assert layout["Visualization Manager"]["Global Options"]["Fixed Frame"] == params["grid"]["frame_id"]


def _supervisor_script() -> str:
    """The supervisor script of docs/recording_and_launch.md, exactly as written there."""
    text = (ROOT / "docs" / "recording_and_launch.md").read_text()
    block = text.split("<!-- supervisor:begin -->", 1)[1].split("<!-- supervisor:end -->", 1)[0]
    return block.split("```bash\n", 1)[1].rsplit("```", 1)[0]


def rclpy_node(session: RosSession):
    import rclpy

    return rclpy.create_node("supervisor_probe", context=session.context)


def _wait_for_node(session: RosSession, ns: str, proc: subprocess.Popen) -> psutil.Process:
    """Until the node in namespace ``ns`` subscribes to its image topic (its signal handlers are
    installed by then); returns its process."""
    pub = session.nodes[0].create_publisher(Image, f"/{ns}/camera/image_raw", RELIABLE)
    wait_until(lambda: pub.get_subscription_count() > 0 or proc.poll() is not None, 90.0, "the node's subscription")
    assert proc.poll() is None, proc.stdout.read()
    (node,) = [p for p in _processes_with(f"__ns:=/{ns}") if "pebal_node" in " ".join(p.cmdline())]
    return node


@pytest.mark.colcon
@pytest.mark.ros
def test_supervisor_script_stops_the_node_with_the_launch(launch_setup, ros_env, tmp_path):
    """SIGTERM to `ros2 launch` alone orphans pebal_node (upstream launch: "using SIGTERM can result
    in orphaned processes"); the documented script, signalled alone the same way, stops both."""
    ws, tools = launch_setup
    model = _tiny_model(tmp_path, (48, 64))
    orphan_ns, ns = f"orphan_{uuid.uuid4().hex[:8]}", f"sup_{uuid.uuid4().hex[:8]}"
    launch = _ros2_launch(launch_setup, f"namespace:={orphan_ns}", f"model:={model}", env=ros_env)
    try:
        with RosSession() as session:
            session.add(rclpy_node(session))
            node = _wait_for_node(session, orphan_ns, launch)
        launch.send_signal(signal.SIGTERM)
        _finish(launch)
        time.sleep(1.0)
        assert node.is_running() and node.status() != psutil.STATUS_ZOMBIE, "upstream launch no longer orphans"
    finally:
        for p in _processes_with(f"__ns:=/{orphan_ns}"):
            p.kill()

    script = tmp_path / "pebal_launch_supervised.sh"
    script.write_text(_supervisor_script())
    logs = tmp_path / "ros_log"  # the node's own log file: ros2 launch, stopped first, drops its console output
    supervised = subprocess.Popen(
        ["bash", str(script), f"namespace:={ns}", f"model:={model}"],
        env=launch_env(ws, tools, {**ros_env, "ROS_LOG_DIR": str(logs)}),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        with RosSession() as session:
            session.add(rclpy_node(session))
            _wait_for_node(session, ns, supervised)
        supervised.send_signal(signal.SIGTERM)  # the script's process alone, as `docker stop` does
        out, _ = supervised.communicate(timeout=60)
    finally:
        if supervised.poll() is None:
            supervised.kill()
        for p in _processes_with(f"__ns:=/{ns}"):
            p.kill()
    assert supervised.returncode == 128 + signal.SIGTERM, out
    assert not _processes_with(f"__ns:=/{ns}"), "a process of the launch outlived the script"
    (node_log,) = [p for p in logs.glob("*.log") if f"[{ns}.pebal_node]" in p.read_text()]
    text = node_log.read_text()
    assert f"[{ns}.pebal_node]: SIGTERM: shutting down" in text and "Traceback" not in text + out, text + out
