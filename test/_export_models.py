"""Test models for the export tests: untrained zoo networks made to behave like trained ones.

A freshly initialised network has BatchNorm running statistics (0, 1) that do not match its
activations, so deep trunks (ResNet-101) produce logits in the thousands. Trained Cityscapes
models give logits of order 10..40. :func:`realistic_model` therefore (1) sets every BatchNorm's
running statistics from training-mode passes over :func:`camera_like` images, (2) scales the
last BatchNorm of every ResNet residual branch by ``RESIDUAL_GAIN`` (trained ResNets have small
residual-branch gains; with unit gains 23 stacked random blocks make the network so
ill-conditioned that float32 torch itself differs from float64 torch by more than 1e-3) and
(3) scales the classifier so that the largest logit magnitude on such an image is
``LOGIT_SCALE``. The ONNX
tolerances of the export checks (score max abs diff <= 1e-3 in fp32) are meant for models like that.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from pebal_core.alarms.operating_point import OperatingPoint, StoredPoints
from pebal_core.models import build_model
from pebal_core.models.checkpoint import save_checkpoint
from pebal_core.models.resnet import BasicBlock, Bottleneck
from pebal_core.preprocessing import normalize_images

LOGIT_SCALE = 30.0
RESIDUAL_GAIN = 0.25
SMALL_KWARGS = {"resnet18": {"width": 0.25}}
"""Architecture options that keep the test networks small where the zoo allows it."""


def camera_like(h: int, w: int, seed: int = 0, batch: int = 1) -> np.ndarray:
    """uint8 ``batch x 3 x H x W`` RGB images with smooth structure plus noise (not pure noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    out = []
    for _ in range(batch):
        phase = rng.uniform(0, 6, 3)
        base = np.stack([np.sin(6 * xx + p) * np.cos(4 * yy - p) for p in phase]) * 90 + 128
        out.append(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8))
    return np.stack(out)


@torch.no_grad()
def realistic_model(arch: str, size: tuple[int, int] = (64, 128), seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model(arch, **{**SMALL_KWARGS.get(arch, {}), **kwargs})
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average over the calibration passes
            m.reset_running_stats()
        if isinstance(m, BasicBlock):
            m.bn2.weight.mul_(RESIDUAL_GAIN)
        if isinstance(m, Bottleneck):
            m.bn3.weight.mul_(RESIDUAL_GAIN)

    def batch(seed: int, n: int) -> torch.Tensor:
        return normalize_images(torch.from_numpy(camera_like(*size, seed=seed, batch=n)), model.normalization)

    model.train()
    for i in range(2):
        model(batch(1000 + i, 2))
    model.eval()
    logits = model(batch(2000, 1))
    model.output_conv.weight.mul_(LOGIT_SCALE / logits.abs().max())
    return model


STORED_POINT = OperatingPoint(-4.25, "fpr:0.01", min_pixels=80, image_size=(64, 128))
"""The operating point :func:`realistic_checkpoint` stores (what exports must carry along)."""


def realistic_checkpoint(directory: Path, arch: str, **kwargs) -> Path:
    """:func:`realistic_model` saved in the project format, with :data:`STORED_POINT`."""
    path = Path(directory) / f"{arch}.safetensors"
    points = StoredPoints({STORED_POINT.policy: STORED_POINT}, STORED_POINT.policy)
    return save_checkpoint(realistic_model(arch, **kwargs), path, **points.to_metadata())


EXPORT_SIZE = (64, 96)
"""Height x width the shared test exports are made at (fixed size; the tracing size of dynamic ones)."""


class SharedExports:
    """Realistic checkpoints (seed 0) and their ONNX exports at :data:`EXPORT_SIZE`, each made on
    first use and kept for the whole test session (conftest's ``shared_exports``): the export and
    backend tests run on the same files instead of exporting the same network again (an export
    costs seconds, a dynamic-size one tens of seconds). The files are read-only: a test that
    changes a model works on a copy."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._files: dict[tuple[str, str], Path] = {}

    def _made(self, key: tuple[str, str], make) -> Path:
        if key not in self._files:
            folder = self.root / "-".join(key)
            folder.mkdir(parents=True)
            path = make(folder)
            path.chmod(0o444)
            self._files[key] = path
        return self._files[key]

    def checkpoint(self, arch: str) -> Path:
        """:func:`realistic_checkpoint` of ``arch``."""
        return self._made((arch, "checkpoint"), lambda folder: realistic_checkpoint(folder, arch))

    def onnx(self, arch: str, dynamic: bool = False) -> Path:
        """The ONNX export of :meth:`checkpoint` at :data:`EXPORT_SIZE`, fixed or dynamic size."""
        from pebal_core.export.onnx import export_onnx

        return self._made(
            (arch, "dynamic" if dynamic else "fixed"),
            lambda folder: export_onnx(self.checkpoint(arch), folder / f"{arch}.onnx", EXPORT_SIZE, dynamic=dynamic),
        )
