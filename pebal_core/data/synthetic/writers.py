"""Write the synthetic world as real dataset trees, plus the ``world.json`` manifest.

Layout under the output directory (exactly the on-disk layouts the dataset loaders read):

``cityscapes/``
    ``leftImg8bit/{train,val}/<city>/<city>_<seq:06d>_000019_leftImg8bit.png`` (RGB) and
    ``gtFine/{train,val}/<city>/<city>_<seq:06d>_000019_gtFine_labelIds.png`` /
    ``..._gtFine_labelTrainIds.png`` (single channel; trainIds = the official table applied to
    labelIds, void 255).
``coco/``
    ``train2017/<image_id:012d>.jpg``, ``annotations/instances_train2017.json`` (compressed RLE
    masks, categories = the outlier-exposure families) and Meta-OoD's
    ``annotations/ood_seg_train2017/<image_id:012d>.png`` (254 = object, 0 = background).
``fishyscapes/``
    ``{LostAndFound,Static}/original/<name>.png`` + ``labels/<name>.png`` (0 inlier, 1 anomaly,
    255 void).
``lostandfound/``
    ``leftImg8bit/test/<seq>/<seq>_000000_<frame:06d>_leftImg8bit.png``,
    ``gtCoarse/test/<seq>/..._gtCoarse_labelIds.png`` (0 void, 1 free space, >= 2 obstacle ids) and
    ``..._gtCoarse_labelTrainIds.png`` (255 / 1 / 2), ``camera/test/<seq>/..._camera.json``
    (Cityscapes calibration of the camera the frames were rendered with),
    ``timestamp/test/<seq>/..._timestamp.txt`` (integer nanoseconds).
``world.json``
    seed, sizes, counts, the family registry, every anomalous object drawn (family, placement,
    visible pixels), sequence motion and obstacle positions, inlier class frequencies.

Each part is generated into ``.<part>.partial/`` and renamed into place when complete, so an
interrupted run never leaves a half-written tree under a final name.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from pebal_core.data.synthetic import scenes
from pebal_core.data.synthetic.config import WorldConfig
from pebal_core.data.synthetic.families import COLOUR_FAMILIES, FAMILIES, TEXTURE_ROLES, check_disjoint
from pebal_core.fileio import atomic_write_text
from pebal_core.labels import ANOMALY_ID, CLASS_NAMES, NUM_CLASSES, label_ids_to_train_ids
from pebal_core.version import __version__

FORMAT = "pebal-synthetic-world"
WORLD_VERSION = 1
"""Bumped whenever the same seed would produce different images."""
TRAIN_CITIES = ("ashburg", "birchheim", "cedarstadt")
VAL_CITIES = ("elmdorf", "oakfurt")
FISHYSCAPES_SPLITS = ("LostAndFound", "Static")
STREET_NAMES = ("Lindenallee", "Hafenring", "Muehlweg", "Bergstrasse", "Am_Markt", "Feldweg", "Parkstrasse", "Ulmenweg")
T0_NS = 1_500_000_000 * 10**9
"""Timestamp of the first frame of the first sequence (sequences start 10 minutes apart)."""


def _png(img: np.ndarray) -> bytes:
    bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img
    ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 3])
    if not ok:
        raise OSError("PNG encoding failed")
    return buf.tobytes()


def _jpg(img: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    if not ok:
        raise OSError("JPEG encoding failed")
    return buf.tobytes()


# ----------------------------------------------------------------------------- per-sample jobs (run in workers)
def _cityscapes_job(args: tuple) -> tuple[dict[str, bytes], dict]:
    seed, split, index, h, w = args
    cities = TRAIN_CITIES if split == "train" else VAL_CITIES
    city = cities[index % len(cities)]
    stem = f"{city}_{index // len(cities):06d}_000019"
    rgb, label_ids = scenes.cityscapes_sample(seed, split, index, h, w)
    train_ids = label_ids_to_train_ids(label_ids)
    files = {
        f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png": _png(rgb),
        f"gtFine/{split}/{city}/{stem}_gtFine_labelIds.png": _png(label_ids),
        f"gtFine/{split}/{city}/{stem}_gtFine_labelTrainIds.png": _png(train_ids),
    }
    counts = np.bincount(train_ids.ravel(), minlength=256)[:NUM_CLASSES]
    return files, {"counts": counts.tolist(), "pixels": int(train_ids.size)}


def _coco_job(args: tuple) -> tuple[dict[str, bytes], dict]:
    from pycocotools import mask as mask_utils

    seed, index, h, w = args
    image_id = index + 1
    rgb, masks, records = scenes.coco_sample(seed, index, h, w)
    ood = np.zeros((h, w), np.uint8)
    anns = []
    for m, r in zip(masks, records, strict=True):
        ood[m] = ANOMALY_ID
        rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        anns.append(
            {
                "category_id": r["category_id"],
                "segmentation": {"size": [h, w], "counts": rle["counts"].decode("ascii")},
                "area": float(mask_utils.area(rle)),
                "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                "iscrowd": 0,
                "family": r["family"],
            }
        )
    files = {
        f"train2017/{image_id:012d}.jpg": _jpg(rgb),
        f"annotations/ood_seg_train2017/{image_id:012d}.png": _png(ood),
    }
    image = {"id": image_id, "file_name": f"{image_id:012d}.jpg", "height": h, "width": w}
    return files, {"image": image, "annotations": anns, "objects": records}


def _fishyscapes_job(args: tuple) -> tuple[dict[str, bytes], dict]:
    seed, split, index, h, w = args
    name = f"{index:04d}"
    rgb, label, records = scenes.fishyscapes_sample(seed, split, index, h, w)
    files = {f"{split}/original/{name}.png": _png(rgb), f"{split}/labels/{name}.png": _png(label)}
    return files, {"split": split, "name": name, "objects": records}


def sequence_name(index: int) -> str:
    """Directory name of sequence ``index`` (LostAndFound style, e.g. ``01_Lindenallee``)."""
    return f"{index + 1:02d}_{STREET_NAMES[index % len(STREET_NAMES)]}"


def _sequence_job(args: tuple) -> tuple[dict[str, bytes], dict]:
    seed, index, frame, h, w, frames, fps = args
    world = scenes.sequence_world(seed, index, h, w, frames, fps)
    rgb, out = scenes.sequence_frame(world, seed, index, frame)
    ids = scenes.laf_label_ids(out)
    seq = sequence_name(index)
    stem = f"{seq}_000000_{frame:06d}"
    t_ns = T0_NS + index * 600 * 10**9 + round(frame * 1e9 / fps)
    files = {
        f"leftImg8bit/test/{seq}/{stem}_leftImg8bit.png": _png(rgb),
        f"gtCoarse/test/{seq}/{stem}_gtCoarse_labelIds.png": _png(ids),
        f"gtCoarse/test/{seq}/{stem}_gtCoarse_labelTrainIds.png": _png(scenes.laf_train_ids(ids)),
        f"camera/test/{seq}/{stem}_camera.json": (
            json.dumps(world.mount.to_cityscapes_json(), indent=2) + "\n"
        ).encode(),
        f"timestamp/test/{seq}/{stem}_timestamp.txt": f"{t_ns}\n".encode(),
    }
    pixels = {str(o.anomaly): int((out.anomaly == o.anomaly).sum()) for o in world.obstacles}
    return files, {"sequence": seq, "frame": frame, "timestamp_ns": t_ns, "obstacle_pixels": pixels}


def _init_worker() -> None:
    cv2.setNumThreads(1)


# ----------------------------------------------------------------------------- orchestration
def _run_jobs(fn: Callable, jobs: list[tuple], root: Path, desc: str, pool, progress: bool) -> list[dict]:
    """Run ``fn`` over ``jobs`` (in order; in ``pool`` if given), write the files it returns under ``root``.

    Returns the records ``fn`` returned, in job order.
    """
    records = []
    chunk = max(1, min(8, len(jobs) // 8))
    results: Iterable = map(fn, jobs) if pool is None else pool.imap(fn, jobs, chunksize=chunk)
    with tqdm(total=len(jobs), desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for files, record in results:
            for rel, data in files.items():
                path = root / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(data)
            records.append(record)
            bar.update(1)
    return records


def _class_stats(records: list[dict]) -> dict:
    counts = np.sum([r["counts"] for r in records], axis=0) if records else np.zeros(NUM_CLASSES)
    pixels = sum(r["pixels"] for r in records) or 1
    images = np.sum([np.asarray(r["counts"]) > 0 for r in records], axis=0) if records else np.zeros(NUM_CLASSES)
    return {
        name: {"pixel_fraction": round(float(counts[k]) / pixels, 6), "images": int(images[k])}
        for k, name in enumerate(CLASS_NAMES)
    }


def _gen_cityscapes(cfg: WorldConfig, root: Path, pool, progress: bool) -> dict:
    out = {}
    for split, n in (("train", cfg.train), ("val", cfg.val)):
        jobs = [(cfg.seed, split, i, cfg.height, cfg.width) for i in range(n)]
        recs = _run_jobs(_cityscapes_job, jobs, root, f"cityscapes/{split}", pool, progress)
        out[split] = {"images": n, "classes": _class_stats(recs)}
    return out


def _gen_coco(cfg: WorldConfig, root: Path, pool, progress: bool) -> dict:
    jobs = [(cfg.seed, i, cfg.coco_height, cfg.coco_width) for i in range(cfg.coco)]
    recs = _run_jobs(_coco_job, jobs, root, "coco/train2017", pool, progress)
    images, anns, objects = [], [], []
    for r in recs:
        images.append(r["image"])
        for a, o in zip(r["annotations"], r["objects"], strict=True):
            a = {"id": len(anns) + 1, "image_id": r["image"]["id"], **a}
            anns.append(a)
            objects.append({"image_id": r["image"]["id"], "annotation_id": a["id"], "area": a["area"], **o})
    categories = [
        {"id": f.coco_id, "name": f.name, "supercategory": f.supercategory}
        for f in sorted(FAMILIES.values(), key=lambda f: f.coco_id)
        if f.role == "oe"
    ]
    coco = {
        "info": {
            "description": "PEBAL synthetic world: outlier-exposure objects",
            "version": str(WORLD_VERSION),
            "year": 2024,
            "contributor": f"pebal synth --seed {cfg.seed}",
        },
        "licenses": [],
        "images": images,
        "annotations": anns,
        "categories": categories,
    }
    path = root / "annotations" / "instances_train2017.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(coco), encoding="utf-8")
    return {"images": cfg.coco, "annotations": len(anns), "objects": objects}


def _gen_fishyscapes(cfg: WorldConfig, root: Path, pool, progress: bool) -> dict:
    out = {}
    for split in FISHYSCAPES_SPLITS:
        jobs = [(cfg.seed, split, i, cfg.height, cfg.width) for i in range(cfg.fishyscapes)]
        recs = _run_jobs(_fishyscapes_job, jobs, root, f"fishyscapes/{split}", pool, progress)
        out[split] = {
            "images": cfg.fishyscapes,
            "objects": [{"name": r["name"], **o} for r in recs for o in r["objects"]],
        }
    return out


def _gen_lostandfound(cfg: WorldConfig, root: Path, pool, progress: bool) -> dict:
    jobs = [
        (cfg.seed, s, f, cfg.height, cfg.width, cfg.frames, cfg.fps)
        for s in range(cfg.sequences)
        for f in range(cfg.frames)
    ]
    recs = _run_jobs(_sequence_job, jobs, root, "lostandfound/test", pool, progress)
    seqs = []
    for s in range(cfg.sequences):
        world = scenes.sequence_world(cfg.seed, s, cfg.height, cfg.width, cfg.frames, cfg.fps)
        frames = [r for r in recs if r["sequence"] == sequence_name(s)]
        seqs.append(
            {
                "name": sequence_name(s),
                "frames": cfg.frames,
                "fps": cfg.fps,
                "speed_mps": world.speed,
                "first_timestamp_ns": frames[0]["timestamp_ns"] if frames else None,
                "camera": world.mount.to_cityscapes_json(),
                "ego_motion": "ego vehicle moves along +x at speed_mps; world frame = vehicle frame at frame 0",
                "obstacles": [
                    {
                        "family": o.family,
                        "laf_id": o.anomaly,
                        "x": o.x,
                        "y": o.y,
                        "z": o.z,
                        "pixels_per_frame": [r["obstacle_pixels"][str(o.anomaly)] for r in frames],
                    }
                    for o in world.obstacles
                ],
            }
        )
    return {"sequences": seqs}


GENERATORS = {
    "cityscapes": _gen_cityscapes,
    "coco": _gen_coco,
    "fishyscapes": _gen_fishyscapes,
    "lostandfound": _gen_lostandfound,
}


def family_registry() -> dict:
    """The OE / test family registry as JSON (what ``world.json`` records under ``families``)."""
    return {
        role: {
            f.name: {
                "shape": f.shape,
                "textures": list(f.textures),
                "colours": list(f.colours),
                "size_m": list(f.size),
                **(
                    {"laf_ids": list(f.laf_ids)}
                    if role == "test"
                    else {"coco_id": f.coco_id, "supercategory": f.supercategory}
                ),
            }
            for f in FAMILIES.values()
            if f.role == role
        }
        for role in ("oe", "test")
    }


def generate_world(
    out: str | os.PathLike, config: WorldConfig, workers: int = 1, overwrite: bool = False, progress: bool = True
) -> dict:
    """Generate ``config.parts`` of the world under ``out``; returns the manifest (also ``world.json``).

    ``workers > 1`` renders in that many spawned processes (scripts calling this need the usual
    ``if __name__ == "__main__":`` guard); the files are the same as with one worker.

    A part whose directory already exists is refused unless ``overwrite`` (then it is replaced
    once the new one is complete). Parts not generated now keep their previous manifest entry,
    provided ``world.json`` says they came from the same seed, version and image size.
    """
    check_disjoint()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "world.json"
    previous: dict = {}
    if manifest_path.exists():
        previous = json.loads(manifest_path.read_text(encoding="utf-8"))
        same = (previous.get("seed"), previous.get("version"), previous.get("image_size")) == (
            config.seed,
            WORLD_VERSION,
            [config.height, config.width],
        )
        if not same and not overwrite:
            raise FileExistsError(
                f"{out} holds a synthetic world with seed {previous.get('seed')}, version {previous.get('version')}, "
                f"size {previous.get('image_size')}; use another --out or --overwrite to replace it"
            )
        if not same:
            previous = {}
    for part in config.parts:
        if (out / part).exists() and not overwrite:
            raise FileExistsError(f"{out / part} already exists; use --overwrite to replace it or another --out")
    parts = dict(previous.get("parts", {}))
    # one worker pool for the whole run (spawned processes: nothing inherited, output identical)
    pool = multiprocessing.get_context("spawn").Pool(workers, initializer=_init_worker) if workers > 1 else None
    try:
        for part in config.parts:
            tmp = out / f".{part}.partial"
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
            parts[part] = GENERATORS[part](config, tmp, pool, progress)
            final = out / part
            if final.exists():
                old = out / f".{part}.old"
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old)
            else:
                os.replace(tmp, final)
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    manifest = {
        "format": FORMAT,
        "version": WORLD_VERSION,
        "generator": f"pebal {__version__}",
        "seed": config.seed,
        "image_size": [config.height, config.width],
        "coco_image_size": [config.coco_height, config.coco_width],
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(config).items()},
        "families": family_registry(),
        "colour_families": {n: [c.h_lo, c.h_hi, c.s_lo, c.s_hi, c.v_lo, c.v_hi] for n, c in COLOUR_FAMILIES.items()},
        "texture_roles": TEXTURE_ROLES,
        "conventions": {
            "cityscapes": "labelIds and trainIds follow the official Cityscapes table; void = 255",
            "fishyscapes": "labels 0 inlier, 1 anomaly (test families only), 255 void (ego bonnet, border)",
            "lostandfound": "gtCoarse labelIds 0 void, 1 free space, >=2 LostAndFound obstacle id of the family; "
            "labelTrainIds 255 / 1 free / 2 obstacle; camera JSON = Cityscapes convention (x fwd, y left, z up)",
            "coco": f"every annotation is an outlier-exposure family; ood_seg PNG {ANOMALY_ID} = object",
        },
        "parts": parts,
    }
    atomic_write_text(manifest_path, json.dumps(manifest, indent=1) + "\n")
    return manifest
