"""Joint image/label augmentation for training: random flip, random rescale, crop with void padding.

Every transform takes an explicit ``numpy.random.Generator``, so that a sample's augmentation
depends only on the seed it is given (reproducible under any number of loader workers, and
across a resume). The order is the reference implementation's: horizontal flip, rescale by a
factor drawn uniformly from ``scale``, then a ``crop`` at a uniformly random position; where the
rescaled image is smaller than the crop it is centred and padded, the image with the ImageNet
mean colour (0 after normalisation, as the reference pads the normalised image with 0) and the
label with ``VOID_ID``. Images are resized bilinearly, labels with nearest neighbour. With
``keep_anomaly`` the crop of an image with anomalous pixels (``ANOMALY_ID``) is drawn among the
windows that contain one of them, picked at random: small pasted objects would otherwise often
fall outside a crop much smaller than the frame.

The paper states "random scale [0.5, 2.0]"; the reference code draws the factor from
{0.5, 0.75, 1, 1.5, 1.75, 2} and flips with probability 0.8. Here the factor is uniform in
``scale`` and the flip probability is ``flip`` (0.5 by default; 0.8 matches the reference).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pebal_core.labels import ANOMALY_ID, VOID_ID
from pebal_core.preprocessing import IMAGENET

MEAN_RGB = tuple(int(round(m)) for m in IMAGENET.mean)
"""ImageNet mean colour on the 0..255 scale, the image padding value."""


def resize_pair(image: np.ndarray, label: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Resize to ``size`` = (H, W): image bilinear, label nearest neighbour."""
    h, w = size
    if (h, w) == image.shape[:2]:
        return image, label
    return (
        cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR),
        cv2.resize(label, (w, h), interpolation=cv2.INTER_NEAREST),
    )


def crop_or_pad(
    image: np.ndarray,
    label: np.ndarray,
    size: tuple[int, int],
    rng: np.random.Generator,
    focus: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A ``size`` = (H, W) window at a random position; dimensions smaller than it are centred and padded.

    ``focus``: a pixel ``(y, x)`` the window must contain (its position is drawn among those that do).
    """
    out_img = np.empty((*size, 3), dtype=np.uint8)
    out_img[...] = MEAN_RGB
    out_lab = np.full(size, VOID_ID, dtype=np.uint8)
    src, dst = [], []
    focus = (None, None) if focus is None else focus
    for n, want, u, f in zip(image.shape[:2], size, rng.random(2), focus, strict=True):
        if n >= want:
            lo, hi = (0, n - want) if f is None else (max(0, f - want + 1), min(f, n - want))
            start = lo + int(u * (hi - lo + 1))
            src.append(slice(start, start + want))
            dst.append(slice(0, want))
        else:
            offset = (want - n) // 2
            src.append(slice(0, n))
            dst.append(slice(offset, offset + n))
    out_img[dst[0], dst[1]] = image[src[0], src[1]]
    out_lab[dst[0], dst[1]] = label[src[0], src[1]]
    return out_img, out_lab


@dataclass(frozen=True)
class JointTransform:
    """Training augmentation of an ``(image, label)`` pair (see the module docstring).

    Attributes:
        scale: range of the random rescaling factor; ``(1, 1)`` disables it.
        crop: output size (H, W); ``None`` keeps the rescaled size.
        flip: probability of a horizontal flip.
        keep_anomaly: crops of images with anomalous pixels contain at least one of them.
    """

    scale: tuple[float, float] = (0.5, 2.0)
    crop: tuple[int, int] | None = (900, 900)
    flip: float = 0.5
    keep_anomaly: bool = False

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        u_flip, u_scale = rng.random(2)
        if u_flip < self.flip:
            image, label = cv2.flip(image, 1), cv2.flip(label, 1)
        s = self.scale[0] + u_scale * (self.scale[1] - self.scale[0])
        if s != 1.0:
            h, w = label.shape
            image, label = resize_pair(image, label, (max(1, int(h * s)), max(1, int(w * s))))
        if self.crop is not None:
            focus = None
            if self.keep_anomaly:
                where = np.flatnonzero(label == ANOMALY_ID)
                if where.size:
                    focus = divmod(int(where[rng.integers(where.size)]), label.shape[1])
            image, label = crop_or_pad(image, label, self.crop, rng, focus)
        return np.ascontiguousarray(image), np.ascontiguousarray(label)
