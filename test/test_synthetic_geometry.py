"""The synthetic world's geometry and object families, against hand-computed references."""

from __future__ import annotations

import json
import math

import cv2
import numpy as np
import pytest

from pebal_core.data.synthetic import WorldConfig, scenes
from pebal_core.data.synthetic import layout as lay
from pebal_core.data.synthetic.camera import Camera
from pebal_core.data.synthetic.families import COLOUR_FAMILIES, FAMILIES, TEXTURE_ROLES, check_disjoint, family_sets
from pebal_core.data.synthetic.render import render_background
from pebal_core.data.synthetic.writers import generate_world


def _project_by_hand(cam: dict, x: float, y: float, z: float) -> tuple[float, float]:
    """Cityscapes projection written out for yaw = roll = 0: p_C = Ry(pitch)^T (p_V - t)."""
    e, i = cam["extrinsic"], cam["intrinsic"]
    assert e["yaw"] == 0 and e["roll"] == 0
    dx, dy, dz = x - e["x"], y - e["y"], z - e["z"]
    c, s = math.cos(e["pitch"]), math.sin(e["pitch"])
    xc, yc, zc = c * dx - s * dz, dy, s * dx + c * dz
    return i["u0"] - i["fx"] * yc / xc, i["v0"] - i["fy"] * zc / xc


def test_rays_and_projection_are_inverse():
    cam = Camera.for_size(96, 192, x=1.7, y=0.2, z=1.3, yaw=0.03, pitch=0.04, roll=-0.01)
    rays = cam.rays()
    rng = np.random.default_rng(0)
    for _ in range(20):
        v, u = int(rng.integers(0, 96)), int(rng.integers(0, 192))
        t = rng.uniform(1.0, 50.0)
        pu, pv, depth = cam.project(cam.centre + t * rays[v, u].astype(np.float64))
        assert abs(pu - u) < 1e-3 and abs(pv - v) < 1e-3 and abs(depth - t) < 1e-3


def test_projection_matches_the_cityscapes_formula():
    cam = Camera.for_size(256, 512, x=1.7, y=0.1, z=1.25, pitch=0.035)
    js = cam.to_cityscapes_json()
    for point in ((10.0, 0.0, 0.0), (25.0, -3.0, 0.0), (40.0, 5.0, 2.0)):
        u, v, _ = cam.project(np.array(point))
        hu, hv = _project_by_hand(js, *point)
        assert abs(u - hu) < 1e-9 and abs(v - hv) < 1e-9
    # positive pitch looks down: the horizon lies above the principal point
    assert cam.horizon_row() == pytest.approx(cam.v0 - cam.fy * math.tan(0.035), abs=1e-9)


def test_background_labels_match_ray_plane_intersections():
    rng = np.random.default_rng(3)
    street = lay.sample_street(rng)
    cam = Camera.for_size(128, 256, x=1.7, y=0.0, z=1.3, pitch=0.03)
    frame = render_background(street, cam)
    js = cam.to_cityscapes_json()
    left = street.road_left + street.verge[1] + 0.5 * street.walk[1]
    right = street.road_right - street.verge[-1] - 0.5 * street.walk[-1]
    checked = 0
    for x in (8.0, 14.0, 20.0, 30.0, 45.0):
        for y, z, label in (
            (0.0, 0.0, lay.ROAD),
            (left, street.curb_h, lay.SIDEWALK),
            (right, street.curb_h, lay.SIDEWALK),
        ):
            u, v = _project_by_hand(js, x, y, z)
            if 0 <= round(u) < cam.width and 0 <= round(v) < cam.height:
                assert frame.labels[round(v), round(u)] == label, (x, y, label)
                assert frame.depth[round(v), round(u)] == pytest.approx(x - cam.x, rel=0.08)
                checked += 1
    assert checked >= 8


def test_sequence_camera_json_places_obstacles_where_they_are_drawn(tmp_path):
    cfg = WorldConfig(seed=11, height=128, width=256, sequences=2, frames=3, parts=("lostandfound",))
    manifest = generate_world(tmp_path, cfg, progress=False)
    laf = tmp_path / "lostandfound"
    checked = 0
    for seq in manifest["parts"]["lostandfound"]["sequences"]:
        first = min(seq["obstacles"], key=lambda o: o["x"])
        stamps = sorted((laf / "timestamp" / "test" / seq["name"]).glob("*.txt"))
        t0 = int(stamps[0].read_text())
        for stamp in stamps:
            stem = stamp.name[: -len("_timestamp.txt")]
            cam = json.loads((laf / "camera" / "test" / seq["name"] / f"{stem}_camera.json").read_text())
            # the vehicle has driven speed * elapsed metres: the obstacle is that much nearer
            travelled = seq["speed_mps"] * (int(stamp.read_text()) - t0) / 1e9
            u, v = _project_by_hand(cam, first["x"] - travelled, first["y"], first["z"])
            ids = cv2.imread(
                str(laf / "gtCoarse" / "test" / seq["name"] / f"{stem}_gtCoarse_labelIds.png"), cv2.IMREAD_UNCHANGED
            )
            rows, cols = np.nonzero(ids == first["laf_id"])
            bottom = rows.max()
            assert abs(bottom - v) <= 1.5, (bottom, v)
            near_bottom = cols[rows >= bottom - 1]
            assert near_bottom.min() - 1.5 <= u <= near_bottom.max() + 1.5, (near_bottom, u)
            checked += 1
    assert checked == 6


# ----------------------------------------------------------------------------- families
def test_oe_and_test_families_are_disjoint():
    check_disjoint()
    oe, test = family_sets("oe"), family_sets("test")
    assert len(oe["names"]) >= 5 and len(test["names"]) >= 5
    for key in ("names", "shapes", "textures", "colours"):
        assert not oe[key] & test[key], key
    assert all(TEXTURE_ROLES[t] == "oe" for t in oe["textures"])
    assert all(TEXTURE_ROLES[t] == "test" for t in test["textures"])
    # no colour drawn from an OE colour family falls in any test colour family, and vice versa
    rng = np.random.default_rng(0)
    for a_names, b_names in ((oe["colours"], test["colours"]), (test["colours"], oe["colours"])):
        for a in a_names:
            for _ in range(300):
                rgb = COLOUR_FAMILIES[a].sample(rng)
                assert COLOUR_FAMILIES[a].contains(rgb)
                assert not any(COLOUR_FAMILIES[b].contains(rgb) for b in b_names), (a, rgb)


def test_objects_take_their_colours_from_their_own_families():
    for i in range(6):  # what the COCO writer draws and records
        for rec in scenes.coco_sample(5, i, 96, 128)[2]:
            fam = FAMILIES[rec["family"]]
            assert fam.role == "oe"
            for c in rec["colours"]:
                assert any(COLOUR_FAMILIES[n].contains(c, tol=1e-3) for n in fam.colours), (rec["family"], c)
    for name, fam in FAMILIES.items():
        for s in range(5):
            q = fam.sample(np.random.default_rng(s))
            assert q["family"] == name
            for c in q["colours"]:
                assert any(COLOUR_FAMILIES[n].contains(c, tol=1e-3) for n in fam.colours), (name, c)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_family_object_is_the_same_object_at_any_scale(name):
    fam = FAMILIES[name]
    q = fam.sample(np.random.default_rng(2))
    small, large = fam.draw(q, 60.0, 0.2), fam.draw(q, 120.0, 0.2)
    assert small.mask.any() and 3.0 < large.mask.sum() / small.mask.sum() < 5.5
    down = cv2.resize(large.alpha, small.alpha.shape[::-1], interpolation=cv2.INTER_AREA) >= 0.5
    h = min(down.shape[0], small.mask.shape[0])
    w = min(down.shape[1], small.mask.shape[1])
    a, b = down[:h, :w], small.mask[:h, :w]
    assert (a & b).sum() / (a | b).sum() > 0.7
