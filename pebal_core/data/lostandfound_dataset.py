"""LostAndFound as an evaluation dataset (an :class:`~pebal_core.data.anomaly_pairs.AnomalyPairs`); the layout, the
frame API and the label protocol are in :mod:`pebal_core.data.lostandfound`."""

from __future__ import annotations

import os
from pathlib import Path

from pebal_core.data.anomaly_pairs import AnomalyPairs, Sample, require_samples
from pebal_core.data.base import DatasetError
from pebal_core.data.lostandfound import eval_lut, list_frames


class LostAndFoundDataset(AnomalyPairs):
    """LostAndFound under the anomaly test protocol.

    Items: ``{"image", "label" (0/1/255), "name", "sequence", "frame", "camera" (dict or None),
    "timestamp_ns" (int or None)}``. Frames without a label file are an error (use
    :func:`list_frames` to browse unlabelled sequences).

    Args:
        root: the LostAndFound folder (holding ``leftImg8bit/``, ``gtCoarse/``, ...).
        split: ``test`` (the evaluation split, 1203 frames) or ``train``.
        non_hazards: ``"void"`` (reference protocol) or ``"anomaly"``.
    """

    def __init__(self, root: str | os.PathLike, split: str = "test", non_hazards: str = "void") -> None:
        frames = list_frames(root, split)
        lut_ids, lut_train = eval_lut(non_hazards), eval_lut(non_hazards, train_ids=True)
        samples = []
        luts = []
        for f in frames:
            label = f.label_ids or f.label_train_ids
            if label is None:
                raise DatasetError(
                    f"LostAndFound frame {f.image} has no label: expected "
                    f"{Path(root) / 'gtCoarse' / split / f.sequence / (f.name + '_gtCoarse_labelIds.png')}"
                )
            luts.append(lut_ids if f.label_ids is not None else lut_train)
            samples.append(Sample(f.image, label, f.name, {"sequence": f.sequence, "frame": f.frame}))
        where = Path(root) / "leftImg8bit" / split
        super().__init__(
            require_samples(samples, where, "<seq>/<seq>_<seqnum>_<frame>_leftImg8bit.png files"),
            lut_ids,
            f"LostAndFound {split} at {root}",
        )
        self.frames = frames
        self._luts = luts

    def lut_for(self, index: int):
        return self._luts[index]

    def __getitem__(self, index: int) -> dict:
        item = super().__getitem__(index)
        frame = self.frames[index]
        item["camera"] = frame.camera()
        item["timestamp_ns"] = frame.timestamp_ns()
        return item
