"""Start ``pebal_node`` (and optionally a camera from an image source, and RViz) on a full ROS 2 install.

    ros2 launch pebal_ros pebal.launch.py
    ros2 launch pebal_ros pebal.launch.py source:=/data/frames use_rviz:=true
    ros2 launch pebal_ros pebal.launch.py namespace:=car2 image_topic:=front/image_raw \\
        model:=/models/pebal.safetensors use_sim_time:=true log_level:=debug use_rviz:=true
    ros2 launch pebal_ros pebal.launch.py --show-args

Launch arguments (``--show-args`` lists them with their defaults):

* ``namespace`` — ROS namespace of the node (and RViz): relative topics, the outputs among them,
  resolve inside it (``car2`` -> ``/car2/anomaly_overlay``);
* ``image_topic`` — the camera's ``sensor_msgs/Image`` topic (default ``camera/image_raw``,
  relative, so it follows ``namespace``); ``<image_topic>/compressed`` is used when the
  parameters say ``subscribe_compressed: true``;
* ``camera_info_topic`` — default: ``camera_info`` beside ``image_topic`` (``front/image_raw`` ->
  ``front/camera_info``), the camera driver convention;
* ``params_file`` — node parameters (default: the installed ``config/pebal.yaml``);
* ``model`` — a checkpoint; default: the ``model`` of ``params_file`` (empty there = the shipped
  default model);
* ``use_sim_time`` — take time from ``/clock`` (bag replay with ``--clock``);
* ``log_level`` — ``debug``, ``info``, ``warn``, ``error`` or ``fatal``;
* ``source`` — also start ``pebal_camera`` on this image source (an image or video file, a folder
  of images, a glob, a camera index or ``/dev/videoN``), publishing on ``image_topic`` and
  ``camera_info_topic`` in the same namespace; empty (the default) = no camera, bring your own;
* ``publish_rate``, ``loop``, ``camera_info_url`` — that camera's frames per second (0 = a video's
  own rate), whether it starts again at the end, and its ROS calibration file (empty: the stated
  default intrinsics, see ``docs/camera.md``);
* ``fastdds_profile`` — Fast DDS XML profile for the launched processes, exported as
  ``FASTDDS_DEFAULT_PROFILES_FILE`` (``FASTRTPS_DEFAULT_PROFILES_FILE`` on the Fast DDS 2
  distributions Humble, Iron and Jazzy: :func:`pebal_ros.dds_profile.profile_variable`). Default:
  the installed ``config/fastdds_large_images.xml`` (shared memory large enough for whole
  images); ``none`` (or empty, from an including launch file) = leave the environment as it is
  (``pebal_node`` and ``pebal_camera`` then apply the installed profile themselves unless the
  environment names one);
* ``use_rviz`` — also start RViz with the installed ``config/pebal.rviz`` (its topics are
  relative, so it shows the namespaced node's outputs). Without RViz installed the launch stops
  with an error before starting anything.

When ``pebal_node`` exits the launch ends; a non-zero exit status of the node or the camera (a bad
model, parameter or source) makes ``ros2 launch`` fail (status 1: ``ros2 launch`` has no way to
pass the node's own code on). A camera that reaches the end of its source just stops.

Without a ROS install the same node runs as ``pebal_node --ros-args --params-file
config/pebal.yaml -r image:=/camera/image_raw`` (see ``docs/node.md``).
"""

from pathlib import Path

import yaml
from ament_index_python.packages import PackageNotFoundError, get_package_prefix
from launch import LaunchDescription, Substitution
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    OpaqueFunction,
    RegisterEventHandler,
    SetEnvironmentVariable,
)
from launch.conditions import IfCondition
from launch.event_handlers import OnProcessExit
from launch.events import Shutdown
from launch.substitutions import AndSubstitution, LaunchConfiguration, NotEqualsSubstitution, PathJoinSubstitution
from launch.utilities import normalize_to_list_of_substitutions, perform_substitutions
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from pebal_ros.dds_profile import PROFILE_NAME, profile_variable

PACKAGE = "pebal_ros"
EXECUTABLE = "pebal_node"
CAMERA = "pebal_camera"
PARAMS_FILE = "pebal.yaml"
RVIZ_FILE = "pebal.rviz"
LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")


class SiblingTopic(Substitution):
    """The topic ``name`` in the namespace of ``topic`` (``camera/image_raw`` -> ``camera/camera_info``)."""

    def __init__(self, topic, name: str) -> None:
        super().__init__()
        self.topic = normalize_to_list_of_substitutions(topic)
        self.name = name

    def describe(self) -> str:
        return f"'{self.name}' beside " + " + ".join(s.describe() for s in self.topic)

    def perform(self, context) -> str:
        head, sep, _ = perform_substitutions(context, self.topic).rpartition("/")
        return f"{head}{sep}{self.name}"


class ParameterInFile(Substitution):
    """The value of parameter ``name`` in a ROS parameter file (``/**`` or the node's section), else ``""``."""

    def __init__(self, params_file, name: str, node_name: str) -> None:
        super().__init__()
        self.params_file = normalize_to_list_of_substitutions(params_file)
        self.name = name
        self.node_name = node_name

    def describe(self) -> str:
        return f"the '{self.name}' of " + " + ".join(s.describe() for s in self.params_file)

    def perform(self, context) -> str:
        path = Path(perform_substitutions(context, self.params_file))
        try:
            doc = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise RuntimeError(f"params_file {path} is not a readable YAML parameter file: {e}") from e
        for key in ("/**", self.node_name, f"/{self.node_name}", f"/**/{self.node_name}"):
            value = ((doc.get(key) or {}).get("ros__parameters") or {}).get(self.name)
            if value is not None:
                return str(value)
        return ""


def _require_rviz(context) -> list:
    try:
        get_package_prefix("rviz2")
    except PackageNotFoundError:
        raise RuntimeError(
            "use_rviz:=true, but RViz 2 is not installed (no package rviz2); install it "
            "(apt install ros-$ROS_DISTRO-rviz2) or launch without use_rviz"
        ) from None
    return []


def _on_node_exit(event, context) -> list:
    if event.returncode != 0 and not context.is_shutdown:
        # an exception is what makes `ros2 launch` exit non-zero (after shutting everything down)
        raise RuntimeError(f"{EXECUTABLE} exited with status {event.returncode}; see its output above")
    return [EmitEvent(event=Shutdown(reason=f"{EXECUTABLE} exited"))]


def _on_camera_exit(event, context) -> list:
    if event.returncode != 0 and not context.is_shutdown:
        raise RuntimeError(f"{CAMERA} exited with status {event.returncode}; see its output above")
    return []  # the end of its source: the node goes on


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare(PACKAGE)
    namespace = LaunchConfiguration("namespace")
    image_topic = LaunchConfiguration("image_topic")
    params_file = LaunchConfiguration("params_file")
    use_sim_time = ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool)
    fastdds_profile = LaunchConfiguration("fastdds_profile")
    fastdds_env = profile_variable()
    use_rviz = IfCondition(LaunchConfiguration("use_rviz"))
    source = LaunchConfiguration("source")
    camera_info_topic = LaunchConfiguration("camera_info_topic")
    node = Node(
        package=PACKAGE,
        executable=EXECUTABLE,
        name=EXECUTABLE,
        namespace=namespace,
        output="screen",
        emulate_tty=True,
        parameters=[
            params_file,
            {
                "model": ParameterValue(LaunchConfiguration("model"), value_type=str),
                "use_sim_time": use_sim_time,
            },
        ],
        remappings=[
            ("image", image_topic),
            ("image/compressed", [image_topic, "/compressed"]),
            ("camera_info", camera_info_topic),
        ],
        ros_arguments=["--log-level", LaunchConfiguration("log_level")],
    )
    camera = Node(
        package=PACKAGE,
        executable=CAMERA,
        name=CAMERA,
        namespace=namespace,
        output="screen",
        emulate_tty=True,
        parameters=[
            {
                "source": ParameterValue(source, value_type=str),
                "publish_rate": ParameterValue(LaunchConfiguration("publish_rate"), value_type=float),
                "loop": ParameterValue(LaunchConfiguration("loop"), value_type=bool),
                "camera_info_url": ParameterValue(LaunchConfiguration("camera_info_url"), value_type=str),
                "use_sim_time": use_sim_time,
            }
        ],
        remappings=[("camera/image_raw", image_topic), ("camera/camera_info", camera_info_topic)],
        ros_arguments=["--log-level", LaunchConfiguration("log_level")],
        condition=IfCondition(NotEqualsSubstitution(source, "")),
    )
    profile_set = IfCondition(
        AndSubstitution(NotEqualsSubstitution(fastdds_profile, ""), NotEqualsSubstitution(fastdds_profile, "none"))
    )
    return LaunchDescription(
        [
            DeclareLaunchArgument("namespace", default_value="", description="ROS namespace of the node and RViz"),
            DeclareLaunchArgument(
                "image_topic",
                default_value="camera/image_raw",
                description="sensor_msgs/Image topic of the camera (relative names resolve in the namespace)",
            ),
            DeclareLaunchArgument(
                "camera_info_topic",
                default_value=SiblingTopic(image_topic, "camera_info"),
                description="sensor_msgs/CameraInfo topic of the camera (intrinsics for the anomaly grid)",
            ),
            DeclareLaunchArgument(
                "params_file",
                default_value=PathJoinSubstitution([share, "config", PARAMS_FILE]),
                description="YAML file with the node's parameters",
            ),
            DeclareLaunchArgument(
                "model",
                default_value=ParameterInFile(params_file, "model", EXECUTABLE),
                description="model checkpoint (empty: the shipped default model)",
            ),
            DeclareLaunchArgument(
                "use_sim_time", default_value="false", choices=["true", "false"], description="use /clock time"
            ),
            DeclareLaunchArgument(
                "log_level", default_value="info", choices=list(LOG_LEVELS), description="the node's log level"
            ),
            DeclareLaunchArgument(
                "source",
                default_value="",
                description="image source for pebal_camera (image or video file, folder, glob, camera index, "
                "/dev/videoN) publishing on image_topic and camera_info_topic; empty: no camera",
            ),
            DeclareLaunchArgument(
                "publish_rate", default_value="10.0", description="pebal_camera frames/s (0: a video's own rate)"
            ),
            DeclareLaunchArgument(
                "loop",
                default_value="false",
                choices=["true", "false"],
                description="pebal_camera starts again at the end of its source",
            ),
            DeclareLaunchArgument(
                "camera_info_url",
                default_value="",
                description="ROS calibration YAML of pebal_camera (empty: the stated default intrinsics)",
            ),
            DeclareLaunchArgument(
                "fastdds_profile",
                default_value=PathJoinSubstitution([share, "config", PROFILE_NAME]),
                description=f"Fast DDS XML profile ({fastdds_env}) of the launched processes; none: leave the "
                "environment as it is",
            ),
            DeclareLaunchArgument(
                "use_rviz", default_value="false", choices=["true", "false"], description="also start RViz"
            ),
            SetEnvironmentVariable(fastdds_env, fastdds_profile, condition=profile_set),
            OpaqueFunction(function=_require_rviz, condition=use_rviz),  # before anything starts
            node,
            RegisterEventHandler(OnProcessExit(target_action=node, on_exit=_on_node_exit)),
            camera,
            RegisterEventHandler(OnProcessExit(target_action=camera, on_exit=_on_camera_exit)),
            Node(
                package="rviz2",
                executable="rviz2",
                name="rviz2",
                namespace=namespace,
                arguments=["-d", PathJoinSubstitution([share, "config", RVIZ_FILE])],
                parameters=[{"use_sim_time": use_sim_time}],
                condition=use_rviz,
            ),
        ]
    )
