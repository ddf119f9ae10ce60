"""Render a :class:`~pebal_core.data.synthetic.layout.Street` through a :class:`Camera` into pixels.

:func:`render` ray-casts the static background for every pixel at once (road plane, raised
sidewalks and curb faces, vertical layers, closing buildings, sky; numpy, no per-pixel Python),
then draws the placed objects far to near with a depth test: vehicles as projected 3D polygons,
everything else as billboards scaled by ``fy / depth``. It returns float colours, Cityscapes
labelIds, the anomaly map and the depth of every pixel. :func:`develop` then applies the camera
(exposure, white balance, gamma, vignetting, lens blur, sensor noise) and quantises to ``uint8``.
"""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np

from pebal_core.data.synthetic import layout as lay
from pebal_core.data.synthetic.camera import Camera
from pebal_core.data.synthetic.families import FAMILIES
from pebal_core.data.synthetic.sprites import Sprite
from pebal_core.data.synthetic.street_objects import BILLBOARDS
from pebal_core.data.synthetic.textures import value_noise

INF = np.float32(1e9)
GROUND_LABELS = (lay.ROAD, lay.SIDEWALK, lay.TERRAIN)

# per-labelId strength of the fine surface texture added at the end (0 = none)
_DETAIL = np.full(256, 0.05, np.float32)
for _lab, _amp in {
    lay.ROAD: 0.07,
    lay.SIDEWALK: 0.07,
    lay.BUILDING: 0.06,
    lay.WALL: 0.08,
    lay.FENCE: 0.05,
    17: 0.04,
    19: 0.02,
    20: 0.02,
    lay.VEGETATION: 0.22,
    lay.TERRAIN: 0.16,
    lay.SKY: 0.01,
    24: 0.05,
    26: 0.03,
    27: 0.03,
    28: 0.03,
    lay.EGO_VEHICLE: 0.02,
}.items():
    _DETAIL[_lab] = _amp


@dataclasses.dataclass
class Frame:
    """One rendered view.

    ``rgb`` float32 ``H x W x 3`` in [0, 1] (before :func:`develop`); ``labels`` uint8 Cityscapes
    labelIds; ``anomaly`` uint8 (0 = no anomaly, else the drawing object's anomaly code);
    ``depth`` float32 metres along the optical axis (``1e9`` for sky).
    """

    rgb: np.ndarray
    labels: np.ndarray
    anomaly: np.ndarray
    depth: np.ndarray


class Canvas:
    """Colour, label, anomaly and depth buffers with depth-tested drawing operations."""

    def __init__(self, rgb: np.ndarray, labels: np.ndarray, depth: np.ndarray) -> None:
        self.rgb, self.labels, self.depth = rgb, labels, depth
        self.anomaly = np.zeros(labels.shape, np.uint8)
        self.h, self.w = labels.shape

    def _window(self, x0: int, y0: int, w: int, h: int):
        ix0, iy0 = max(x0, 0), max(y0, 0)
        ix1, iy1 = min(x0 + w, self.w), min(y0 + h, self.h)
        if ix1 <= ix0 or iy1 <= iy0:
            return None
        return (slice(iy0, iy1), slice(ix0, ix1)), (slice(iy0 - y0, iy1 - y0), slice(ix0 - x0, ix1 - x0))

    @staticmethod
    def _passes(depth: float, buf: np.ndarray) -> np.ndarray:
        return depth < buf + 0.05 * depth + 0.2

    def paste(self, sp: Sprite, u: float, v: float, depth: float, anomaly: int = 0, gain: float = 1.0) -> None:
        """Composite a sprite whose anchor lands on pixel ``(u, v)`` (depth-tested, soft edges)."""
        h, w = sp.alpha.shape
        win = self._window(int(round(u - sp.anchor[0])), int(round(v - sp.anchor[1])), w, h)
        if win is None:
            return
        dst, src = win
        vis = self._passes(depth, self.depth[dst])
        a = np.where(vis, sp.alpha[src], 0.0)[..., None]
        self.rgb[dst] = self.rgb[dst] * (1.0 - a) + sp.rgb[src] * gain * a
        own = vis & (sp.alpha[src] >= 0.5)
        self.labels[dst][own] = 0 if anomaly else sp.labels[src][own]
        self.anomaly[dst][own] = anomaly
        self.depth[dst][own] = depth

    def _poly_mask(self, uv: np.ndarray):
        x0, y0 = np.floor(uv.min(0)).astype(int)
        x1, y1 = np.ceil(uv.max(0)).astype(int) + 1
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, self.w), min(y1, self.h)
        if x1 <= x0 or y1 <= y0:
            return None
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        pts = np.round((uv - (x0, y0)) * 16).astype(np.int32)
        cv2.fillPoly(mask, [pts], 1, cv2.LINE_8, 4)
        return (slice(y0, y1), slice(x0, x1)), mask.astype(bool)

    def polygons(self, polys: list[tuple[np.ndarray, np.ndarray]], depth: float, label: int) -> None:
        """Fill projected polygons (``(n x 2 pixel coordinates, rgb)``, later over earlier) as one object."""
        allpts = np.concatenate([uv for uv, _ in polys])
        x0, y0 = np.floor(allpts.min(0)).astype(int)
        x1, y1 = np.ceil(allpts.max(0)).astype(int) + 1
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, self.w), min(y1, self.h)
        if x1 <= x0 or y1 <= y0:
            return
        rgb = np.zeros((y1 - y0, x1 - x0, 3), np.float32)
        cover = np.zeros((y1 - y0, x1 - x0), np.uint8)
        for uv, colour in polys:
            pts = [np.round((uv - (x0, y0)) * 16).astype(np.int32)]
            cv2.fillPoly(rgb, pts, tuple(float(c) for c in colour), cv2.LINE_8, 4)
            cv2.fillPoly(cover, pts, 1, cv2.LINE_8, 4)
        sl = (slice(y0, y1), slice(x0, x1))
        own = (cover > 0) & self._passes(depth, self.depth[sl])
        self.rgb[sl][own] = rgb[own]
        self.labels[sl][own] = label
        self.anomaly[sl][own] = 0
        self.depth[sl][own] = depth

    def darken(self, uv: np.ndarray, factor: float) -> None:
        """Multiply the colour of ground pixels inside a projected polygon (contact shadows)."""
        res = self._poly_mask(uv)
        if res is None:
            return
        sl, mask = res
        ground = np.isin(self.labels[sl], GROUND_LABELS) & mask
        self.rgb[sl][ground] *= factor


# ----------------------------------------------------------------------------- background
def _tex(tile: np.ndarray, a: np.ndarray, b: np.ndarray, metres: float) -> np.ndarray:
    """Nearest-neighbour lookup of a tileable texture at world coordinates (1-D arrays)."""
    s = tile.shape[0] / metres
    n = tile.shape[0]
    return tile[(np.floor(b * s).astype(np.int64) % n), (np.floor(a * s).astype(np.int64) % n)]


def _hash(k: np.ndarray) -> np.ndarray:
    return np.modf(np.abs(np.sin(k * 12.9898 + 78.233) * 43758.5453))[0].astype(np.float32)


def _layer_t(layer: lay.Layer, c: np.ndarray, d: np.ndarray):
    """Ray parameter of hits on a layer (INF where missed), plus along/height coordinates."""
    if layer.side == 0:
        dn, cn = d[:, 0], c[0]
        along_c, along_d = c[1], d[:, 1]
        plane = layer.offset
    else:
        dn, cn = d[:, 1], c[1]
        along_c, along_d = c[0], d[:, 0]
        plane = layer.side * layer.offset
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (plane - cn) / dn
    ok = (t > 0) & np.isfinite(t)
    along = along_c + t * along_d
    z = c[2] + t * d[:, 2]
    if layer.profile is not None:
        top = np.interp(along, layer.profile_x0 + np.arange(len(layer.profile)), layer.profile)
        ok &= (along >= layer.segs.start[0]) & (along < layer.segs.end[0])
    else:
        idx = layer.segs.lookup(along)
        top = np.where(idx >= 0, layer.segs.top[np.clip(idx, 0, None)], -1.0)
    ok &= (z >= 0.0) & (z < top)
    return np.where(ok, t, INF).astype(np.float32)


def _shade_facade(st: lay.Street, layer: lay.Layer, along: np.ndarray, z: np.ndarray) -> np.ndarray:
    s = layer.segs
    i = np.clip(s.lookup(along), 0, None)
    sty = s.style
    col = s.colour[i] * (0.85 + 0.3 * _tex(st.tiles["plaster"], along, z, 6.0))[:, None]
    rel = along - s.start[i]
    sx, fh, gh = sty["sx"][i], sty["fh"][i], sty["gh"][i]
    fx = (rel % sx) / sx
    fz = ((z - gh) % fh) / fh
    col_id = np.floor(rel / sx)
    row_id = np.floor((z - gh) / fh)
    wm = sty["wm"][i]
    in_col = (fx > wm) & (fx < 1.0 - wm)
    win = (z > gh) & (z < s.top[i] - 0.9) & in_col & (fz > sty["wbot"][i]) & (fz < sty["wtop"][i])
    sill = (z > gh) & in_col & (fz > sty["wbot"][i] - 0.06) & (fz <= sty["wbot"][i])
    h = _hash(col_id * 17.0 + row_id * 131.0 + i * 7.0 + layer.offset)
    glass = sty["glass"][i] * (0.7 + 0.7 * h)[:, None] + (0.12 * z / np.maximum(s.top[i], 1.0))[:, None]
    lit = h < sty["lit"][i]
    glass[lit] = np.array([0.95, 0.85, 0.55], np.float32) * (0.7 + 0.3 * h[lit, None])
    col = np.where(win[:, None], glass, col)
    col = np.where(sill[:, None], col * 1.25, col)
    shop_fx = (rel % (sx * 1.6)) / (sx * 1.6)
    shop = (sty["shop"][i] > 0.5) & (z > 0.45) & (z < gh - 0.6) & (shop_fx > 0.08) & (shop_fx < 0.92)
    col = np.where(shop[:, None], sty["glass"][i] * 0.9 + 0.05, col)
    col = np.where((z > s.top[i] - 0.35)[:, None], col * 0.78, col)
    gain = st.light["lit"][layer.side] if layer.side else 0.95
    return np.clip(col * gain, 0, 1)


def _shade_layer(st: lay.Street, layer: lay.Layer, along: np.ndarray, z: np.ndarray) -> np.ndarray:
    if layer.kind == "facade":
        return _shade_facade(st, layer, along, z)
    gain = st.light["lit"].get(layer.side, 1.0)
    if layer.kind in ("vegetation", "hedge"):
        scale = 5.0 if layer.kind == "vegetation" else 3.0
        n = _tex(st.tiles["leaves"], along, z, scale)
        base = layer.segs.colour[np.clip(layer.segs.lookup(along), 0, None)]
        light = base * 1.6
        mix = (n > 0.55).astype(np.float32)[:, None]
        col = (base * (1 - mix) + light * mix) * (0.55 + 0.7 * n)[:, None]
        top = np.maximum(layer.segs.top[np.clip(layer.segs.lookup(along), 0, None)], 1.0)
        return np.clip(col * (0.8 + 0.25 * np.clip(z / top, 0, 1))[:, None] * gain, 0, 1)
    i = np.clip(layer.segs.lookup(along), 0, None)
    base = layer.segs.colour[i]
    top = layer.segs.top[i]
    if layer.kind == "wall":
        col = base * (0.8 + 0.35 * _tex(st.tiles["plaster"], along, z, 3.0))[:, None]
        course = np.floor(z / 0.25)
        joint = ((z % 0.25) < 0.03) | (((along + 0.25 * (course % 2)) % 0.5) < 0.03)  # block courses
        col = np.where(joint[:, None], col * 0.72, col)
        col = np.where((z > top - 0.1)[:, None], col * 1.15, col)
        return np.clip(col * gain, 0, 1)
    # fence: diagonal wire mesh over a dark background, posts every 2.5 m, top rail
    p = 0.18
    mesh = ((along + z) % p < 0.035) | ((along - z) % p < 0.035)
    post = (along % 2.5) < 0.08
    rail = z > top - 0.06
    behind = np.array([0.12, 0.15, 0.1], np.float32) * (0.7 + 0.6 * _tex(st.tiles["leaves"], along, z, 4.0))[:, None]
    col = np.where((mesh | post | rail)[:, None], base * np.where(post, 0.75, 1.0)[:, None], behind)
    return np.clip(col * gain, 0, 1)


def _shade_ground(st: lay.Street, x: np.ndarray, y: np.ndarray, t: np.ndarray, on_road: np.ndarray):
    """Colours and labelIds of ground hits (road plane and raised off-road plane)."""
    n = len(x)
    col = np.empty((n, 3), np.float32)
    lab = np.empty(n, np.uint8)
    fade = np.exp(-t / 35.0)
    # road: asphalt, patches, markings
    r = on_road
    xr, yr = x[r], y[r]
    tex = _tex(st.tiles["asphalt"], xr, yr, 3.0)
    patch = _tex(st.tiles["patches"], xr, yr, 40.0)
    c = st.colours["asphalt"] * (1.0 + (tex - 0.5)[:, None] * 0.5 * fade[r, None])
    c *= (1.0 - 0.18 * (patch > 0.68))[:, None]
    mark = np.zeros(len(xr), bool)
    length, period, phase = st.dash
    for yl, dashed, width in st.lines:
        m = np.abs(yr - yl) < width / 2
        if dashed:
            m &= ((xr - phase) % period) < length
        mark |= m
    for xc in st.crosswalks:
        mark |= (xr > xc) & (xr < xc + 3.5) & (((yr - st.road_right) % 1.0) < 0.5)
    wear = 0.75 + 0.25 * _tex(st.tiles["paving"], xr, yr, 2.0)
    c[mark] = st.colours["marking"] * wear[mark, None]
    col[r] = c
    lab[r] = lay.ROAD
    # off-road: sidewalk paving with tile joints and a curb stone band, then terrain or more paving
    o = ~on_road
    xo, yo = x[o], y[o]
    side = np.where(yo > 0, 1, -1)
    edge = np.where(side > 0, st.road_left, st.road_right)
    dist = np.abs(yo - edge)
    walk = np.where(side > 0, st.walk[1], st.walk[-1])
    verge = np.where(side > 0, st.verge[1], st.verge[-1])
    beyond = np.where(side > 0, st.beyond[1], st.beyond[-1])
    is_walk = ((dist >= verge) & (dist < verge + walk)) | ((dist >= verge + walk) & (beyond == lay.SIDEWALK))
    is_walk |= dist < 0.22
    ts = st.light["tile"]
    joint = ((xo % ts) < 0.03) | (((yo - edge) % ts) < 0.03)
    pav = st.colours["sidewalk"] * (0.85 + 0.3 * _tex(st.tiles["paving"], xo, yo, 2.5))[:, None]
    pav = np.where((joint & (fade[o] > 0.3))[:, None], pav * 0.78, pav)
    pav = np.where((dist < 0.22)[:, None], st.colours["curb"], pav)
    g = _tex(st.tiles["grass"], xo, yo, 4.0)
    soil = (_tex(st.tiles["patches"], xo, yo, 15.0) > 0.62)[:, None]
    grass = np.where(soil, st.colours["terrain2"], st.colours["terrain"]) * (0.65 + 0.6 * g)[:, None]
    col[o] = np.where(is_walk[:, None], pav, grass)
    lab[o] = np.where(is_walk, lay.SIDEWALK, lay.TERRAIN)
    shadow = st.in_shadow(x, y)
    col[shadow] *= st.light["shadow"] * np.array([0.92, 0.97, 1.12], np.float32)
    return col, lab


def _sky(st: lay.Street, d: np.ndarray, idx: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Colours of the sky pixels ``idx`` (flat indices, rays ``d``): gradient plus clouds."""
    el = np.arctan2(d[:, 2], np.hypot(d[:, 0], d[:, 1]))
    g = (np.clip(el / 0.6, 0.0, 1.0) ** 0.6)[:, None]
    col = st.sky["horizon"] * (1 - g) + st.sky["top"] * g
    small = (max(shape[0] // 2, 2), max(shape[1] // 2, 2))
    field = value_noise(np.random.default_rng(st.sky["seed"]), small, cells=4, octaves=4)
    rows, cols = np.divmod(idx, shape[1])
    clouds = field[np.minimum(rows // 2, small[0] - 1), np.minimum(cols // 2, small[1] - 1)]
    cover = st.sky["clouds"] if not st.sky["overcast"] else 0.9
    c = np.clip((clouds - (1.0 - cover)) / 0.35, 0.0, 1.0)[:, None]
    white = np.float32(0.93) if not st.sky["overcast"] else np.float32(0.8)
    return col * (1 - 0.9 * c) + white * (0.85 + 0.15 * clouds[:, None]) * 0.9 * c


def render_background(st: lay.Street, cam: Camera) -> Frame:
    """Ray-cast the static street (no objects) for every pixel."""
    h, w = cam.height, cam.width
    rays = cam.rays().reshape(-1, 3)
    c = cam.centre
    dx, dy, dz = rays[:, 0], rays[:, 1], rays[:, 2]
    surfaces: list[tuple[str, object]] = []
    ts: list[np.ndarray] = []
    with np.errstate(divide="ignore", invalid="ignore"):
        down = dz < -1e-7
        t_road = np.where(down, -c[2] / dz, INF)
        y_road = c[1] + t_road * dy
        ts.append(np.where(down & (y_road <= st.road_left) & (y_road >= st.road_right), t_road, INF))
        surfaces.append(("road", None))
        t_off = np.where(down, (st.curb_h - c[2]) / dz, INF)
        y_off = c[1] + t_off * dy
        ts.append(np.where(down & ((y_off > st.road_left) | (y_off < st.road_right)), t_off, INF))
        surfaces.append(("offroad", None))
        for edge, sign in ((st.road_left, 1), (st.road_right, -1)):
            ok = sign * dy > 1e-7
            t = np.where(ok, (edge - c[1]) / dy, INF)
            z = c[2] + t * dz
            ts.append(np.where(ok & (z >= 0) & (z <= st.curb_h), t, INF))
            surfaces.append(("curb", None))
    layers = st.layers + ([st.closing] if st.closing is not None else [])
    for layer in layers:
        ts.append(_layer_t(layer, c, rays))
        surfaces.append(("layer", layer))
    depth = ts[0].astype(np.float32)
    choice = np.zeros(depth.shape, np.int16)
    for k in range(1, len(ts)):  # nearest surface along each ray
        nearer = ts[k] < depth
        depth = np.where(nearer, ts[k], depth).astype(np.float32)
        choice[nearer] = k
    hit = depth < INF
    rgb = np.empty((h * w, 3), np.float32)
    labels = np.full(h * w, lay.SKY, np.uint8)
    # ground (road + off-road planes) shaded together
    ground = hit & ((choice == 0) | (choice == 1))
    gi = np.flatnonzero(ground)
    tg = depth[gi]
    col, lab = _shade_ground(st, c[0] + tg * dx[gi], c[1] + tg * dy[gi], tg, choice[gi] == 0)
    rgb[gi] = col
    labels[gi] = lab
    for k in (2, 3):
        ci = np.flatnonzero(hit & (choice == k))
        rgb[ci] = st.colours["curb"] * 0.8
        labels[ci] = lay.SIDEWALK
    for k, (_, layer) in enumerate(surfaces):
        if layer is None:
            continue
        li = np.flatnonzero(hit & (choice == k))
        if not len(li):
            continue
        tl = depth[li]
        along = (c[1] + tl * dy[li]) if layer.side == 0 else (c[0] + tl * dx[li])
        z = c[2] + tl * dz[li]
        rgb[li] = _shade_layer(st, layer, along, z)
        labels[li] = layer.label
    si = np.flatnonzero(~hit)
    rgb[si] = _sky(st, rays[si], si, (h, w))
    return Frame(
        rgb.reshape(h, w, 3),
        labels.reshape(h, w),
        np.zeros((h, w), np.uint8),
        np.where(hit, depth, INF).reshape(h, w).astype(np.float32),
    )


# ----------------------------------------------------------------------------- objects
def _object_distance(cam: Camera, obj: lay.Placed) -> float:
    return float(math.hypot(obj.x - cam.x, obj.y - cam.y))


def draw_objects(st: lay.Street, cam: Camera, canvas: Canvas, objects: list[lay.Placed]) -> None:
    """Draw placed objects far to near (vehicles as 3D polygons, the rest as billboards)."""
    centre = cam.centre
    sun = st.light["sun"]
    shadow_gain = st.light["shadow"] * 1.1
    for obj in objects:  # contact shadows under vehicles first
        if obj.kind == "vehicle":
            u, v, d = cam.project(obj.params.footprint(0.15))
            if (d > 0.5).all():
                canvas.darken(np.stack([u, v], 1), 0.55)
    order = sorted(objects, key=lambda o: -_object_distance(cam, o))
    for obj in order:
        gain = shadow_gain if bool(st.in_shadow(np.array([obj.x]), np.array([obj.y]))[0]) else 1.0
        if obj.kind == "vehicle":
            veh = obj.params
            _, _, db = cam.project(veh.bounds())
            if db.min() < 1.0:
                continue
            ub, vb, _ = cam.project(veh.bounds())
            if ub.max() < 0 or ub.min() >= cam.width or vb.max() < 0 or vb.min() >= cam.height:
                continue
            polys = veh.polygons(centre, sun)
            pu, pv, _ = cam.project(np.concatenate([pts for pts, _ in polys]))
            uv = np.stack([pu, pv], 1)
            ends = np.cumsum([len(pts) for pts, _ in polys])
            projected = [(uv[e - len(pts) : e], colour * gain) for e, (pts, colour) in zip(ends, polys, strict=True)]
            canvas.polygons(projected, float(db.min()), veh.label)
            continue
        u, v, d = cam.project(np.array([obj.x, obj.y, obj.z]))
        u, v, d = float(u), float(v), float(d)
        if d < 2.0 or u < -cam.width or u > 2 * cam.width:
            continue
        px = cam.fy / d
        if obj.kind == "billboard":
            params = obj.params
            size = {
                "tree": 3 * params.get("R", 1.0) + params.get("trunk_h", 0.0),
                "lamp": 2 * params.get("H", 1.0),
                "traffic_light": 5.0,
                "sign": 4.0,
            }.get(params["kind"], 2.0)
            if size * px > 3 * cam.height or u + size * px < 0 or u - size * px > cam.width or v < 0:
                continue
            m = 2.0 / px
            clip = (-u / px - m, (cam.width - u) / px + m, (v - cam.height) / px - m, v / px + m)
            sprite = BILLBOARDS[params["kind"]](params, px, clip)
            canvas.paste(sprite, u, v, d, gain=gain)
        else:
            family = FAMILIES[obj.family]
            elev = math.atan2(cam.z - obj.z - 0.15, d)
            sprite = family.draw(obj.params, px, max(elev, 0.02))
            canvas.paste(sprite, u, v, d, anomaly=obj.anomaly, gain=gain)


def draw_hood(canvas: Canvas, hood: dict) -> None:
    """The ego vehicle's bonnet across the bottom of the image (labelId 1, void in training)."""
    h, w = canvas.h, canvas.w
    top = h * (1.0 - hood["height"])
    xs = np.linspace(-0.05 * w, 1.05 * w, 40)
    bulge = hood["bulge"] * h * (1.0 - ((xs - w / 2) / (0.55 * w)) ** 2)
    pts = np.vstack([np.stack([xs, top - bulge], 1), [[1.05 * w, h + 2], [-0.05 * w, h + 2]]])
    res = canvas._poly_mask(pts)
    if res is None:
        return
    sl, mask = res
    rows = np.arange(sl[0].start, sl[0].stop, dtype=np.float32)[:, None]
    grad = np.clip((rows - top) / max(h - top, 1.0), 0, 1)
    col = np.asarray(hood["paint"], np.float32) * (1.1 - 0.5 * grad)[..., None] + 0.08 * (1 - grad[..., None])
    region = canvas.rgb[sl]
    region[mask] = np.broadcast_to(col, region.shape)[mask]
    canvas.labels[sl][mask] = lay.EGO_VEHICLE
    canvas.anomaly[sl][mask] = 0
    canvas.depth[sl][mask] = 0.5


def render(
    st: lay.Street,
    cam: Camera,
    objects: list[lay.Placed] | None = None,
    pastes=(),
    hood: dict | None = None,
    detail_seed: int = 0,
) -> Frame:
    """Render the street and its objects (``objects`` defaults to ``st.objects``).

    ``pastes``: ``(sprite, u, v, anomaly_code)`` drawn in front of everything (2D pasted
    anomalies). ``hood``: draw the ego bonnet (see :func:`sample_hood`). ``detail_seed`` fixes the
    fine per-surface texture and the fog.
    """
    frame = render_background(st, cam)
    canvas = Canvas(frame.rgb, frame.labels, frame.depth)
    draw_objects(st, cam, canvas, st.objects if objects is None else objects)
    for sprite, u, v, code in pastes:
        canvas.paste(sprite, u, v, 0.5, anomaly=code)
    # fine texture per surface class and distance haze
    noise = value_noise(np.random.default_rng(detail_seed), (cam.height, cam.width), cells=cam.height / 3, octaves=2)
    amp = _DETAIL[canvas.labels]
    rgb = canvas.rgb * (1.0 + amp * (noise - 0.5) * 2.0)[..., None]
    fog = (1.0 - np.exp(-np.minimum(canvas.depth, 5e3) / st.light["fog"]))[..., None]
    fog[canvas.labels == lay.SKY] = 0.0
    rgb = rgb * (1 - fog) + st.sky["horizon"] * fog
    canvas.rgb = rgb
    if hood is not None:
        draw_hood(canvas, hood)
    return Frame(canvas.rgb, canvas.labels, canvas.anomaly, canvas.depth)


# ----------------------------------------------------------------------------- camera effects
def sample_grade(rng: np.random.Generator) -> dict:
    """Exposure, white balance, gamma, vignetting, blur and noise level of one shot or sequence."""
    return {
        "gain": float(rng.uniform(0.7, 1.2)),
        "contrast": float(rng.uniform(0.85, 1.15)),
        "tint": float(rng.uniform(-0.08, 0.08)),
        "gamma": float(rng.uniform(0.85, 1.15)),
        "vignette": float(rng.uniform(0.0, 0.3)),
        "blur": float(rng.uniform(0.0, 1.0)),
        "noise": float(rng.uniform(0.004, 0.025)),
    }


def sample_hood(rng: np.random.Generator) -> dict:
    """Shape and paint of the visible ego bonnet."""
    paint = rng.choice([0.06, 0.25, 0.55, 0.8])
    return {
        "height": float(rng.uniform(0.06, 0.14)),
        "bulge": float(rng.uniform(0.01, 0.05)),
        "paint": [float(paint) * float(rng.uniform(0.9, 1.1))] * 3,
    }


def develop(rgb: np.ndarray, grade: dict, rng: np.random.Generator) -> np.ndarray:
    """Apply the camera (``grade``) and sensor noise (``rng``) to float RGB; returns ``uint8`` RGB."""
    h, w = rgb.shape[:2]
    img = rgb * grade["gain"]
    img = (img - 0.45) * grade["contrast"] + 0.45
    t = grade["tint"]
    img = img * np.array([1 + t, 1.0, 1 - t], np.float32)
    img = np.clip(img, 0.0, 1.0) ** grade["gamma"]
    if grade["vignette"] > 0:
        yy = (np.arange(h, dtype=np.float32)[:, None] - h / 2) / (h / 2)
        xx = (np.arange(w, dtype=np.float32)[None, :] - w / 2) / (w / 2)
        img = img * (1.0 - grade["vignette"] * 0.5 * (xx**2 + yy**2))[..., None]
    if grade["blur"] > 0.15:
        img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), grade["blur"])
    img = img + grade["noise"] * rng.standard_normal((h, w, 1), dtype=np.float32)
    img = img + grade["noise"] * 0.5 * rng.standard_normal((h, w, 3), dtype=np.float32)
    return np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
