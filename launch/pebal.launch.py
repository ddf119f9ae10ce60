"""Start ``pebal_node`` (and optionally RViz) on a full ROS 2 install.

    ros2 launch pebal_ros pebal.launch.py
    ros2 launch pebal_ros pebal.launch.py image_topic:=/front/image_raw \\
        camera_info_topic:=/front/camera_info model:=/models/pebal.safetensors use_rviz:=true

Launch arguments:

* ``params_file`` — node parameters (default: the installed ``config/pebal.yaml``);
* ``image_topic`` / ``camera_info_topic`` — the camera (``<image_topic>/compressed`` is used when
  the parameters say ``subscribe_compressed: true``);
* ``model`` — a checkpoint that overrides the parameter file's ``model`` (empty: keep it);
* ``use_rviz`` — also start RViz with the installed ``config/pebal.rviz``.

Without a ROS install the same node runs as ``pebal_node --ros-args --params-file
config/pebal.yaml -r image:=/camera/image_raw`` (see the README).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = "pebal_ros"
EXECUTABLE = "pebal_node"
PARAMS_FILE = "pebal.yaml"
RVIZ_FILE = "pebal.rviz"


def _pebal_node(context, *args, **kwargs):
    image_topic = LaunchConfiguration("image_topic").perform(context)
    parameters = [LaunchConfiguration("params_file").perform(context)]
    model = LaunchConfiguration("model").perform(context)
    if model:
        parameters.append({"model": model})
    return [
        Node(
            package=PACKAGE,
            executable=EXECUTABLE,
            name=EXECUTABLE,
            output="screen",
            emulate_tty=True,
            parameters=parameters,
            remappings=[
                ("image", image_topic),
                ("image/compressed", image_topic + "/compressed"),
                ("camera_info", LaunchConfiguration("camera_info_topic").perform(context)),
            ],
        )
    ]


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare(PACKAGE)
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "params_file",
                default_value=PathJoinSubstitution([share, "config", PARAMS_FILE]),
                description="YAML file with the node's parameters",
            ),
            DeclareLaunchArgument(
                "image_topic", default_value="/camera/image_raw", description="sensor_msgs/Image topic of the camera"
            ),
            DeclareLaunchArgument(
                "camera_info_topic",
                default_value="/camera/camera_info",
                description="sensor_msgs/CameraInfo topic of the camera (intrinsics for the anomaly grid)",
            ),
            DeclareLaunchArgument(
                "model",
                default_value="",
                description="model checkpoint; empty = the params_file's model (the shipped default if empty too)",
            ),
            DeclareLaunchArgument("use_rviz", default_value="false", description="also start RViz"),
            OpaqueFunction(function=_pebal_node),
            Node(
                package="rviz2",
                executable="rviz2",
                name="rviz2",
                arguments=["-d", PathJoinSubstitution([share, "config", RVIZ_FILE])],
                condition=IfCondition(LaunchConfiguration("use_rviz")),
            ),
        ]
    )
