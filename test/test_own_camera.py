"""The README's own-camera commands, run exactly as written: 60 real 1280x720 frames at 10 frames/s from
``pebal_camera`` into ``pebal_node`` (default model, ``config/pebal.yaml``), its overlays recorded and
exported.

The block between ``<!-- own-camera:begin -->`` and ``<!-- own-camera:end -->`` in README.md runs as
one bash script, in a folder laid out like this repository (``.venv``, ``config`` and
``../shared`` linked), so that its relative paths and its outputs (``run/``, ``overlays/``) stay out
of the checkout. The node's own ``/diagnostics`` count what arrived: every frame must reach it (the
large-image transport profile, which the console scripts apply themselves, is what makes a
1280x720 ``rgb8`` frame of 2.6 MiB arrive at all). The node keeps running after the script, as it
would for a user, and is stopped with Ctrl-C (SIGINT) at the end.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess

import cv2
import pytest
import rclpy
from conftest import ROOT
from diagnostic_msgs.msg import DiagnosticArray
from node_harness import RELIABLE, RosSession, wait_until

from pebal_ros.dds_profile import FAST_DDS_2_VARIABLE, PROFILE_VARIABLE

pytestmark = [pytest.mark.ros, pytest.mark.realdata, pytest.mark.slow]
FRAMES = 60


def readme_block() -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(r"<!-- own-camera:begin -->\n```bash\n(.*?)```\n<!-- own-camera:end -->", text, re.S)
    assert match, "README.md lost its own-camera block"
    return match.group(1)


def test_readme_own_camera_commands_deliver_every_real_frame(realdata, ros_env, tmp_path):
    images = realdata / "Validation_Dataset" / "RoadAnomaly" / "images"
    assert len(list(images.glob("*.jpg"))) == FRAMES
    work = tmp_path / "repo"
    work.mkdir()
    for name in (".venv", "config"):
        (work / name).symlink_to(ROOT / name)
    (tmp_path / "shared").symlink_to(realdata.parent)
    block = readme_block()
    assert str(images.relative_to(realdata.parent.parent)) in block  # ../shared/realdata/... as in the README
    env = {**os.environ, **ros_env, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for name in (PROFILE_VARIABLE, FAST_DDS_2_VARIABLE):  # nothing set: the console scripts must do it
        env.pop(name, None)
    status: dict[str, str] = {}

    def on_diagnostics(msg: DiagnosticArray) -> None:
        for s in msg.status:
            if s.name.startswith("pebal_node"):
                status.update({kv.key: kv.value for kv in s.values})

    with RosSession() as session:
        watcher = session.add(rclpy.create_node("watch", context=session.context))
        watcher.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, RELIABLE)
        log = tmp_path / "readme.log"  # a file, not a pipe: the node left running keeps its output open
        with log.open("w") as fh:
            script = subprocess.Popen(
                ["bash", "-c", block],
                cwd=work,
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # the node it leaves running is in this process group
            )
        try:
            script.wait(timeout=600)
            out = log.read_text()
            assert script.returncode == 0, out
            wait_until(lambda: status.get("frames_in") == str(FRAMES), 30, f"{FRAMES} frames in, got {status}")
            final = dict(status)
        finally:
            os.killpg(script.pid, signal.SIGINT)  # Ctrl-C: the node still running in the background
    print(f"node: {final['frames_in']} frames in, {final['frames_lost_before_node']} lost before it, "
          f"{final['frames_out']} processed, {final['frames_dropped']} dropped for newer ones")  # fmt: skip
    assert final["frames_in"] == str(FRAMES), (final, out)
    assert final["frames_lost_before_node"] == "0", (final, out)
    assert "published 60 frames" in out and "Fast DDS profile" in out, out
    overlays = sorted((work / "overlays").glob("*.png"))
    assert overlays and len(overlays) == int(final["published_anomaly_overlay"]), (final, out)
    assert cv2.imread(str(overlays[0])).shape == (720, 1280, 3)
    assert f"wrote {len(overlays)} images of /anomaly_overlay" in out
