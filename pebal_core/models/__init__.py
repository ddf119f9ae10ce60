"""The segmentation networks PEBAL fine-tunes, their registry and their checkpoints."""

from pebal_core.models.base import SegmentationModel
from pebal_core.models.registry import build_model, list_models

__all__ = ["SegmentationModel", "build_model", "list_models"]
