"""The ego-vehicle mask of a recorded camera (``pebal_bag mask``).

A recording holds many frames of few places: consecutive frames show the same scene, which would
make the whole scene look persistent to the estimate (:mod:`pebal_core.alarms.ego_estimate`). So
the frames are sampled: at least ``every`` seconds of bag time apart, and at most ``max_frames``
spread over the whole recording (the gap grows with the recording's length). Both
``sensor_msgs/Image`` and ``sensor_msgs/CompressedImage`` topics are read; a chosen frame that does
not decode is an error naming it. The estimate and the files it writes are those of ``pebal mask
estimate`` (:func:`pebal_core.ego_mask_files.estimate_and_save`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pebal_ros.bag_storage import BagError, BagReader
from pebal_ros.conversions import ImageConverter, ImageError

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


@dataclass
class BagFrames:
    """The frames of one camera topic chosen for an estimate.

    Attributes:
        bag: the bag folder.
        topic: the image topic.
        times: bag times (ns) of the chosen messages.
    """

    bag: Path
    topic: str
    times: list[int]

    @property
    def names(self) -> list[str]:
        """A name per chosen frame: its time from the start of the recording."""
        start = self.times[0] if self.times else 0
        return [f"t = {(t - start) / 1e9:.1f} s" for t in self.times]

    def __iter__(self) -> Iterator[np.ndarray]:
        """The chosen frames as RGB ``uint8 H x W x 3``, in time order."""
        converter = ImageConverter()
        wanted = set(self.times)
        with BagReader(self.bag) as reader:
            for conn, ts, data in reader.messages([self.topic]):
                if ts not in wanted:
                    continue
                wanted.discard(ts)
                msg = reader.deserialize(data, conn)
                try:
                    if conn.msgtype.endswith("CompressedImage"):
                        yield converter.compressed_to_rgb(msg)
                    else:
                        yield converter.to_rgb(msg)
                except ImageError as e:
                    start = self.times[0]
                    raise BagError(
                        f"the frame at t = {(ts - start) / 1e9:.1f} s on {self.topic} of {self.bag} does not decode "
                        f"({e}); re-record it, or estimate from a folder of good frames (pebal mask estimate)"
                    ) from e


def sample_frames(bag: str | os.PathLike, topic: str, every: float = 1.0, max_frames: int = 200) -> BagFrames:
    """The messages of ``topic`` at least ``every`` seconds apart, at most ``max_frames`` of them
    spread over the recording (module docstring)."""
    if every < 0 or max_frames < 1:
        raise ValueError(f"every must be >= 0 s and max_frames >= 1, got {every} and {max_frames}")
    with BagReader(bag) as reader:
        (conn,) = reader.connections([topic])
        if conn.msgtype not in IMAGE_TYPES:
            kinds = ", ".join(IMAGE_TYPES)
            raise BagError(f"topic {topic} of {bag} carries {conn.msgtype}, not camera images ({kinds})")
        times = [ts for _, ts, _ in reader.messages([topic])]
    if not times:
        raise BagError(f"topic {topic} of {bag} holds no messages")
    gap = max(every * 1e9, (times[-1] - times[0]) / max_frames)
    chosen, last = [], None
    for ts in times:
        if last is None or ts - last >= gap:
            chosen.append(ts)
            last = ts
    return BagFrames(Path(bag), topic, chosen[:max_frames])
