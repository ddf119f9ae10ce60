"""Alarms a driver can trust, measured: obstacle-level numbers on synthetic sequences,
pixel and component numbers on the real single-frame sets.

**Sequences** (``--world``: a synthetic world with the ``lostandfound`` part, e.g. ``pebal synth
--seed 7 --parts lostandfound``; obstacle positions come from its ``world.json``). Every frame
runs through the model (torch, the node's :class:`~pebal_core.runtime.Predictor`) and through
:class:`~pebal_core.alarms.pipeline.AlarmPipeline` in three variants of each operating point: the
raw per-pixel mask (``score >= threshold`` everywhere, single frames), the drivable region alone,
and the point as stored (region + persistence, what the node runs). Ground truth per frame: the
connected components of the obstacle label ids (``gtCoarse`` ids >= 2), each assigned to the
``world.json`` obstacle whose foot point projects nearest (two obstacles of one family share an
id). An obstacle is *visible* in a frame when it has at least ``--min-visible`` (20) pixels, and
*detected* when an obstacle the pipeline reports overlaps its pixels; a reported obstacle
overlapping no obstacle pixel is a *false alarm*. Per variant: the share of obstacles detected
within ``--within`` (3) frames of their first visible frame, false-alarm obstacles per frame,
frames from first visibility to first detection, the distance (camera foot point to obstacle, m)
at first detection, and the ground-position error of the detections (m).

**Real sets** (``--real``: the folder holding ``FS_LostFound_full`` and ``RoadObsticle21``; single
frames, so no persistence; test sets: measured at the model's stored point, never tuned on):
pixel FPR inside the drivable region, the share of anomaly pixels the region keeps, and
SegmentMeIfYouCan component metrics (obstacle track: sIoU, PPV, mean F1) of ``score >= threshold``
with and without the region.

    OMP_NUM_THREADS=1 python benchmarks/bench_alarms.py --world world7 --real /path/Validation_Dataset \\
        --json alarms.json --markdown alarms.md
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from pebal_core.alarms.frame import FrameContext
from pebal_core.alarms.operating_point import METADATA_KEY, NO_PERSISTENCE, OperatingPoint, StoredPoints
from pebal_core.alarms.pipeline import AlarmPipeline
from pebal_core.alarms.region import drivable_region
from pebal_core.component_metrics import EIGHT_CONNECTED, OBSTACLE_TRACK, ComponentMetrics
from pebal_core.data.anomaly_sets import build_anomaly_dataset
from pebal_core.data.lostandfound import list_frames
from pebal_core.data.synthetic.camera import Camera
from pebal_core.fileio import atomic_write_text
from pebal_core.ground import CameraMount, intrinsic_matrix
from pebal_core.images import read_label, read_rgb
from pebal_core.labels import EVAL_ANOMALY, EVAL_INLIER
from pebal_core.model_store import resolve_model
from pebal_core.runtime import Predictor

VARIANTS = {
    "raw per-pixel mask": {"region": "all", "persistence": NO_PERSISTENCE},
    "drivable region": {"region": "drivable", "persistence": NO_PERSISTENCE},
    "region + persistence": {},
}
"""Variant -> changes to the stored operating point (none: the point as the node runs it)."""
REAL_SETS = ("FS_LostFound_full", "RoadObsticle21")


# ----------------------------------------------------------------------------- ground truth
def sequence_cameras(world: dict) -> dict[str, dict]:
    """Sequence name -> its ``world.json`` entry (camera, speed, obstacles)."""
    return {s["name"]: s for s in world["parts"]["lostandfound"]["sequences"]}


def frame_camera(seq: dict, frame: int, height: int, width: int) -> Camera:
    """The camera of ``frame`` (the ego vehicle moves along +x at the sequence's speed)."""
    e, i = seq["camera"]["extrinsic"], seq["camera"]["intrinsic"]
    cam = Camera(
        width, height, i["fx"], i["fy"], i["u0"], i["v0"], e["x"], e["y"], e["z"], e["yaw"], e["pitch"], e["roll"]
    )
    return cam.moved(dx=seq["speed_mps"] * frame / seq["fps"])


def obstacle_masks(ids: np.ndarray, seq: dict, cam: Camera) -> list[np.ndarray]:
    """Per ``world.json`` obstacle, its pixels in this frame (bool ``H x W``; empty when hidden)."""
    obstacles = seq["obstacles"]
    masks = [np.zeros(ids.shape, bool) for _ in obstacles]
    feet = np.array([[o["x"], o["y"], 0.0] for o in obstacles])
    u, v, _ = cam.project(feet)
    for laf_id in sorted({o["laf_id"] for o in obstacles}):
        mine = [k for k, o in enumerate(obstacles) if o["laf_id"] == laf_id]
        cc, n = ndimage.label(ids == laf_id, structure=EIGHT_CONNECTED)
        for c, box in enumerate(ndimage.find_objects(cc), start=1):
            rows, cols = box
            comp = cc == c
            cu = float(np.mean(np.flatnonzero(comp[rows.stop - 1])))
            cv = rows.stop - 0.5
            k = min(mine, key=lambda j: (u[j] - cu) ** 2 + (v[j] - cv) ** 2)
            masks[k] |= comp
    return masks


# ----------------------------------------------------------------------------- sequences
@dataclass
class Tally:
    """Per variant: detections per obstacle and frame, false alarms, ground errors."""

    frames: int = 0
    false_alarms: int = 0
    # (sequence, obstacle) -> list over frames of (visible, detected, distance)
    tracks: dict = field(default_factory=dict)
    ground_errors: list = field(default_factory=list)

    def summary(self, within: int) -> dict:
        detected_in_time, latencies, distances, never = 0, [], [], 0
        first_visible_distance = []
        frame_pairs = frame_hits = 0
        for track in self.tracks.values():
            visible = [i for i, (vis, _, _) in enumerate(track) if vis]
            if not visible:
                continue
            f0 = visible[0]
            first_visible_distance.append(track[f0][2])
            hits = [i for i in range(f0, len(track)) if track[i][1]]
            frame_pairs += sum(1 for i in visible)
            frame_hits += sum(1 for i in visible if track[i][1])
            if not hits:
                never += 1
                continue
            latencies.append(hits[0] - f0)
            distances.append(track[hits[0]][2])
            detected_in_time += int(hits[0] - f0 <= within)
        n = sum(1 for t in self.tracks.values() if any(vis for vis, _, _ in t))
        err = np.asarray(self.ground_errors)
        return {
            "obstacles": n,
            "detected_within": detected_in_time / n if n else math.nan,
            "never_detected": never,
            "false_alarms_per_frame": self.false_alarms / self.frames if self.frames else math.nan,
            "frames": self.frames,
            "latency_frames_mean": float(np.mean(latencies)) if latencies else math.nan,
            "latency_frames_max": int(max(latencies)) if latencies else None,
            "distance_first_detection_median": float(np.median(distances)) if distances else math.nan,
            "distance_first_detection_min": float(np.min(distances)) if distances else math.nan,
            "distance_first_visible_median": float(np.median(first_visible_distance))
            if first_visible_distance
            else math.nan,
            "visible_frames_detected": frame_hits / frame_pairs if frame_pairs else math.nan,
            "ground_error_median": float(np.median(err)) if err.size else math.nan,
            "ground_error_p90": float(np.percentile(err, 90)) if err.size else math.nan,
        }


def measure_sequences(
    predictor: Predictor,
    world_dir: Path,
    setups: dict[tuple[str, str], OperatingPoint],
    min_visible: int,
    progress: bool,
) -> dict:
    """``{(policy, variant): Tally}`` over every frame of the world's LostAndFound sequences;
    ``setups`` maps each ``(policy, variant)`` to its operating point."""
    root = world_dir / "lostandfound"
    seqs = sequence_cameras(json.loads((world_dir / "world.json").read_text()))
    frames = list_frames(root, "test")
    if not frames:
        raise SystemExit(f"no LostAndFound frames under {root}")
    pipes = {key: AlarmPipeline() for key in setups}
    tallies = {key: Tally() for key in pipes}
    for f in tqdm(frames, desc="sequences", unit="frame", disable=not progress):
        seq = seqs[f.sequence]
        rgb = read_rgb(f.image)
        ids = read_label(f.label_ids)
        h, w = ids.shape
        cam = frame_camera(seq, f.frame, h, w)
        truth = obstacle_masks(ids, seq, cam)
        any_obstacle = ids >= 2
        mount = CameraMount(cam.z, cam.pitch, cam.x, cam.y)
        k = intrinsic_matrix(cam.fx, cam.fy, cam.u0, cam.v0)
        stamp = int(f.timestamp_file.read_text()) / 1e9
        labels, score = predictor.predict(rgb)
        for key, pipe in pipes.items():
            out = pipe.process(FrameContext(labels, score, setups[key], rgb, stamp, k, mount))
            tally = tallies[key]
            tally.frames += 1
            for ob in out.obstacles:
                if not any_obstacle[out.components == ob.index + 1].any():
                    tally.false_alarms += 1
            for k, (o, mask) in enumerate(zip(seq["obstacles"], truth, strict=True)):
                hit = [ob for ob in out.obstacles if mask[out.components == ob.index + 1].any()]
                distance = math.hypot(o["x"] - cam.x, o["y"] - cam.y)
                tally.tracks.setdefault((f.sequence, k), []).append(
                    (int(mask.sum()) >= min_visible, bool(hit), distance)
                )
                for ob in hit:
                    if ob.ground is not None:
                        tally.ground_errors.append(math.hypot(ob.ground[0] - o["x"], ob.ground[1] - o["y"]))
    return tallies


# ----------------------------------------------------------------------------- real sets
def measure_real(predictor: Predictor, root: Path, threshold: float, progress: bool) -> dict:
    """Per real set: region FPR, anomaly pixels kept by the region, component metrics with/without."""
    out = {}
    for name in REAL_SETS:
        data = build_anomaly_dataset(f"validation/{name}", root)
        comps = {"all pixels": ComponentMetrics(OBSTACLE_TRACK), "drivable region": ComponentMetrics(OBSTACLE_TRACK)}
        flagged = inlier = kept = anomaly = region_px = valid_px = flagged_all = inlier_all = 0
        for i in tqdm(range(len(data)), desc=name, unit="img", disable=not progress):
            item = data[i]
            label = item["label"]
            labels, score = predictor.predict(item["image"])
            region = drivable_region(labels)
            alarm = score >= threshold
            inl = label == EVAL_INLIER
            flagged += int((alarm & region & inl).sum())
            inlier += int((region & inl).sum())
            flagged_all += int((alarm & inl).sum())
            inlier_all += int(inl.sum())
            kept += int((region & (label == EVAL_ANOMALY)).sum())
            anomaly += int((label == EVAL_ANOMALY).sum())
            region_px += int(region.sum())
            valid_px += int(region.size)
            comps["all pixels"].update(alarm, label)
            comps["drivable region"].update(alarm & region, label)
        out[name] = {
            "images": len(data),
            "fpr_region": flagged / inlier if inlier else math.nan,
            "fpr_all": flagged_all / inlier_all if inlier_all else math.nan,
            "anomaly_in_region": kept / anomaly if anomaly else math.nan,
            "region_share": region_px / valid_px,
            "components": {k: c.compute() for k, c in comps.items()},
        }
    return out


# ----------------------------------------------------------------------------- report
def _pct(x: float) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{100 * x:.1f}"


def _num(x: float, digits: int = 2) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.{digits}f}"


def markdown(result: dict) -> str:
    lines = []
    if "sequences" in result:
        s = result["sequences"]
        lines += [
            f"Synthetic LostAndFound-style sequences, world seed {s['seed']} ({s['frames']} frames, "
            f"{s['obstacles']} obstacles of >= {s['min_visible']} px); model {s['model']}.",
            "",
            f"| threshold | alarms | detected within {s['within']} frames % | false-alarm obstacles / frame | "
            "frames to first detection (mean / max) | distance at first detection (median / min, m) | "
            "visible frames detected % | ground error (median / p90, m) |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for policy, variants in s["results"].items():
            for variant, r in variants.items():
                lines.append(
                    f"| {policy} ({s['thresholds'][policy]:.3f}) | {variant} | {_pct(r['detected_within'])} | "
                    f"{_num(r['false_alarms_per_frame'], 3)} | {_num(r['latency_frames_mean'])} / "
                    f"{r['latency_frames_max']} | {_num(r['distance_first_detection_median'], 1)} / "
                    f"{_num(r['distance_first_detection_min'], 1)} | {_pct(r['visible_frames_detected'])} | "
                    f"{_num(r['ground_error_median'])} / {_num(r['ground_error_p90'])} |"
                )
        lines.append("")
    if "real" in result:
        r = result["real"]
        lines += [
            f"Real single-frame sets at threshold {r['threshold']:.3f} ({r['policy']}), model {r['model']}, network "
            f"input {r['input_size']}; SegmentMeIfYouCan obstacle-track component metrics.",
            "",
            "| set | images | pixel FPR in region % | pixel FPR, all % | anomaly pixels in region % | "
            "sIoU / PPV / mean F1 %, all pixels | sIoU / PPV / mean F1 %, region |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, v in r["sets"].items():
            a, g = v["components"]["all pixels"], v["components"]["drivable region"]
            lines.append(
                f"| {name} | {v['images']} | {_pct(v['fpr_region'])} | {_pct(v['fpr_all'])} | "
                f"{_pct(v['anomaly_in_region'])} | {_pct(a['siou'])} / {_pct(a['ppv'])} / {_pct(a['f1_mean'])} | "
                f"{_pct(g['siou'])} / {_pct(g['ppv'])} / {_pct(g['f1_mean'])} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "--model", help="checkpoint or shipped model name (default: synthetic, the model of the synthetic world)"
    )
    p.add_argument("--world", type=Path, help="synthetic world with the lostandfound part (not seed 0 or 1)")
    p.add_argument("--real", type=Path, help="folder with FS_LostFound_full and RoadObsticle21")
    p.add_argument("--real-input-size", type=int, nargs=2, default=(512, 1024), metavar=("H", "W"))
    p.add_argument(
        "--policy",
        action="append",
        help="operating points of the model to measure (default: tpr95 and the model's default)",
    )
    p.add_argument("--min-visible", type=int, default=20, help="pixels from which an obstacle counts as visible")
    p.add_argument("--within", type=int, default=3, help="frames after first visibility a detection may take")
    p.add_argument("--json", type=Path)
    p.add_argument("--markdown", type=Path)
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    model = resolve_model(args.model or "synthetic")
    predictor = Predictor.from_checkpoint(model)
    stored = StoredPoints.from_metadata(predictor.metadata)
    if not predictor.metadata.get(METADATA_KEY):
        raise SystemExit(f"{model} stores no operating points; run `pebal threshold --write` first")
    default = stored.default
    wanted = args.policy or list(dict.fromkeys(["tpr95", default]))
    points = {policy: stored.points[policy] for policy in wanted}
    thresholds = {policy: point.threshold for policy, point in points.items()}
    result: dict = {}
    progress = not args.no_progress
    if args.world:
        world = json.loads((args.world / "world.json").read_text())
        if world["seed"] in (0, 1):
            print(f"warning: world seed {world['seed']} was used for training or selection", file=sys.stderr)
        setups = {(p, v): replace(point, **changes) for p, point in points.items() for v, changes in VARIANTS.items()}
        tallies = measure_sequences(predictor, args.world, setups, args.min_visible, progress)
        results = {p: {v: tallies[p, v].summary(args.within) for v in VARIANTS} for p in thresholds}
        first = next(iter(results.values()))[next(iter(VARIANTS))]
        result["sequences"] = {
            "seed": world["seed"],
            "model": str(model),
            "thresholds": thresholds,
            "default_policy": default,
            "min_visible": args.min_visible,
            "within": args.within,
            "frames": first["frames"],
            "obstacles": first["obstacles"],
            "results": results,
        }
    if args.real:
        size = tuple(args.real_input_size)
        real_predictor = Predictor.from_checkpoint(model, input_size=size)
        result["real"] = {
            "policy": default,
            "threshold": stored.points[default].threshold,
            "model": str(model),
            "input_size": "x".join(map(str, size)),
            "sets": measure_real(real_predictor, args.real, stored.points[default].threshold, progress),
        }
    text = markdown(result)
    print(text)
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2, default=float) + "\n")
    if args.markdown:
        atomic_write_text(args.markdown, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
