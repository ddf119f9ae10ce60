"""Street layouts: everything a synthetic street scene contains, in world coordinates.

The world frame is the vehicle frame of the ego car at the first frame (ISO 8855: ``x`` forward
along the road, ``y`` left, ``z`` up, metres, ground at ``z = 0``). A :class:`Street` is a straight
road between two curbs with lane markings, raised sidewalks, and on each side a stack of vertical
layers parallel to the road (building facades with windows, tree lines, low walls, fences,
hedges), an optional closing row of buildings across the road far ahead, and placed objects
(vehicles, people, trees, poles, signs, traffic lights, anomalies). :func:`sample_street` draws
one at random; :mod:`pebal_core.data.synthetic.render` turns it into pixels for any camera pose.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from pebal_core.data.synthetic import street_objects as so
from pebal_core.data.synthetic.textures import hsv_colour, palette_colour, tile_noise

# Cityscapes labelIds drawn by the background renderer
ROAD, SIDEWALK, BUILDING, WALL, FENCE, VEGETATION, TERRAIN, SKY = 7, 8, 11, 12, 13, 21, 22, 23
EGO_VEHICLE, RECTIFICATION_BORDER = 1, 2


@dataclasses.dataclass
class Segments:
    """Piecewise-constant properties along one coordinate: segment ``i`` covers ``[start[i], end[i])``."""

    start: np.ndarray
    end: np.ndarray
    top: np.ndarray
    colour: np.ndarray
    style: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    def lookup(self, s: np.ndarray) -> np.ndarray:
        """Index of the segment covering each coordinate in ``s`` (-1 where none does)."""
        idx = np.searchsorted(self.start, s, side="right") - 1
        ok = idx >= 0
        idx_c = np.clip(idx, 0, len(self.start) - 1)
        ok &= s < self.end[idx_c]
        return np.where(ok, idx_c, -1)


@dataclasses.dataclass
class Layer:
    """A vertical surface parallel to the road at ``y = side * offset`` (or across it, ``x = offset``)."""

    kind: str  # facade | vegetation | wall | fence | hedge
    side: int  # +1 left, -1 right, 0 across the road (closing row)
    offset: float
    label: int
    segs: Segments
    profile: np.ndarray | None = None  # vegetation: top height sampled every metre from profile_x0
    profile_x0: float = 0.0


@dataclasses.dataclass
class Placed:
    """An object standing on the ground at ``(x, y, z)``.

    ``kind``: ``billboard`` (``params`` of a :mod:`street_objects` billboard), ``vehicle``
    (``params`` is a :class:`~pebal_core.data.synthetic.street_objects.Vehicle`) or ``anomaly``
    (``params`` of a family in :mod:`pebal_core.data.synthetic.families`). ``anomaly`` is the value
    written into the anomaly map for its pixels (0 for inlier objects).
    """

    kind: str
    x: float
    y: float
    z: float
    params: object
    anomaly: int = 0
    family: str = ""


@dataclasses.dataclass
class Street:
    """A complete street scene in world coordinates (see the module docstring)."""

    road_left: float
    road_right: float
    curb_h: float
    walk: dict[int, float]
    verge: dict[int, float]  # width of the grass strip between curb and sidewalk (0 = none)
    beyond: dict[int, int]  # labelId of the ground beyond each sidewalk
    lines: list[tuple[float, bool, float]]  # (y, dashed, width) lane markings
    dash: tuple[float, float, float]  # (length, period, phase) of dashed lines
    crosswalks: list[float]
    layers: list[Layer]
    closing: Layer | None
    colours: dict[str, np.ndarray]
    tiles: dict[str, np.ndarray]
    sky: dict
    light: dict
    objects: list[Placed]
    lanes: list[tuple[float, float, int]]  # (y_min, y_max, direction +1 with ego / -1 oncoming)

    def edge(self, side: int) -> float:
        """y of the curb on ``side`` (+1 left, -1 right)."""
        return self.road_left if side > 0 else self.road_right

    def shadow_line(self, x: np.ndarray) -> np.ndarray | None:
        """Lateral extent of building shadows on the ground at ``x`` (see :meth:`in_shadow`)."""
        side = self.light["shadow_side"]
        if side == 0:
            return None
        for layer in self.layers:
            if layer.side == side and layer.kind == "facade":
                idx = layer.segs.lookup(x)
                h = np.where(idx >= 0, layer.segs.top[np.clip(idx, 0, None)], 0.0)
                return side * layer.offset - side * self.light["shadow_k"] * h
        return None

    def in_shadow(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Whether ground points ``(x, y)`` lie in the shadow cast by the facades of the shadow side."""
        line = self.shadow_line(np.asarray(x, float))
        if line is None:
            return np.zeros(np.shape(x), bool)
        side = self.light["shadow_side"]
        return side * np.asarray(y) > side * line


# ----------------------------------------------------------------------------- palettes
FACADE_COLOURS = (
    (0.82, 0.76, 0.62),
    (0.9, 0.87, 0.78),
    (0.75, 0.74, 0.72),
    (0.55, 0.54, 0.52),
    (0.62, 0.36, 0.28),
    (0.7, 0.5, 0.35),
    (0.85, 0.7, 0.5),
    (0.6, 0.64, 0.66),
    (0.86, 0.8, 0.72),
    (0.45, 0.3, 0.25),
    (0.78, 0.66, 0.62),
    (0.68, 0.7, 0.6),
)


def _col(rng: np.random.Generator, palette, jit: float = 0.05) -> np.ndarray:
    return palette_colour(rng, palette, jit, np.float32)


def _hsv(rng, h, s, v) -> np.ndarray:
    return np.array(hsv_colour(rng, h, s, v), np.float32)


def _facade_segments(
    rng: np.random.Generator,
    s0: float,
    s1: float,
    heights: tuple[float, float],
    gap_p: float,
) -> Segments:
    starts, ends, tops, cols = [], [], [], []
    style = {k: [] for k in ("sx", "fh", "gh", "wm", "wtop", "wbot", "glass", "shop", "lit")}
    s = s0
    while s < s1:
        length = rng.uniform(8.0, 32.0)
        starts.append(s)
        ends.append(s + length)
        tops.append(rng.uniform(*heights))
        cols.append(_col(rng, FACADE_COLOURS, 0.06))
        style["sx"].append(rng.uniform(2.2, 3.6))
        style["fh"].append(rng.uniform(2.9, 3.6))
        style["gh"].append(rng.uniform(3.2, 4.5))
        style["wm"].append(rng.uniform(0.18, 0.32))
        style["wbot"].append(rng.uniform(0.25, 0.35))
        style["wtop"].append(rng.uniform(0.72, 0.85))
        style["glass"].append(_hsv(rng, (190, 230), (0.1, 0.35), (0.15, 0.4)))
        style["shop"].append(float(rng.random() < 0.5))
        style["lit"].append(rng.uniform(0.0, 0.25))
        s += length
        if rng.random() < gap_p:
            s += rng.uniform(2.0, 10.0)
    return Segments(
        np.array(starts),
        np.array(ends),
        np.array(tops),
        np.array(cols, np.float32),
        {k: np.array(v, np.float32) for k, v in style.items()},
    )


def _plain_segments(rng, s0, s1, heights, length, gap_p, colour_fn) -> Segments:
    starts, ends, tops, cols = [], [], [], []
    s = s0
    while s < s1:
        seg = rng.uniform(*length)
        starts.append(s)
        ends.append(s + seg)
        tops.append(rng.uniform(*heights))
        cols.append(colour_fn())
        s += seg
        if rng.random() < gap_p:
            s += rng.uniform(3.0, 15.0)
    return Segments(np.array(starts), np.array(ends), np.array(tops), np.array(cols, np.float32))


def _treeline(
    rng,
    side: int,
    offset: float,
    x0: float,
    x1: float,
    h: tuple[float, float],
    label: int = VEGETATION,
    kind: str = "vegetation",
) -> Layer:
    n = int(x1 - x0) + 2
    base = rng.uniform(*h)
    prof = base + (rng.random(n) - 0.5) * 2.0
    prof = np.convolve(prof, np.ones(3) / 3, mode="same") + 1.2 * np.sin(np.arange(n) / rng.uniform(3, 9))
    col = _hsv(rng, (75, 115), (0.35, 0.65), (0.2, 0.42))
    segs = Segments(np.array([x0]), np.array([x1]), np.array([prof.max()]), col[None])
    return Layer(kind, side, offset, label, segs, np.maximum(prof, 0.6), x0)


# ----------------------------------------------------------------------------- sampling
PARK_WIDTH = 2.2
"""Width in metres of a parking strip between the outer lane and the curb."""

BOUNDARY_LABELS = {"wall": WALL, "fence": FENCE, "hedge": VEGETATION}
"""labelId of each low boundary along a sidewalk (a hedge is vegetation)."""


@dataclasses.dataclass
class _Roadway:
    """The cross-section of the carriageway (``y`` in metres, +y left; the ego lane is centred on ``y = 0``).

    ``lane_edges``: the ``len(lanes) + 1`` lane boundaries from the right (-y) to the left (+y);
    ``lanes``: ``(y_min, y_max, direction)`` with direction +1 with the ego car, -1 oncoming;
    ``park``: whether a parking strip of :data:`PARK_WIDTH` lies along the curb of each side
    (+1 left, -1 right); ``road_left`` / ``road_right``: ``y`` of the left and right curbs.
    """

    lane_edges: list[float]
    lanes: list[tuple[float, float, int]]
    park: dict[int, bool]
    road_left: float
    road_right: float


@dataclasses.dataclass
class _Roadsides:
    """What lies between each curb and the first vertical layer, per side (+1 left, -1 right).

    ``curb_h``: curb height (metres, both sides); ``walk``: sidewalk width (metres); ``kinds``:
    ``urban`` (buildings at the sidewalk), ``green`` or ``open`` (trees, fields, buildings far
    back); ``verge``: width of the grass strip between curb and sidewalk (0 = none); ``beyond``:
    labelId of the ground beyond the sidewalk.
    """

    curb_h: float
    walk: dict[int, float]
    kinds: dict[int, str]
    verge: dict[int, float]
    beyond: dict[int, int]

    def front(self, side: int, curb_distance: float) -> float:
        """Distance (metres, >= 0) from ``y = 0`` to the back of the sidewalk on ``side``."""
        return curb_distance + self.verge[side] + self.walk[side]


def _sample_roadway(rng: np.random.Generator) -> _Roadway:
    """Lane count and directions (two-way, four-way or one-way), lane width, ego lane and parking strips."""
    lane_w = rng.uniform(3.0, 3.6)
    layout = str(rng.choice(["two_way", "two_way", "four_way", "one_way"]))
    if layout == "two_way":
        dirs = [1, -1]
    elif layout == "four_way":
        dirs = [1, 1, -1, -1]
    else:
        dirs = [1, 1, 1]
    n_fwd, n_back = dirs.count(1), dirs.count(-1)
    ego = int(rng.integers(0, n_fwd))  # index of the ego lane among the forward lanes, 0 = rightmost
    lane_edges = [(-ego - 0.5 + i) * lane_w for i in range(len(dirs) + 1)]
    dirs_r2l = [1] * n_fwd + [-1] * n_back
    park = {s: bool(rng.random() < 0.55) for s in (1, -1)}
    road_right = lane_edges[0] - (PARK_WIDTH if park[-1] else rng.uniform(0.2, 0.6))
    road_left = lane_edges[-1] + (PARK_WIDTH if park[1] else rng.uniform(0.2, 0.6))
    lanes = [(lane_edges[i], lane_edges[i + 1], dirs_r2l[i]) for i in range(len(dirs))]
    return _Roadway(lane_edges, lanes, park, road_left, road_right)


def _sample_markings(
    rng: np.random.Generator, roadway: _Roadway
) -> tuple[list[tuple[float, bool, float]], tuple[float, float, float], list[float]]:
    """Lane markings, dash pattern and crosswalks, as the :class:`Street` fields ``lines, dash, crosswalks``.

    Lines between lanes of the same direction are dashed, the centre line between opposite
    directions sometimes; an edge line along each outer lane is dashed where a parking strip
    follows. Widths, dash length / period / phase and the crosswalk's ``x`` are in metres.
    """
    edges, lanes = roadway.lane_edges, roadway.lanes
    lines: list[tuple[float, bool, float]] = []
    for i in range(1, len(lanes)):
        centre = lanes[i - 1][2] != lanes[i][2]
        lines.append((edges[i], not centre or rng.random() < 0.4, rng.uniform(0.1, 0.16)))
    for side, y in ((-1, edges[0]), (1, edges[-1])):
        if rng.random() < 0.7:
            lines.append((y, roadway.park[side], rng.uniform(0.1, 0.15)))
    dash = (rng.uniform(2.5, 4.0), rng.uniform(7.0, 12.0), rng.uniform(0, 12.0))
    crosswalks = [float(rng.uniform(12, 60))] if rng.random() < 0.25 else []
    return lines, dash, crosswalks


def _sample_roadsides(rng: np.random.Generator) -> _Roadsides:
    """Curb height, then per side the sidewalk width, the kind of surroundings and the grass verge."""
    curb_h = rng.uniform(0.1, 0.16)
    walk = {s: rng.uniform(1.8, 5.0) for s in (1, -1)}
    kinds = {s: str(rng.choice(["urban", "green", "open"], p=[0.58, 0.3, 0.12])) for s in (1, -1)}
    verge = {
        s: (rng.uniform(0.8, 2.5) if rng.random() < (0.3 if kinds[s] == "urban" else 0.5) else 0.0) for s in (1, -1)
    }
    beyond = {s: (SIDEWALK if kinds[s] == "urban" else TERRAIN) for s in (1, -1)}
    return _Roadsides(curb_h, walk, kinds, verge, beyond)


def _sample_surface_colours(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """RGB in [0, 1] (float32, shape 3) of the ground surfaces, markings, walls and fences."""
    return {
        "asphalt": _hsv(rng, (200, 260), (0.0, 0.08), (0.22, 0.42)),
        "sidewalk": _hsv(rng, (20, 50), (0.02, 0.14), (0.5, 0.72)),
        "curb": _hsv(rng, (0, 360), (0.0, 0.05), (0.55, 0.8)),
        "terrain": _hsv(rng, (60, 95), (0.3, 0.6), (0.35, 0.6)),
        "terrain2": _hsv(rng, (30, 50), (0.25, 0.5), (0.3, 0.5)),
        "marking": np.array([0.88, 0.88, 0.86], np.float32) * rng.uniform(0.75, 1.0),
        "wall": _hsv(rng, (180, 240), (0.02, 0.12), (0.5, 0.75)),
        "fence": _hsv(rng, (0, 360), (0.0, 0.12), (0.35, 0.7)),
    }


def _boundary_segments(
    rng: np.random.Generator,
    kind: str,
    colours: dict[str, np.ndarray],
    x_min: float,
    x_max: float,
    heights: tuple[float, float],
    length: tuple[float, float],
    gap_p: float,
) -> Segments:
    """Segments of a low ``wall``, ``fence`` or ``hedge`` along ``x``; walls and fences take the street's
    colour of their kind, each hedge segment draws its own green."""
    if kind == "hedge":
        return _plain_segments(
            rng, x_min, x_max, heights, length, gap_p, lambda: _hsv(rng, (80, 120), (0.35, 0.65), (0.18, 0.38))
        )
    return _plain_segments(rng, x_min, x_max, heights, length, gap_p, lambda: colours[kind])


def _urban_layers(
    rng: np.random.Generator, side: int, front: float, colours: dict[str, np.ndarray], x_min: float, x_max: float
) -> tuple[list[Layer], bool]:
    """Facades at (or, behind front yards, a few metres past) the sidewalk, sometimes trees behind them.

    ``front``: distance in metres from ``y = 0`` to the back of the sidewalk. Returns the layers
    and whether there are front yards (a low wall or fence at the sidewalk, grass behind it).
    """
    layers: list[Layer] = []
    off = front + rng.uniform(0.0, 1.0)
    front_yards = bool(rng.random() < 0.3)
    if front_yards:
        kind = str(rng.choice(["wall", "fence"]))
        segs = _boundary_segments(rng, kind, colours, x_min, x_max, (0.9, 2.0), (15.0, 60.0), 0.2)
        layers.append(Layer(kind, side, front + 0.1, BOUNDARY_LABELS[kind], segs))
        off = front + rng.uniform(2.5, 6.0)
    layers.append(Layer("facade", side, off, BUILDING, _facade_segments(rng, x_min, x_max, (7.0, 24.0), 0.15)))
    if rng.random() < 0.6:
        layers.append(_treeline(rng, side, off + rng.uniform(8, 25), x_min, x_max, (8.0, 16.0)))
    return layers, front_yards


def _open_layers(
    rng: np.random.Generator,
    side: int,
    kind: str,
    front: float,
    colours: dict[str, np.ndarray],
    x_min: float,
    x_max: float,
) -> list[Layer]:
    """A ``green`` or ``open`` side: often a low boundary, a tree line (near for green, far for open),
    often buildings behind it. ``front`` as in :func:`_urban_layers`."""
    layers: list[Layer] = []
    if rng.random() < 0.8:
        boundary = str(rng.choice(["wall", "fence", "hedge"]))
        segs = _boundary_segments(rng, boundary, colours, x_min, x_max, (0.8, 2.0), (10.0, 60.0), 0.3)
        layers.append(Layer(boundary, side, front + rng.uniform(0.0, 0.8), BOUNDARY_LABELS[boundary], segs))
    far = front + (rng.uniform(3.0, 12.0) if kind == "green" else rng.uniform(15.0, 45.0))
    layers.append(_treeline(rng, side, far, x_min, x_max, (5.0, 14.0)))
    if rng.random() < 0.7:
        offset = far + rng.uniform(4.0, 15.0)
        layers.append(Layer("facade", side, offset, BUILDING, _facade_segments(rng, x_min, x_max, (8.0, 22.0), 0.25)))
    return layers


def _sample_closing_row(rng: np.random.Generator) -> Layer | None:
    """Half the time a row of buildings across the road at ``x`` in [70, 250] m, else ``None``."""
    if rng.random() < 0.5:
        x_end = rng.uniform(70.0, 250.0)
        return Layer("facade", 0, x_end, BUILDING, _facade_segments(rng, -120.0, 120.0, (8.0, 30.0), 0.1))
    return None


def _sample_tiles(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Tileable 128 x 128 noise textures of the surfaces (:func:`tile_noise`)."""
    return {
        "asphalt": tile_noise(rng, 128, 16, 3),
        "paving": tile_noise(rng, 128, 8, 3),
        "grass": tile_noise(rng, 128, 24, 3),
        "plaster": tile_noise(rng, 128, 8, 3),
        "leaves": tile_noise(rng, 128, 12, 3),
        "patches": tile_noise(rng, 128, 4, 2),
    }


def _sample_sky(rng: np.random.Generator) -> dict:
    """Overcast or clear; zenith and horizon RGB (float32, [0, 1]), cloud amount in [0, 0.7], cloud noise seed."""
    overcast = bool(rng.random() < 0.35)
    return {
        "overcast": overcast,
        "top": _hsv(rng, (205, 225), (0.05, 0.2), (0.7, 0.85))
        if overcast
        else _hsv(rng, (200, 222), (0.35, 0.7), (0.65, 0.95)),
        "horizon": _hsv(rng, (190, 230), (0.02, 0.12), (0.8, 0.97)),
        "clouds": float(rng.uniform(0.0, 0.7)),
        "seed": int(rng.integers(0, 2**31 - 1)),
    }


def _sample_light(rng: np.random.Generator, overcast: bool) -> dict:
    """Sun and shadows (no sun when overcast).

    ``shadow_side``: side (+1 left, -1 right, 0 none) whose facades cast shadows on the ground;
    ``shadow_k``: shadow length per metre of facade height; ``shadow``: brightness in shadow;
    ``lit``: brightness of the facades of each side; ``sun``: unit vector towards the sun (world
    frame); ``fog``: fog distance in metres; ``tile``: strength of the surface textures.
    """
    sun_side = 0 if overcast else int(rng.choice([-1, 1]))
    return {
        "shadow_side": sun_side if rng.random() < 0.7 else 0,
        "shadow_k": float(rng.uniform(0.15, 0.7)),
        "shadow": float(rng.uniform(0.45, 0.65)),
        "lit": {1: 1.0, -1: 1.0} if sun_side == 0 else {sun_side: float(rng.uniform(0.6, 0.8)), -sun_side: 1.1},
        "sun": np.array([0.3, -0.6 * sun_side, 0.75]) / np.linalg.norm([0.3, -0.6 * sun_side, 0.75]),
        "fog": float(rng.uniform(150.0, 700.0)),
        "tile": float(rng.uniform(0.3, 0.6)),
    }


def sample_street(rng: np.random.Generator, x_min: float = -20.0, x_max: float = 300.0, traffic: bool = True) -> Street:
    """A random street along ``x`` in ``[x_min, x_max]`` around an ego camera at ``y ~ 0``.

    ``traffic=False`` leaves the lanes free of vehicles (for the obstacle sequences); parked
    vehicles, people and street furniture are always placed. The steps below draw from ``rng``
    in a fixed order, so a seed always gives the same street.
    """
    roadway = _sample_roadway(rng)
    lines, dash, crosswalks = _sample_markings(rng, roadway)
    sides = _sample_roadsides(rng)
    colours = _sample_surface_colours(rng)
    layers: list[Layer] = []
    for s in (1, -1):
        front = sides.front(s, roadway.road_left if s > 0 else -roadway.road_right)
        if sides.kinds[s] == "urban":
            urban, front_yards = _urban_layers(rng, s, front, colours, x_min, x_max)
            layers += urban
            if front_yards:
                sides.beyond[s] = TERRAIN
        else:
            layers += _open_layers(rng, s, sides.kinds[s], front, colours, x_min, x_max)
    closing = _sample_closing_row(rng)
    if closing is not None:
        x_max = min(x_max, closing.offset - 5.0)
    tiles = _sample_tiles(rng)
    sky = _sample_sky(rng)
    light = _sample_light(rng, sky["overcast"])
    street = Street(
        roadway.road_left,
        roadway.road_right,
        sides.curb_h,
        sides.walk,
        sides.verge,
        sides.beyond,
        lines,
        dash,
        crosswalks,
        layers,
        closing,
        colours,
        tiles,
        sky,
        light,
        [],
        roadway.lanes,
    )
    _place_objects(rng, street, sides.kinds, roadway.park, x_max, traffic)
    return street


def _place_objects(
    rng: np.random.Generator, st: Street, kinds: dict[int, str], park: dict[int, bool], x_max: float, traffic: bool
) -> None:
    """Fill ``st.objects`` up to ``x = min(x_max, 110)`` metres: parked cars, traffic (``traffic=True``),
    per side the people, trees, lamps and signs, traffic lights at a junction, people on the crosswalk."""
    far = min(x_max, 110.0)
    for s in (1, -1):
        if park[s]:
            st.objects += _parked_vehicles(rng, st.edge(s) - s * PARK_WIDTH / 2, s, far)
    if traffic:
        for lane in st.lanes:
            st.objects += _lane_traffic(rng, lane, far)
    for s in (1, -1):
        st.objects += _roadside_objects(rng, st, s, kinds[s], far)
    st.objects += _traffic_lights(rng, st)
    st.objects += _crossing_people(rng, st)


def _parked_vehicles(rng: np.random.Generator, y: float, side: int, far: float) -> list[Placed]:
    """Mostly cars in a row along the parking strip centred at ``y``, one spot in four left empty."""
    placed: list[Placed] = []
    x = rng.uniform(-2.0, 8.0)
    while x < far:
        kind = "car" if rng.random() < 0.97 else "truck"
        v = so.sample_vehicle(rng, kind, 0.0, y + rng.uniform(-0.1, 0.1), 0.0 if side < 0 else np.pi)
        v.x = x + v.length / 2
        v.heading += rng.uniform(-0.04, 0.04)
        if rng.random() < 0.75:
            placed.append(Placed("vehicle", v.x, v.y, 0.0, v))
        x += v.length + rng.uniform(0.6, 7.0)
    return placed


def _lane_traffic(rng: np.random.Generator, lane: tuple[float, float, int], far: float) -> list[Placed]:
    """Cars, trucks and buses driving in ``lane`` (``(y_min, y_max, direction)``), the ego lane clear for 7 m."""
    y0, y1, d = lane
    placed: list[Placed] = []
    yc = (y0 + y1) / 2
    x = rng.uniform(7.0, 25.0) if abs(yc) < 0.5 else rng.uniform(0.0, 15.0)
    while x < far:
        if rng.random() < 0.5:
            kind = str(rng.choice(["car", "truck", "bus"], p=[0.9, 0.05, 0.05]))
            v = so.sample_vehicle(rng, kind, x, yc + rng.uniform(-0.3, 0.3), 0.0 if d > 0 else np.pi)
            v.x = x + v.length / 2
            placed.append(Placed("vehicle", v.x, v.y, 0.0, v))
            x += v.length
        x += rng.uniform(6.0, 25.0)
    return placed


def _roadside_objects(rng: np.random.Generator, st: Street, s: int, kind: str, far: float) -> list[Placed]:
    """On side ``s`` (+1 left, -1 right) of a ``kind`` roadside: people on the sidewalk (alone or in groups),
    street trees (in pits or verges for urban sides, beyond the sidewalk otherwise), lamps and signs."""
    placed: list[Placed] = []
    edge = st.edge(s)
    walk, verge = st.walk[s], st.verge[s]
    z = st.curb_h
    n_people = int(rng.poisson(5.0 if kind == "urban" else 1.5))
    for _ in range(n_people):
        x = rng.uniform(3.0, 35.0)
        y = edge + s * (verge + rng.uniform(0.4, walk - 0.3))
        for _k in range(1 if rng.random() < 0.7 else int(rng.integers(2, 4))):
            placed.append(
                Placed("billboard", x + rng.uniform(-0.8, 0.8), y + rng.uniform(-0.4, 0.4), z, so.sample_person(rng))
            )
    if kind == "urban" and rng.random() < 0.45:  # street trees in pits
        x = rng.uniform(0.0, 10.0)
        while x < far:
            y = edge + s * (verge / 2 if verge > 0 else max(walk - 0.9, 0.6))
            placed.append(Placed("billboard", x, y, z, so.sample_tree(rng)))
            x += rng.uniform(7.0, 15.0)
    elif kind != "urban":
        x = rng.uniform(0.0, 8.0)
        while x < far:
            y = edge + s * (verge + walk + rng.uniform(1.0, 3.0))
            placed.append(Placed("billboard", x, y, z, so.sample_tree(rng)))
            x += rng.uniform(5.0, 18.0)
    if rng.random() < 0.75:  # street lamps
        x = rng.uniform(3.0, 25.0)
        spacing = rng.uniform(22.0, 38.0)
        while x < far:
            placed.append(Placed("billboard", x, edge + s * 0.45, z, so.sample_lamp(rng, arm_dir=s)))
            x += spacing
    for _ in range(int(rng.integers(0, 4))):  # signs
        placed.append(Placed("billboard", rng.uniform(5.0, 55.0), edge + s * 0.35, z, so.sample_sign(rng)))
    return placed


def _traffic_lights(rng: np.random.Generator, st: Street) -> list[Placed]:
    """Often a junction 10 to 35 m ahead with a traffic light at either curb."""
    placed: list[Placed] = []
    if rng.random() < 0.65:
        xj = rng.uniform(10.0, 35.0)
        for s in (1, -1):
            if rng.random() < 0.8:
                x = xj + rng.uniform(-1, 1)
                placed.append(Placed("billboard", x, st.edge(s) + s * 0.5, st.curb_h, so.sample_traffic_light(rng)))
    return placed


def _crossing_people(rng: np.random.Generator, st: Street) -> list[Placed]:
    """Half the time a person on each crosswalk, anywhere across the road."""
    placed: list[Placed] = []
    for xc in st.crosswalks:
        if rng.random() < 0.5:
            y = rng.uniform(st.road_right + 0.5, st.road_left - 0.5)
            placed.append(Placed("billboard", xc + 1.5, y, 0.0, so.sample_person(rng)))
    return placed
