"""Operating points: the value, how it is chosen, stored by the one writer, read back and resolved.

References are independent of the code under test: hand-made score maps, scikit-learn's ROC curve,
hand counts, and the raw bytes of the tensors in the model files.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import fields

import numpy as np
import pytest
from conftest import ROOT
from scipy import ndimage
from sklearn.metrics import roc_curve

from pebal_core.alarms.operating_point import (
    DEFAULT_ENERGY_THRESHOLD,
    LEGACY_KEYS,
    METADATA_KEY,
    OperatingPoint,
    StoredPoints,
    parse_policy,
    resolve_operating_point,
)
from pebal_core.alarms.persistence import PersistenceConfig
from pebal_core.model_store import model_path
from pebal_core.models import build_model
from pebal_core.models.checkpoint import read_checkpoint, save_checkpoint
from pebal_core.onnx_contract import parse_metadata
from pebal_core.operating_point_selection import (
    OperatingPointSearch,
    ValidationFrame,
    eval_points,
    format_points,
    write_operating_points,
)

sys.path.insert(0, str(ROOT / "benchmarks"))  # the migration is a script beside the other model recipes
from migrate_operating_points import migrate, tensor_bytes  # noqa: E402


# ----------------------------------------------------------------------------- the value
def test_a_point_round_trips_through_its_dict_and_refuses_what_cannot_alarm():
    point = OperatingPoint(-4.5, "fa:0.1", "all", True, 0.01, 320, (1024, 2048), PersistenceConfig(3, 4, 2, 6, 1.0))
    data = json.loads(json.dumps(point.to_dict()))  # as it travels in a model file
    assert OperatingPoint.from_dict(data) == point
    assert set(data) == {f.name for f in fields(OperatingPoint)}
    # a stored point of an older layout lacks the newer fields: they take their defaults
    assert OperatingPoint.from_dict({"threshold": -3.0, "tpr": 0.5}) == OperatingPoint(-3.0)
    for bad, match in (
        (dict(threshold=math.nan), "finite"),
        (dict(threshold=-1.0, region="everywhere"), "region"),
        (dict(threshold=-1.0, min_pixels=0), "min_pixels"),
        (dict(threshold=-1.0, image_size=(0, 5)), "image_size"),
    ):
        with pytest.raises(ValueError, match=match):
            OperatingPoint(**bad)


# ----------------------------------------------------------------------------- resolution
def _stored() -> dict:
    points = {
        "tpr95": OperatingPoint(-7.0, "tpr95", min_pixels=320, image_size=(1024, 2048)),
        "fpr:0.01": OperatingPoint(-4.8, "fpr:0.01", min_pixels=320, image_size=(1024, 2048)),
    }
    rates = {"fpr_region": 0.01, "false_alarms_per_frame": 1.0}
    measured = {"tpr95": {"tpr": 0.95, "fpr": 0.17, **rates}, "fpr:0.01": {"tpr": 0.5, "fpr": 0.013, **rates}}
    return StoredPoints(points, "fpr:0.01", measured, {"dataset": "hand-made"}).to_metadata()


def test_resolution_takes_the_stored_point_and_names_every_part_a_user_overrides():
    meta = _stored()
    plain = resolve_operating_point(meta)
    assert plain.point == plain.stored and plain.point.threshold == -4.8 and plain.overridden == ()
    assert plain.origin == "model" and plain.warning() is None
    assert resolve_operating_point(meta, "tpr95").point.threshold == -7.0
    # a value equal to the stored one is no override; a different one is, and is said
    same = resolve_operating_point(meta, overrides={"min_pixels": 320, "region": "drivable", "threshold": None})
    assert same.overridden == () and same.point == plain.point
    changed = resolve_operating_point(meta, overrides={"min_pixels": 20, "persistence": {"k": 1, "n": 1}})
    assert changed.overridden == ("min_pixels", "persistence") and changed.origin == "model, overridden"
    assert changed.point.persistence == PersistenceConfig(1, 1, 1, 4, 0.5) and changed.point.threshold == -4.8
    # the user's count is in the pixels of their images: it no longer scales with the image area
    assert changed.point.image_size is None and changed.point.min_pixels_at((720, 1280)) == 20
    assert "min_pixels, persistence overridden" in changed.warning() and "fpr:0.01" in changed.warning()
    assert "no longer applies as it was chosen" in changed.warning()
    with pytest.raises(ValueError, match=r"no operating point 'fa:0.1' \(it has: tpr95, fpr:0.01\)"):
        resolve_operating_point(meta, "fa:0.1")
    with pytest.raises(ValueError, match="no part of an operating point"):
        resolve_operating_point(meta, overrides={"colour": "red"})
    with pytest.raises(ValueError, match="k <= n"):
        resolve_operating_point(meta, overrides={"persistence": {"k": 4}})


def test_a_model_without_points_runs_the_default_threshold_and_says_so():
    none = resolve_operating_point({"arch": "resnet18"})
    assert none.point == OperatingPoint(DEFAULT_ENERGY_THRESHOLD) and none.stored is None
    assert none.origin == "default" and "stores no operating point" in none.warning()
    with pytest.raises(ValueError, match="it has: none"):
        resolve_operating_point({}, "tpr95")


def test_older_layouts_read_as_points_with_their_settings():
    """A bare ``score_threshold`` is one point with the default settings; a document that kept the
    selection's settings in its ``source`` gives them to every point."""
    bare = resolve_operating_point({"score_threshold": -4.25})
    assert bare.point == OperatingPoint(-4.25) and bare.origin == "model"
    older = {
        METADATA_KEY: {
            "default": "fa:0.1",
            "points": {"fa:0.1": {"policy": "fa:0.1", "threshold": -3.4, "tpr": 0.05, "rule": "..."}},
            "source": {"dataset": "x", "region": "all", "include_sidewalk": True, "min_pixels": 320},
        },
        "score_threshold": -3.4,
    }
    stored = StoredPoints.from_metadata(older)
    assert stored.points["fa:0.1"] == OperatingPoint(-3.4, "fa:0.1", "all", True, min_pixels=320)
    assert stored.measured["fa:0.1"] == {"tpr": 0.05, "rule": "..."}


def test_an_onnx_export_carries_the_points_at_the_top_of_its_metadata():
    """What ``pebal export onnx`` writes (``metadata_props``) parses back with the checkpoint's points
    at the top level, as a checkpoint's own metadata has them; an export of an older layout keeps
    its own ``score_threshold`` entry."""
    from pebal_core.export.onnx import metadata_props

    model = build_model("resnet18", width=0.25)
    props = metadata_props(model, {**_stored(), "path": "m.safetensors"}, (64, 128), True, False, 18)
    assert "score_threshold" not in props and METADATA_KEY not in props  # one copy, in checkpoint_metadata
    meta = parse_metadata(props)
    assert resolve_operating_point(meta) == resolve_operating_point(_stored())
    older = metadata_props(model, {"path": "m.safetensors"}, (64, 128), True, False, 18)
    assert resolve_operating_point(parse_metadata({**older, "score_threshold": "-2.5"})).point == OperatingPoint(-2.5)


# ----------------------------------------------------------------------------- choosing
def _validation(seed: int = 0) -> list[ValidationFrame]:
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(6):
        labels = np.zeros((32, 48), np.uint8)
        labels[10:16, 10:18] = 1  # an anomaly
        labels[:3] = 255  # void
        score = rng.normal(-10.0, 1.5, labels.shape).astype(np.float32)
        score[labels == 1] += 6.0
        region = np.zeros(labels.shape, bool)
        region[8:, :] = True
        frames.append(ValidationFrame(score, labels, region))
    return frames


def test_tpr95_is_the_highest_threshold_with_95_percent_tpr_as_scikit_learn_finds_it():
    frames = _validation()
    threshold, measured = OperatingPointSearch(frames).choose("tpr95")
    valid = np.concatenate([f.labels[f.labels != 255] for f in frames]) == 1
    scores = np.concatenate([f.score[f.labels != 255] for f in frames])
    fpr, tpr, thresholds = roc_curve(valid, scores, drop_intermediate=False)
    i = np.flatnonzero(tpr >= 0.95)[0]
    assert threshold == pytest.approx(thresholds[i])
    assert measured["tpr"] == pytest.approx(tpr[i]) and measured["fpr"] == pytest.approx(fpr[i])


def test_fpr_budget_flags_at_most_that_share_of_inlier_pixels_in_the_region():
    frames = _validation()
    threshold, measured = OperatingPointSearch(frames).choose("fpr:0.01")
    inlier = np.concatenate([f.score[(f.labels == 0) & f.region] for f in frames])
    flagged = (inlier >= threshold).mean()
    assert flagged <= 0.01 and measured["fpr_region"] == pytest.approx(flagged)
    # the lowest such threshold: the next inlier score below it would break the budget
    below = inlier[inlier < threshold].max()
    assert (inlier >= below).mean() > 0.01


def test_false_alarm_budget_counts_components_outside_the_anomalies():
    frames = _validation()
    search = OperatingPointSearch(frames, min_pixels=1)
    threshold, measured = search.choose("fa:0.5")
    assert measured["false_alarms_per_frame"] <= 0.5
    total = 0
    for f in frames:
        cc, n = ndimage.label((f.score >= threshold) & f.region & (f.labels != 255), np.ones((3, 3)))
        total += sum(1 for c in range(1, n + 1) if not (f.labels[cc == c] == 1).any())
    assert measured["false_alarms_per_frame"] == pytest.approx(total / len(frames))
    assert search.choose("fa:0")[1]["false_alarms_per_frame"] == 0
    assert search.image_size == (32, 48)
    assert OperatingPointSearch([*frames, ValidationFrame(np.zeros((4, 4)), np.zeros((4, 4)), None)]).image_size is None


def _obstacle_counts(frames, threshold, min_pixels, min_visible):
    """(labelled, detected, false alarms) by hand: components with scipy, sets of component ids."""
    labelled = detected = false_alarms = 0
    for f in frames:
        truth, n_truth = ndimage.label(f.labels == 1, np.ones((3, 3)))
        alarm = (f.score >= threshold) & (f.region if f.region is not None else True)
        comps, n = ndimage.label(alarm, np.ones((3, 3)))
        kept = [c for c in range(1, n + 1) if (comps == c).sum() >= min_pixels]
        kept_pixels = np.isin(comps, kept)
        for t in range(1, n_truth + 1):
            if (truth == t).sum() >= min_visible:
                labelled += 1
                detected += bool((kept_pixels & (truth == t)).any())
        false_alarms += sum(1 for c in kept if not (f.labels[comps == c] == 1).any())  # void counts
    return labelled, detected, false_alarms


def test_obstacle_policy_finds_the_most_obstacles_within_the_budget():
    rng = np.random.default_rng(3)
    frames = []
    for i in range(6):
        labels = np.zeros((40, 60), np.uint8)
        labels[10:14, 10 + i : 16 + i] = 1  # an obstacle of 24 px
        labels[25:28, 40:43] = 1  # a small one, 9 px
        labels[35:, :] = 255  # the bonnet, void in the labels
        score = rng.normal(-10.0, 1.5, labels.shape).astype(np.float32)
        score[10:14, 10 + i : 16 + i] += 4.0 + i  # obstacles of different strength
        score[25:28, 40:43] += 3.0
        score[36:, 20:30] = -2.0  # the bonnet scores high
        region = np.ones(labels.shape, bool)
        if i % 2:
            region[35:, :] = False  # an ego mask on every other frame
        frames.append(ValidationFrame(score, labels, region))
    search = OperatingPointSearch(frames, min_pixels=3, min_visible=5)
    candidates = search.candidates()
    assert candidates == sorted(candidates, reverse=True)
    expected = {t: _obstacle_counts(frames, t, 3, 5) for t in candidates}
    for budget in (0.5, 1.0, 2.0):
        threshold, measured = search.choose(f"obstacles:{budget}")
        within = [t for t in candidates if expected[t][2] / 6 <= budget]
        best = max(expected[t][1] for t in within)
        assert threshold == max(t for t in within if expected[t][1] == best)  # ties: the highest threshold
        labelled, detected, false_alarms = expected[threshold]
        assert (measured["obstacles_labelled"], measured["obstacles_detected"]) == (labelled, detected) == (12, best)
        assert measured["obstacle_false_alarms_per_frame"] == pytest.approx(false_alarms / 6)
        assert measured["within_budget"]
    # the bonnet of the three unmasked frames is a false alarm at every candidate (0.5 per frame):
    # no budget below that can be kept; fa:<x> does not see it (void pixels are no alarms there)
    assert all(expected[t][2] >= 3 for t in candidates)
    threshold, measured = search.choose("obstacles:0.4")
    assert threshold == candidates[0] and not measured["within_budget"]
    assert search.false_alarms_per_frame(candidates[0]) * 6 < expected[candidates[0]][2]
    # every policy records its obstacle counts
    threshold, measured = search.choose("tpr95")
    assert measured["obstacles_detected"] == _obstacle_counts(frames, threshold, 3, 5)[1]


def test_obstacle_policy_out_of_budget_keeps_the_highest_candidate_and_says_so():
    labels = np.zeros((20, 20), np.uint8)
    labels[5:10, 5:10] = 255  # an unmasked bonnet, void in the labels, scoring above every inlier pixel
    score = np.full(labels.shape, -10.0, np.float32)
    score[5:10, 5:10] = 0.0
    frames = [ValidationFrame(score, labels, None)]
    threshold, measured = OperatingPointSearch(frames, min_pixels=1).choose("obstacles:0")
    assert not measured["within_budget"] and "no candidate was within the budget" in measured["rule"]
    assert threshold == OperatingPointSearch(frames, min_pixels=1).candidates()[0]


def test_policies_parse():
    assert parse_policy("tpr95") == ("tpr", 0.95) and parse_policy("fpr:0.001") == ("fpr", 0.001)
    assert parse_policy("fa:0.1") == ("fa", 0.1) and parse_policy("obstacles:0.5") == ("obstacles", 0.5)
    for bad in ("tpr90", "fpr:2", "fa:-1", "fa:x", "", "obstacles:-1", "obstacles:"):
        with pytest.raises(ValueError, match="unknown alarm policy"):
            parse_policy(bad)


# ----------------------------------------------------------------------------- the one writer
def test_the_writer_stores_points_weights_untouched_and_drops_a_bare_threshold(tmp_path):
    src = save_checkpoint(
        build_model("resnet18", width=0.25), tmp_path / "m.safetensors", half=True, score_threshold=-1.0
    )
    stored = StoredPoints.from_metadata(_stored())
    out = write_operating_points(src, tmp_path / "w.safetensors", stored, (64, 128))
    meta = read_checkpoint(out).metadata
    assert not set(LEGACY_KEYS) & set(meta) and meta["input_size"] == [64, 128]
    assert StoredPoints.from_metadata(meta) == stored
    assert "| fpr:0.01 (default) | -4.8000 | 50.00 | 1.300 | 1.000 | 1.000 |" in format_points(stored)
    assert tensor_bytes(out) == tensor_bytes(src)  # float16 stays float16, bit for bit
    again = write_operating_points(out, tmp_path / "n.safetensors", stored, None)  # several sizes: none recorded
    assert "input_size" not in read_checkpoint(again).metadata


def test_eval_points_are_the_95_percent_tpr_point_with_the_default_settings():
    report = {"score_threshold": {"score": -6.5, "tpr": 0.95, "fpr": 0.2}, "n_images": 3, "network_sizes": [[64, 128]]}
    stored, size = eval_points(report)
    assert stored.points == {"tpr95": OperatingPoint(-6.5, "tpr95")} and size == (64, 128)
    assert eval_points({**report, "network_sizes": [[64, 128], [32, 64]]})[1] is None
    with pytest.raises(ValueError, match="no PEBAL threshold"):
        eval_points({"n_images": 3})


# ----------------------------------------------------------------------------- the shipped models
@pytest.mark.parametrize(("name", "size"), [("default", (1024, 2048)), ("synthetic", (256, 512))])
def test_shipped_models_store_their_points_with_the_settings_they_were_chosen_with(name, size):
    meta = read_checkpoint(model_path(name)).metadata
    assert not set(LEGACY_KEYS) & set(meta) and "score_threshold_best_f1" not in meta
    points = meta[METADATA_KEY]["points"]
    for entry in points.values():
        assert {f.name for f in fields(OperatingPoint)} <= set(entry)
    stored = StoredPoints.from_metadata(meta)
    assert all(p.image_size == size for p in stored.points.values())
    default = stored.points[stored.default]
    # docs/real_model.md, docs/alarms.md: each model's default point, the obstacles and the ego mask
    # it was chosen with (the hold-out camera's, for the real model)
    assert (default.policy, default.region, default.min_pixels, default.ego_mask) == {
        "default": ("obstacles:0.5", "drivable", 320, "cityscapes"),
        "synthetic": ("fa:0.1", "drivable", 20, ""),
    }[name]
    for policy, point in stored.points.items():
        if policy.startswith(("fa:", "obstacles:")):  # false alarms counted with obstacles of the point's size
            assert f">= {point.min_pixels} px" in stored.measured[policy]["rule"]
        if policy.startswith("obstacles:"):
            budget = float(policy.split(":")[1])
            assert stored.measured[policy]["obstacle_false_alarms_per_frame"] <= budget


def test_migration_rewrites_metadata_only(tmp_path):
    """An older file (bare threshold, settings in the document's source, hold-out records) migrates
    to the current layout with every tensor bit for bit as it was and the same points."""
    older = {
        "default": "fpr:0.01",
        "points": {"fpr:0.01": {"policy": "fpr:0.01", "threshold": -4.8, "tpr": 0.5, "rule": "r"}},
        "source": {"dataset": "d", "dataset_root": "/tmp/x", "region": "drivable", "include_sidewalk": False,
                   "min_pixels": 320},
    }  # fmt: skip
    src = save_checkpoint(
        build_model("resnet18", width=0.25), tmp_path / "old.safetensors", half=True, input_size=[64, 128],
        score_threshold=-4.8, score_threshold_source={"images": "hold-out 0-14"}, score_threshold_tpr95={"score": -7},
        **{METADATA_KEY: older},
    )  # fmt: skip
    before = tensor_bytes(src)
    dst = migrate(src, tmp_path / "new.safetensors", (1024, 2048))
    meta = read_checkpoint(dst).metadata
    assert tensor_bytes(dst) == before
    assert not set(LEGACY_KEYS) & set(meta) and meta["holdout_thresholds"] == {"tpr95": {"score": -7}}
    point = StoredPoints.from_metadata(meta).points["fpr:0.01"]
    assert point == OperatingPoint(-4.8, "fpr:0.01", min_pixels=320, image_size=(1024, 2048))
    assert meta[METADATA_KEY]["source"] == {"dataset": "d", "dataset_root": "hold-out 0-14"}
    assert meta["input_size"] == [64, 128]


def test_shipped_weights_are_those_of_the_files_before_the_migration(tmp_path):
    """The shipped files' tensors, bit for bit, against the same files before their metadata was
    migrated (the repository's history; skipped in a checkout without it), once the old file's
    denormal float32 weights are set to zero (the default model was re-saved with them flushed).
    The synthetic model's default threshold is the one it had; the real model's points were chosen
    again since, with the hold-out camera's ego mask and the obstacles:0.5 default
    (benchmarks/real_operating_point.py)."""

    def flushed(tensors: dict) -> dict:
        out = {}
        for key, (dtype, shape, raw) in tensors.items():
            if dtype == "torch.float32":
                values = np.frombuffer(raw, np.float32).copy()
                values[np.abs(values) < np.finfo(np.float32).tiny] = 0.0  # subnormals (and -0.0) to +0.0
                raw = values.tobytes()
            out[key] = (dtype, shape, raw)
        return out

    before = "bff75a8"  # the last commit before the migration
    have = subprocess.run(["git", "cat-file", "-e", f"{before}^{{commit}}"], cwd=ROOT, capture_output=True)
    if have.returncode != 0:
        pytest.skip("no git history in this checkout: the files before the migration are not available")
    for name in ("default", "synthetic"):
        path = model_path(name)
        rel = path.relative_to(ROOT).as_posix()
        old = tmp_path / path.name
        old.write_bytes(
            subprocess.run(["git", "show", f"{before}:{rel}"], cwd=ROOT, capture_output=True, check=True).stdout
        )
        assert flushed(tensor_bytes(path)) == flushed(tensor_bytes(old)), name
        if name == "synthetic":
            assert resolve_operating_point(read_checkpoint(path).metadata).point.threshold == pytest.approx(
                read_checkpoint(old).metadata["score_threshold"], abs=0
            )
