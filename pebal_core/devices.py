"""Torch devices by name, with one clear error for a GPU that is not there."""

from __future__ import annotations

import torch


def torch_device(name: str, setting: str = "device") -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (CUDA when torch sees a GPU, else the CPU) as a
    ``torch.device``.

    A name torch does not know, or a CUDA device when torch sees no GPU, raises ``ValueError``
    naming ``setting`` (how the caller's user spells it: ``device``, ``--device``) and the fix.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise ValueError(f"{setting} {name!r}: {e}; use cpu, cuda or cuda:N") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{setting} {name!r} requested but torch sees no CUDA GPU; use {setting} cpu")
    return device
