"""A tiny LostAndFound tree in the real on-disk layout, for the rosbag and demo tests.

Each frame: sky (label 0, void) over a road (label 1, free space) with a coloured box standing on
it (label 2, a hazard -> anomaly) that moves from frame to frame; camera JSON and integer-ns
timestamp files alongside.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

H, W = 64, 96
FX, FY, U0, V0 = 80.0, 82.0, 47.5, 30.0
T0_NS = 1_400_000_000_123_456_789
"""First timestamp (ns); frames are 100 ms apart."""


def stem(seq: str, seqnum: int, frame: int) -> str:
    return f"{seq}_{seqnum:06d}_{frame:06d}"


def frame_arrays(k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(rgb uint8 H x W x 3, raw LostAndFound labelIds uint8 H x W)`` of frame ``k``."""
    rng = np.random.default_rng(seed * 1000 + k)
    rgb = np.empty((H, W, 3), np.uint8)
    rgb[: H // 2] = (110, 160, 230)
    rgb[H // 2 :] = (90, 90, 95)
    label = np.zeros((H, W), np.uint8)
    label[H // 2 :] = 1
    x0 = 10 + 7 * k
    rgb[40:52, x0 : x0 + 14] = (230, 40, 200)
    label[40:52, x0 : x0 + 14] = 2
    noise = rng.integers(-12, 13, (H, W, 3))
    return (rgb.astype(np.int16) + noise).clip(0, 255).astype(np.uint8), label


def make_tree(
    root: Path,
    sequences: dict[str, int] | None = None,
    split: str = "test",
    timestamps: bool = True,
    camera: bool = True,
) -> list[str]:
    """Write the tree; ``sequences`` maps sequence name -> number of frames. Returns the frame names in order."""
    sequences = sequences or {"01_Hanns_Klemm_Str_45": 3, "02_Hanns_Klemm_Str_44": 2}
    names = []
    t = T0_NS
    for s, (seq, n) in enumerate(sorted(sequences.items())):
        for k in range(n):
            name = stem(seq, s, 10 * k + 5)
            names.append(name)
            rgb, label = frame_arrays(len(names) - 1)
            for kind, suffix, arr in (
                ("leftImg8bit", "leftImg8bit.png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)),
                ("gtCoarse", "gtCoarse_labelIds.png", label),
            ):
                path = root / kind / split / seq / f"{name}_{suffix}"
                path.parent.mkdir(parents=True, exist_ok=True)
                assert cv2.imwrite(str(path), arr)
            if camera:
                cam = {
                    "extrinsic": {
                        "baseline": 0.21,
                        "pitch": 0.03,
                        "roll": 0.0,
                        "yaw": 0.0,
                        "x": 1.7,
                        "y": 0.1,
                        "z": 1.2,
                    },
                    "intrinsic": {"fx": FX, "fy": FY, "u0": U0, "v0": V0},
                }
                path = root / "camera" / split / seq / f"{name}_camera.json"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(json.dumps(cam))
            if timestamps:
                path = root / "timestamp" / split / seq / f"{name}_timestamp.txt"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(f"{t}\n")
            t += 100_000_000
    return names
