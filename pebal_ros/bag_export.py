"""Image topics of a bag -> PNG files (``pebal_bag export``), e.g. the node's ``anomaly_overlay`` of a recording.

Each ``sensor_msgs/Image`` (a camera encoding: ``rgb8``, ``bgr8``, ``mono8``, ``rgba8``, ``bgra8``)
or ``sensor_msgs/CompressedImage`` (JPEG, PNG) message becomes one PNG file in the output folder,
named after its header stamp (``<sec>.<nanosec:09d>.png``) unless the caller names the frames
(``names``: stamp in ns -> file stem, as ``pebal_demo`` does with the frame index). Files are
written in bag order; a message that does not decode is an error naming it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pebal_core.images import write_rgb
from pebal_ros.bag_storage import BagError, BagReader, stamp_ns
from pebal_ros.conversions import ImageConverter, ImageError

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


def export_images(
    bag: str | os.PathLike,
    topic: str,
    out: str | os.PathLike,
    names: dict[int, str] | None = None,
    progress: bool = False,
) -> list[tuple[int, Path, np.ndarray]]:
    """Write every image of ``topic`` as a PNG under ``out``; returns ``(stamp ns, file, RGB uint8 H x W x 3)``
    per message, in bag order."""
    out = Path(out)
    converter = ImageConverter()
    written = []
    with BagReader(bag) as reader:
        topics = reader.topics()
        if topic not in topics:
            raise BagError(f"bag {bag} has no topic {topic}; its topics: {', '.join(topics) or 'none'}")
        msgtype = topics[topic].msgtype
        if msgtype not in IMAGE_TYPES:
            raise BagError(f"{topic} in {bag} holds {msgtype}, not images ({', '.join(IMAGE_TYPES)})")
        out.mkdir(parents=True, exist_ok=True)
        messages = reader.messages([topic])
        for i, (conn, _, data) in enumerate(tqdm(messages, total=topics[topic].count, disable=not progress)):
            msg = reader.deserialize(data, conn, i)
            ns = stamp_ns(msg.header.stamp)
            try:
                rgb = converter.compressed_to_rgb(msg) if msgtype.endswith("CompressedImage") else converter.to_rgb(msg)
            except ImageError as e:
                raise BagError(f"{topic} message {i} in {bag} (stamp {ns} ns) is not a usable image: {e}") from e
            name = (names or {}).get(ns) or f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"
            path = out / f"{name}.png"
            write_rgb(path, rgb)
            written.append((ns, path, rgb))
    return written
