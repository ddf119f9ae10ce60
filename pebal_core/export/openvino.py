"""OpenVINO models from PEBAL ONNX exports: the metadata they carry, and int8 post-training quantisation.

An OpenVINO model read from a ``pebal export onnx`` file keeps the file's ``metadata_props`` as
its ``framework`` run-time info, and an IR written from it (``.xml`` + ``.bin``) keeps them too,
so the IR answers to the same contract (:mod:`pebal_core.onnx_contract`).

:func:`quantize_int8` quantises the network to int8 with NNCF's post-training quantisation
(OpenVINO's own tool; ``pip install nncf``): weights per output channel (symmetric), activations
per tensor (``mixed`` preset: asymmetric activations, which suits PReLU outputs), ranges from
calibration images run the way the runtime runs a frame. The energy head (inlier labels, the
free energy ``-logsumexp`` and its Gaussian smoothing) stays in float32: every operation after
the logits is excluded (:func:`head_operations`). With validation images NNCF's accuracy
control then returns quantised operations to float32, most harmful first, until the labels agree
with the float model's on at least ``1 - max_label_drop`` of the validation pixels.

Calibration and validation images must be inliers of the camera's kind (ordinary road scenes:
CamVid, Cityscapes frames, the vehicle's own recordings), never an anomaly test set. Whether the
result keeps the answers is measured afterwards on real data (``benchmarks/bench_cpu.py``, the
accuracy gate of ``docs/deployment.md``).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from pebal_core.export.calibration import calibration_batch
from pebal_core.onnx_contract import OUTPUT_NAMES, ExportError, parse_metadata
from pebal_core.version import __version__

QUANTIZATION_KEY = "pebal_quantization"
"""Run-time info section of an IR written by :func:`quantize_int8` (JSON values)."""
INSTALL_HINT = "pip install openvino nncf (requirements.txt pins both)"


def read_metadata(model: object, path: str | os.PathLike) -> dict:
    """The PEBAL metadata (:func:`pebal_core.onnx_contract.parse_metadata`) of an OpenVINO model read
    from a PEBAL export; :class:`ExportError` names the file when it carries none."""
    if not model.has_rt_info(["framework"]):
        raise ExportError(
            f"{path} carries no PEBAL metadata; export it with `pebal export onnx CHECKPOINT` "
            "(and `pebal export openvino` for an IR)"
        )
    props = {str(k): v.astype(str) for k, v in model.get_rt_info(["framework"]).astype(dict).items()}
    return parse_metadata(props, path)


def quantization_info(model: object) -> dict:
    """The ``pebal_quantization`` run-time info of an IR (``{}`` for a float model)."""
    if not model.has_rt_info([QUANTIZATION_KEY]):
        return {}
    items = model.get_rt_info([QUANTIZATION_KEY]).astype(dict).items()
    return {str(k): json.loads(v.astype(str)) for k, v in items}


def _ancestors(node: object) -> set[str]:
    """Friendly names of every operation ``node`` depends on."""
    seen: set[str] = set()
    stack = [node]
    while stack:
        for value in stack.pop().inputs():
            source = value.get_source_output().get_node()
            if source.get_friendly_name() not in seen:
                seen.add(source.get_friendly_name())
                stack.append(source)
    return seen


def head_operations(model: object) -> list[str]:
    """Friendly names of the energy head's operations: every non-constant operation that feeds
    ``labels`` or ``score`` but not the logits (the last operation both outputs depend on)."""
    outputs = {out.get_any_name(): out.get_node() for out in model.outputs}
    missing = set(OUTPUT_NAMES[:2]) - set(outputs)
    if missing:
        raise ExportError(f"the model lacks the outputs {sorted(missing)}: it is not a PEBAL export")
    by_name = {op.get_friendly_name(): op for op in model.get_ordered_ops()}
    labels, score = (_ancestors(outputs[name]) for name in OUTPUT_NAMES[:2])
    network: set[str] = set()
    for name in labels & score:
        network |= _ancestors(by_name[name])
    head = ((labels | score) - (labels & score)) - network
    return sorted(n for n in head if by_name[n].get_type_name() not in ("Constant", "Parameter", "Result"))


def label_agreement(compiled: object, reference: list[np.ndarray], batches: Sequence[np.ndarray]) -> float:
    """Mean over ``batches`` of the share of pixels whose ``labels`` equal ``reference``'s."""
    request = compiled.create_infer_request()
    agree = []
    for batch, ref in zip(batches, reference, strict=True):
        agree.append(float((request.infer({0: batch})[compiled.output(OUTPUT_NAMES[0])] == ref).mean()))
    return float(np.mean(agree))


def quantize_int8(
    onnx_path: str | os.PathLike,
    output: str | os.PathLike,
    calibration: Sequence[str | os.PathLike],
    validation: Sequence[str | os.PathLike] = (),
    max_label_drop: float = 0.01,
    input_size: tuple[int, int] | None = None,
    preset: str = "mixed",
    describe: dict | None = None,
    progress: Callable[[str], None] | None = print,
) -> dict:
    """Quantise a PEBAL ONNX export to an int8 OpenVINO IR (see the module docstring).

    Args:
        onnx_path: a ``pebal export onnx`` file.
        output: the IR's ``.xml`` (its ``.bin`` is written beside it); both are written in a
            temporary folder beside it and renamed into place, the ``.bin`` first.
        calibration: inlier image files for the activation ranges (a few hundred are plenty).
        validation: inlier image files for accuracy control (empty: none); must not be the
            calibration images.
        max_label_drop: accuracy control's budget: the share of validation pixels whose label
            may differ from the float model's.
        input_size: ``(H, W)`` the images are fed at (default: the export's fixed size; required
            for a dynamic export).
        preset: NNCF preset, ``mixed`` (asymmetric activations) or ``performance`` (symmetric).
        describe: extra JSON-able facts recorded with the quantisation (e.g. where the images
            came from).
        progress: receives one line per stage (``None``: silent).

    Returns:
        the ``pebal_quantization`` record written into the IR: ``precision`` (``int8``),
        ``tool``, ``preset``, ``input_size``, ``calibration_images``, ``head_operations_in_float``,
        ``validation`` (``None`` or the images, the budget and the label agreement reached) and
        ``created``.
    """
    try:
        import nncf
        import openvino as ov
    except ImportError as e:
        raise ExportError(f"int8 quantisation needs openvino and nncf ({e}); {INSTALL_HINT}") from e
    onnx_path, output = Path(onnx_path), Path(output)
    if output.suffix != ".xml":
        raise ValueError(f"output file {output} must end in .xml (the IR's .bin is written beside it)")
    if not calibration:
        raise ValueError("int8 quantisation needs calibration images (inlier frames of the camera's kind)")
    if set(map(str, calibration)) & set(map(str, validation)):
        raise ValueError("the validation images must not be calibration images")
    if preset not in ("mixed", "performance"):
        raise ValueError(f"preset must be mixed or performance, got {preset!r}")
    core = ov.Core()
    model = core.read_model(str(onnx_path))
    meta = read_metadata(model, onnx_path)
    size = tuple(input_size or meta["input_size"] or ())
    if len(size) != 2:
        raise ValueError(f"{onnx_path} has a dynamic input size: give the size to quantise at (input_size)")
    if meta["input_size"] is not None and tuple(meta["input_size"]) != size:
        raise ValueError(f"{onnx_path} has a fixed input of {meta['input_size']}, not {size}")
    head = head_operations(model)
    options = {
        "preset": nncf.QuantizationPreset.MIXED if preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE,
        "ignored_scope": nncf.IgnoredScope(names=head),
        "subset_size": len(calibration),
    }
    calibration_set = nncf.Dataset(list(calibration), lambda f: calibration_batch(f, size))
    say = progress or (lambda _: None)
    say(f"int8: {len(calibration)} calibration images at {size[0]}x{size[1]}, {len(head)} head operations in float")
    validation_record = None
    if validation:
        batches = [calibration_batch(f, size) for f in validation]
        float_request = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}).create_infer_request()
        reference = [float_request.infer({0: b})[OUTPUT_NAMES[0]].copy() for b in batches]

        def validate(compiled: object, _items: object) -> float:
            return label_agreement(compiled, reference, batches)

        say(f"int8: accuracy control on {len(validation)} validation images, label budget {max_label_drop:.2%}")
        quantized = nncf.quantize_with_accuracy_control(
            model,
            calibration_set,
            nncf.Dataset(list(range(len(batches))), lambda i: batches[i]),
            validate,
            max_drop=max_label_drop,
            drop_type=nncf.DropType.ABSOLUTE,
            **options,
        )
        compiled = core.compile_model(quantized, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        validation_record = {
            "images": len(validation),
            "max_label_drop": max_label_drop,
            "label_agreement": label_agreement(compiled, reference, batches),
        }
    else:
        quantized = nncf.quantize(model, calibration_set, **options)
    record = {
        "precision": "int8",
        "tool": f"nncf {nncf.__version__}, openvino {ov.__version__}, pebal {__version__}",
        "preset": preset,
        "input_size": list(size),
        "calibration_images": len(calibration),
        "head_operations_in_float": len(head),
        "validation": validation_record,
        "source_onnx": onnx_path.name,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **(describe or {}),
    }
    for key, value in record.items():
        quantized.set_rt_info(json.dumps(value), [QUANTIZATION_KEY, key])
    bin_path = output.with_suffix(".bin")
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{output.stem}.", dir=output.parent) as tmp:
        staged = Path(tmp) / "model.xml"
        ov.save_model(quantized, str(staged), compress_to_fp16=False)
        os.replace(staged.with_suffix(".bin"), bin_path)  # the weights first: a new .xml never meets an old .bin
        os.replace(staged, output)
    say(f"int8: wrote {output} (+ {bin_path.name})")
    return record
