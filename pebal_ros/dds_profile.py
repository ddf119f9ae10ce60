"""The Fast DDS profile for camera-sized images, and applying it to a process.

Stock Fast DDS has a 512 KiB shared-memory segment per process. A sample larger than that (a
1280x720 ``rgb8`` frame is 2.6 MiB) leaves as 64 KiB UDP fragments, which a loaded machine loses
or delays: 58 of 60 real 1280x720 frames at 10 Hz never reached a best-effort subscriber here.
``config/fastdds_large_images.xml`` gives the shared-memory transport a 32 MiB segment. What counts
is the *sending* process's segment: the camera's for the node's input, the node's for its
outputs (measured here: a publisher with the profile delivered 60 of 60 to a subscriber without it;
the reverse delivered 1).

Fast DDS reads the profile from an environment variable when a process creates its first
participant (``rclpy.init``), so it must be set before that. :func:`apply_profile` does it for
this package's own processes (``pebal_node``, ``pebal_camera``, ``pebal_bag``, ``pebal_demo``)
unless the user chose a profile already or runs another middleware. The variable is
``FASTDDS_DEFAULT_PROFILES_FILE`` (Fast DDS 3: ROS 2 Kilted and newer); ROS 2 distributions with
Fast DDS 2 (Humble, Iron, Jazzy) read ``FASTRTPS_DEFAULT_PROFILES_FILE`` instead
(:func:`profile_variable`). A camera driver of another package needs the line of
:func:`export_line` in its environment.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path

PROFILE_NAME = "fastdds_large_images.xml"
"""File name of the profile under ``config/`` (installed as ``share/pebal_ros/config/``)."""
PROFILE_VARIABLE = "FASTDDS_DEFAULT_PROFILES_FILE"
"""The variable Fast DDS 3 reads the default profile file from."""
FAST_DDS_2_VARIABLE = "FASTRTPS_DEFAULT_PROFILES_FILE"
"""The variable Fast DDS 2 reads (Fast DDS 3 still reads it, with a deprecation warning)."""
FAST_DDS_2_DISTROS = ("humble", "iron", "jazzy")
"""ROS 2 distributions (``ROS_DISTRO``) whose Fast DDS is version 2."""
STOCK_SEGMENT_BYTES = 512 * 1024
"""Shared-memory segment of a process without the profile: larger samples go over UDP."""


def profile_variable(env: Mapping[str, str] = os.environ) -> str:
    """The environment variable this ROS 2 distribution's Fast DDS reads the profile from."""
    return FAST_DDS_2_VARIABLE if env.get("ROS_DISTRO", "").lower() in FAST_DDS_2_DISTROS else PROFILE_VARIABLE


def large_image_profile() -> Path | None:
    """``config/fastdds_large_images.xml`` of a source checkout, or ``share/pebal_ros/config/`` of an
    install prefix (colcon workspace, virtual environment); None when neither holds it."""
    parents = Path(__file__).resolve().parents
    candidates = [parents[1] / "config" / PROFILE_NAME]  # source checkout / editable install
    if len(parents) > 4:  # <prefix>/lib/pythonX.Y/site-packages/pebal_ros/dds_profile.py
        candidates.append(parents[4] / "share" / "pebal_ros" / "config" / PROFILE_NAME)
    return next((c for c in candidates if c.is_file()), None)


def uses_fast_dds(env: Mapping[str, str] = os.environ) -> bool:
    """Whether the ROS middleware of a process with this environment is Fast DDS (the default one)."""
    return env.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp").startswith("rmw_fastrtps")


def configured_profile(env: Mapping[str, str] = os.environ) -> str | None:
    """The profile file the environment names (either variable), else None."""
    return env.get(PROFILE_VARIABLE) or env.get(FAST_DDS_2_VARIABLE) or None


def apply_profile(env: MutableMapping[str, str] = os.environ) -> Path | None:
    """Name the large-image profile in ``env`` (default: this process's environment, to be called
    before ``rclpy.init``), unless the middleware is not Fast DDS or a profile is named already.
    Returns the profile set, or None when ``env`` was left as it was."""
    if not uses_fast_dds(env) or PROFILE_VARIABLE in env or FAST_DDS_2_VARIABLE in env:
        return None
    profile = large_image_profile()
    if profile is not None:
        env[profile_variable(env)] = str(profile)
    return profile


def profile_note(applied: Path | None, env: Mapping[str, str] = os.environ) -> str:
    """One log line saying which profile a process runs with (after :func:`apply_profile`)."""
    if applied is not None:
        return f"Fast DDS profile {applied} (large images over shared memory; set {PROFILE_VARIABLE} to use your own)"
    if not uses_fast_dds(env):
        return f"middleware {env.get('RMW_IMPLEMENTATION')}: no Fast DDS profile applied"
    named = configured_profile(env)
    return f"Fast DDS profile {named} (from the environment)" if named else "stock Fast DDS (no profile file found)"


def export_line(env: Mapping[str, str] = os.environ) -> str:
    """The shell line that gives a camera driver's process the large-image profile."""
    profile = large_image_profile()
    return f"export {profile_variable(env)}={profile or '<share/pebal_ros/config>/' + PROFILE_NAME}"


def lost_frames_text(gap: int, frame_bytes: int, env: Mapping[str, str] = os.environ) -> str:
    """The node's warning about ``gap`` frames of ``frame_bytes`` lost between a publisher and it."""
    return f"{gap} frame(s) lost before reaching the node (gap in the publisher's sequence numbers): " + (
        lost_frames_hint(frame_bytes, env)
    )


def lost_frames_hint(frame_bytes: int, env: Mapping[str, str] = os.environ) -> str:
    """What to do about frames lost between a camera and the node, for frames of ``frame_bytes``."""
    if frame_bytes > STOCK_SEGMENT_BYTES and uses_fast_dds(env):
        return (
            f"frames of {frame_bytes / 2**20:.1f} MiB exceed the {STOCK_SEGMENT_BYTES // 1024} KiB shared memory of a "
            f"publisher without the large-image profile; unless the camera's process has it, start it after "
            f"`{export_line(env)}` (pebal_camera, pebal_bag play and pebal.launch.py apply it themselves)"
        )
    return (
        "the transport dropped them (best_effort QoS under load) or they were overwritten in the subscription's "
        "history (depth 5) before the executor took them"
    )
