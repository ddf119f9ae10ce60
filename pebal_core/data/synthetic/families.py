"""The registry of anomalous object families: outlier-exposure (OE) families and test families.

PEBAL is trained with outlier exposure (COCO objects pasted into Cityscapes) and tested on objects
it has never seen (LostAndFound obstacles, Fishyscapes anomalies). The synthetic world keeps that
separation by construction: every anomalous object belongs to exactly one :class:`Family`, and

* ``role == "oe"`` families (written only to the synthetic COCO tree) and
* ``role == "test"`` families (drawn only into the Fishyscapes and LostAndFound trees)

use disjoint **shapes**, disjoint **texture** generators and disjoint **colour families** (HSV
boxes that share no colour, see :func:`check_disjoint`). The OE families mimic COCO categories
that are not Cityscapes classes (balls, umbrellas, animals, kites, vases, chairs) in saturated
colours and in natural tones (terracotta, olive, navy, beige) chosen outside every test colour
family and away from every traffic-sign colour (signs are an inlier class: an OE object in sign
blue taught the first default model that signs are anomalies, the synthetic analogue of the
reference excluding COCO's Cityscapes-like categories from outlier exposure); the test families mimic LostAndFound obstacles (cardboard boxes, tyres,
crates, pallets, bags, styrofoam, toy cars) in colours that partly overlap inlier appearance
(asphalt greys, tyre black, brick/cardboard browns, white markings, red cars, yellow signs), so
a softmax classifier is confidently wrong on some of them.

Each family samples its parameters once (:meth:`Family.sample`, all randomness) and draws them at
any scale (:meth:`Family.draw`), so an object seen in consecutive frames stays the same object.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from pebal_core.data.synthetic.sprites import Painter, Sprite, normalised_noise
from pebal_core.data.synthetic.street_objects import SIGN_COLOURS
from pebal_core.data.synthetic.textures import ColourFamily

# ----------------------------------------------------------------------------- colour families
COLOUR_FAMILIES: dict[str, ColourFamily] = {
    c.name: c
    for c in (
        # test: colours that overlap inlier appearance (road, tyres, buildings, markings, cars, signs)
        ColourFamily("cardboard_brown", 22, 40, 0.35, 0.62, 0.38, 0.70),
        ColourFamily("pallet_wood", 30, 48, 0.18, 0.33, 0.60, 0.85),
        ColourFamily("rubber_black", 0, 360, 0.0, 0.25, 0.04, 0.20),
        ColourFamily("crate_grey", 0, 360, 0.0, 0.10, 0.26, 0.55),
        ColourFamily("polystyrene_white", 0, 360, 0.0, 0.08, 0.82, 0.98),
        ColourFamily("toy_red", 350, 8, 0.75, 1.0, 0.55, 0.95),
        ColourFamily("toy_yellow", 46, 58, 0.80, 1.0, 0.75, 1.0),
        # outlier exposure: saturated hues of their own
        ColourFamily("magenta", 290, 335, 0.45, 1.0, 0.45, 1.0),
        ColourFamily("violet", 255, 289, 0.40, 1.0, 0.40, 1.0),
        ColourFamily("cyan", 170, 200, 0.45, 1.0, 0.50, 1.0),
        ColourFamily("lime", 70, 110, 0.60, 1.0, 0.55, 1.0),
        ColourFamily("safety_orange", 12, 34, 0.80, 1.0, 0.80, 1.0),
        ColourFamily("pink", 336, 349, 0.25, 0.60, 0.80, 1.0),
        # outlier exposure: natural tones that still avoid every test colour family
        ColourFamily("terracotta", 10, 20, 0.45, 0.75, 0.35, 0.65),
        ColourFamily("olive", 55, 75, 0.35, 0.70, 0.30, 0.60),
        ColourFamily("navy", 215, 245, 0.40, 0.80, 0.12, 0.35),
        ColourFamily("beige", 30, 50, 0.10, 0.17, 0.60, 0.80),
    )
}

TEXTURE_ROLES: dict[str, str] = {
    # test textures
    "corrugated": "test",
    "tape": "test",
    "tread": "test",
    "vent_holes": "test",
    "wood_grain": "test",
    "crumple": "test",
    "speckle": "test",
    "glossy": "test",
    # outlier-exposure textures
    "bold_stripes": "oe",
    "checker": "oe",
    "polka_dots": "oe",
    "radial_segments": "oe",
    "marble": "oe",
    "two_tone_gradient": "oe",
}
"""Every surface pattern generator and the role allowed to use it."""


@dataclasses.dataclass(frozen=True)
class Family:
    """One kind of anomalous object.

    ``shape`` names the silhouette generator, ``textures`` the pattern generators, ``colours``
    the colour families its colours are drawn from. ``laf_ids`` (test families) are the
    LostAndFound obstacle label ids used in ``gtCoarse`` (the real LostAndFound class of the same
    kind of object); ``coco_id`` (OE families) the COCO category id in the synthetic COCO tree.
    ``size`` is the range of the object's largest dimension in metres.
    """

    name: str
    role: str
    shape: str
    textures: tuple[str, ...]
    colours: tuple[str, ...]
    size: tuple[float, float]
    laf_ids: tuple[int, ...] = ()
    coco_id: int = 0
    supercategory: str = ""
    _sample: Callable[[Family, np.random.Generator], dict] | None = dataclasses.field(default=None, repr=False)
    _draw: Callable[[dict, float, float], Sprite] | None = dataclasses.field(default=None, repr=False)

    def sample(self, rng: np.random.Generator) -> dict:
        """All random parameters of one object (JSON-serialisable), including its colours."""
        params = self._sample(self, rng)
        params["family"] = self.name
        return params

    def draw(self, params: dict, px_per_m: float, elevation: float = 0.15) -> Sprite:
        """Render the object at ``px_per_m``; ``elevation`` (rad) is the viewing angle from above."""
        return self._draw(params, px_per_m, elevation)


def _colours(fam: Family, rng: np.random.Generator, n: int) -> list[list[float]]:
    out = []
    for _ in range(n):
        cf = COLOUR_FAMILIES[fam.colours[int(rng.integers(len(fam.colours)))]]
        out.append([round(float(c), 5) for c in cf.sample(rng)])
    return out


def _seed(rng: np.random.Generator) -> int:
    return int(rng.integers(0, 2**31 - 1))


# ----------------------------------------------------------------------------- shared drawing helpers
def _shade(painter: Painter, top: float = 1.12, bottom: float = 0.82) -> None:
    """Vertical light gradient (brighter on top), as if lit from above."""
    _, b = painter.local_grid()
    span = max(float(b.max() - b.min()), 1e-6)
    painter.modulate(bottom + (top - bottom) * (b - b.min()) / span)


def _box(p: Painter, w: float, h: float, d: float, k: float, elev: float, base, label: int = 0) -> dict:
    """2.5D cuboid: front face, top face and one side face; returns the face polygons."""
    base = np.asarray(base, np.float32)
    dz = d * np.sin(elev)
    dx = k * d
    front = [(-w / 2, 0), (w / 2, 0), (w / 2, h), (-w / 2, h)]
    top = [(-w / 2, h), (w / 2, h), (w / 2 + dx, h + dz), (-w / 2 + dx, h + dz)]
    sx = w / 2 if dx >= 0 else -w / 2
    side = [(sx, 0), (sx, h), (sx + dx, h + dz), (sx + dx, dz)]
    p.polygon(front, base * 0.82, label)
    if abs(dx) > 1e-4:
        p.polygon(side, base * 0.6, label)
    p.polygon(top, base * 1.08, label)
    return {"front": front, "top": top, "side": side}


def _box_extent(w: float, h: float, d: float, k: float, elev: float) -> tuple[float, float, float, float]:
    dx = k * d
    return (-w / 2 + min(0.0, dx), w / 2 + max(0.0, dx), 0.0, h + d * np.sin(elev))


# ----------------------------------------------------------------------------- test families
def _sample_cardboard(fam: Family, rng: np.random.Generator) -> dict:
    w = rng.uniform(0.3, 0.9)
    return {
        "w": w,
        "h": rng.uniform(0.25, 0.75) * (0.6 + 0.4 * w / 0.9),
        "d": rng.uniform(0.3, 0.8),
        "k": rng.uniform(-0.45, 0.45),
        "colours": _colours(fam, rng, 2),
        "period": rng.uniform(0.025, 0.05),
        "tape": bool(rng.random() < 0.7),
        "seed": _seed(rng),
    }


def _draw_cardboard(q: dict, px: float, elev: float) -> Sprite:
    p = Painter(_box_extent(q["w"], q["h"], q["d"], q["k"], elev), px)
    faces = _box(p, q["w"], q["h"], q["d"], q["k"], elev, q["colours"][0])
    a, b = p.local_grid()
    corr = 1.0 - 0.1 * (0.5 + 0.5 * np.sin(2 * np.pi * a / q["period"]))  # corrugated
    p.modulate(corr.astype(np.float32))
    if q["tape"]:  # a tape strip down the front and across the top
        tw = 0.06
        tape = np.asarray(q["colours"][1], np.float32) * 1.15
        p.polygon([(-tw, 0.0), (tw, 0.0), (tw, q["h"]), (-tw, q["h"])], tape * 0.85)
        t = faces["top"]
        mid0 = (np.asarray(t[0]) + np.asarray(t[1])) / 2
        mid1 = (np.asarray(t[2]) + np.asarray(t[3])) / 2
        p.polygon([mid0 - (tw, 0), mid0 + (tw, 0), mid1 + (tw, 0), mid1 - (tw, 0)], tape)
    n = normalised_noise(q["seed"], (p.h, p.w))
    p.modulate(0.9 + 0.2 * n)
    return p.finish()


def _sample_tyre(fam: Family, rng: np.random.Generator) -> dict:
    return {
        "r": rng.uniform(0.28, 0.4),
        "t": rng.uniform(0.17, 0.26),
        "lying": bool(rng.random() < 0.65),
        "hole": rng.uniform(0.5, 0.62),
        "colours": _colours(fam, rng, 1),
        "tread": rng.uniform(0.035, 0.06),
        "seed": _seed(rng),
    }


def _draw_tyre(q: dict, px: float, elev: float) -> Sprite:
    r, t = q["r"], q["t"]
    base = np.asarray(q["colours"][0], np.float32)
    if q["lying"]:
        ry = max(r * np.sin(elev), 0.03)
        p = Painter((-r, r, 0.0, t + 2 * ry), px)
        p.ellipse((0, ry), (r, ry), base * 0.7)
        p.rect(-r, ry, r, t + ry, base * 0.7)
        p.ellipse((0, t + ry), (r, ry), base * 1.0)
        a, b = p.local_grid()
        side = (b < t + ry * 0.3) & (p.cover > 0)
        tread = 0.75 + 0.35 * (np.sin(2 * np.pi * (a + 0.5 * np.abs(b - ry - t / 2)) / q["tread"]) > 0)
        p.modulate(np.where(side, tread, 1.0).astype(np.float32))
        p.ellipse((0, t + ry * 1.05), (r * q["hole"], ry * q["hole"]), base, erase=True)
    else:
        p = Painter((-r - t * 0.3, r + t * 0.3, 0.0, 2 * r), px)
        p.ellipse((t * 0.25, r), (r, r), base * 0.6)  # tread band seen obliquely
        p.ellipse((0, r), (r, r), base)
        a, b = p.local_grid()
        ang = np.arctan2(b - r, a)
        rad = np.hypot(a, b - r)
        tread = 0.8 + 0.3 * (np.sin(ang * 2 * np.pi * r / q["tread"]) > 0)
        p.modulate(np.where(rad > r * 0.85, tread, 1.0).astype(np.float32))
        p.ellipse((0, r), (r * q["hole"] * 1.05, r * q["hole"] * 1.05), base * 1.6)  # rim
        p.ellipse((0, r), (r * q["hole"] * 0.6, r * q["hole"] * 0.6), base, erase=True)
    n = normalised_noise(q["seed"], (p.h, p.w))
    p.modulate(0.85 + 0.3 * n)
    return p.finish()


def _sample_crate(fam: Family, rng: np.random.Generator) -> dict:
    stack = int(rng.integers(1, 3))
    return {
        "w": rng.uniform(0.4, 0.6),
        "h": rng.uniform(0.25, 0.34) * stack,
        "d": rng.uniform(0.3, 0.4),
        "k": rng.uniform(-0.5, 0.5),
        "cols": int(rng.integers(3, 6)),
        "rows": int(rng.integers(2, 3)) * stack,
        "colours": _colours(fam, rng, 1),
        "seed": _seed(rng),
    }


def _draw_crate(q: dict, px: float, elev: float) -> Sprite:
    p = Painter(_box_extent(q["w"], q["h"], q["d"], q["k"], elev), px)
    base = np.asarray(q["colours"][0], np.float32)
    _box(p, q["w"], q["h"], q["d"], q["k"], elev, base)
    w, h, cols, rows = q["w"], q["h"], q["cols"], q["rows"]
    cw, rh = w / cols, h / rows
    for i in range(cols):  # vent holes in the front face
        for j in range(rows):
            a0 = -w / 2 + i * cw + 0.22 * cw
            b0 = j * rh + 0.25 * rh
            p.rect(a0, b0, a0 + 0.56 * cw, b0 + 0.5 * rh, base * 0.3)
    n = normalised_noise(q["seed"], (p.h, p.w))
    p.modulate(0.9 + 0.2 * n)
    return p.finish()


def _sample_pallet(fam: Family, rng: np.random.Generator) -> dict:
    long_side = bool(rng.random() < 0.5)
    return {
        "w": 1.2 if long_side else 0.8,
        "d": 0.8 if long_side else 1.2,
        "h": 0.144,
        "k": rng.uniform(-0.35, 0.35),
        "colours": _colours(fam, rng, 2),
        "grain": rng.uniform(0.012, 0.025),
        "seed": _seed(rng),
    }


def _draw_pallet(q: dict, px: float, elev: float) -> Sprite:
    w, h, d, k = q["w"], q["h"], q["d"], q["k"]
    p = Painter(_box_extent(w, h, d, k, elev), px)
    base = np.asarray(q["colours"][0], np.float32)
    faces = _box(p, w, h, d, k, elev, base)
    block, board = 0.145, 0.022
    for a0, a1 in ((-w / 2 + block, -block / 2), (block / 2, w / 2 - block)):  # fork openings between blocks
        p.rect(a0, board, a1, h - board, base * 0.22)
    t = np.asarray(faces["top"])
    second = np.asarray(q["colours"][1], np.float32)
    for j in range(5):  # deck boards across the top face, alternating tone
        f0, f1 = j / 5 + 0.02, (j + 1) / 5 - 0.04
        pts = [
            t[0] + f0 * (t[3] - t[0]),
            t[1] + f0 * (t[2] - t[1]),
            t[1] + f1 * (t[2] - t[1]),
            t[0] + f1 * (t[3] - t[0]),
        ]
        p.polygon(pts, (base if j % 2 else second) * 1.08)
    a, b = p.local_grid()
    n = normalised_noise(q["seed"], (p.h, p.w), cells=6)
    grain = 0.86 + 0.14 * np.sin(2 * np.pi * (b + 0.04 * n) / q["grain"])  # wood grain
    p.modulate(grain.astype(np.float32))
    return p.finish()


def _blob(rng: np.random.Generator, n: int = 9) -> list[float]:
    return [round(float(v), 4) for v in rng.uniform(0.75, 1.15, n)]


def _blob_outline(radii: list[float], w: float, h: float) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    rr = np.interp(t, np.linspace(0, 2 * np.pi, len(radii) + 1), [*radii, radii[0]])
    pts = np.stack([np.cos(t) * rr * w / 2, h / 2 + np.sin(t) * rr * h / 2], 1)
    pts[:, 1] = np.maximum(pts[:, 1], 0.0)  # resting on the ground
    return pts


def _sample_bag(fam: Family, rng: np.random.Generator) -> dict:
    return {
        "w": rng.uniform(0.3, 0.65),
        "h": rng.uniform(0.25, 0.55),
        "radii": _blob(rng),
        "knot": rng.uniform(-0.2, 0.2),
        "colours": _colours(fam, rng, 1),
        "seed": _seed(rng),
    }


def _draw_bag(q: dict, px: float, elev: float) -> Sprite:
    w, h = q["w"], q["h"]
    p = Painter((-w * 0.65, w * 0.65, 0.0, h * 1.35), px)
    base = np.asarray(q["colours"][0], np.float32)
    outline = _blob_outline(q["radii"], w, h)
    p.polygon(outline, base)
    kx = q["knot"] * w
    p.polygon([(kx - 0.04, h * 0.9), (kx + 0.04, h * 0.9), (kx + 0.07, h * 1.3), (kx - 0.07, h * 1.3)], base * 0.95)
    n = normalised_noise(q["seed"], (p.h, p.w), cells=10)
    crease = np.abs(n - 0.5) < 0.035  # crumpled plastic: bright facets, dark creases
    p.modulate((0.78 + 0.4 * n - 0.35 * crease).astype(np.float32))
    _shade(p, 1.05, 0.8)
    return p.finish()


def _sample_styrofoam(fam: Family, rng: np.random.Generator) -> dict:
    chunks = []
    for _ in range(int(rng.integers(1, 4))):
        cw, ch = rng.uniform(0.15, 0.5), rng.uniform(0.08, 0.3)
        chunks.append({"a": rng.uniform(-0.3, 0.3), "w": cw, "h": ch, "cut": rng.uniform(0.0, 0.4, 4).tolist()})
    return {"chunks": chunks, "k": rng.uniform(-0.3, 0.3), "colours": _colours(fam, rng, 2), "seed": _seed(rng)}


def _draw_styrofoam(q: dict, px: float, elev: float) -> Sprite:
    ext = [0.0, 0.0, 0.0, 0.0]
    for c in q["chunks"]:
        ext = [
            min(ext[0], c["a"] - c["w"] / 2),
            max(ext[1], c["a"] + c["w"] / 2 + 0.15),
            0.0,
            max(ext[3], c["h"] + 0.15),
        ]
    p = Painter(tuple(ext), px)
    for i, c in enumerate(q["chunks"]):
        base = np.asarray(q["colours"][i % 2], np.float32)
        a, w, h, cut = c["a"], c["w"], c["h"], c["cut"]
        dz = 0.3 * w * np.sin(elev) + 0.02
        front = [(a - w / 2, 0), (a + w / 2, 0), (a + w / 2, h * (1 - cut[0] * 0.5)), (a - w / 2 + cut[1] * w * 0.3, h)]
        top = [front[3], front[2], (front[2][0] + q["k"] * 0.2, front[2][1] + dz), (front[3][0] + q["k"] * 0.2, h + dz)]
        p.polygon(front, base * 0.85)
        p.polygon(top, base * 1.05)
    a, b = p.local_grid()
    n = normalised_noise(q["seed"], (p.h, p.w), cells=24)
    p.modulate((1.0 - 0.35 * (n > 0.82)).astype(np.float32))  # speckle (beads)
    return p.finish()


def _sample_bobby(fam: Family, rng: np.random.Generator) -> dict:
    colours = _colours(fam, rng, 1)
    red = COLOUR_FAMILIES["toy_red"].contains(colours[0])
    return {
        "side_view": bool(rng.random() < 0.6),
        "length": rng.uniform(0.6, 0.78),
        "h": rng.uniform(0.38, 0.5),
        "facing": int(rng.choice([-1, 1])),
        "colours": colours,
        "laf_id": 28 if red else 29,
        "seed": _seed(rng),
    }


def _draw_bobby(q: dict, px: float, elev: float) -> Sprite:
    ln, h, f = q["length"], q["h"], q["facing"]
    base = np.asarray(q["colours"][0], np.float32)
    wheel = base * 0.12
    if q["side_view"]:
        p = Painter((-ln / 2 - 0.02, ln / 2 + 0.02, 0.0, h + 0.12), px)
        r = 0.08
        body = [
            (-ln / 2, r),
            (ln / 2, r),
            (ln / 2, h * 0.55),
            (ln * 0.3, h * 0.62),
            (ln * 0.1, h),
            (-ln * 0.25, h),
            (-ln * 0.32, h * 0.7),
            (-ln / 2, h * 0.65),
        ]
        body = [(f * a, b) for a, b in body]
        p.polygon(body, base)
        p.segment((f * ln * 0.28, h * 0.6), (f * ln * 0.36, h + 0.1), 0.03, base * 0.4)  # steering column
        p.segment((f * ln * 0.3, h + 0.1), (f * ln * 0.42, h + 0.06), 0.05, base * 0.3)
        for a in (-ln * 0.33, ln * 0.33):
            p.ellipse((a, r), (r, r), wheel)
    else:
        w = 0.36
        p = Painter((-w / 2 - 0.03, w / 2 + 0.03, 0.0, h + 0.12), px)
        p.polygon([(-w / 2, 0.06), (w / 2, 0.06), (w / 2 * 0.8, h), (-w / 2 * 0.8, h)], base)
        p.segment((-0.1, h + 0.07), (0.1, h + 0.07), 0.04, base * 0.3)
        for a in (-w / 2, w / 2 - 0.06):
            p.rect(a, 0.0, a + 0.06, 0.16, wheel)
    a, b = p.local_grid()
    hl = np.exp(-((a - 0.0) ** 2 + (b - h * 0.85) ** 2) / (0.02 + 0.2 * h**2))  # glossy highlight
    p.modulate((0.85 + 0.6 * hl).astype(np.float32))
    return p.finish()


# ----------------------------------------------------------------------------- outlier-exposure families
def _two_colour(p: Painter, kind: str, q: dict, centre: tuple[float, float], where: np.ndarray | None = None) -> None:
    """Replace the drawn colour by a two-colour OE pattern (multiplied by the drawn shading)."""
    c0, c1 = (np.asarray(c, np.float32) for c in q["colours"][:2])
    a, b = p.local_grid()
    ang = q["angle"]
    u = a * np.cos(ang) + b * np.sin(ang)
    v = -a * np.sin(ang) + b * np.cos(ang)
    per = q["period"]
    if kind == "bold_stripes":
        t = (np.floor(u / per) % 2).astype(np.float32)
    elif kind == "checker":
        t = ((np.floor(u / per) + np.floor(v / per)) % 2).astype(np.float32)
    elif kind == "polka_dots":
        du = (u / per) % 1.0 - 0.5
        dv = (v / per) % 1.0 - 0.5
        t = (np.hypot(du, dv) < 0.28).astype(np.float32)
    elif kind == "radial_segments":
        t = (np.floor((np.arctan2(b - centre[1], a - centre[0]) + np.pi) / (2 * np.pi) * q["segments"]) % 2).astype(
            np.float32
        )
    elif kind == "marble":
        n = normalised_noise(q["seed"], (p.h, p.w), cells=5)
        t = (0.5 + 0.5 * np.sin(u / per * 2.0 + 6.0 * n)).astype(np.float32)
    elif kind == "two_tone_gradient":
        span = max(float(u.max() - u.min()), 1e-6)
        t = ((u - u.min()) / span).astype(np.float32)
    else:
        raise ValueError(f"unknown OE texture {kind}")
    pattern = c0[None, None, :] * (1 - t[..., None]) + c1[None, None, :] * t[..., None]
    base = np.maximum(np.asarray(q["colours"][0], np.float32), 1e-3)
    shading = p.rgb / base[None, None, :]  # how the drawing shaded the base colour
    shading = shading.mean(axis=2, keepdims=True)
    mix = np.clip(pattern * shading, 0, 1)
    sel = (p.cover > 0) if where is None else (where & (p.cover > 0))
    p.rgb[sel] = mix[sel]


def _oe_common(fam: Family, rng: np.random.Generator) -> dict:
    return {
        "colours": _colours(fam, rng, 3),
        "texture": fam.textures[int(rng.integers(len(fam.textures)))],
        "angle": float(rng.uniform(0, np.pi)),
        "period": float(rng.uniform(0.05, 0.16)),
        "segments": int(rng.integers(4, 11)) * 2,
        "seed": _seed(rng),
    }


def _sample_ball(fam: Family, rng: np.random.Generator) -> dict:
    return {**_oe_common(fam, rng), "r": rng.uniform(0.12, 0.45)}


def _draw_ball(q: dict, px: float, elev: float) -> Sprite:
    r = q["r"]
    p = Painter((-r, r, 0.0, 2 * r), px)
    p.ellipse((0, r), (r, r), q["colours"][0])
    a, b = p.local_grid()
    d = np.hypot(a + 0.35 * r, b - 1.35 * r) / (2 * r)
    p.modulate(np.clip(1.25 - 0.7 * d, 0.45, 1.3).astype(np.float32))
    _two_colour(p, q["texture"], q, (0.0, r))
    return p.finish()


def _sample_umbrella(fam: Family, rng: np.random.Generator) -> dict:
    return {
        **_oe_common(fam, rng),
        "R": rng.uniform(0.45, 1.0),
        "ribs": int(rng.integers(6, 11)),
        "stick": rng.uniform(0.6, 0.95),
    }


def _draw_umbrella(q: dict, px: float, elev: float) -> Sprite:
    big_r, ribs, stick = q["R"], q["ribs"], q["stick"]
    top = stick + 0.55 * big_r
    p = Painter((-big_r, big_r, 0.0, top + 0.06), px)
    handle = np.asarray(q["colours"][2], np.float32) * 0.6
    p.segment((0.0, 0.08), (0.0, top + 0.05), 0.035, handle)
    p.segment((0.0, 0.08), (0.08, 0.0), 0.035, handle)
    t = np.linspace(np.pi, 0.0, 60)
    arc = np.stack([big_r * np.cos(t), stick + 0.55 * big_r * np.sin(t)], 1)
    scal = []
    for i in range(ribs, -1, -1):  # scalloped lower edge between rib tips
        a0 = -big_r + 2 * big_r * i / ribs
        scal.append((a0, stick))
        if i > 0:
            scal.append((a0 - big_r / ribs, stick + 0.08 * big_r))
    canopy = np.vstack([arc, np.array(scal[::-1])[::-1]])
    before = p.cover.copy()
    p.polygon(canopy, q["colours"][0])
    _shade(p, 1.15, 0.8)
    _two_colour(p, q["texture"], q, (0.0, stick), where=(p.cover > 0) & (before == 0))
    return p.finish()


def _sample_animal(fam: Family, rng: np.random.Generator) -> dict:
    length = rng.uniform(0.6, 1.6)
    return {
        **_oe_common(fam, rng),
        "L": length,
        "H": length * rng.uniform(0.3, 0.45),
        "legs": length * rng.uniform(0.35, 0.6),
        "facing": int(rng.choice([-1, 1])),
        "neck": rng.uniform(0.2, 0.6),
        "tail": rng.uniform(-0.6, 0.4),
    }


def _draw_animal(q: dict, px: float, elev: float) -> Sprite:
    big_l, big_h, legs, f = q["L"], q["H"], q["legs"], q["facing"]
    head_r = big_h * 0.42
    top = legs + big_h + q["neck"] * big_l * 0.5 + head_r
    p = Painter((-big_l * 0.8, big_l * 0.85, 0.0, top + 0.02), px)
    c0 = np.asarray(q["colours"][0], np.float32)
    lw = big_l * 0.08
    for a in (-0.38, -0.25, 0.25, 0.38):
        p.rect(f * a * big_l - lw / 2, 0.0, f * a * big_l + lw / 2, legs + big_h * 0.3, c0 * 0.8)
    p.ellipse((0.0, legs + big_h / 2), (big_l / 2, big_h / 2), c0)
    neck_top = (f * big_l * 0.55, legs + big_h * 0.6 + q["neck"] * big_l * 0.5)
    p.segment((f * big_l * 0.38, legs + big_h * 0.55), neck_top, big_h * 0.35, c0)
    p.ellipse((neck_top[0] + f * head_r * 0.5, neck_top[1]), (head_r * 1.2, head_r * 0.75), c0)
    p.polygon(
        [
            (neck_top[0], neck_top[1] + head_r * 0.4),
            (neck_top[0] - f * head_r * 0.3, neck_top[1] + head_r * 1.2),
            (neck_top[0] - f * head_r * 0.5, neck_top[1] + head_r * 0.3),
        ],
        c0 * 0.9,
    )  # ear
    p.segment(
        (-f * big_l * 0.48, legs + big_h * 0.7),
        (-f * big_l * 0.72, legs + big_h * (0.7 + q["tail"])),
        big_h * 0.1,
        c0 * 0.9,
    )
    _shade(p)
    _two_colour(p, q["texture"], q, (0.0, legs + big_h / 2))
    return p.finish()


def _sample_kite(fam: Family, rng: np.random.Generator) -> dict:
    w = rng.uniform(0.45, 1.0)
    return {
        **_oe_common(fam, rng),
        "w": w,
        "h": w * rng.uniform(1.2, 1.6),
        "bows": int(rng.integers(3, 6)),
        "sway": rng.uniform(-0.25, 0.25),
    }


def _draw_kite(q: dict, px: float, elev: float) -> Sprite:
    w, h = q["w"], q["h"]
    tail = 0.35 * h
    p = Painter((-w / 2 - 0.2, w / 2 + 0.2, 0.0, tail + h), px)
    body = [(0.0, tail), (w / 2, tail + 0.62 * h), (0.0, tail + h), (-w / 2, tail + 0.62 * h)]
    p.polygon(body, q["colours"][0])
    _two_colour(p, q["texture"], q, (0.0, tail + 0.62 * h))
    c2 = np.asarray(q["colours"][2], np.float32)
    pts = [(q["sway"] * np.sin(k * 2.0) * 0.4, tail * (1 - k / q["bows"])) for k in range(q["bows"] + 1)]
    for k in range(q["bows"]):
        p.segment(pts[k], pts[k + 1], 0.015, c2)
        x, y = pts[k + 1]
        p.polygon([(x - 0.06, y + 0.03), (x + 0.06, y - 0.03), (x + 0.06, y + 0.03), (x - 0.06, y - 0.03)], c2)
    p.segment((0.0, tail), (0.0, tail + h), 0.012, c2 * 0.7)
    p.segment((-w / 2, tail + 0.62 * h), (w / 2, tail + 0.62 * h), 0.012, c2 * 0.7)
    return p.finish()


def _sample_vase(fam: Family, rng: np.random.Generator) -> dict:
    return {
        **_oe_common(fam, rng),
        "h": rng.uniform(0.3, 0.9),
        "r": rng.uniform(0.12, 0.3),
        "bulge": rng.uniform(0.15, 0.5),
        "phase": rng.uniform(0, np.pi),
        "neck": rng.uniform(0.35, 0.7),
    }


def _draw_vase(q: dict, px: float, elev: float) -> Sprite:
    h, r = q["h"], q["r"]
    z = np.linspace(0.0, h, 40)
    prof = (
        r
        * (q["neck"] + (1 - q["neck"]) * np.sin(np.pi * (z / h) ** 0.8))
        * (1 + q["bulge"] * np.sin(2 * np.pi * z / h + q["phase"]) * 0.3)
    )
    prof[0] = prof[1] * 0.8
    pts = np.vstack([np.stack([prof, z], 1), np.stack([-prof[::-1], z[::-1]], 1)])
    p = Painter((-r * 1.6, r * 1.6, 0.0, h + 0.02), px)
    p.polygon(pts, q["colours"][0])
    a, _ = p.local_grid()
    p.modulate(np.clip(0.55 + 0.6 * np.cos(np.clip((a + 0.3 * r) / (1.4 * r), -1.5, 1.5)), 0.3, 1.3).astype(np.float32))
    _two_colour(
        p, q["texture"], {**q, "angle": np.pi / 2 if q["texture"] == "bold_stripes" else q["angle"]}, (0.0, h / 2)
    )
    return p.finish()


def _sample_chair(fam: Family, rng: np.random.Generator) -> dict:
    return {
        **_oe_common(fam, rng),
        "w": rng.uniform(0.4, 0.55),
        "seat": rng.uniform(0.42, 0.5),
        "back": rng.uniform(0.35, 0.55),
        "slats": int(rng.integers(2, 5)),
        "k": rng.uniform(-0.25, 0.25),
    }


def _draw_chair(q: dict, px: float, elev: float) -> Sprite:
    w, s, bk, k = q["w"], q["seat"], q["back"], q["k"]
    d = 0.42
    dz = d * np.sin(max(elev, 0.1))
    p = Painter((-w / 2 - 0.2, w / 2 + 0.2, 0.0, s + bk + dz + 0.05), px)
    c0 = np.asarray(q["colours"][0], np.float32)
    leg = 0.04
    for a, zb in ((-w / 2, 0.0), (w / 2 - leg, 0.0), (-w / 2 + k * d, dz), (w / 2 - leg + k * d, dz)):
        p.rect(a, zb, a + leg, s + zb, c0 * 0.7)
    bx = k * d
    p.rect(-w / 2 + bx, s + dz, -w / 2 + bx + leg, s + dz + bk, c0 * 0.8)
    p.rect(w / 2 - leg + bx, s + dz, w / 2 + bx, s + dz + bk, c0 * 0.8)
    for i in range(q["slats"]):
        zz = s + dz + bk * (0.35 + 0.6 * i / max(q["slats"] - 1, 1))
        p.rect(-w / 2 + bx, zz - 0.03, w / 2 + bx, zz + 0.03, c0 * 0.95)
    p.polygon([(-w / 2, s), (w / 2, s), (w / 2 + bx, s + dz), (-w / 2 + bx, s + dz)], c0 * 1.1)
    p.rect(-w / 2, s - 0.04, w / 2, s, c0 * 0.75)
    _two_colour(p, q["texture"], q, (0.0, s))
    return p.finish()


# ----------------------------------------------------------------------------- the registry
FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "cardboard_box",
            "test",
            "cuboid",
            ("corrugated", "tape"),
            ("cardboard_brown",),
            (0.3, 0.9),
            (9, 30),
            _sample=_sample_cardboard,
            _draw=_draw_cardboard,
        ),
        Family(
            "tyre",
            "test",
            "torus",
            ("tread",),
            ("rubber_black",),
            (0.56, 0.8),
            (21,),
            _sample=_sample_tyre,
            _draw=_draw_tyre,
        ),
        Family(
            "crate",
            "test",
            "vented_cuboid",
            ("vent_holes",),
            ("crate_grey",),
            (0.4, 0.7),
            (5, 6),
            _sample=_sample_crate,
            _draw=_draw_crate,
        ),
        Family(
            "euro_pallet",
            "test",
            "slatted_slab",
            ("wood_grain",),
            ("pallet_wood",),
            (0.8, 1.2),
            (16,),
            _sample=_sample_pallet,
            _draw=_draw_pallet,
        ),
        Family(
            "plastic_bag",
            "test",
            "lumpy_blob",
            ("crumple",),
            ("polystyrene_white",),
            (0.3, 0.65),
            (32,),
            _sample=_sample_bag,
            _draw=_draw_bag,
        ),
        Family(
            "styrofoam",
            "test",
            "broken_slabs",
            ("speckle",),
            ("polystyrene_white",),
            (0.15, 0.6),
            (35,),
            _sample=_sample_styrofoam,
            _draw=_draw_styrofoam,
        ),
        Family(
            "bobby_car",
            "test",
            "toy_vehicle",
            ("glossy",),
            ("toy_red", "toy_yellow"),
            (0.6, 0.78),
            (28, 29),
            _sample=_sample_bobby,
            _draw=_draw_bobby,
        ),
        Family(
            "ball",
            "oe",
            "sphere",
            ("bold_stripes", "radial_segments", "polka_dots"),
            ("magenta", "cyan", "lime", "safety_orange", "violet"),
            (0.24, 0.9),
            coco_id=1,
            supercategory="sports",
            _sample=_sample_ball,
            _draw=_draw_ball,
        ),
        Family(
            "umbrella",
            "oe",
            "canopy",
            ("radial_segments", "bold_stripes", "two_tone_gradient"),
            ("magenta", "violet", "pink", "cyan", "navy"),
            (0.9, 2.0),
            coco_id=2,
            supercategory="accessory",
            _sample=_sample_umbrella,
            _draw=_draw_umbrella,
        ),
        Family(
            "animal",
            "oe",
            "quadruped",
            ("polka_dots", "bold_stripes", "marble"),
            ("terracotta", "olive", "beige", "navy", "violet", "safety_orange", "lime"),
            (0.6, 1.6),
            coco_id=3,
            supercategory="animal",
            _sample=_sample_animal,
            _draw=_draw_animal,
        ),
        Family(
            "kite",
            "oe",
            "diamond_with_tail",
            ("checker", "two_tone_gradient", "bold_stripes"),
            ("magenta", "lime", "cyan", "safety_orange"),
            (0.7, 2.1),
            coco_id=4,
            supercategory="sports",
            _sample=_sample_kite,
            _draw=_draw_kite,
        ),
        Family(
            "vase",
            "oe",
            "lathe_profile",
            ("bold_stripes", "marble", "checker"),
            ("violet", "cyan", "pink", "terracotta", "beige"),
            (0.3, 0.9),
            coco_id=5,
            supercategory="indoor",
            _sample=_sample_vase,
            _draw=_draw_vase,
        ),
        Family(
            "chair",
            "oe",
            "four_legged_frame",
            ("two_tone_gradient", "checker", "marble"),
            ("lime", "magenta", "safety_orange", "terracotta", "olive", "navy"),
            (0.8, 1.1),
            coco_id=6,
            supercategory="furniture",
            _sample=_sample_chair,
            _draw=_draw_chair,
        ),
    )
}
"""Every anomalous object family, by name."""

OE_FAMILIES: tuple[str, ...] = tuple(n for n, f in FAMILIES.items() if f.role == "oe")
TEST_FAMILIES: tuple[str, ...] = tuple(n for n, f in FAMILIES.items() if f.role == "test")


def family_sets(role: str) -> dict[str, set[str]]:
    """The shapes, textures and colour families used by all families of ``role`` ("oe" or "test")."""
    fams = [f for f in FAMILIES.values() if f.role == role]
    return {
        "names": {f.name for f in fams},
        "shapes": {f.shape for f in fams},
        "textures": {t for f in fams for t in f.textures},
        "colours": {c for f in fams for c in f.colours},
    }


def check_disjoint() -> None:
    """Raise ``AssertionError`` unless OE and test families share no name, shape, texture or colour.

    Colour families must also be disjoint as HSV boxes (no colour belongs to both an OE and a
    test colour family), no OE colour family may contain a traffic-sign colour (an inlier class),
    and every texture must be used only by the role it is registered for.
    """
    oe, test = family_sets("oe"), family_sets("test")
    for key in ("names", "shapes", "textures", "colours"):
        common = oe[key] & test[key]
        assert not common, f"OE and test families share {key}: {sorted(common)}"
    for f in FAMILIES.values():
        for t in f.textures:
            assert TEXTURE_ROLES[t] == f.role, f"family {f.name} ({f.role}) uses {TEXTURE_ROLES[t]} texture {t}"
    for a in oe["colours"]:
        for b in test["colours"]:
            assert COLOUR_FAMILIES[a].disjoint(COLOUR_FAMILIES[b]), f"colour families {a} and {b} overlap"
        for sign, rgb in SIGN_COLOURS.items():
            assert not COLOUR_FAMILIES[a].contains(rgb), f"OE colour family {a} contains the traffic-sign {sign}"
