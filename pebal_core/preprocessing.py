"""Input normalisation: how an RGB ``uint8`` camera image becomes a network input tensor.

Every model carries a :class:`Normalization` (stored in checkpoint metadata and in exported ONNX
metadata), because real checkpoints disagree: the paper's models use ImageNet mean/std on
RGB/255, ENet uses RGB/255 with no mean/std, ESPNet subtracts a BGR mean and divides by a std on
the 0..255 scale and *then* divides by 255.

The transform is, per channel c (after optional RGB->BGR reordering)::

    y_c = (x_c - mean_c) / std_c * post_scale        x_c in 0..255
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Normalization:
    """Affine input normalisation, with mean and std on the 0..255 scale."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    bgr: bool = False
    """Reorder RGB input to BGR before normalising (the channel order the network expects)."""
    post_scale: float = 1.0

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std), "bgr": self.bgr, "post_scale": self.post_scale}

    @classmethod
    def from_dict(cls, d: dict) -> Normalization:
        return cls(
            mean=tuple(float(v) for v in d["mean"]),
            std=tuple(float(v) for v in d["std"]),
            bgr=bool(d.get("bgr", False)),
            post_scale=float(d.get("post_scale", 1.0)),
        )

    def scale_and_shift(self) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel ``(a, b)`` with ``y = a * x + b`` for x on the 0..255 scale (float32, shape 3)."""
        std = np.asarray(self.std, dtype=np.float64)
        mean = np.asarray(self.mean, dtype=np.float64)
        a = self.post_scale / std
        b = -mean * a
        return a.astype(np.float32), b.astype(np.float32)


IMAGENET = Normalization(mean=(0.485 * 255, 0.456 * 255, 0.406 * 255), std=(0.229 * 255, 0.224 * 255, 0.225 * 255))
"""ImageNet mean/std on RGB (``docs/models.md``): the reference PEBAL models and every trunk built here."""
UNIT_RANGE = Normalization(mean=(0.0, 0.0, 0.0), std=(255.0, 255.0, 255.0))
"""RGB/255 with no mean/std (the real ENet checkpoint, ``docs/data_sources.md``)."""
ESPNET_CITYSCAPES = Normalization(
    mean=(72.3923111, 82.90893555, 73.15840149),
    std=(45.3192215, 46.15289307, 44.91483307),
    bgr=True,
    post_scale=1.0 / 255.0,
)
"""sacmehta/ESPNet Cityscapes models: BGR, mean/std in B, G, R order on the 0..255 scale, then /255."""
DABNET_CITYSCAPES = Normalization(mean=(73.1583, 82.9090, 72.3924), std=(1.0, 1.0, 1.0))
"""The DABNet Cityscapes model: RGB on the 0..255 scale minus the Cityscapes mean, no std. Its training
code subtracts the mean (72.3924, 82.9090, 73.1583) from the B, G, R channels of the image read by
OpenCV, then reorders the channels to RGB (``docs/data_sources.md``); here the same mean in R, G, B
order."""


def normalize_images(images: torch.Tensor, norm: Normalization) -> torch.Tensor:
    """Normalise a batch of RGB images.

    Args:
        images: ``uint8`` or float tensor ``B x 3 x H x W`` with RGB values on the 0..255 scale.
        norm: the model's normalisation.

    Returns:
        float32 tensor ``B x 3 x H x W`` in the channel order and scale the network expects.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected B x 3 x H x W images, got shape {tuple(images.shape)}")
    x = images.float()
    if norm.bgr:
        x = x.flip(1)
    a, b = norm.scale_and_shift()
    a_t = torch.as_tensor(a, device=x.device).view(1, 3, 1, 1)
    b_t = torch.as_tensor(b, device=x.device).view(1, 3, 1, 1)
    return x * a_t + b_t


def image_to_tensor(rgb: np.ndarray, norm: Normalization) -> torch.Tensor:
    """Convert one RGB ``uint8`` image ``H x W x 3`` to a normalised ``1 x 3 x H x W`` float tensor."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"expected an H x W x 3 RGB image, got shape {rgb.shape}")
    t = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1).unsqueeze(0)
    return normalize_images(t, norm)
