"""Time and peak memory of dataset-level pixel metrics: the reference approach against ours.

Synthetic energy-like float32 scores for ``--images`` images of ``H x W`` pixels (default 100 at
1024 x 2048, about 1 % anomalous and 10 % void pixels), identical in every run (seeded per image).

Approaches, each in its own fresh subprocess (peak memory = that process's ``ru_maxrss``, i.e.
everything the approach needed, measured the same way for all):

``reference``
    What the PEBAL / Meta-OoD evaluation does: keep every image's score and label map, stack them,
    pool the inlier and anomaly scores, then scikit-learn ``roc_auc_score`` and
    ``average_precision_score`` and the reference FPR95 (stable argsort, ``docs/evaluation.md``).
``exact``
    ``pebal_core.metrics.AnomalyMetrics(exact=True)``: per-score counts, updated per image.
``streaming``
    ``AnomalyMetrics(exact=False)``: bounded cell budget, certified error bound.

Timed: only the metric work (storing/updating per image plus the final computation); generating
the synthetic maps is excluded for every approach. Targets: >= 20x faster and <= 1/10
of the reference's peak memory, with identical values (exact) or within the reported bound
(streaming).

    python benchmarks/bench_metrics.py [--images 100] [--size 1024 2048] [--skip-reference]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

from pebal_core.metrics import AnomalyMetrics

APPROACHES = ("reference", "exact", "streaming")


def synthetic_image(i: int, height: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(float32 scores, uint8 labels 0/1/255) of image ``i``: a void band (ego vehicle), a few
    anomalous rectangles (~1 % of pixels), energy-like scores (inliers ~ N(-10, 2), anomalies
    shifted up by 4)."""
    rng = np.random.default_rng(seed + i)
    labels = np.zeros((height, width), np.uint8)
    labels[int(0.9 * height) :] = 255
    area = 0.01 * height * width / 3
    for _ in range(3):
        h = int(np.sqrt(area) * rng.uniform(0.5, 2.0))
        w = int(area / max(h, 1))
        y, x = rng.integers(0, int(0.9 * height) - h), rng.integers(0, width - w)
        labels[y : y + h, x : x + w] = 1
    scores = rng.standard_normal((height, width), dtype=np.float32)
    scores *= 2
    scores -= 10
    scores[labels == 1] += 4
    return scores, labels


def reference_metrics(score_maps: list[np.ndarray], label_maps: list[np.ndarray]) -> dict:
    """The reference pipeline: stack, pool, scikit-learn, argsort-based FPR95."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    conf, gts = np.array(score_maps), np.array(label_maps)
    out_scores, in_scores = conf[gts == 1], conf[gts == 0]
    del conf, gts
    examples = np.squeeze(np.vstack((out_scores.reshape(-1, 1), in_scores.reshape(-1, 1))))
    labels = np.zeros(len(examples), dtype=np.int32)
    labels[: len(out_scores)] += 1
    del out_scores, in_scores
    auroc = roc_auc_score(labels, examples)
    ap = average_precision_score(labels, examples)
    order = np.argsort(examples, kind="mergesort")[::-1]
    s, y = examples[order], labels[order]
    del order
    last_of_run = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]
    tps = np.cumsum(y, dtype=np.float64)[last_of_run]
    fps = 1 + last_of_run - tps
    recall = tps / tps[-1]
    cut = int(np.searchsorted(tps, tps[-1]))
    recall, fps = np.r_[recall[cut::-1], 1.0], np.r_[fps[cut::-1], 0.0]
    fpr95 = fps[np.argmin(np.abs(recall - 0.95))] / np.sum(y == 0)
    return {"auroc": float(auroc), "ap": float(ap), "fpr95": float(fpr95)}


def child(approach: str, images: int, height: int, width: int, seed: int, max_cells: int) -> dict:
    """Run one approach in this process; return timings, peak RSS and the metric values."""
    if approach == "reference":
        import sklearn.metrics  # noqa: F401  (imported before the baseline, like our modules)

    baseline_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    work = 0.0
    if approach == "reference":
        score_maps, label_maps = [], []
        for i in range(images):
            scores, labels = synthetic_image(i, height, width, seed)
            t0 = time.perf_counter()
            score_maps.append(scores.copy())  # the reference keeps a copy of every map
            label_maps.append(labels.copy())
            work += time.perf_counter() - t0
        t0 = time.perf_counter()
        values = reference_metrics(score_maps, label_maps)
        work += time.perf_counter() - t0
        extra = {}
    else:
        metrics = AnomalyMetrics(exact=approach == "exact", max_cells=max_cells)
        for i in range(images):
            scores, labels = synthetic_image(i, height, width, seed)
            t0 = time.perf_counter()
            metrics.update(scores, labels)
            work += time.perf_counter() - t0
        t0 = time.perf_counter()
        result = metrics.compute(curves=False)
        work += time.perf_counter() - t0
        values = {k: result[k] for k in ("auroc", "ap", "fpr95")}
        extra = {"error_bound": {k: result["error_bound"][k] for k in ("auroc", "ap", "fpr95")}, "mode": result["mode"]}
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": work, "peak_rss_mb": peak / 1024, "baseline_rss_mb": baseline_rss / 1024, **values, **extra}


def run_child(approach: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", approach, "--images", str(args.images)]
    cmd += [
        "--size",
        str(args.size[0]),
        str(args.size[1]),
        "--seed",
        str(args.seed),
        "--max-cells",
        str(args.max_cells),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{approach} run failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--size", type=int, nargs=2, default=(1024, 2048), metavar=("H", "W"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-cells", type=int, default=1 << 20, help="streaming-mode cell budget")
    parser.add_argument("--skip-reference", action="store_true", help="only run our two modes")
    parser.add_argument("--child", choices=APPROACHES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.images, *args.size, args.seed, args.max_cells)))
        return

    h, w = args.size
    n_px = args.images * h * w
    print(f"{args.images} images of {h}x{w} ({n_px / 1e6:.0f} M pixels, ~1 % anomalous, 10 % void), float32 scores")
    results = {}
    for approach in APPROACHES:
        if approach == "reference" and args.skip_reference:
            continue
        print(f"running {approach} ...", flush=True)
        results[approach] = run_child(approach, args)
    print(f"\n{'approach':10s} {'seconds':>9s} {'peak RSS MB':>12s} {'AUROC':>18s} {'AP':>18s} {'FPR95':>18s}")
    for name, r in results.items():
        print(
            f"{name:10s} {r['seconds']:9.2f} {r['peak_rss_mb']:12.0f} "
            f"{r['auroc']:18.15f} {r['ap']:18.15f} {r['fpr95']:18.15f}"
        )
    if "streaming" in results:
        print(
            f"streaming certified error bounds: {results['streaming']['error_bound']} ({results['streaming']['mode']})"
        )
    if "reference" not in results:
        return
    ref = results["reference"]
    print()
    for name in ("exact", "streaming"):
        r = results[name]
        speed = ref["seconds"] / r["seconds"]
        mem = r["peak_rss_mb"] / ref["peak_rss_mb"]
        diffs = {k: abs(r[k] - ref[k]) for k in ("auroc", "ap", "fpr95")}
        if name == "exact":
            values_ok = max(diffs.values()) <= 1e-9
        else:
            values_ok = all(diffs[k] <= r["error_bound"][k] + 1e-9 for k in diffs)
        ok = speed >= 20 and mem <= 0.1 and values_ok
        print(
            f"{name:10s} {speed:6.1f}x faster, {mem:.3f} x the reference peak memory, "
            f"|diff| AUROC {diffs['auroc']:.1e} AP {diffs['ap']:.1e} FPR95 {diffs['fpr95']:.1e}  "
            f"[{'PASS' if ok else 'FAIL'}: >= 20x, <= 0.1, values {'ok' if values_ok else 'WRONG'}]"
        )


if __name__ == "__main__":
    main()
