"""Denormal (subnormal) floating-point numbers in weights and in CPU arithmetic.

A float32 whose magnitude is below ``FLOAT32_TINY`` (1.18e-38, the smallest normal number) but
not zero is *denormal*. x86 CPUs handle arithmetic on denormals in microcode, tens to hundreds
of times slower than on normal numbers. Weights decayed towards zero in training end up there:
the real Cityscapes ESPNet holds about 18,000 of them, and one 36->20 3x3 convolution over them
took 5.1 s of a 7.5 s eager forward pass on this project's development CPU instead of 37 ms
(``docs/benchmarks.md``). Their value is below anything a network can resolve (each is less than
1e-38 of a typical weight), so setting them to zero changes no prediction.

Two defences, both applied by the project:

* :func:`flush_denormals` sets every denormal weight of a model or state_dict to zero. Every model
  the project writes (:func:`pebal_core.models.checkpoint.save_checkpoint`: training snapshots,
  ``pebal eval --write-threshold`` copies, ``pebal checkpoint convert``; and the ONNX export) and
  every model it loads (:func:`pebal_core.models.checkpoint.load_model`) goes through it.
* :func:`flush_to_zero` sets the CPU's flush-to-zero / denormals-are-zero modes
  (``torch.set_flush_denormal``) for the torch backend's inference, so that denormal
  *activations* cannot slow it down either, and restores the previous mode afterwards, so that
  training code around it computes exactly as before (see :func:`flush_to_zero` for which
  threads it reaches).

How much denormals cost depends on the CPU: ``benchmarks/bench_cpu.py`` measures the shipped
model with its original weights, with flushed weights, and with flushed weights plus
flush-to-zero, side by side.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping

import torch
from torch import nn

FLOAT32_TINY = float(torch.finfo(torch.float32).tiny)
"""Smallest positive normal float32 (about 1.18e-38)."""


def _tensors(obj: nn.Module | Mapping[str, torch.Tensor]) -> Iterator[torch.Tensor]:
    """The tensors of ``obj`` whose denormals are computed with: float32, float64 and bfloat16.

    float16 is left out: it is a storage format here (``save_checkpoint(half=True)``), its
    subnormal range (6e-8 to 6e-5) holds real weights, and they become normal float32 numbers
    when loaded."""
    tensors = [*obj.parameters(), *obj.buffers()] if isinstance(obj, nn.Module) else obj.values()
    yield from (t for t in tensors if t.is_floating_point() and t.dtype != torch.float16)


def denormal_mask(tensor: torch.Tensor) -> torch.Tensor:
    """Bool mask of the denormal entries of a floating-point tensor (its own dtype's normal range)."""
    tiny = torch.finfo(tensor.dtype).tiny
    return (tensor != 0) & (tensor.abs() < tiny)


def count_denormals(obj: nn.Module | Mapping[str, torch.Tensor]) -> int:
    """Number of denormal entries over the floating-point parameters and buffers of a module, or
    the floating-point tensors of a state_dict (float16 tensors left out, see :func:`_tensors`)."""
    return sum(int(denormal_mask(t).sum()) for t in _tensors(obj))


@torch.no_grad()
def flush_denormals(obj: nn.Module | Mapping[str, torch.Tensor]) -> int:
    """Set every denormal entry of a module's parameters and buffers (in place), or of a
    state_dict's tensors (in place; pass copies to keep the originals), to zero (float16 tensors
    left out, see :func:`_tensors`).

    Returns:
        how many entries were set to zero.
    """
    changed = 0
    for t in _tensors(obj):
        mask = denormal_mask(t)
        n = int(mask.sum())
        if n:
            t.masked_fill_(mask, 0.0)
            changed += n
    return changed


@contextlib.contextmanager
def flush_to_zero(enabled: bool = True) -> Iterator[None]:
    """Run the block with the CPU's flush-to-zero and denormals-are-zero modes on (``enabled``), then
    restore the previous mode.

    ``torch.set_flush_denormal`` sets the MXCSR register of the calling thread. torch's OpenMP
    worker threads keep the mode they had when they were started, and they are started by the
    first parallel operation of the thread that calls torch: a thread whose first torch call runs
    in this block (the node's inference thread) gets flush-to-zero in all its workers for good; in
    a thread that ran torch before, the workers' share of the work keeps the old mode (measured:
    half the elements of a two-thread multiply). On a CPU without SSE3 nothing changes.
    """
    if not enabled:
        yield
        return
    previous = flushing_denormals()
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if not previous:
            torch.set_flush_denormal(False)


def flushing_denormals() -> bool:
    """Whether the calling thread flushes denormals now (a denormal times 1 comes out 0)."""
    x = torch.tensor([FLOAT32_TINY / 4], dtype=torch.float32)
    return bool((x * 1.0).item() == 0.0)
