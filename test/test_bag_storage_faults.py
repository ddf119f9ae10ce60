"""Storage failures of the bag tools on real disks: a recorder whose disk fills up, a recovery onto
a full disk, and a storage that loses messages it was given.

The full disk is a real 5 MiB tmpfs where this machine lets the test mount one (root), and a
5 MiB file-size limit on the recorder process (``RLIMIT_FSIZE``: no privileges needed) everywhere;
the recorder is the real ``pebal_bag record`` console script over real DDS (localhost, random
domain id). The run and its verdict are those of ``benchmarks/probe_disk_full.py``, which repeats
them (50 runs per storage in ``docs/recording_and_launch.md``).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))  # the probe's run and verdict, shared with this test
from probe_disk_full import CannotMount, judge, record_until_full, small_disk  # noqa: E402

from pebal_ros.bag_storage import BagError, BagReader, bag_writer, partial_path  # noqa: E402


@pytest.mark.ros
@pytest.mark.parametrize("disk", ["tmpfs", "fsize"])
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_a_full_disk_leaves_an_unfinished_recording_that_recovers_consistently(ros_env, tmp_path, storage, disk):
    """The issue's run (SQLite: metadata.yaml said 69 messages, the .db3 held 45-50, traceback,
    exit 1): now one error line naming the file and the cause, exit 2, no finished bag, and the
    unfinished recording recovers into a bag whose every message is readable and was sent."""
    try:
        with small_disk(tmp_path, disk) as (folder, preexec):
            run = record_until_full(folder, storage, ros_env, preexec)
            verdict = judge(run, tmp_path / "recovered")
    except CannotMount as e:
        pytest.skip(f"{e}: the fsize case covers a full disk without mounting")
    assert verdict.survived, (verdict.reasons, run.output)
    (error,) = [line for line in run.output.splitlines() if "error:" in line]
    cause = "No space left on device" if disk == "tmpfs" else "File too large"
    if storage == "sqlite3":
        cause = "disk is full" if disk == "tmpfs" else "disk I/O error"
    assert cause in error, error
    assert "recording to" in error and "stopped" in error and "unfinished" in error, error
    assert len(run.sent) > verdict.recovered  # the disk really filled up before the stream ended


@pytest.mark.parametrize("disk", ["tmpfs", "fsize"])
def test_recover_onto_a_full_disk_names_the_path_and_leaves_nothing(tmp_path, disk):
    """The issue: "[Errno 28]" without a path, and a 0-byte .X_recovered.partial left behind that
    blocked every retry ("the process was killed or crashed"). The real ``pebal_bag recover``."""
    import numpy as np

    source = tmp_path / "src"
    rng = np.random.default_rng(0)
    with bag_writer(source, "mcap") as bag:
        bag.add_topic("/img", "sensor_msgs/msg/Image")
        for k in range(80):  # 8 MB: more than the 5 MiB disk
            bag.write_raw("/img", 1_000 + k, rng.integers(0, 256, 100_000, dtype=np.uint8).tobytes())
    script = str(Path(sys.executable).parent / "pebal_bag")
    try:
        with small_disk(tmp_path, disk) as (folder, preexec):
            out = folder / "copy"
            run = subprocess.run(
                [script, "recover", str(source), "-o", str(out)], capture_output=True, text=True, preexec_fn=preexec
            )
            assert run.returncode == 2, run.stdout + run.stderr
            err = run.stderr.strip()
            assert len(err.splitlines()) == 1 and err.startswith("pebal_bag: error:"), err
            cause = "No space left on device" if disk == "tmpfs" else "File too large"
            assert str(out) in err and cause in err and "nothing was kept" in err, err
            assert not out.exists() and list(folder.iterdir()) == []
    except CannotMount as e:
        pytest.skip(str(e))
    # a retry onto a disk with room works (the source is untouched)
    again = subprocess.run(
        [script, "recover", str(source), "-o", str(tmp_path / "copy")], capture_output=True, text=True
    )
    assert again.returncode == 0, again.stdout + again.stderr
    with BagReader(tmp_path / "copy") as reader:
        assert sum(1 for _ in reader.messages()) == 80


def test_a_storage_that_lost_messages_is_never_finished(tmp_path):
    """metadata.yaml never counts a message the storage does not hold: SQLite may roll back a
    whole open transaction after an error; here rows vanish from the real database behind the
    writer's back (as that rollback does), and the bag is kept unfinished instead of finished."""
    out = tmp_path / "rec"
    with pytest.raises(BagError, match=r"holds 3 messages of /img, 5 were written") as info:
        with bag_writer(out, "sqlite3", keep_unfinished=True) as bag:
            bag.add_topic("/img", "sensor_msgs/msg/Image")
            for k in range(5):
                bag.write_raw("/img", 1_000 + k, bytes(8))
            bag.writer.storage.conn.execute("DELETE FROM messages WHERE id > 3")
    assert "pebal_bag recover" in str(info.value)
    assert not out.exists() and (partial_path(out) / "rec.db3").is_file()
