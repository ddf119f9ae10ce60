"""Inlier street objects: people, trees, lamp posts, signs, traffic lights (billboards) and vehicles (3D).

Billboards are :class:`~pebal_core.data.synthetic.sprites.Sprite` images whose per-pixel labels are
Cityscapes labelIds (person 24, vegetation 21, pole 17, traffic light 19, traffic sign 20). Vehicles
(car 26, truck 27, bus 28) are sets of 3D polygons in the vehicle frame, projected by the renderer
with back-face culling, so they show correct perspective from any camera pose.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pebal_core.data.synthetic.sprites import Painter, Sprite, metric_noise
from pebal_core.data.synthetic.textures import hsv_colour, palette_colour

PERSON, VEGETATION, POLE, TRAFFIC_LIGHT, TRAFFIC_SIGN = 24, 21, 17, 19, 20
CAR, TRUCK, BUS = 26, 27, 28

SKIN_TONES = ((0.96, 0.8, 0.69), (0.87, 0.68, 0.52), (0.72, 0.53, 0.39), (0.55, 0.38, 0.26), (0.36, 0.24, 0.16))
CLOTHES = (
    (0.12, 0.13, 0.16),
    (0.2, 0.22, 0.3),
    (0.55, 0.56, 0.58),
    (0.85, 0.85, 0.82),
    (0.6, 0.15, 0.15),
    (0.15, 0.3, 0.55),
    (0.35, 0.45, 0.25),
    (0.7, 0.6, 0.4),
    (0.45, 0.25, 0.4),
    (0.9, 0.75, 0.2),
    (0.3, 0.18, 0.1),
    (0.8, 0.4, 0.45),
)
PAINTS = (
    (0.92, 0.92, 0.9),
    (0.08, 0.08, 0.09),
    (0.6, 0.62, 0.65),
    (0.35, 0.36, 0.38),
    (0.1, 0.16, 0.35),
    (0.55, 0.07, 0.08),
    (0.2, 0.35, 0.6),
    (0.12, 0.25, 0.15),
    (0.7, 0.65, 0.55),
    (0.75, 0.75, 0.78),
    (0.25, 0.1, 0.1),
    (0.85, 0.55, 0.1),
)


def _pick(rng: np.random.Generator, palette, jit: float = 0.05) -> list[float]:
    return [round(float(v), 4) for v in palette_colour(rng, palette, jit)]


def _hsv(
    rng: np.random.Generator, h: tuple[float, float], s: tuple[float, float], v: tuple[float, float]
) -> list[float]:
    return [round(float(c), 4) for c in hsv_colour(rng, h, s, v)]


# ----------------------------------------------------------------------------- billboards
def sample_person(rng: np.random.Generator) -> dict:
    return {
        "kind": "person",
        "H": rng.uniform(1.5, 1.95),
        "view": str(rng.choice(["front", "side", "side"])),
        "facing": int(rng.choice([-1, 1])),
        "stride": rng.uniform(0.0, 0.35),
        "build": rng.uniform(1.0, 1.35),
        "skin": _pick(rng, SKIN_TONES, 0.03),
        "hair": _pick(rng, ((0.1, 0.07, 0.05), (0.3, 0.2, 0.1), (0.6, 0.5, 0.3), (0.5, 0.5, 0.5)), 0.04),
        "top": _pick(rng, CLOTHES),
        "legs": _pick(rng, CLOTHES[:4] + CLOTHES[7:8]),
        "bag": bool(rng.random() < 0.3),
        "bag_colour": _pick(rng, CLOTHES),
    }


def draw_person(q: dict, px: float, clip=None) -> Sprite:
    big_h, b = q["H"], q["build"]
    side = q["view"] == "side"
    half = 0.13 * big_h * b if not side else 0.09 * big_h * b
    p = Painter((-0.3 * big_h, 0.3 * big_h, 0.0, big_h + 0.02), px, clip)
    legs, top, skin = (np.asarray(q[k], np.float32) for k in ("legs", "top", "skin"))
    hip = 0.52 * big_h
    lw = 0.055 * big_h * b
    st = q["stride"] * big_h * 0.5
    f = q["facing"]
    if side:
        p.polygon([(-lw, hip), (lw, hip), (f * st + lw * 0.7, 0.02), (f * st - lw * 0.7, 0.02)], legs * 0.85, PERSON)
        p.polygon([(-lw, hip), (lw, hip), (-f * st + lw * 0.7, 0.02), (-f * st - lw * 0.7, 0.02)], legs, PERSON)
        p.rect(f * st - lw, 0.0, f * st + lw * 1.6 * f, 0.04, (0.1, 0.1, 0.1), PERSON)
    else:
        for s in (-1, 1):
            p.polygon(
                [(s * 0.01, hip), (s * (2 * lw), hip), (s * (lw * 1.8 + st * 0.2), 0.02), (s * lw * 0.4, 0.02)],
                legs * (0.9 if s < 0 else 1.0),
                PERSON,
            )
    sh = 0.82 * big_h
    p.polygon([(-half * 0.85, hip - 0.02), (half * 0.85, hip - 0.02), (half, sh), (-half, sh)], top, PERSON)
    arm = 0.045 * big_h * b
    if side:
        p.segment((0.0, sh - 0.03), (-f * st * 0.6, 0.47 * big_h), arm * 2, top * 0.8, PERSON)
        p.ellipse((-f * st * 0.6, 0.46 * big_h), (arm, arm), skin, PERSON)
    else:
        for s in (-1, 1):
            p.segment((s * half * 0.95, sh - 0.03), (s * (half + 0.03), 0.47 * big_h), arm * 2, top * 0.85, PERSON)
            p.ellipse((s * (half + 0.03), 0.46 * big_h), (arm, arm), skin, PERSON)
    p.rect(-0.025 * big_h, sh - 0.01, 0.025 * big_h, 0.88 * big_h, skin * 0.9, PERSON)
    hc = (0.01 * f * big_h if side else 0.0, 0.93 * big_h)
    p.ellipse(hc, (0.062 * big_h, 0.072 * big_h), skin, PERSON)
    p.ellipse(
        (hc[0] - (0.01 * f * big_h if side else 0.0), hc[1] + 0.025 * big_h),
        (0.066 * big_h, 0.05 * big_h),
        q["hair"],
        PERSON,
    )
    if q["bag"]:
        p.rect(half * 0.6, 0.55 * big_h, half * 0.6 + 0.18, 0.72 * big_h, q["bag_colour"], PERSON)
    return p.finish()


def sample_tree(rng: np.random.Generator) -> dict:
    big_r = rng.uniform(1.2, 3.0)
    n = int(rng.integers(6, 12))
    return {
        "kind": "tree",
        "trunk_w": rng.uniform(0.15, 0.4),
        "trunk_h": rng.uniform(1.6, 3.5),
        "R": big_r,
        "blobs": [
            [float(rng.uniform(-0.7, 0.7)), float(rng.uniform(-0.5, 0.7)), float(rng.uniform(0.35, 0.65))]
            for _ in range(n)
        ],
        "green": _hsv(rng, (70, 120), (0.35, 0.7), (0.22, 0.5)),
        "green2": _hsv(rng, (60, 110), (0.35, 0.7), (0.35, 0.7)),
        "bark": _hsv(rng, (20, 40), (0.15, 0.4), (0.2, 0.4)),
        "seed": int(rng.integers(0, 2**31 - 1)),
    }


def draw_tree(q: dict, px: float, clip=None) -> Sprite:
    big_r, th, tw = q["R"], q["trunk_h"], q["trunk_w"]
    cy = th + 0.6 * big_r
    p = Painter((-big_r * 1.45, big_r * 1.45, 0.0, cy + big_r * 1.35), px, clip)
    green = np.asarray(q["green"], np.float32)
    p.ellipse((0.0, cy), (big_r, big_r * 0.85), None, VEGETATION)
    for bx, by, br in q["blobs"]:
        p.ellipse((bx * big_r, cy + by * big_r), (br * big_r, br * big_r * 0.9), None, VEGETATION)
    rows, cols = np.nonzero(p.cover)
    a = (cols.astype(np.float32) - p.ss) / p.s + p.a0
    b = p.b1 - (rows.astype(np.float32) - p.ss) / p.s
    n = metric_noise(q["seed"], a, b, 0.35)
    light = np.clip((b - cy) / big_r * 0.25 + 0.9, 0.6, 1.2)
    mix = (n > 0.55).astype(np.float32)[:, None]
    leaves = (green * (1 - mix) + np.asarray(q["green2"], np.float32) * mix) * (0.65 + 0.6 * n)[:, None]
    p.rgb[rows, cols] = leaves * light[:, None]
    p.polygon([(-tw / 2, 0.0), (tw / 2, 0.0), (tw / 3, cy), (-tw / 3, cy)], q["bark"], VEGETATION)
    return p.finish()


def sample_lamp(rng: np.random.Generator, arm_dir: int) -> dict:
    return {
        "kind": "lamp",
        "w": rng.uniform(0.22, 0.38),
        "H": rng.uniform(6.0, 9.0),
        "arm": rng.uniform(0.8, 2.0) * arm_dir,
        "colour": _pick(rng, ((0.45, 0.46, 0.47), (0.3, 0.31, 0.32), (0.15, 0.2, 0.17), (0.6, 0.6, 0.58)), 0.04),
    }


def draw_lamp(q: dict, px: float, clip=None) -> Sprite:
    w, big_h, arm = q["w"], q["H"], q["arm"]
    p = Painter((min(0.0, arm) - 0.5, max(0.0, arm) + 0.5, 0.0, big_h + 0.3), px, clip)
    c = np.asarray(q["colour"], np.float32)
    p.polygon([(-w / 2, 0.0), (w / 2, 0.0), (w / 3, big_h), (-w / 3, big_h)], c, POLE)
    p.segment((0.0, big_h - 0.05), (arm, big_h + 0.15), w * 0.5, c * 0.9, POLE)
    p.polygon(
        [(arm - 0.3, big_h + 0.18), (arm + 0.3, big_h + 0.18), (arm + 0.2, big_h + 0.02), (arm - 0.2, big_h + 0.02)],
        c * 0.8,
        POLE,
    )
    a, _ = p.local_grid()
    p.modulate(np.where(np.abs(a) < w, 0.8 + 0.4 * (a / w + 0.5).clip(0, 1), 1.0).astype(np.float32))
    return p.finish()


SIGN_KINDS = ("round_prohibitory", "round_blue", "triangle", "square_blue", "rect_info", "octagon")


def sample_sign(rng: np.random.Generator) -> dict:
    n = 1 if rng.random() < 0.75 else 2
    return {
        "kind": "sign",
        "w": rng.uniform(0.12, 0.18),
        "H": rng.uniform(2.2, 3.0),
        "plates": [str(rng.choice(SIGN_KINDS)) for _ in range(n)],
        "size": rng.uniform(0.55, 0.85),
        "pole": _pick(rng, ((0.55, 0.56, 0.57), (0.4, 0.41, 0.42)), 0.04),
    }


SIGN_COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.8, 0.08, 0.1),
    "white": (0.93, 0.93, 0.9),
    "blue": (0.08, 0.25, 0.65),
    "yellow": (0.95, 0.8, 0.1),
}
"""RGB in [0, 1] of the traffic-sign plates (outlier-exposure colours must avoid them)."""


def _plate(p: Painter, kind: str, cx: float, cy: float, r: float) -> None:
    red, white, blue, yellow = (SIGN_COLOURS[k] for k in ("red", "white", "blue", "yellow"))
    if kind == "round_prohibitory":
        p.ellipse((cx, cy), (r, r), red, TRAFFIC_SIGN)
        p.ellipse((cx, cy), (r * 0.75, r * 0.75), white, TRAFFIC_SIGN)
    elif kind == "round_blue":
        p.ellipse((cx, cy), (r, r), blue, TRAFFIC_SIGN)
        p.polygon(
            [
                (cx - r * 0.15, cy - r * 0.6),
                (cx + r * 0.15, cy - r * 0.6),
                (cx + r * 0.15, cy + r * 0.1),
                (cx + r * 0.4, cy + r * 0.1),
                (cx, cy + r * 0.6),
                (cx - r * 0.4, cy + r * 0.1),
                (cx - r * 0.15, cy + r * 0.1),
            ],
            white,
            TRAFFIC_SIGN,
        )
    elif kind == "triangle":
        p.polygon([(cx - r, cy - r * 0.75), (cx + r, cy - r * 0.75), (cx, cy + r)], red, TRAFFIC_SIGN)
        p.polygon(
            [(cx - r * 0.65, cy - r * 0.55), (cx + r * 0.65, cy - r * 0.55), (cx, cy + r * 0.55)], white, TRAFFIC_SIGN
        )
    elif kind == "square_blue":
        p.rect(cx - r, cy - r, cx + r, cy + r, blue, TRAFFIC_SIGN)
        p.rect(cx - r * 0.3, cy - r * 0.6, cx + r * 0.3, cy + r * 0.6, white, TRAFFIC_SIGN)
    elif kind == "rect_info":
        p.rect(cx - r * 1.3, cy - r * 0.6, cx + r * 1.3, cy + r * 0.6, yellow, TRAFFIC_SIGN)
        p.rect(cx - r * 1.1, cy - r * 0.15, cx + r * 1.1, cy + r * 0.15, (0.1, 0.1, 0.1), TRAFFIC_SIGN)
    else:
        t = np.linspace(0, 2 * np.pi, 8, endpoint=False) + np.pi / 8
        p.polygon(np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1), red, TRAFFIC_SIGN)
        p.rect(cx - r * 0.6, cy - r * 0.12, cx + r * 0.6, cy + r * 0.12, white, TRAFFIC_SIGN)


def draw_sign(q: dict, px: float, clip=None) -> Sprite:
    w, big_h, r = q["w"], q["H"], q["size"] / 2
    top = big_h + len(q["plates"]) * 2 * r
    p = Painter((-r * 1.4, r * 1.4, 0.0, top + 0.05), px, clip)
    p.rect(-w / 2, 0.0, w / 2, big_h + r, q["pole"], POLE)
    for i, kind in enumerate(q["plates"]):
        _plate(p, kind, 0.0, big_h + r * (2 * i + 1), r)
    return p.finish()


def sample_traffic_light(rng: np.random.Generator) -> dict:
    return {
        "kind": "traffic_light",
        "w": rng.uniform(0.18, 0.28),
        "H": rng.uniform(2.6, 3.4),
        "lit": int(rng.integers(0, 3)),
        "housing": _pick(rng, ((0.08, 0.08, 0.08), (0.2, 0.22, 0.2), (0.75, 0.6, 0.1)), 0.03),
        "pole": _pick(rng, ((0.45, 0.46, 0.47), (0.3, 0.31, 0.32)), 0.04),
    }


def draw_traffic_light(q: dict, px: float, clip=None) -> Sprite:
    w, big_h = q["w"], q["H"]
    hw, hh = 0.25, 0.6
    p = Painter((-0.4, 0.4, 0.0, big_h + 2 * hh + 0.05), px, clip)
    p.rect(-w / 2, 0.0, w / 2, big_h + 0.1, q["pole"], POLE)
    p.rect(-hw, big_h, hw, big_h + 2 * hh, q["housing"], TRAFFIC_LIGHT)
    lamps = ((0.95, 0.12, 0.1), (1.0, 0.7, 0.05), (0.1, 0.9, 0.35))
    for i, col in enumerate(lamps):
        lit = i == 2 - q["lit"]
        c = np.asarray(col, np.float32) * (1.0 if lit else 0.25)
        p.ellipse((0.0, big_h + hh * (2 * i + 1) / 3), (0.15, 0.15), c, TRAFFIC_LIGHT)
    return p.finish()


BILLBOARDS = {
    "person": draw_person,
    "tree": draw_tree,
    "lamp": draw_lamp,
    "sign": draw_sign,
    "traffic_light": draw_traffic_light,
}


# ----------------------------------------------------------------------------- vehicles
Polygon = tuple[np.ndarray, np.ndarray]
"""``(points N x 3, rgb)``: a planar polygon (metres) and its float32 RGB colour in [0, 1]."""


def _rgb(r: float, g: float, b: float) -> np.ndarray:
    """A read-only float32 RGB colour in [0, 1] (shared by many polygons, so it must not be changed in place)."""
    colour = np.array([r, g, b], np.float32)
    colour.setflags(write=False)
    return colour


GLASS = _rgb(0.1, 0.13, 0.17)
"""Windows (scaled by each face's lighting; bus windows brighter)."""
WHEEL, TYRE, HUB = _rgb(0.05, 0.05, 0.05), _rgb(0.07, 0.07, 0.07), _rgb(0.45, 0.46, 0.48)
"""The wheel disc, the tyre tread and the hub cap."""
TAIL_LIGHT, HEAD_LIGHT, NUMBER_PLATE = _rgb(0.75, 0.05, 0.05), _rgb(0.95, 0.92, 0.8), _rgb(0.9, 0.9, 0.88)
"""The lamps on the back (-x) and front (+x) faces, and the number plates."""

CAR_HEIGHTS = {"sedan": (0.95, 1.42), "hatchback": (0.95, 1.48), "suv": (1.1, 1.72), "van": (1.0, 1.95)}
"""Height (metres) of the top of the lower body and of the roof, per car subtype."""
CAR_CABINS = {
    "sedan": (-0.3, 0.2, -0.2, 0.06),
    "hatchback": (-0.47, 0.18, -0.42, 0.02),
    "suv": (-0.46, 0.2, -0.43, 0.05),
    "van": (-0.5, 0.28, -0.49, 0.12),
}
"""The cabin's rear and front ``x`` at its base, then at the roof, as fractions of the car's length
(0 = centre, +0.5 = front bumper), per car subtype."""


@dataclasses.dataclass(frozen=True)
class _FaceShader:
    """Back-face test and lighting of polygons in a vehicle's own frame (x forward, y left, z up, metres).

    ``eye``: the camera centre and ``light``: the unit vector towards the sun, both in that frame.
    """

    eye: tuple[float, float, float]
    light: tuple[float, float, float]

    def shade(self, face: np.ndarray) -> tuple[bool, float]:
        """``(faces the camera, brightness factor)`` of a polygon (N x 3, counter-clockwise seen from outside).

        The normal comes from the first three points; brightness is 0.6 ambient + 0.4 Lambertian
        sun + 0.15 for faces looking up.
        """
        light, eye = self.light, self.eye
        (x0, y0, z0), (x1, y1, z1), (x2, y2, z2) = face[0].tolist(), face[1].tolist(), face[2].tolist()
        ax, ay, az, bx, by, bz = x1 - x0, y1 - y0, z1 - z0, x2 - x0, y2 - y0, z2 - z0
        nx, ny, nz = ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx
        norm = max((nx * nx + ny * ny + nz * nz) ** 0.5, 1e-9)
        nx, ny, nz = nx / norm, ny / norm, nz / norm
        lit = 0.6 + 0.4 * max(0.0, nx * light[0] + ny * light[1] + nz * light[2]) + 0.15 * max(0.0, nz)
        facing = nx * (eye[0] - x0) + ny * (eye[1] - y0) + nz * (eye[2] - z0) > 1e-6
        return facing, lit


def _lamps(face: np.ndarray, rear: bool, half_width: float) -> list[Polygon]:
    """Two lamps near the top corners and a number plate near the bottom of a front or back face."""
    zt = face[:, 2].max()
    zb = face[:, 2].min()
    xs = face[0, 0]
    colour = TAIL_LIGHT if rear else HEAD_LIGHT
    polys: list[Polygon] = []
    for s in (-1, 1):
        y0, y1 = sorted((s * (half_width - 0.08), s * (half_width - 0.35)))
        z0, z1 = zt - 0.2, zt - 0.06
        polys.append((np.array([[xs, y0, z0], [xs, y1, z0], [xs, y1, z1], [xs, y0, z1]]), colour))
    plate = np.array([[xs, -0.26, zb + 0.08], [xs, 0.26, zb + 0.08], [xs, 0.26, zb + 0.2], [xs, -0.26, zb + 0.2]])
    polys.append((plate, NUMBER_PLATE))
    return polys


def _box_polygons(
    shader: _FaceShader,
    faces: list[np.ndarray],
    colour: np.ndarray,
    half_width: float,
    windows: bool = False,
    lights: bool = False,
) -> list[Polygon]:
    """The visible faces of a box (:meth:`Vehicle._hexahedron` order), shaded, with optional details.

    ``windows``: an inset glass pane on each visible side face (front, back, left, right);
    ``lights``: lamps and a number plate on the visible front and back faces (:func:`_lamps`).
    """
    polys: list[Polygon] = []
    for i, f in enumerate(faces):
        facing, lit = shader.shade(f)
        if not facing:
            continue
        polys.append((f, colour * lit))
        if windows and i < 4:
            c = f.mean(0)
            inset = c + (f - c) * np.array([0.86, 0.86, 0.78])
            polys.append((inset, GLASS * (0.8 + 0.5 * lit)))
        if lights and i < 2:
            polys += _lamps(f, rear=i == 1, half_width=half_width)
    return polys


def _visible_panes(shader: _FaceShader, faces: list[np.ndarray], colour: np.ndarray) -> list[Polygon]:
    """The faces of ``faces`` that face the camera, each in ``colour`` (unshaded)."""
    return [(f, colour) for f in faces if shader.shade(f)[0]]


def _bus_windows(shader: _FaceShader, half_length: float, half_width: float, length: float) -> list[Polygon]:
    """Window bands along both sides (1.4 m panes every 1.6 m) and the front and rear windscreens."""
    sides = []
    for side in (-1, 1):
        y = side * (half_width + 0.01)
        for k in range(int(length // 1.6)):
            x0 = -half_length + 0.5 + k * 1.6
            face = np.array([[x0, y, 1.35], [x0 + 1.4, y, 1.35], [x0 + 1.4, y, 2.6], [x0, y, 2.6]])
            sides.append(face[::-1] if side > 0 else face)
    screens = []
    for fx in (half_length + 0.01, -half_length - 0.01):
        y0, y1 = -half_width + 0.15, half_width - 0.15
        face = np.array([[fx, y0, 1.3], [fx, y1, 1.3], [fx, y1, 2.8], [fx, y0, 2.8]])
        screens.append(face[::-1] if fx < 0 else face)
    return _visible_panes(shader, sides, GLASS * 1.2) + _visible_panes(shader, screens, GLASS * 1.3)


def _wheels(
    shader: _FaceShader, wheel_x: tuple[float, ...], r: float, half_width: float
) -> tuple[list[Polygon], list[Polygon]]:
    """``(treads, discs)`` of the wheels at ``wheel_x`` (metres along the vehicle) with radius ``r``.

    Treads are the tyre's front and back faces as seen from ahead or behind; discs are the
    visible outer wheel discs (14-gons) with their hub caps.
    """
    t = np.linspace(0, 2 * np.pi, 14, endpoint=False)
    tread_faces: list[np.ndarray] = []
    discs: list[Polygon] = []
    for side in (-1, 1):
        for wx in wheel_x:
            y_in, y_out = side * (half_width - 0.25), side * (half_width + 0.02)
            for fx, sgn in ((wx + 0.75 * r, 1), (wx - 0.75 * r, -1)):
                face = np.array([[fx, y_in, 0.0], [fx, y_out, 0.0], [fx, y_out, 1.8 * r], [fx, y_in, 1.8 * r]])
                tread_faces.append(face[::-1] if (sgn > 0) != (side > 0) else face)
            ring = np.stack([wx + r * np.cos(t), np.full_like(t, side * (half_width + 0.02)), r + r * np.sin(t)], 1)
            if side > 0:
                ring = ring[::-1]
            if shader.shade(ring)[0]:
                discs.append((ring, WHEEL))
                hub = np.stack(
                    [wx + 0.55 * r * np.cos(t), np.full_like(t, side * (half_width + 0.03)), r + 0.55 * r * np.sin(t)],
                    1,
                )
                discs.append((hub, HUB))
    return _visible_panes(shader, tread_faces, TYRE), discs


@dataclasses.dataclass
class Vehicle:
    """A car, truck or bus standing on the ground.

    ``x, y`` footprint centre in the vehicle frame (metres); ``heading`` 0 = pointing along +x
    (away from the ego camera), pi = towards it.
    """

    kind: str
    subtype: str
    x: float
    y: float
    heading: float
    length: float
    width: float
    paint: list[float]
    label: int

    def _to_world(self, pts: np.ndarray) -> np.ndarray:
        c, s = np.cos(self.heading), np.sin(self.heading)
        out = np.empty_like(pts)
        out[:, 0] = self.x + c * pts[:, 0] - s * pts[:, 1]
        out[:, 1] = self.y + s * pts[:, 0] + c * pts[:, 1]
        out[:, 2] = pts[:, 2]
        return out

    def footprint(self, margin: float = 0.1) -> np.ndarray:
        """The ground rectangle under the vehicle (4 x 3, world frame), for its shadow."""
        hl, hw = self.length / 2 + margin, self.width / 2 + margin
        return self._to_world(np.array([[-hl, -hw, 0.0], [hl, -hw, 0.0], [hl, hw, 0.0], [-hl, hw, 0.0]]))

    def bounds(self) -> np.ndarray:
        """8 corners of the bounding box (world frame), for culling and depth sorting."""
        hl, hw = self.length / 2, self.width / 2
        h = 3.6 if self.kind != "car" else 2.0
        pts = np.array([[sx * hl, sy * hw, z] for sx in (-1, 1) for sy in (-1, 1) for z in (0.0, h)])
        return self._to_world(pts)

    def _hexahedron(self, x0, x1, x0t, x1t, w0, w1, z0, z1) -> list[np.ndarray]:
        """Faces (front, back, left, right, top) of a box whose top is inset (local frame)."""
        b = [(x0, -w0, z0), (x1, -w0, z0), (x1, w0, z0), (x0, w0, z0)]
        t = [(x0t, -w1, z1), (x1t, -w1, z1), (x1t, w1, z1), (x0t, w1, z1)]
        b, t = np.array(b, float), np.array(t, float)
        return [
            np.array([b[1], b[2], t[2], t[1]]),  # front (+x)
            np.array([b[3], b[0], t[0], t[3]]),  # back (-x)
            np.array([b[2], b[3], t[3], t[2]]),  # left (+y)
            np.array([b[0], b[1], t[1], t[0]]),  # right (-y)
            t,  # top
        ]

    def polygons(self, camera_centre: np.ndarray, sun: np.ndarray) -> list[Polygon]:
        """``(points N x 3 world, rgb)`` polygons in drawing order, back faces culled.

        ``camera_centre``: the camera position and ``sun``: the unit vector towards the sun, both
        in the world frame. Drawing order: wheel treads (the body hides their upper part), the
        body with its windows and lamps, then the wheel discs.
        """
        shader = self._shader(camera_centre, sun)
        half_width = self.width / 2
        if self.kind == "car":
            body, wheel_x, r = self._car_body(shader)
        elif self.kind == "truck":
            body, wheel_x, r = self._truck_body(shader)
        else:
            body, wheel_x, r = self._bus_body(shader)
        treads, discs = _wheels(shader, wheel_x, r, half_width)
        return self._polygons_to_world(treads + body + discs)

    def _shader(self, camera_centre: np.ndarray, sun: np.ndarray) -> _FaceShader:
        """Culling and shading happen in the vehicle's own frame: the camera and sun rotated into it."""
        ch, sh = np.cos(self.heading), np.sin(self.heading)
        ex, ey = camera_centre[0] - self.x, camera_centre[1] - self.y
        eye = (ch * ex + sh * ey, -sh * ex + ch * ey, float(camera_centre[2]))
        light = (ch * sun[0] + sh * sun[1], -sh * sun[0] + ch * sun[1], float(sun[2]))
        return _FaceShader(eye, light)

    def _car_body(self, shader: _FaceShader) -> tuple[list[Polygon], tuple[float, ...], float]:
        """``(polygons, wheel x positions, wheel radius)`` of a car: lower body with lamps, cabin with windows."""
        hl, hw, length = self.length / 2, self.width / 2, self.length
        paint = np.asarray(self.paint, np.float32)
        z_body, z_top = CAR_HEIGHTS[self.subtype]
        x0, x1, x0t, x1t = (f * length for f in CAR_CABINS[self.subtype])
        polys = _box_polygons(shader, self._hexahedron(-hl, hl, -hl, hl, hw, hw, 0.28, z_body), paint, hw, lights=True)
        cabin = self._hexahedron(x0, x1, x0t, x1t, hw * 0.93, hw * 0.8, z_body, z_top)
        polys += _box_polygons(shader, cabin, paint, hw, windows=True)
        return polys, (-hl + 0.8, hl - 0.8), 0.32

    def _truck_body(self, shader: _FaceShader) -> tuple[list[Polygon], tuple[float, ...], float]:
        """``(polygons, wheel x positions, wheel radius)`` of a truck: a 2.2 m cab in front of a load box."""
        hl, hw = self.length / 2, self.width / 2
        paint = np.asarray(self.paint, np.float32)
        cab_len = 2.2
        cab = self._hexahedron(hl - cab_len, hl, hl - cab_len, hl - 0.2, hw, hw * 0.95, 0.5, 2.9)
        polys = _box_polygons(shader, cab, paint, hw, windows=True, lights=True)
        box_colour = np.asarray([0.88, 0.88, 0.86] if self.subtype == "box" else paint, np.float32) * 0.95
        box = self._hexahedron(-hl, hl - cab_len - 0.2, -hl, hl - cab_len - 0.2, hw, hw, 0.9, 3.5)
        polys += _box_polygons(shader, box, box_colour, hw, lights=True)
        return polys, (-hl + 1.2, -hl + 2.6, hl - 1.3), 0.5

    def _bus_body(self, shader: _FaceShader) -> tuple[list[Polygon], tuple[float, ...], float]:
        """``(polygons, wheel x positions, wheel radius)`` of a bus: one box with lamps and window bands."""
        hl, hw = self.length / 2, self.width / 2
        paint = np.asarray(self.paint, np.float32)
        polys = _box_polygons(shader, self._hexahedron(-hl, hl, -hl, hl, hw, hw, 0.3, 3.1), paint, hw, lights=True)
        polys += _bus_windows(shader, hl, hw, self.length)
        return polys, (-hl + 2.5, hl - 2.8), 0.5

    def _polygons_to_world(self, polys: list[Polygon]) -> list[Polygon]:
        """The polygons with their points moved from the vehicle frame to the world frame (one transform for all)."""
        world = self._to_world(np.concatenate([pts for pts, _ in polys]))
        ends = np.cumsum([len(pts) for pts, _ in polys])
        return [(world[e - len(pts) : e], colour) for e, (pts, colour) in zip(ends, polys, strict=True)]


VEHICLE_DIMS = {
    "sedan": ((4.3, 4.9), (1.75, 1.85)),
    "hatchback": ((3.7, 4.2), (1.68, 1.8)),
    "suv": ((4.4, 4.9), (1.85, 1.95)),
    "van": ((4.8, 5.3), (1.9, 2.0)),
    "box": ((7.0, 9.0), (2.4, 2.5)),
    "tipper": ((6.5, 8.0), (2.4, 2.5)),
    "city": ((11.0, 12.5), (2.5, 2.55)),
}


def sample_vehicle(rng: np.random.Generator, kind: str, x: float, y: float, heading: float) -> Vehicle:
    """A vehicle of ``kind`` ("car", "truck", "bus") with random subtype, size and paint."""
    subtype = {
        "car": str(rng.choice(["sedan", "hatchback", "suv", "van"], p=[0.4, 0.3, 0.2, 0.1])),
        "truck": str(rng.choice(["box", "tipper"])),
        "bus": "city",
    }[kind]
    (l0, l1), (w0, w1) = VEHICLE_DIMS[subtype]
    if kind == "bus":
        paint = _pick(rng, ((0.9, 0.75, 0.1), (0.75, 0.1, 0.1), (0.9, 0.9, 0.88), (0.15, 0.35, 0.6)), 0.04)
    else:
        paint = _pick(rng, PAINTS, 0.04)
    label = {"car": CAR, "truck": TRUCK, "bus": BUS}[kind]
    return Vehicle(kind, subtype, x, y, heading, float(rng.uniform(l0, l1)), float(rng.uniform(w0, w1)), paint, label)
