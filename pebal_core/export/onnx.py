"""ONNX export of a PEBAL network with input normalisation and the energy-score head fused in.

The exported graph is the whole per-frame pipeline of :class:`pebal_core.runtime.Predictor`::

    image   uint8  1 x 3 x H x W   RGB, 0..255 (NCHW; the camera image transposed, not normalised)
      -> normalisation (the model's, e.g. ImageNet mean/std)  -> network -> logits 1 x C x H x W
      -> EnergyScoreHead:
    labels  uint8   1 x H x W      Cityscapes trainIds 0..18 (argmax of the 19 inlier logits)
    score   float32 1 x H x W      PEBAL anomaly score: inlier free energy, 7x7 sigma-1 Gaussian
                                   smoothed unless exported with ``smoothing=False``;
                                   higher = more anomalous
    logits  float32 1 x C x H x W  only when exported with ``logits=True``

uint8 input keeps the host-to-device copy at a quarter of float32 and puts the normalisation
on the accelerator, where it fuses with the first convolution. The batch is fixed at 1 (a
camera frame). The spatial size is either fixed (``input_size``) or dynamic (any ``H, W`` in
``[MIN_SIDE, MAX_SIDE]``; the example size is only used for tracing).

Everything a runtime needs to interpret the file travels in the model's ``metadata_props``
(string key/value pairs; JSON for structured values), see :func:`metadata_props` and
:func:`pebal_core.onnx_contract.parse_metadata`, which also defines the tensor names and size limits.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pebal_core.denormals import flush_denormals
from pebal_core.fileio import atomic_write
from pebal_core.models.base import SegmentationModel
from pebal_core.models.checkpoint import load_model
from pebal_core.onnx_contract import (
    DYNAMIC,
    FORMAT_VERSION,
    INPUT_NAME,
    MAX_SIDE,
    MIN_SIDE,
    OUTPUT_NAMES,
    ExportError,
    read_metadata,
)
from pebal_core.preprocessing import normalize_images
from pebal_core.scoring import EnergyScoreHead
from pebal_core.version import __version__

DEFAULT_OPSET = 18
"""ONNX opset of exported files: 18 is the first with ``axes`` as an input for every Reduce op,
and is read by onnxruntime >= 1.14 and TensorRT >= 8.6."""
MIN_OPSET = 17


class DeployNetwork(nn.Module):
    """``image uint8 1x3xHxW RGB -> (labels, score[, logits])``: what :func:`export_onnx` traces.

    Args:
        model: the segmentation network (its ``normalization`` is applied first).
        smoothing: Gaussian-smooth the score (the reference PEBAL score) or return the raw
            free energy.
        logits: also return the logits.
    """

    def __init__(self, model: SegmentationModel, smoothing: bool = True, logits: bool = False) -> None:
        super().__init__()
        self.model = model
        self.head = EnergyScoreHead(smoothing)
        self.with_logits = logits

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        logits = self.model(normalize_images(image, self.model.normalization))
        labels, score = self.head(logits)
        return (labels, score, logits) if self.with_logits else (labels, score)


def metadata_props(
    model: SegmentationModel,
    checkpoint_metadata: Mapping,
    input_size: tuple[int, int] | None,
    smoothing: bool,
    logits: bool,
    opset: int,
) -> dict[str, str]:
    """The ``metadata_props`` of an export (all values strings; structured ones JSON).

    Keys: ``pebal_onnx_format``, ``arch``, ``arch_kwargs``, ``num_classes``, ``input``
    (layout description), ``input_size`` (``"HxW"`` or ``"dynamic"``), ``normalization``,
    ``smoothing``, ``outputs``, ``pebal_version``, ``source_checkpoint`` (file name),
    ``source_sha256``, ``checkpoint_metadata`` (the source's metadata, without its local ``path``;
    it carries the operating points), ``exporter``, ``opset``.
    """
    return {
        "pebal_onnx_format": str(FORMAT_VERSION),
        "arch": str(getattr(model, "arch", checkpoint_metadata.get("arch"))),
        "arch_kwargs": json.dumps(dict(getattr(model, "arch_kwargs", checkpoint_metadata.get("arch_kwargs", {})))),
        "num_classes": str(model.num_classes),
        "input": f"{INPUT_NAME}: uint8 RGB 1 x 3 x H x W, values 0..255, normalisation fused into the graph",
        "input_size": DYNAMIC if input_size is None else f"{input_size[0]}x{input_size[1]}",
        "normalization": json.dumps(model.normalization.to_dict()),
        "smoothing": json.dumps(bool(smoothing)),
        "outputs": json.dumps(list(OUTPUT_NAMES[: 3 if logits else 2])),
        "pebal_version": __version__,
        "source_checkpoint": Path(str(checkpoint_metadata.get("path", ""))).name,
        "source_sha256": str(checkpoint_metadata.get("sha256", "")),
        "checkpoint_metadata": json.dumps(
            {k: v for k, v in checkpoint_metadata.items() if k != "path"}, default=str, sort_keys=True
        ),
        "exporter": f"torch {torch.__version__} torch.onnx.export(dynamo=True)",
        "opset": str(opset),
    }


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's per-step INFO lines and its 'torchvision is not installed' warnings."""
    names = ("torch.onnx", "torch.export", "torch._export", "onnxscript")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # pytree deprecations inside torch.export
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_model(
    model: SegmentationModel,
    output: str | os.PathLike,
    checkpoint_metadata: Mapping,
    input_size: tuple[int, int] = (512, 1024),
    dynamic: bool = False,
    smoothing: bool = True,
    logits: bool = False,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Export a loaded network (see :func:`export_onnx`); ``checkpoint_metadata`` fills the metadata.

    ``model`` is put in eval mode and its denormal weights are set to zero (in place,
    :func:`pebal_core.denormals.flush_denormals`), so the file holds none."""
    if opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is too old: use {MIN_OPSET} or newer (default {DEFAULT_OPSET})")
    h, w = (int(v) for v in input_size)
    if not (MIN_SIDE <= h <= MAX_SIDE and MIN_SIDE <= w <= MAX_SIDE):
        raise ValueError(f"input size {h}x{w} outside the exportable range {MIN_SIDE}..{MAX_SIDE} per side")
    output = Path(output)
    if output.suffix != ".onnx":
        raise ValueError(f"output file {output} must end in .onnx")
    import onnx
    import onnx_ir

    flush_denormals(model)  # an eval-mode model for export: zeroing sub-1e-38 weights changes no output
    net = DeployNetwork(model.eval(), smoothing, logits).eval()
    example = torch.zeros(1, 3, h, w, dtype=torch.uint8)
    dynamic_shapes = None
    if dynamic:
        dims = {
            2: torch.export.Dim("height", min=MIN_SIDE, max=MAX_SIDE),
            3: torch.export.Dim("width", min=MIN_SIDE, max=MAX_SIDE),
        }
        dynamic_shapes = {INPUT_NAME: dims}
    names = list(OUTPUT_NAMES[: 3 if logits else 2])
    try:
        with _quiet_exporter(), torch.inference_mode(False), torch.no_grad():
            program = torch.onnx.export(
                net,
                (example,),
                dynamo=True,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=names,
                dynamic_shapes=dynamic_shapes,
                optimize=True,
                verbose=False,
            )
    except Exception as e:  # the exporter raises a zoo of types; keep the cause chained
        raise ExportError(f"torch.onnx.export failed for {getattr(model, 'arch', type(model).__name__)}: {e}") from e
    if dynamic:
        in_dims = program.model.graph.inputs[0].shape
        if not all(isinstance(d, onnx_ir.SymbolicDim) for d in (in_dims[2], in_dims[3])):
            raise ExportError(
                f"{getattr(model, 'arch', type(model).__name__)} cannot be exported with a dynamic size: the "
                f"exporter fixed the input to {in_dims}. Export it at a fixed size instead (drop --dynamic)."
            )
    props = metadata_props(model, checkpoint_metadata, None if dynamic else (h, w), smoothing, logits, opset)
    program.model.metadata_props.update(props)
    program.model.doc_string = (
        "PEBAL anomaly segmentation (Tian et al., ECCV 2022): uint8 RGB image -> trainId labels and "
        "anomaly score (inlier free energy; higher = more anomalous). See metadata_props."
    )
    with atomic_write(output) as tmp:
        program.save(tmp, external_data=False)
        try:
            onnx.checker.check_model(str(tmp), full_check=True)
        except onnx.checker.ValidationError as e:
            raise ExportError(f"the exported graph fails onnx.checker: {e}") from e
    return output


def export_onnx(
    checkpoint: str | os.PathLike,
    output: str | os.PathLike,
    input_size: tuple[int, int] = (512, 1024),
    dynamic: bool = False,
    smoothing: bool = True,
    logits: bool = False,
    opset: int = DEFAULT_OPSET,
) -> Path:
    """Export a checkpoint (any format :func:`~pebal_core.models.checkpoint.load_model` reads).

    Args:
        checkpoint: the model file (it must name its architecture, e.g. this project's format).
        output: the ``.onnx`` file to write (atomically; a single file, weights included).
        input_size: ``(height, width)`` of the fixed input, or the tracing example when
            ``dynamic``.
        dynamic: accept any height/width in ``[MIN_SIDE, MAX_SIDE]`` at run time.
        smoothing: fuse the 7x7 Gaussian smoothing of the score.
        logits: add a third output with the logits.
        opset: ONNX opset (>= 17).

    Returns:
        the output path. The file has passed ``onnx.checker.check_model(full_check=True)``.
    """
    model = load_model(checkpoint)
    meta = dict(model.checkpoint_metadata, path=str(checkpoint))
    return export_model(model, output, meta, input_size, dynamic, smoothing, logits, opset)


def verify_export(
    onnx_path: str | os.PathLike, model: SegmentationModel, size: tuple[int, int] | None = None, seed: int = 0
) -> tuple[float, float]:
    """Run the export (onnxruntime, CPU) and the torch model on one random image; compare.

    Args:
        onnx_path: a file written by :func:`export_onnx`.
        model: the network it was exported from.
        size: image ``(H, W)`` (default: the file's fixed size, else 256x512).

    Returns:
        ``(fraction of pixels with identical labels, max |score difference|)``.
    """
    import onnxruntime as ort

    meta = read_metadata(onnx_path)
    h, w = size or meta["input_size"] or (256, 512)
    image = np.random.default_rng(seed).integers(0, 256, (1, 3, h, w), dtype=np.uint8)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    labels, score = session.run(list(OUTPUT_NAMES[:2]), {INPUT_NAME: image})
    net = DeployNetwork(model, smoothing=meta["smoothing"]).eval()
    with torch.inference_mode():
        ref_labels, ref_score = net(torch.from_numpy(image))
    agree = float((labels == ref_labels.numpy()).mean())
    return agree, float(np.abs(score - ref_score.numpy()).max())
