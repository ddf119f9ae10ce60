"""The shipped default model (real cameras), the named models, and bare real checkpoints by ``arch``.

What the default model is comes from its metadata (base network, training data, input size,
threshold and how it was chosen); these tests check those keys, not particular values, so they
hold for whichever real model is committed. On the real Cityscapes frame (a Cityscapes
validation frame, skipped without ``../shared/realdata``) the default model must label like the
pretrained ESPNet it started from (pixel agreement, computed here) and raise few alarms on the
street (the pixels the frame's Cityscapes labels assign to the scene, i.e. not to the ego
vehicle's hood, the rectification border or the unlabelled rim).
Loading by ``arch`` is checked against the network run directly and a float64 numpy reference
of the normalisation and the score (``np_reference``).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from fnmatch import fnmatch
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from node_harness import Probe, RosSession, as_array, camera_info_msg, first_outputs_from_process, stop_process
from np_reference import np_gaussian_blur, np_lse
from safetensors.torch import save_file

from pebal_core.alarms.operating_point import StoredPoints, resolve_operating_point
from pebal_core.images import read_label, read_rgb
from pebal_core.labels import NUM_CLASSES
from pebal_core.model_store import MODELS, describe, model_names, model_path, resolve_model
from pebal_core.models import build_model, list_models
from pebal_core.models.checkpoint import CheckpointError, read_checkpoint, save_checkpoint
from pebal_core.runtime import Predictor
from pebal_ros.node_parameters import check_value

ROOT = Path(__file__).resolve().parents[1]
TEST_SETS = ("RoadAnomaly", "RoadAnomaly21", "RoadObsticle21", "FS_LostFound_full")
"""Sets only ever used to test: no threshold may come from them."""
ESPNET = "models/espnet_p2q8_cityscapes_sacmehta/espnet_p_2_q_8.safetensors"
FRAME = "cityscapes_frames/fullres_unlabeled/frankfurt_000000_000294_leftImg8bit.png"
FRAME_LABEL_IDS = "cityscapes_frames/mmseg_pseudo_256x128/frankfurt_000000_000294_gtFine_labelIds.png"
"""The same frame's Cityscapes labelIds, at 256x128."""
NOT_SCENE = (0, 1, 2, 3)
"""Cityscapes labelIds unlabeled, ego vehicle, rectification border, out of roi."""
MIN_AGREEMENT = 0.80
"""Least share of pixels the default model must label as the pretrained ESPNet does."""
MAX_FLAGGED = 0.15
"""Largest share of the scene pixels of a normal Cityscapes street the default model may flag."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------------------ named models
def test_default_names_the_real_model_and_everything_resolves_to_it():
    path = model_path()
    assert path.name == MODELS["default"].resource and path.parent.name == "assets"
    assert resolve_model(None) == resolve_model("") == resolve_model("default") == path
    assert model_names()[0] == "default" and "synthetic" in model_names()
    assert model_path("synthetic") != path and model_path("synthetic").is_file()
    assert resolve_model("some/file.safetensors") == Path("some/file.safetensors")
    with pytest.raises(KeyError, match="default, synthetic"):
        model_path("no-such-model")
    predictor = Predictor.default()
    assert predictor.metadata["sha256"] == _sha256(path)
    stored = StoredPoints.from_metadata(read_checkpoint(path).metadata)
    assert resolve_operating_point(predictor.metadata).point == stored.points[stored.default]


def test_every_entry_point_takes_the_names_and_a_typo_gets_the_valid_ones():
    """One resolver: Predictor.from_checkpoint, load_model / read_checkpoint (what `pebal train model.base=`
    loads with), the CLI and the node's model parameter; an unknown name lists the names, a typo gets the
    closest one, an architecture name is told apart from a model."""
    from pebal_core import Predictor as LazyPredictor
    from pebal_core.model_store import UnknownModelError
    from pebal_core.models.checkpoint import load_model

    assert LazyPredictor is Predictor
    for name in model_names():
        assert Predictor.from_checkpoint(name).metadata["sha256"] == _sha256(model_path(name))
        assert read_checkpoint(name).path == model_path(name)
    assert load_model("synthetic").arch == read_checkpoint(model_path("synthetic")).metadata["arch"]
    with pytest.raises(UnknownModelError, match="did you mean 'default'.*default, synthetic"):
        Predictor.from_checkpoint("defualt")
    with pytest.raises(UnknownModelError, match="did you mean 'synthetic'"):
        load_model("synthtic")
    with pytest.raises(UnknownModelError, match="architecture of the model zoo.*--arch resnet18"):
        resolve_model("resnet18")
    assert "did you mean 'default'" in check_value("model", "defualt")
    assert resolve_model("runs/model") == Path("runs/model")  # a path: the loader says it is missing
    with pytest.raises(CheckpointError, match="not found"):
        read_checkpoint("runs/model")
    out = subprocess.run(
        [sys.executable, "-m", "pebal_core.cli", "export", "onnx", "defualt"], capture_output=True, text=True
    )
    assert out.returncode == 2 and "did you mean 'default'" in out.stderr and "Traceback" not in out.stderr


def test_default_model_metadata_says_what_it_is_and_where_its_threshold_came_from():
    meta = read_checkpoint(model_path()).metadata
    assert meta["arch"] in list_models() and meta["num_classes"] == NUM_CLASSES + 1
    assert set(meta["normalization"]) >= {"mean", "std", "bgr", "post_scale"}
    h, w = meta["input_size"]
    assert h > 0 and w > 0 and h % 8 == 0 and w % 8 == 0
    base = meta["base_model"]
    assert base["name"] and base["source"] and base["licence"] == "MIT"  # only MIT weights may ship
    assert meta["training_data"]
    stored = StoredPoints.from_metadata(meta)
    point = stored.points[stored.default]
    assert np.isfinite(point.threshold) and point.policy == stored.default
    assert not any(name in str(stored.source) for name in TEST_SETS)  # never chosen on a test set
    assert stored.source["dataset"] and stored.measured[stored.default]["rule"]  # on what data, by which rule


def test_no_shipped_model_rests_on_weights_without_a_licence():
    assets = Path(str(resources.files("pebal_core.assets")))
    for file in assets.glob("*.safetensors"):
        meta = read_checkpoint(file).metadata
        assert meta["arch"] not in ("enet", "dabnet"), f"{file.name}: {meta['arch']} weights have no licence"
        if "base_model" in meta:
            assert meta["base_model"]["licence"] == "MIT", file.name


def test_licence_notes_ship_in_the_package_and_credit_espnet_and_the_data_terms():
    text = resources.files("pebal_core.assets").joinpath("NOTICE.md").read_text()
    assert "MIT License" in text and "Copyright (c) 2018 Sachin Mehta" in text
    assert "github.com/sacmehta/ESPNet" in text
    assert "Copyright (c) 2021 Sachin Mehta" in text and "Not shipped: DABNet" in text  # the later zoo bases
    assert "BY-NC 4.0" in text and "CC BY 4.0" in text and "Flickr" in text  # CamVid, COCO
    setup = (ROOT / "setup.py").read_text()
    patterns = re.search(r'package_data=\{"pebal_core": \[([^\]]*)\]', setup).group(1)
    globs = [g.strip().strip('"') for g in patterns.split(",")]
    for name in ("NOTICE.md", *(m.resource for m in MODELS.values())):
        assert any(fnmatch(f"assets/{name}", g) for g in globs), name


def test_pebal_models_lists_the_shipped_models_from_their_metadata():
    out = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "pebal"), "models"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    meta = read_checkpoint(model_path()).metadata
    fields = describe("default", read_checkpoint(model_path("default")).metadata)
    assert fields["input_size"] == f"{meta['input_size'][0]}x{meta['input_size'][1]}"
    assert "licence MIT" in fields["base_model"]
    for name in model_names():
        assert re.search(rf"^  {name} ", out.stdout, re.M)
    assert f"input_size: {fields['input_size']}" in out.stdout and "espnet_p2q8" in out.stdout


# ------------------------------------------------------------------------------ bare checkpoints by arch
@pytest.fixture(scope="module")
def bare_espnet(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """A randomly initialised ESPNet saved as a bare safetensors state_dict (no project metadata)."""
    torch.manual_seed(0)
    model = build_model("espnet_p2q8").eval()
    for m in model.modules():  # non-trivial BatchNorm statistics, so that they must load to match
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    path = tmp_path_factory.mktemp("bare") / "espnet.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    assert read_checkpoint(path).source_format == "state_dict"
    return path, model


def test_from_checkpoint_loads_a_bare_checkpoint_by_arch(bare_espnet):
    path, model = bare_espnet
    with pytest.raises(CheckpointError, match="does not say which architecture"):
        Predictor.from_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not fit architecture 'enet'"):
        Predictor.from_checkpoint(path, arch="enet")
    predictor = Predictor.from_checkpoint(path, arch="espnet_p2q8")
    assert predictor.model_id.startswith("espnet_p2q8@")

    rgb = np.random.default_rng(1).integers(0, 256, (64, 128, 3), dtype=np.uint8)
    labels, score = predictor.predict(rgb)
    # reference: ESPNet's input convention by hand (BGR, mean/std on 0..255, then /255), the network
    # run directly, inlier free energy and the 7x7 Gaussian in float64 numpy
    mean = np.array([72.3923111, 82.90893555, 73.15840149])
    std = np.array([45.3192215, 46.15289307, 44.91483307])
    x = (rgb[..., ::-1].astype(np.float64) - mean) / std / 255.0
    with torch.no_grad():
        logits = model(torch.from_numpy(x.transpose(2, 0, 1)[None].copy()).float()).double().numpy()
    inlier = logits[:, :NUM_CLASSES]
    np.testing.assert_array_equal(labels, inlier[0].argmax(0))
    np.testing.assert_allclose(score, np_gaussian_blur(-np_lse(inlier)[0]), atol=2e-4)


def test_arch_must_agree_with_a_file_that_names_its_own(bare_espnet, tmp_path):
    _, model = bare_espnet
    converted = save_checkpoint(model, tmp_path / "espnet_pebal.safetensors")
    assert Predictor.from_checkpoint(converted, arch="espnet_p2q8").metadata["arch"] == "espnet_p2q8"
    with pytest.raises(CheckpointError, match="holds architecture 'espnet_p2q8', not 'enet'"):
        Predictor.from_checkpoint(converted, arch="enet")


def test_node_parameters_take_shipped_model_names_and_an_arch():
    assert check_value("model", "synthetic") is None and check_value("model", "default") is None
    assert "default, synthetic" in check_value("model", "no_such_model")
    assert check_value("arch", "") is None and check_value("arch", "espnet_p2q8") is None
    assert "espnet_p2q8" in check_value("arch", "espnet")


@pytest.mark.ros
def test_node_runs_a_bare_checkpoint_given_its_arch_parameter(ros_env, bare_espnet):
    path, _ = bare_espnet
    script = os.path.join(os.path.dirname(sys.executable), "pebal_node")
    env = {**os.environ, **ros_env, "PYTHONUNBUFFERED": "1"}
    refused = subprocess.run(
        [script, "--ros-args", "-p", f"model:={path}"], env=env, capture_output=True, text=True, timeout=120
    )
    assert refused.returncode == 2 and "does not say which architecture" in refused.stderr

    rgb = np.random.default_rng(2).integers(0, 256, (64, 128, 3), dtype=np.uint8)
    reference = Predictor.from_checkpoint(path, arch="espnet_p2q8")
    labels, score = reference.predict(rgb)
    # backend torch, as the reference: with `auto` the first start of a new file exports and times
    # every backend before subscribing, which on a loaded machine outlasts the subscription wait
    cmd = [script, "--ros-args", "-p", f"model:={path}", "-p", "arch:=espnet_p2q8", "-p", "backend:=torch"]
    cmd += ["-p", "diagnostics_period:=0.2"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with RosSession() as session:
            probe = Probe(session)
            out = first_outputs_from_process(proc, probe, rgb, camera_info_msg(64, 128, 100.0, 100.0), "cam")
            np.testing.assert_array_equal(as_array(out["semantic"]), labels)
            np.testing.assert_allclose(as_array(out["anomaly_score"]), score, rtol=1e-5, atol=1e-5)
            values = probe.wait_diag(lambda v: int(v["frames_out"]) >= 1, what="node diagnostics")
            assert values["model_id"] == reference.model_id and values["model_id"].startswith("espnet_p2q8@")
    finally:
        rc, log = stop_process(proc)
    assert rc == 0, log


# ------------------------------------------------------------------------------ the real Cityscapes frame
@pytest.mark.realdata
def test_default_model_labels_a_real_cityscapes_frame_sensibly(realdata):
    rgb = read_rgb(realdata / FRAME)
    meta = read_checkpoint(model_path()).metadata
    size = tuple(meta["input_size"])
    labels, score = Predictor.default(input_size=size).predict(rgb)
    pretrained, _ = Predictor.from_checkpoint(realdata / ESPNET, arch="espnet_p2q8", input_size=size).predict(rgb)
    ids = read_label(realdata / FRAME_LABEL_IDS)
    scene = np.isin(cv2.resize(ids, rgb.shape[1::-1], interpolation=cv2.INTER_NEAREST), NOT_SCENE, invert=True)
    assert labels.shape == score.shape == scene.shape and 0.8 < scene.mean() < 1.0
    agreement = float((labels == pretrained)[scene].mean())
    flagged = float((score >= resolve_operating_point(meta).point.threshold)[scene].mean())
    assert agreement >= MIN_AGREEMENT, agreement
    assert flagged < MAX_FLAGGED, flagged
