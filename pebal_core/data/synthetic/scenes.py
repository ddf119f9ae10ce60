"""One sample of each dataset, as pure functions of ``(seed, part, index)``.

Every function here draws all its randomness from ``np.random.default_rng([seed, PART, index])``
(numpy ``SeedSequence`` entropy), so a sample is the same whichever process makes it and in
whatever order: generation parallelises without changing a byte. Each returns arrays and a
JSON-serialisable record of what was drawn (object families, placements, visible pixels); the
writers turn them into files.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from pebal_core.data.synthetic import layout as lay
from pebal_core.data.synthetic import render as ren
from pebal_core.data.synthetic.camera import Camera
from pebal_core.data.synthetic.families import FAMILIES, OE_FAMILIES, TEST_FAMILIES
from pebal_core.data.synthetic.textures import value_noise
from pebal_core.labels import EVAL_ANOMALY, EVAL_INLIER, EVAL_VOID

# SeedSequence stream ids of the dataset parts (never change: they define the world of a seed)
PART_TRAIN, PART_VAL, PART_COCO, PART_FS_LAF, PART_FS_STATIC, PART_SEQUENCE = 1, 2, 3, 4, 5, 6
VOID_LABEL_IDS = (lay.EGO_VEHICLE, lay.RECTIFICATION_BORDER)


def item_rng(seed: int, part: int, index: int, *more: int) -> np.random.Generator:
    """The generator of one sample: independent of every other sample of the world."""
    return np.random.default_rng([int(seed), int(part), int(index), *map(int, more)])


def random_mount(rng: np.random.Generator, height: int, width: int) -> Camera:
    """A camera mounted like a Cityscapes car camera, with per-car variation."""
    return Camera.for_size(
        height,
        width,
        x=1.7,
        y=float(rng.uniform(-0.35, 0.35)),
        z=float(rng.uniform(1.1, 1.5)),
        yaw=float(rng.uniform(-0.04, 0.04)),
        pitch=float(rng.uniform(0.0, 0.06)),
        roll=float(rng.uniform(-0.01, 0.01)),
        baseline=float(rng.uniform(0.2, 0.23)),
    )


def _border(frame: ren.Frame, rng: np.random.Generator) -> None:
    """Rectification border: a few black columns at the left/right image edges (labelId 2)."""
    w = int(rng.integers(1, 4))
    for sl in (np.s_[:, :w], np.s_[:, -w:]):
        frame.labels[sl] = lay.RECTIFICATION_BORDER
        frame.rgb[sl] = 0.02
        frame.anomaly[sl] = 0


def _shoot(st: lay.Street, cam: Camera, rng: np.random.Generator, hood_p: float, border_p: float, pastes=()):
    hood = ren.sample_hood(rng) if rng.random() < hood_p else None
    border = rng.random() < border_p
    frame = ren.render(st, cam, pastes=pastes, hood=hood, detail_seed=int(rng.integers(2**31)))
    if border:
        _border(frame, rng)
    rgb = ren.develop(frame.rgb, ren.sample_grade(rng), rng)
    return frame, rgb


# ----------------------------------------------------------------------------- Cityscapes
def cityscapes_sample(seed: int, split: str, index: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``(rgb uint8 H x W x 3, labelIds uint8 H x W)`` of one inlier street scene."""
    rng = item_rng(seed, PART_TRAIN if split == "train" else PART_VAL, index)
    st = lay.sample_street(rng)
    cam = random_mount(rng, height, width)
    frame, rgb = _shoot(st, cam, rng, hood_p=0.5, border_p=0.5)
    return rgb, frame.labels


# ----------------------------------------------------------------------------- anomalies in street scenes
def _clear_view(st: lay.Street, eyes: list[tuple[float, float]], x: float, y: float, radius: float) -> None:
    """Remove objects that overlap an anomaly at ``(x, y)`` or stand between it and any camera in ``eyes``.

    An object is in the way when its footprint comes within ``radius`` (plus its half width) of
    the ground segment from a camera position to the anomaly.
    """
    keep = []
    for obj in st.objects:
        if obj.kind == "anomaly":  # other anomalies stay (and may partly hide each other)
            keep.append(obj)
            continue
        half = max(obj.params.length, obj.params.width) / 2 if obj.kind == "vehicle" else 0.5
        blocked = False
        for ex, ey in eyes:
            sx, sy = x - ex, y - ey
            t = np.clip(((obj.x - ex) * sx + (obj.y - ey) * sy) / max(sx * sx + sy * sy, 1e-9), 0.0, 1.0)
            dist = math.hypot(obj.x - (ex + t * sx), obj.y - (ey + t * sy))
            blocked |= dist < half + radius
        if not blocked:
            keep.append(obj)
    st.objects[:] = keep


def _anomaly_on_ground(
    st: lay.Street, rng: np.random.Generator, family: str, where: str, x_range, code: int, cam: Camera
) -> lay.Placed:
    """Place a test-family object on the road or beside it, inside the view and not hidden."""
    params = FAMILIES[family].sample(rng)
    for _ in range(20):  # keep the object inside the image
        x = float(cam.x + rng.uniform(*x_range))
        if where == "road":
            lanes = sorted(st.lanes, key=lambda ln: abs((ln[0] + ln[1]) / 2 - cam.y))
            near = rng.random() < 0.7 or len(lanes) == 1
            y0, y1, _ = lanes[0] if near else lanes[int(rng.integers(1, len(lanes)))]
            y = float(rng.uniform(y0 + 0.4, y1 - 0.4))
            z = 0.0
        else:
            side = int(rng.choice([-1, 1]))
            span = st.verge[side] + st.walk[side] + 1.5
            y = float(st.edge(side) + side * rng.uniform(0.3, span))
            z = st.curb_h
        u, _, _ = cam.project(np.array([x, y, z]))
        if 0.05 * cam.width < float(u) < 0.95 * cam.width:
            break
    _clear_view(st, [(cam.x, cam.y)], x, y, 0.8)
    obj = lay.Placed("anomaly", x, y, z, params, anomaly=code, family=family)
    st.objects.append(obj)
    return obj


def _pasted(rng: np.random.Generator, family: str, height: int, width: int):
    """A test-family object drawn flat and pasted anywhere in the image (Fishyscapes Static style)."""
    params = FAMILIES[family].sample(rng)
    probe = FAMILIES[family].draw(params, 100.0, 0.2)
    target = rng.uniform(0.07, 0.28) * height
    sprite = FAMILIES[family].draw(params, 100.0 * target / max(probe.alpha.shape[0], 1), 0.2)
    u = float(rng.uniform(0.06, 0.94) * width)
    v = float(rng.uniform(0.2, 0.95) * height)
    return params, sprite, u, v


def fishyscapes_sample(
    seed: int, split: str, index: int, height: int, width: int
) -> tuple[np.ndarray, np.ndarray, list]:
    """``(rgb, eval labels 0/1/255, object records)`` of one Fishyscapes-style validation image.

    ``LostAndFound``: 1-3 obstacles from the test families standing on the road 6-32 m ahead.
    ``Static``: 2-4 test-family anomalies; the first on the road, the second beside it (sidewalk,
    verge or terrain) or pasted flat anywhere in the image, the rest anywhere. Void (255): the
    ego bonnet and the rectification border.
    """
    part = PART_FS_LAF if split == "LostAndFound" else PART_FS_STATIC
    rng = item_rng(seed, part, index)
    st = lay.sample_street(rng)
    cam = random_mount(rng, height, width)
    records: list[dict] = []
    pastes = []
    n = int(rng.integers(1, 4)) if split == "LostAndFound" else int(rng.integers(2, 5))
    for k in range(n):
        family = str(rng.choice(TEST_FAMILIES))
        code = k + 1
        if split == "LostAndFound":
            where = "road"
        elif k == 0:
            where = "road"
        elif k == 1:
            where = str(rng.choice(["offroad", "pasted"]))
        else:
            where = str(rng.choice(["road", "offroad", "pasted"], p=[0.4, 0.3, 0.3]))
        if where == "pasted":
            params, sprite, u, v = _pasted(rng, family, height, width)
            pastes.append((sprite, u, v, code))
            records.append({"family": family, "placement": where, "u": round(u, 2), "v": round(v, 2), "code": code})
        else:
            x_range = (6.0, 32.0) if where == "road" else (5.0, 25.0)
            if k == 0:
                x_range = (6.0, 25.0)
            obj = _anomaly_on_ground(st, rng, family, where, x_range, code, cam)
            records.append(
                {
                    "family": family,
                    "placement": where,
                    "x": round(obj.x, 3),
                    "y": round(obj.y, 3),
                    "z": round(obj.z, 3),
                    "code": code,
                }
            )
    frame, rgb = _shoot(st, cam, rng, hood_p=0.0 if split == "LostAndFound" else 0.4, border_p=0.5, pastes=pastes)
    label = np.full(frame.labels.shape, EVAL_INLIER, np.uint8)
    label[np.isin(frame.labels, VOID_LABEL_IDS)] = EVAL_VOID
    label[frame.anomaly > 0] = EVAL_ANOMALY
    counts = np.bincount(frame.anomaly.ravel(), minlength=256)
    for r in records:
        r["pixels"] = int(counts[r.pop("code")])
    return rgb, label, records


# ----------------------------------------------------------------------------- COCO (outlier exposure)
def _coco_background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """An indoor/outdoor-ish backdrop that is not a street: wall, floor, clutter, texture."""
    wall = rng.uniform(0.2, 0.9, 3).astype(np.float32)
    floor = rng.uniform(0.15, 0.7, 3).astype(np.float32)
    horizon = int(rng.uniform(0.45, 0.8) * h)
    img = np.empty((h, w, 3), np.float32)
    img[:horizon] = wall
    img[horizon:] = floor
    g = np.linspace(1.1, 0.8, h, dtype=np.float32)[:, None, None]
    img *= g
    for _ in range(int(rng.integers(2, 7))):  # clutter: furniture, windows, pictures
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        x1, y1 = x0 + int(rng.integers(8, w // 2)), y0 + int(rng.integers(8, h // 2))
        cv2.rectangle(img, (x0, y0), (x1, y1), tuple(float(c) for c in rng.uniform(0.1, 0.95, 3)), -1)
    img *= (0.8 + 0.4 * value_noise(rng, (h, w), cells=6))[..., None]
    return img


def coco_sample(seed: int, index: int, height: int, width: int) -> tuple[np.ndarray, list[np.ndarray], list[dict]]:
    """``(rgb uint8, visible masks, object records)`` of one synthetic COCO image of OE objects.

    One object (70%) or two; each is 10-80% of the image height (log-uniform, so small objects
    like distant road debris are as common as large ones). Masks are the pixels each
    object owns after the later one is drawn over the earlier (alpha >= 0.5).
    """
    rng = item_rng(seed, PART_COCO, index)
    img = _coco_background(rng, height, width)
    n = 1 if rng.random() < 0.7 else 2
    masks: list[np.ndarray] = []
    records: list[dict] = []
    for _ in range(n):
        family = str(rng.choice(OE_FAMILIES))
        fam = FAMILIES[family]
        params = fam.sample(rng)
        elev = float(rng.uniform(0.05, 0.4))
        probe = fam.draw(params, 100.0, elev)
        target = float(np.exp(rng.uniform(np.log(0.1), np.log(0.8)))) * height  # log-uniform 10-80%
        sp = fam.draw(params, 100.0 * target / max(probe.alpha.shape[0], 1), elev)
        sh, sw = sp.alpha.shape
        if sh > height - 2 or sw > width - 2:  # keep whole objects: shrink to fit
            f = 0.95 * min((height - 2) / sh, (width - 2) / sw)
            sp = fam.draw(params, 100.0 * target / max(probe.alpha.shape[0], 1) * f, elev)
            sh, sw = sp.alpha.shape
        y0 = int(rng.integers(0, max(height - sh, 0) + 1))
        x0 = int(rng.integers(0, max(width - sw, 0) + 1))
        region = img[y0 : y0 + sh, x0 : x0 + sw]
        a = sp.alpha[: region.shape[0], : region.shape[1], None]
        lit = float(rng.uniform(0.75, 1.15))
        region[:] = region * (1 - a) + sp.rgb[: region.shape[0], : region.shape[1]] * lit * a
        m = np.zeros((height, width), bool)
        m[y0 : y0 + sh, x0 : x0 + sw] = sp.mask[: region.shape[0], : region.shape[1]]
        for prev in masks:
            prev &= ~m
        masks.append(m)
        records.append(
            {
                "family": family,
                "category_id": fam.coco_id,
                "colours": params["colours"],
                "texture": params.get("texture", ""),
            }
        )
    grade = ren.sample_grade(rng)
    grade["vignette"] = 0.0
    rgb = ren.develop(img, grade, rng)
    return rgb, masks, records


# ----------------------------------------------------------------------------- LostAndFound sequences
@dataclasses.dataclass
class SequenceWorld:
    """The street, obstacles, camera mount and motion of one ego-motion sequence."""

    street: lay.Street
    mount: Camera
    speed: float
    fps: float
    obstacles: list[lay.Placed]
    grade: dict

    def ego_x(self, frame: int) -> float:
        """Distance the ego vehicle has driven at ``frame`` (metres along +x)."""
        return self.speed * frame / self.fps


def sequence_world(seed: int, index: int, height: int, width: int, frames: int, fps: float) -> SequenceWorld:
    """The world of sequence ``index``: free lanes, 1-3 test-family obstacles ahead on the road.

    The camera drives forward at a constant speed; obstacles start about 18-40 m ahead and are
    at least 6 m ahead of the camera in the last frame, so they grow but never leave the image.
    """
    rng = item_rng(seed, PART_SEQUENCE, index)
    st = lay.sample_street(rng, traffic=False)
    mount = Camera.for_size(
        height,
        width,
        x=1.7,
        y=0.0,
        z=float(rng.uniform(1.15, 1.4)),
        pitch=float(rng.uniform(0.01, 0.05)),
        baseline=0.21,
    )
    speed = float(rng.uniform(4.0, 7.0))
    travel = speed * (frames - 1) / fps
    obstacles = []
    for k in range(int(rng.integers(1, 4))):
        family = str(rng.choice(TEST_FAMILIES))
        fam = FAMILIES[family]
        params = fam.sample(rng)
        d_end = float(rng.uniform(6.0, 11.0))
        x = mount.x + travel + d_end + 3.0 * k
        y = float(rng.uniform(-1.2, 1.2)) if k == 0 else float(rng.uniform(-2.5, 2.5))
        laf_id = int(params.get("laf_id", fam.laf_ids[0]))
        _clear_view(st, [(mount.x, mount.y), (mount.x + travel, mount.y)], x, y, 0.8)
        obstacles.append(lay.Placed("anomaly", x, y, 0.0, params, anomaly=laf_id, family=family))
    st.objects.extend(obstacles)
    return SequenceWorld(st, mount, speed, fps, obstacles, ren.sample_grade(rng))


def sequence_frame(world: SequenceWorld, seed: int, index: int, frame: int) -> tuple[np.ndarray, ren.Frame]:
    """``(rgb uint8, rendered frame)`` of one frame; the frame's anomaly map holds LostAndFound ids."""
    rng = item_rng(seed, PART_SEQUENCE, index, frame)
    cam = world.mount.moved(dx=world.ego_x(frame))
    out = ren.render(world.street, cam, detail_seed=int(rng.integers(2**31)))
    return ren.develop(out.rgb, world.grade, rng), out


def laf_label_ids(frame: ren.Frame) -> np.ndarray:
    """LostAndFound ``gtCoarse_labelIds``: 0 void, 1 free space (road), obstacle class ids >= 2."""
    ids = np.zeros(frame.labels.shape, np.uint8)
    ids[frame.labels == lay.ROAD] = 1
    ids[frame.anomaly > 0] = frame.anomaly[frame.anomaly > 0]
    return ids


LAF_TRAIN_IDS = {0: 255, 1: 1}
"""``gtCoarse_labelTrainIds`` as in the PEBAL / Meta-OoD ``LostAndFound`` class table: background
255, free space 1, hazard obstacles 2 (every obstacle id the synthetic world uses is a hazard)."""


def laf_train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map ``gtCoarse_labelIds`` to the prepared ``gtCoarse_labelTrainIds`` (255 / 1 / 2)."""
    out = np.full(label_ids.shape, 2, np.uint8)
    for k, v in LAF_TRAIN_IDS.items():
        out[label_ids == k] = v
    return out
