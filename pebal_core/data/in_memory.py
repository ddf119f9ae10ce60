"""A dataset kept in memory after the first read, for training (imports torch).

Kept apart from :mod:`pebal_core.data.base`, which the evaluation sets import without torch.
"""

from __future__ import annotations

from torch.utils.data import Dataset


class InMemory(Dataset):
    """``dataset`` whose items are read once and then kept in memory (for a handful of frames
    repeated many times per epoch; items are shared, so callers must not modify them in place)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self._items: dict[int, dict] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        if index not in self._items:
            self._items[index] = self.dataset[index]
        return self._items[index]
