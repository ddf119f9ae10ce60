"""Backend ``auto``: the fastest installed CPU backend measured for a model on this machine, cached per
machine and model hash (``pebal_core.backends.auto``), with the real torch / onnxruntime / openvino."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import numpy as np
import pytest
from _export_models import EXPORT_SIZE, camera_like, realistic_checkpoint

from pebal_core.backends.auto import choice_path, choose_backend, machine_key, onnx_cache_path
from pebal_core.fileio import sha256_file
from pebal_core.runtime import Predictor

SIZE = EXPORT_SIZE
CANDIDATES = {"torch", "onnxruntime", "openvino"}


@pytest.fixture(scope="module")
def checkpoint(shared_exports):
    return shared_exports.checkpoint("resnet18")


def rgb_image(seed: int = 0) -> np.ndarray:
    return np.ascontiguousarray(camera_like(*SIZE, seed)[0].transpose(1, 2, 0))


def files(cache) -> dict[str, float]:
    """Every file under the cache folder and its modification time."""
    return {str(p.relative_to(cache)): p.stat().st_mtime_ns for p in cache.rglob("*") if p.is_file()}


def test_miss_measures_every_backend_then_a_hit_reuses_choice_and_export(checkpoint, tmp_path):
    cache = tmp_path / "cache"
    backend = choose_backend(checkpoint, input_size=SIZE, cache_dir=cache, frames=2)
    choice = backend.choice
    assert set(choice["times_ms"]) == CANDIDATES and not choice["cached"]
    assert backend.name == choice["backend"] == min(choice["times_ms"], key=choice["times_ms"].get)
    sha = sha256_file(checkpoint)
    record_file = choice_path(cache, machine_key(), sha, SIZE, True)
    record = json.loads(record_file.read_text())
    assert record["choice"] == backend.name and record["times_ms"] == choice["times_ms"]
    assert record["model_sha256"] == sha and record["network_size"] == list(SIZE)
    export = onnx_cache_path(cache, sha, SIZE, True)
    assert export.is_file(), "the ONNX export of the checkpoint is cached"
    before = files(cache)

    again = choose_backend(checkpoint, input_size=SIZE, cache_dir=cache, frames=2)
    assert again.name == backend.name and again.choice["cached"]
    assert again.choice["times_ms"] == choice["times_ms"], "a hit measures nothing"
    assert files(cache) == before, "a hit neither re-exports nor rewrites the choice"


def test_a_cached_choice_is_used_as_recorded(checkpoint, tmp_path):
    """Whatever the cache says (here: each candidate in turn) is what a hit builds."""
    cache = tmp_path / "cache"
    choose_backend(checkpoint, input_size=SIZE, cache_dir=cache, frames=1)
    record_file = choice_path(cache, machine_key(), sha256_file(checkpoint), SIZE, True)
    rgb = rgb_image(5)
    ref_labels, ref_score = Predictor.from_checkpoint(checkpoint, input_size=SIZE).predict(rgb)
    for name in sorted(CANDIDATES):
        record = json.loads(record_file.read_text())
        record["choice"] = name
        record_file.write_text(json.dumps(record))
        pred = Predictor.from_checkpoint(checkpoint, backend="auto", input_size=SIZE, cache_dir=cache)
        assert pred.backend.name == name and pred.backend.choice["cached"]
        labels, score = pred.predict(rgb)
        assert (labels == ref_labels).mean() >= 0.999 and np.abs(score - ref_score).max() <= 1e-3


def test_another_model_hash_is_measured_anew(checkpoint, tmp_path):
    cache = tmp_path / "cache"
    choose_backend(checkpoint, input_size=SIZE, cache_dir=cache, frames=1)
    other = realistic_checkpoint(tmp_path / "other", "resnet18", seed=1)
    assert sha256_file(other) != sha256_file(checkpoint)
    backend = choose_backend(other, input_size=SIZE, cache_dir=cache, frames=1)
    assert not backend.choice["cached"] and set(backend.choice["times_ms"]) == CANDIDATES
    assert len(list((cache / "auto").glob("*.json"))) == 2 and len(list((cache / "onnx").glob("*.onnx"))) == 2


@pytest.mark.parametrize("content", [b"{not json", b"", b'{"format": 1, "choice": "tflite", "times_ms": {}}'])
def test_a_damaged_choice_file_is_measured_again_not_a_crash(checkpoint, tmp_path, caplog, content):
    cache = tmp_path / "cache"
    record_file = choice_path(cache, machine_key(), sha256_file(checkpoint), SIZE, True)
    record_file.parent.mkdir(parents=True)
    record_file.write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="pebal_core.backends.auto"):
        backend = choose_backend(checkpoint, input_size=SIZE, cache_dir=cache, frames=1)
    assert not backend.choice["cached"]
    assert json.loads(record_file.read_text())["choice"] == backend.name
    if content != b'{"format": 1, "choice": "tflite", "times_ms": {}}':  # readable but impossible: no warning
        assert "unreadable" in caplog.text


def test_a_damaged_onnx_export_is_rebuilt(checkpoint, tmp_path, caplog):
    cache = tmp_path / "cache"
    choose_backend(checkpoint, input_size=SIZE, cache_dir=cache, frames=1)
    sha = sha256_file(checkpoint)
    export = onnx_cache_path(cache, sha, SIZE, True)
    export.write_bytes(export.read_bytes()[:1000])  # truncated
    record_file = choice_path(cache, machine_key(), sha, SIZE, True)
    record = json.loads(record_file.read_text())
    record["choice"] = "onnxruntime"
    record_file.write_text(json.dumps(record))
    with caplog.at_level(logging.WARNING, logger="pebal_core.backends.auto"):
        backend = choose_backend(checkpoint, input_size=SIZE, cache_dir=cache, frames=1)
    assert backend.name == "onnxruntime" and "exporting again" in caplog.text
    assert export.stat().st_size > 1000


def test_an_onnx_file_chooses_between_the_onnx_backends(shared_exports, tmp_path):
    onnx_path = shared_exports.onnx("resnet18")
    backend = choose_backend(onnx_path, cache_dir=tmp_path / "cache", frames=1)
    assert set(backend.choice["times_ms"]) == {"onnxruntime", "openvino"}
    assert backend.input_size == SIZE


def test_auto_is_cpu_only_and_never_tensorrt(checkpoint, tmp_path):
    with pytest.raises(ValueError, match="chooses among the CPU backends"):
        choose_backend(checkpoint, device="cuda", cache_dir=tmp_path)
    plan = tmp_path / "m.fp16.engine"
    plan.write_bytes(b"PLAN")
    with pytest.raises(ValueError, match="use backend tensorrt"):
        choose_backend(plan, cache_dir=tmp_path)


def test_default_cache_folder_follows_xdg_cache_home(checkpoint, tmp_path):
    """``$XDG_CACHE_HOME/pebal`` when PEBAL_CACHE_DIR is unset (a fresh process, as a user runs it)."""
    code = (
        "import sys; from pebal_core.backends.auto import choose_backend;"
        f"b = choose_backend(sys.argv[1], input_size={SIZE}, frames=1); print(b.choice['cache_file'])"
    )
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg"), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code, str(checkpoint)], capture_output=True, text=True, env=env, timeout=600
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().startswith(str(tmp_path / "xdg" / "pebal" / "auto"))
