"""LostAndFound (Pinggera et al., IROS 2016): frame listing and the anomaly test protocol.

On-disk layout (Cityscapes-style; the sequence folder is the file-name prefix)::

    <root>/leftImg8bit/<split>/<seq>/<seq>_<seqnum:06d>_<frame:06d>_leftImg8bit.png
    <root>/gtCoarse/<split>/<seq>/<seq>_<seqnum:06d>_<frame:06d>_gtCoarse_labelIds.png
    <root>/gtCoarse/<split>/<seq>/..._gtCoarse_labelTrainIds.png     (Meta-OoD prepared, optional)
    <root>/camera/<split>/<seq>/..._camera.json                      (optional)
    <root>/timestamp/<split>/<seq>/..._timestamp.txt                 (optional, integer ns)

``<split>`` is ``train`` or ``test``; ``<seq>`` names a recording such as
``04_Maurener_Weg_8``. The camera JSON is the Cityscapes one: ``extrinsic`` {baseline, pitch,
roll, yaw, x, y, z} and ``intrinsic`` {fx, fy, u0, v0}.

Test protocol (Meta-OoD / PEBAL label table): label id 1 (free space) -> 0 (inlier); the hazard
objects (ids 2..43 except the "random non-hazards") -> 1 (anomaly); id 0 (unlabeled, ego
vehicle, background, out of ROI), the random non-hazards (31 marker pole, 33 post, 34 post stand,
36 small timber, 37 squared timber, 38 wheel cap, 39 thin wood: train id 0 in the reference
table, never counted there) and any other value -> 255 (void). ``non_hazards="anomaly"`` counts
the non-hazard objects as anomalies instead. When only the prepared ``labelTrainIds`` file exists
(Meta-OoD's conversion: 1 = free space, 2 = hazard, 0 = non-hazard, 255 = void) it is mapped
the same way.

:func:`list_frames` is the frame API (image, label, camera, timestamp per frame, sorted by
sequence and frame number) that the rosbag converter uses; ``LostAndFoundDataset``
(:mod:`pebal_core.data.lostandfound_dataset`) is the evaluation dataset built on it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from pebal_core.data.anomaly_pairs import label_lut
from pebal_core.data.base import DatasetError, require_dir
from pebal_core.labels import EVAL_ANOMALY, EVAL_INLIER

FREE_SPACE_ID = 1
HAZARD_IDS = (*range(2, 31), 32, 35, 40, 41, 42, 43)
NON_HAZARD_IDS = (31, 33, 34, 36, 37, 38, 39)
_FILE = re.compile(r"^(?P<seq>.+)_(?P<seqnum>\d{6})_(?P<frame>\d{6})_leftImg8bit\.png$")


def eval_lut(non_hazards: str = "void", train_ids: bool = False):
    """Raw LostAndFound label value -> 0/1/255 (see the module docstring)."""
    if non_hazards not in ("void", "anomaly"):
        raise ValueError(f"non_hazards must be 'void' or 'anomaly', got {non_hazards!r}")
    if train_ids:
        mapping = {1: EVAL_INLIER, 2: EVAL_ANOMALY}
        if non_hazards == "anomaly":
            mapping[0] = EVAL_ANOMALY
        return label_lut(mapping)
    mapping = {FREE_SPACE_ID: EVAL_INLIER, **dict.fromkeys(HAZARD_IDS, EVAL_ANOMALY)}
    if non_hazards == "anomaly":
        mapping.update(dict.fromkeys(NON_HAZARD_IDS, EVAL_ANOMALY))
    return label_lut(mapping)


@dataclass(frozen=True)
class Frame:
    """One LostAndFound frame and its companion files (``None`` where a file is absent)."""

    split: str
    sequence: str
    sequence_number: int
    frame: int
    image: Path
    label_ids: Path | None
    label_train_ids: Path | None
    camera_file: Path | None
    timestamp_file: Path | None

    @property
    def name(self) -> str:
        """``<seq>_<seqnum:06d>_<frame:06d>``, the Cityscapes-style frame id."""
        return f"{self.sequence}_{self.sequence_number:06d}_{self.frame:06d}"

    def camera(self) -> dict | None:
        """The parsed camera JSON (``extrinsic``, ``intrinsic``), or None without a camera file."""
        if self.camera_file is None:
            return None
        try:
            data = json.loads(self.camera_file.read_text())
        except (OSError, ValueError) as e:
            raise DatasetError(f"LostAndFound camera file {self.camera_file} is not readable JSON: {e}") from e
        if not isinstance(data, dict) or "intrinsic" not in data or "extrinsic" not in data:
            raise DatasetError(f"LostAndFound camera file {self.camera_file} lacks 'intrinsic'/'extrinsic' entries")
        return data

    def timestamp_ns(self) -> int | None:
        """The frame's timestamp in integer nanoseconds, or None without a timestamp file."""
        if self.timestamp_file is None:
            return None
        text = self.timestamp_file.read_text().strip()
        if not text.isdigit():
            raise DatasetError(f"LostAndFound timestamp file {self.timestamp_file} holds {text[:40]!r}, not an integer")
        return int(text)


def _companion(root: Path, kind: str, split: str, seq: str, stem: str, suffix: str) -> Path | None:
    path = root / kind / split / seq / f"{stem}_{suffix}"
    return path if path.is_file() else None


def list_sequences(root: str | os.PathLike, split: str = "test") -> list[str]:
    """Sequence folder names of a split, sorted."""
    images = require_dir(Path(root) / "leftImg8bit" / split, f"LostAndFound images (<root>/leftImg8bit/{split}/<seq>/)")
    return sorted(p.name for p in images.iterdir() if p.is_dir())


def list_frames(root: str | os.PathLike, split: str = "test", sequence: str | None = None) -> list[Frame]:
    """Every frame of a split (or of one sequence), sorted by sequence, sequence number and frame."""
    root = Path(root)
    sequences = list_sequences(root, split) if sequence is None else [sequence]
    frames = []
    for seq in sequences:
        folder = require_dir(root / "leftImg8bit" / split / seq, f"LostAndFound sequence {seq!r}")
        for path in folder.iterdir():
            m = _FILE.match(path.name)
            if m is None:
                continue
            if m["seq"] != seq:
                raise DatasetError(f"LostAndFound image {path} is named for sequence {m['seq']!r} but lies in {folder}")
            stem = path.name[: -len("_leftImg8bit.png")]
            frames.append(
                Frame(
                    split=split,
                    sequence=seq,
                    sequence_number=int(m["seqnum"]),
                    frame=int(m["frame"]),
                    image=path,
                    label_ids=_companion(root, "gtCoarse", split, seq, stem, "gtCoarse_labelIds.png"),
                    label_train_ids=_companion(root, "gtCoarse", split, seq, stem, "gtCoarse_labelTrainIds.png"),
                    camera_file=_companion(root, "camera", split, seq, stem, "camera.json"),
                    timestamp_file=_companion(root, "timestamp", split, seq, stem, "timestamp.txt"),
                )
            )
    return sorted(frames, key=lambda f: (f.sequence, f.sequence_number, f.frame))
