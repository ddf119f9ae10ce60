"""What ``pebal synth`` generates: :class:`WorldConfig` (light module, no imaging dependencies)."""

from __future__ import annotations

import dataclasses

PARTS = ("cityscapes", "coco", "fishyscapes", "lostandfound")


@dataclasses.dataclass(frozen=True)
class WorldConfig:
    """What to generate. Sizes are ``height x width`` pixels; counts are images (or sequences)."""

    seed: int = 0
    height: int = 256
    width: int = 512
    train: int = 600
    val: int = 100
    coco: int = 150
    coco_height: int = 144
    coco_width: int = 192
    fishyscapes: int = 30  # per split (LostAndFound and Static)
    sequences: int = 4
    frames: int = 30
    fps: float = 10.0
    parts: tuple[str, ...] = PARTS

    def __post_init__(self) -> None:
        for name in ("height", "width", "coco_height", "coco_width"):
            if getattr(self, name) < 32:
                raise ValueError(f"{name}={getattr(self, name)} is too small (at least 32 pixels)")
        for name in ("train", "val", "coco", "fishyscapes", "sequences", "frames"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.fps <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        unknown = set(self.parts) - set(PARTS)
        if unknown:
            raise ValueError(f"unknown part(s) {sorted(unknown)}; choose from {', '.join(PARTS)}")


SMALL = {
    "height": 64,
    "width": 128,
    "train": 6,
    "val": 3,
    "coco": 5,
    "coco_height": 48,
    "coco_width": 64,
    "fishyscapes": 3,
    "sequences": 2,
    "frames": 4,
}
"""Overrides of ``--small``: a tiny world for tests and smoke runs (seconds)."""
