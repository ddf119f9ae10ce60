"""The ``torch`` backend: eager PyTorch on any checkpoint format, CPU or CUDA."""

from __future__ import annotations

import os

import numpy as np
import torch

from pebal_core.backends.base import Backend
from pebal_core.denormals import flush_to_zero
from pebal_core.devices import torch_device
from pebal_core.models.base import SegmentationModel
from pebal_core.models.checkpoint import load_model
from pebal_core.preprocessing import image_to_tensor
from pebal_core.scoring import labels_and_score


class TorchBackend(Backend):
    """Eager PyTorch inference (CPU or CUDA) of a checkpoint file, or of a loaded model
    (:meth:`from_model`); ``arch`` names the network of a checkpoint without project metadata (a
    bare state_dict such as a real Cityscapes ESPNet; see ``pebal models``).

    On the CPU every call runs with flush-to-zero on (:func:`pebal_core.denormals.flush_to_zero`,
    the previous mode restored afterwards; ``flush_denormal=False`` turns it off, for measuring
    what it saves): a denormal activation then costs no more than any other number.
    """

    name = "torch"

    def __init__(
        self,
        path: str | os.PathLike,
        device: str = "cpu",
        smoothing: bool = True,
        arch: str | None = None,
        flush_denormal: bool = True,
        **_: object,
    ) -> None:
        self._setup(load_model(path, arch=arch), device, smoothing, flush_denormal)

    @classmethod
    def from_model(
        cls, model: SegmentationModel, device: str | None = None, smoothing: bool = True, flush_denormal: bool = True
    ) -> TorchBackend:
        """A backend over an already loaded ``model`` (moved to ``device``, default: where it is)."""
        backend = cls.__new__(cls)
        backend._setup(model, device or str(next(model.parameters()).device), smoothing, flush_denormal)
        return backend

    def _setup(self, model: SegmentationModel, device: str, smoothing: bool, flush_denormal: bool) -> None:
        self.device = torch_device(device)
        self.model = model.to(self.device).eval()
        self.metadata = {"arch": getattr(model, "arch", None), **getattr(model, "checkpoint_metadata", {})}
        self.smoothing = smoothing
        self.flush_denormal = bool(flush_denormal) and self.device.type == "cpu"

    def logits(self, rgb: np.ndarray) -> torch.Tensor:
        """Normalised with the model's normalisation, zero-padded to its ``size_divisor``, run,
        padding cropped: ``1 x C x H x W`` logits on the backend's device."""
        with flush_to_zero(self.flush_denormal), torch.inference_mode():
            x = image_to_tensor(rgb, self.model.normalization).to(self.device)
            return self.model.forward_padded(x)

    def run(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with flush_to_zero(self.flush_denormal), torch.inference_mode():
            labels, score = labels_and_score(self.logits(rgb), self.smoothing)
            return labels[0].cpu().numpy(), score[0].float().cpu().numpy()
