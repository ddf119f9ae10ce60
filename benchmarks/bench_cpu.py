"""Every CPU backend side by side on one model: frames/s, which precision ran, and whether it keeps the answers.

Target: the shipped default model at 512x1024 on 2 threads runs at >= 10 frames/s with the best
CPU backend, and at >= 2x the torch backend. Times the full ``Predictor.predict`` of one camera
frame (uint8 RGB in at the network size; labels and smoothed anomaly score out), rounds
interleaved so that other load on the machine hits every variant alike:

* ``torch, original weights, no FTZ``: the eager network with weights that still hold their
  denormals, flush-to-zero off (how the torch backend ran before denormals were flushed). The
  shipped model's file holds none now, so for ``espnet_p2q8`` these are the weights of the real
  base ESPNet of the realdata folder it was fine-tuned from (``--denormal-weights``), whose 18,302
  denormals it had inherited; a model's speed depends on its weights only through denormals;
* ``torch, flushed weights, no FTZ`` and ``torch`` (flushed weights + flush-to-zero, the torch
  backend as it is): what each defence against denormals (``pebal_core.denormals``) buys here;
* ``onnxruntime`` (fp32), ``openvino fp32``, ``openvino bf16`` (only on a CPU with bf16
  arithmetic), ``openvino int8`` (an int8 IR quantised with NNCF from real inlier frames:
  CamVid train and the Cityscapes frames of the realdata folder, never a test set).

The header prints the CPU, its vector flags and what OpenVINO sees, the load average, and for
every variant the precision the backend reports it ran.

``--gate``: the accuracy gate of every reduced-precision variant (bf16, int8) against the fp32
model (openvino fp32, same graph) on the real sets: the fs_static hold-out (images 0-14) and the
four test sets, at the network size, scores and labels brought back to the label size as the node
does. A variant passes when on every set its labels agree with fp32 on >= 99 % of the pixels and
its AP and FPR95 (PEBAL score, void ignored) are within 1 point of fp32's. The test sets are only
read to check this non-regression; nothing is chosen on them. A variant that fails is not
offered by default (``backend auto`` runs fp32 only), and the table says why.

``--profile``: the floor when 10 frames/s is not reached: the network's FLOPs per frame
(convolutions, counted with forward hooks), the CPU's measured fp32 peak (a large matrix
product, same threads), the fraction of peak each variant reaches, and OpenVINO's per-layer
profile (time by operation type, slowest layers).

    python benchmarks/bench_cpu.py [--model default] [--size 512 1024] [--threads 2] [--gate] [--profile]
    python benchmarks/bench_cpu.py --arch wrn38 --size 512 1024 --frames 3        # any zoo network, random weights
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads, as importing pebal_core does

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from pebal_core.backends import OnnxRuntimeBackend, OpenVinoBackend, TorchBackend  # noqa: E402
from pebal_core.backends.openvino_backend import cpu_capabilities  # noqa: E402
from pebal_core.data.validation_dataset import ValidationDataset  # noqa: E402
from pebal_core.denormals import count_denormals  # noqa: E402
from pebal_core.export.calibration import calibration_files  # noqa: E402
from pebal_core.export.onnx import export_model  # noqa: E402
from pebal_core.export.openvino import quantize_int8  # noqa: E402
from pebal_core.images import read_rgb  # noqa: E402
from pebal_core.metrics import AnomalyMetrics  # noqa: E402
from pebal_core.model_store import is_model_name, resolve_model  # noqa: E402
from pebal_core.models import build_model  # noqa: E402
from pebal_core.models.checkpoint import (  # noqa: E402
    extend_classifier,
    load_model,
    load_state_dict_strict,
    read_checkpoint,
    save_checkpoint,
)
from pebal_core.protocols import resize_image  # noqa: E402
from pebal_core.runtime import Predictor  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from real_model import HOLDOUT_FS_STATIC, TEST_SETS  # noqa: E402

TARGET_FPS = 10.0
TARGET_RATIO = 2.0
"""Least best-variant / torch speed ratio."""
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8")
GATE_AGREEMENT = 0.99
GATE_POINTS = 1.0
CALIBRATION = ("camvid/train", "cityscapes_frames/fullres_unlabeled", "cityscapes_gtfine_8/leftImg8bit")
"""Real inlier frames (relative to the realdata folder) the int8 model is calibrated on."""
REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
DENORMAL_WEIGHTS = {"espnet_p2q8": "models/espnet_p2q8_cityscapes_sacmehta/espnet_p_2_q_8.safetensors"}
"""Real checkpoints (relative to the realdata folder) with the original, denormal-holding weights of an arch."""


def cpu_description() -> tuple[str, list[str]]:
    name, flags = "?", []
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and name == "?":
                name = value.strip()
            if key.strip() == "flags" and not flags:
                flags = value.split()
    except OSError:
        pass
    return name, [f for f in CPU_FLAGS if f in flags]


def raw_model(like, path: Path):
    """A copy of the network ``like`` with the weights of ``path`` exactly as stored (denormals kept; a
    19-class classifier is extended as loading does)."""
    model = copy.deepcopy(like)
    stored = {k: v.float() if v.is_floating_point() else v for k, v in read_checkpoint(path).state_dict.items()}
    load_state_dict_strict(model, extend_classifier(model, stored))
    return model.eval()


def timed(predictors: dict[str, Predictor], rgb: np.ndarray, frames: int) -> dict[str, tuple[float, float]]:
    """Median wall and process-CPU seconds per ``predict``, rounds interleaved, one warm-up call each."""
    for p in predictors.values():
        p.predict(rgb)
    wall: dict[str, list[float]] = {k: [] for k in predictors}
    cpu: dict[str, list[float]] = {k: [] for k in predictors}
    for _ in tqdm(range(frames), desc="timing rounds", leave=False):
        for name, p in predictors.items():
            t0, c0 = time.perf_counter(), time.process_time()
            p.predict(rgb)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return {k: (float(np.median(wall[k])), float(np.median(cpu[k]))) for k in predictors}


def camera_frame(size: tuple[int, int]) -> np.ndarray:
    """A real street frame at the network size when the realdata folder is there, else a synthetic one."""
    frame = REALDATA / "cityscapes_frames/fullres_unlabeled/frankfurt_000000_000576_leftImg8bit.png"
    if frame.is_file():
        return resize_image(read_rgb(frame), size)
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (*size, 3), dtype=np.uint8)


def conv_flops(model, size: tuple[int, int]) -> float:
    """FLOPs (2 x multiply-adds) of the convolutions of one forward pass at ``size``."""
    total = [0.0]

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.ConvTranspose2d):
            k = module.out_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total[0] += 2.0 * inputs[0].numel() * k
        else:
            k = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total[0] += 2.0 * output.numel() * k

    handles = [
        m.register_forward_hook(hook)
        for m in model.modules()
        if isinstance(m, torch.nn.Conv2d | torch.nn.ConvTranspose2d)
    ]
    with torch.inference_mode():
        model(torch.zeros(1, 3, *size))
    for h in handles:
        h.remove()
    return total[0]


def matmul_peak(n: int = 1536, repeats: int = 5) -> tuple[float, float]:
    """Measured fp32 FLOP/s of an ``n x n`` matrix product with torch's threads (best of ``repeats``):
    per wall second, and per CPU second of the process (all threads), which other load on the
    machine disturbs much less."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    runs = []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        torch.mm(a, b)
        runs.append((time.perf_counter() - t0, time.process_time() - c0))
    flops = 2.0 * n**3
    return flops / min(r[0] for r in runs), flops / min(r[1] for r in runs)


def openvino_profile(onnx_path: Path, rgb: np.ndarray, threads: int, top: int = 8) -> list[str]:
    """OpenVINO's per-layer profile of the fp32 model: time by operation type, then the slowest layers."""
    import openvino as ov

    core = ov.Core()
    config = {"PERF_COUNT": True, "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads}
    request = core.compile_model(core.read_model(str(onnx_path)), "CPU", config).create_infer_request()
    image = np.ascontiguousarray(rgb.transpose(2, 0, 1))[None]
    for _ in range(3):
        request.infer({0: image})
    rows = [(p.node_name, p.node_type, p.exec_type, p.real_time.total_seconds() * 1000) for p in request.profiling_info]
    total = sum(r[3] for r in rows)
    by_type: dict[str, float] = {}
    for _, kind, _, ms in rows:
        by_type[kind] = by_type.get(kind, 0.0) + ms
    lines = [f"  OpenVINO fp32 profile: {total:.1f} ms in {len(rows)} layers; by type:"]
    for kind, ms in sorted(by_type.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"    {kind:24s} {ms:8.1f} ms  {100 * ms / total:5.1f} %")
    lines.append("  slowest layers:")
    for name, kind, exec_type, ms in sorted(rows, key=lambda r: -r[3])[:top]:
        lines.append(f"    {name[:48]:48s} {kind:16s} {exec_type:22s} {ms:7.2f} ms")
    return lines


def gate(variants: dict[str, Predictor], reference: Predictor, realdata: Path) -> dict[str, dict]:
    """``{variant: {set: {agreement, ap, fpr95, ref_ap, ref_fpr95}}}`` on the real sets (see the docstring)."""
    sets = {"fs_static hold-out": ("fs_static", HOLDOUT_FS_STATIC), **{name: (name, None) for name in TEST_SETS}}
    out: dict[str, dict] = {name: {} for name in variants}
    for label, (subset, keep) in sets.items():
        ds = ValidationDataset(realdata / "Validation_Dataset", subset)
        if keep is not None:
            ds.samples = [s for s in ds.samples if int(s.name.split("/")[-1]) in keep]
        metrics = {name: AnomalyMetrics() for name in [*variants, "fp32"]}
        agree = {name: [0, 0] for name in variants}
        for i in tqdm(range(len(ds)), desc=f"gate {label}", leave=False):
            item = ds[i]
            ref = reference.scores(item["image"], labels=True, output_size=item["label"].shape)
            metrics["fp32"].update(ref.scores["pebal"], item["label"])
            for name, pred in variants.items():
                got = pred.scores(item["image"], labels=True, output_size=item["label"].shape)
                metrics[name].update(got.scores["pebal"], item["label"])
                agree[name][0] += int((got.labels == ref.labels).sum())
                agree[name][1] += got.labels.size
        ref_m = metrics["fp32"].compute(curves=False)
        for name in variants:
            m = metrics[name].compute(curves=False)
            out[name][label] = {
                "images": len(ds),
                "agreement": agree[name][0] / agree[name][1],
                "ap": m["ap"],
                "fpr95": m["fpr95"],
                "ref_ap": ref_m["ap"],
                "ref_fpr95": ref_m["fpr95"],
            }
    return out


def gate_verdict(rows: dict[str, dict]) -> tuple[bool, list[str]]:
    reasons = []
    for label, r in rows.items():
        if r["agreement"] < GATE_AGREEMENT:
            reasons.append(f"{label}: labels agree on {100 * r['agreement']:.2f} % < {100 * GATE_AGREEMENT:.0f} %")
        for key in ("ap", "fpr95"):
            delta = 100 * (r[key] - r[f"ref_{key}"])
            if abs(delta) > GATE_POINTS:
                reasons.append(f"{label}: {key.upper()} {delta:+.2f} points")
    return not reasons, reasons


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint or shipped model name (default: the shipped default model)")
    parser.add_argument("--arch", help="a zoo architecture with random weights instead (e.g. wrn38, espnet_p2q8)")
    parser.add_argument("--size", type=int, nargs=2, default=(512, 1024), metavar=("H", "W"))
    parser.add_argument("--threads", type=int, default=2, help="threads of every backend (default 2)")
    parser.add_argument("--frames", type=int, default=20, help="timed rounds (default 20)")
    parser.add_argument("--realdata", type=Path, default=REALDATA, help="the realdata folder (calibration, gate)")
    parser.add_argument("--calibration-limit", type=int, default=120, help="int8 calibration frames (default 120)")
    parser.add_argument("--gate", action="store_true", help="accuracy gate of bf16 / int8 on the real sets")
    parser.add_argument("--profile", action="store_true", help="FLOPs, measured peak and OpenVINO's layer profile")
    parser.add_argument(
        "--denormal-weights",
        type=Path,
        help="checkpoint with the original (denormal-holding) weights of the same network for the 'original "
        "weights' row (default for espnet_p2q8: the real base ESPNet; else the model's own file)",
    )
    parser.add_argument("--skip-int8", action="store_true", help="no int8 variant (no NNCF quantisation)")
    args = parser.parse_args()
    if args.model and args.arch:
        parser.error("give --model or --arch, not both")
    torch.set_num_threads(args.threads)
    size = tuple(args.size)
    cpu, flags = cpu_description()
    caps = cpu_capabilities()
    import onnxruntime
    import openvino

    print(f"CPU: {cpu}; flags: {' '.join(flags) or 'none of ' + ', '.join(CPU_FLAGS)}")
    print(f"OpenVINO {openvino.__version__} sees: {', '.join(caps)}; onnxruntime {onnxruntime.__version__}; torch "
          f"{torch.__version__}; {args.threads} threads; load average {os.getloadavg()[0]:.2f} at start")  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.arch:
            torch.manual_seed(0)
            path = save_checkpoint(build_model(args.arch).eval(), tmp / "m.safetensors")
            label = f"{args.arch} (random weights)"
        else:
            path = resolve_model(args.model or "default")
            label = f"{args.model or 'default'}" if is_model_name(args.model or "default") else path.name
        flushed = load_model(path)
        default_original = DENORMAL_WEIGHTS.get(flushed.arch)
        if args.denormal_weights:
            original_path = args.denormal_weights
        elif default_original and (args.realdata / default_original).is_file() and not args.arch:
            original_path = args.realdata / default_original
        else:
            original_path = path
        original = raw_model(flushed, original_path)
        print(f"model {label} ({flushed.arch}), input {size[0]}x{size[1]}; denormal weights: "
              f"{count_denormals(original)} in {original_path.name} (the 'original weights' row), "
              f"{count_denormals(flushed)} after loading {path.name}")  # fmt: skip
        onnx_path = export_model(flushed, tmp / "m.onnx", dict(flushed.checkpoint_metadata, path=str(path)), size)

        backends = {
            "torch, original weights, no FTZ": TorchBackend.from_model(original, flush_denormal=False),
            "torch, flushed weights, no FTZ": TorchBackend.from_model(flushed, flush_denormal=False),
            "torch": TorchBackend.from_model(load_model(path)),
            "onnxruntime": OnnxRuntimeBackend(onnx_path, threads=args.threads),
            "openvino fp32": OpenVinoBackend(onnx_path, threads=args.threads),
        }
        notes = {}
        if "BF16" in caps:
            backends["openvino bf16"] = OpenVinoBackend(onnx_path, threads=args.threads, precision="bf16")
        else:
            notes["openvino bf16"] = "not run: this CPU has no bf16 arithmetic (OpenVINO sees no BF16)"
        calibration = []
        if not args.skip_int8:
            for folder in CALIBRATION:
                if (args.realdata / folder).is_dir():
                    calibration += calibration_files(args.realdata / folder)
            if calibration:
                idx = np.linspace(0, len(calibration) - 1, min(args.calibration_limit, len(calibration))).round()
                calibration = [calibration[int(i)] for i in idx]
                xml = tmp / "m.int8.xml"
                t0 = time.perf_counter()
                quantize_int8(onnx_path, xml, calibration, progress=None)
                print(f"int8: quantised with NNCF on {len(calibration)} real inlier frames ({', '.join(CALIBRATION)}) "
                      f"in {time.perf_counter() - t0:.0f} s")  # fmt: skip
                backends["openvino int8"] = OpenVinoBackend(xml, threads=args.threads)
            else:
                notes["openvino int8"] = f"not run: no calibration frames under {args.realdata}"
        predictors = {name: Predictor(b, size) for name, b in backends.items()}
        rgb = camera_frame(size)
        reference_labels = predictors["openvino fp32"].predict(rgb)[0]
        results = timed(predictors, rgb, args.frames)
        t_torch = results["torch"][0]
        print(
            f"\n{'variant':34s} {'precision':>9s} {'ms':>8s} {'fps':>6s} {'cpu ms':>8s} {'vs torch':>9s} "
            f"{'labels = fp32':>14s}"
        )
        for name, (wall, cpu_s) in results.items():
            agree = (predictors[name].predict(rgb)[0] == reference_labels).mean()
            same_weights = name != "torch, original weights, no FTZ" or original_path == path
            equal = f"{100 * agree:13.2f}%" if same_weights else "(other weights)"
            print(f"{name:34s} {backends[name].precision:>9s} {1000 * wall:8.1f} {1 / wall:6.2f} {1000 * cpu_s:8.1f} "
                  f"{t_torch / wall:8.2f}x {equal:>14s}")  # fmt: skip
        for name, note in notes.items():
            print(f"{name:34s} {note}")
        best = min(results, key=lambda k: results[k][0])
        fps = 1 / results[best][0]
        ratio = t_torch / results[best][0]
        print(f"\nbest: {best} at {fps:.2f} frames/s: {'PASS' if fps >= TARGET_FPS else 'FAIL'} (target >= "
              f"{TARGET_FPS:g}); {ratio:.2f}x torch: {'PASS' if ratio >= TARGET_RATIO else 'FAIL'} "
              f"(target >= {TARGET_RATIO:g}x)")  # fmt: skip
        fp32 = {k: v for k, v in results.items() if backends[k].precision == "fp32" and "no FTZ" not in k}
        best32 = min(fp32, key=lambda k: fp32[k][0])
        print(f"best fp32 (what backend auto can choose): {best32} at {1 / fp32[best32][0]:.2f} frames/s")

        if args.gate:
            reduced = {k: p for k, p in predictors.items() if backends[k].precision in ("bf16", "int8")}
            if not args.realdata.is_dir() or args.arch:
                print("\ngate: not run (needs the realdata folder and a trained model, not random weights)")
            elif reduced:
                rows = gate(reduced, predictors["openvino fp32"], args.realdata)
                print(f"\naccuracy gate (vs openvino fp32; pass: labels >= {100 * GATE_AGREEMENT:.0f} % equal, "
                      f"|dAP|, |dFPR95| <= {GATE_POINTS:g} point on every set)")  # fmt: skip
                print(f"{'variant':16s} {'set':20s} {'imgs':>4s} {'labels=':>8s} {'AP':>6s} {'fp32 AP':>8s} "
                      f"{'FPR95':>6s} {'fp32 FPR95':>10s}")  # fmt: skip
                for name, sets in rows.items():
                    for set_name, r in sets.items():
                        print(f"{name:16s} {set_name:20s} {r['images']:4d} {100 * r['agreement']:7.2f}% "
                              f"{100 * r['ap']:6.2f} {100 * r['ref_ap']:8.2f} {100 * r['fpr95']:6.2f} "
                              f"{100 * r['ref_fpr95']:10.2f}")  # fmt: skip
                    ok, reasons = gate_verdict(sets)
                    print(f"  {name}: {'PASS' if ok else 'FAIL'}" + ("" if ok else f" (not offered by default: "
                          f"{'; '.join(reasons)})"))  # fmt: skip

        if args.profile:
            flops = conv_flops(flushed, size)
            peak, peak_cpu = matmul_peak()
            print(f"\nfloor: {flops / 1e9:.2f} GFLOP per frame (convolutions); measured fp32 peak ({args.threads} "
                  f"threads, 1536^2 matrix product) {peak / 1e9:.1f} GFLOP per wall second, {peak_cpu / 1e9:.1f} per "
                  f"CPU second; at that peak a frame's convolutions take {1000 * flops / peak:.0f} ms wall "
                  f"({peak / flops:.1f} frames/s), {1000 * flops / peak_cpu:.0f} ms of CPU")  # fmt: skip
            for name, (wall, cpu_s) in results.items():
                print(f"  {name:34s} {flops / wall / 1e9:6.1f} GFLOP/s wall = {100 * flops / wall / peak:5.1f} % of "
                      f"peak; per CPU second {100 * flops / cpu_s / peak_cpu:5.1f} % of peak")  # fmt: skip
            print("\n".join(openvino_profile(onnx_path, rgb, args.threads)))
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
