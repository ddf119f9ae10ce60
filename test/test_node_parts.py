"""The node's pieces that need no DDS: the newest-frame mailbox, parameter checks, network sizes,
output images."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
from conftest import ROOT
from rcl_interfaces.msg import ParameterDescriptor

from pebal_core.alarms.operating_point import OperatingPoint, StoredPoints
from pebal_core.labels import LABELS, PALETTE, colorize
from pebal_core.onnx_contract import MAX_SIDE
from pebal_core.protocols import bounded_size
from pebal_core.visualize import overlay
from pebal_ros.mailbox import LatestFrame
from pebal_ros.node_diagnostics import stamp_latency_ms
from pebal_ros.node_parameters import OUTPUTS, PARAMETERS, check_combination, check_value, resolve_point


def test_latest_frame_keeps_only_the_newest():
    slot = LatestFrame()
    assert slot.put("a") is False
    assert slot.put("b") is True  # "a" was never taken: dropped
    assert slot.pending == 1
    assert slot.take() == "b" and slot.pending == 0
    assert slot.take(timeout=0.01) is None


def test_latest_frame_take_blocks_until_put_and_close_releases():
    slot = LatestFrame()
    got = []
    worker = threading.Thread(target=lambda: got.append(slot.take()))
    worker.start()
    time.sleep(0.05)
    assert got == []
    slot.put("frame")
    worker.join(2.0)
    assert got == ["frame"]
    worker = threading.Thread(target=lambda: got.append(slot.take()))
    worker.start()
    slot.close()
    worker.join(2.0)
    assert not worker.is_alive() and got[-1] is None
    slot.put("late")
    assert slot.take() is None  # closed for good


def test_parameter_descriptors_advertise_ranges_and_choices():
    specs = {s.name: s for s in PARAMETERS}
    d = specs["grid.resolution"].descriptor()
    assert isinstance(d, ParameterDescriptor)
    assert d.floating_point_range[0].from_value == 0.01 and d.floating_point_range[0].to_value == 10.0
    d = specs["input_height"].descriptor()
    assert d.integer_range[0].from_value == 0 and d.integer_range[0].to_value == 8192 and d.read_only
    assert "onnxruntime" in specs["backend"].descriptor().additional_constraints
    assert all(s.description for s in PARAMETERS)


def test_value_checks_give_reasons():
    assert check_value("backend", "torch") is None
    assert "one of auto, torch, onnxruntime, openvino, tensorrt" in check_value("backend", "tflite")
    assert check_value("device", "cuda:1") is None and check_value("device", "tensorrt:0") is None
    assert "cpu, cuda, cuda:N" in check_value("device", "gpu0")
    assert "does not exist" in check_value("model", "/no/such/model.safetensors")
    assert check_value("score_threshold", None) is None and check_value("score_threshold", -7.5) is None
    assert "finite" in check_value("score_threshold", -math.inf) and "unset" in check_value("score_threshold", math.nan)
    values = {s.name: s.default for s in PARAMETERS}
    assert check_combination(values) is None and check_combination(values, {}) is None
    assert "both be 0" in check_combination(values | {"input_height": 512})
    assert "exceeds" in check_combination(values | {"grid.resolution": 0.01, "grid.size_x": 1000.0})
    # with the model's metadata the operating point the values resolve to is checked too
    assert "k <= n" in check_combination(values | {"persistence.k": 4}, {})
    assert "no operating point 'tpr95'" in check_combination(values | {"alarms.policy": "tpr95"}, {})
    assert "runs on the CPU" in check_combination(values | {"device": "cuda"})  # the default backend is auto
    assert check_combination(values | {"backend": "torch", "device": "cuda"}) is None
    assert check_combination(values | {"backend": "openvino", "precision": "bf16"}) is None
    assert check_combination(values | {"backend": "tensorrt", "device": "cuda", "precision": "int8"}) is None
    assert "does not apply to backend torch" in check_combination(values | {"backend": "torch", "precision": "bf16"})
    assert "does not apply to backend openvino" in check_combination(
        values | {"backend": "openvino", "precision": "fp16"}
    )


def test_unset_alarm_parameters_run_the_models_point_and_set_ones_override_it():
    stored = OperatingPoint(-4.8, "fpr:0.01", min_pixels=320, image_size=(1024, 2048))
    meta = StoredPoints({"fpr:0.01": stored}, "fpr:0.01").to_metadata()
    values = {s.name: s.default for s in PARAMETERS}
    assert all(values[name] is None for name in ("score_threshold", "alarms.min_pixels", "persistence.k"))
    assert resolve_point(values, meta).point == stored
    resolved = resolve_point(values | {"alarms.min_pixels": 20, "persistence.k": 1, "persistence.n": 1}, meta)
    assert resolved.overridden == ("min_pixels", "persistence")
    assert (resolved.point.min_pixels, resolved.point.persistence.k, resolved.point.persistence.n) == (20, 1, 1)
    assert resolved.point.threshold == -4.8 and resolved.point.region == "drivable"


def test_colorize_matches_the_label_table():
    labels = np.random.default_rng(0).integers(0, 256, (9, 11), dtype=np.uint8)
    rgb = colorize(labels)
    assert rgb.shape == (9, 11, 3) and rgb.dtype == np.uint8
    colors = {lab.train_id: lab.color for lab in LABELS if 0 <= lab.train_id < 19}
    for (r, c), value in np.ndenumerate(labels):
        assert tuple(rgb[r, c]) == tuple(PALETTE[value])
        if value in colors:
            assert tuple(rgb[r, c]) == colors[value]


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.55, 1.0])
def test_overlay_equals_a_float64_blend(alpha):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (13, 17, 3), dtype=np.uint8)
    mask = rng.random((13, 17)) < 0.4
    out = overlay(rgb, mask, color=(255, 0, 0), alpha=alpha)
    blend = rgb.astype(np.float64) * (1 - alpha) + np.array([255.0, 0.0, 0.0]) * alpha
    expected = np.where(mask[..., None], blend, rgb)
    # float32 arithmetic inside: equal to the float64 blend within rounding of .5 ties
    assert np.abs(out.astype(np.float64) - expected).max() <= 0.5 + 1e-3
    np.testing.assert_array_equal(out[~mask], rgb[~mask])
    assert out.dtype == np.uint8 and out.shape == rgb.shape
    assert np.shares_memory(out, rgb) is False
    # a strided view gives the same result as its contiguous copy
    np.testing.assert_array_equal(
        overlay(rgb[:, ::-1], mask, alpha=alpha), overlay(rgb[:, ::-1].copy(), mask, alpha=alpha)
    )


def test_node_docs_document_every_parameter_and_topic():
    section = (ROOT / "docs" / "node.md").read_text()
    for spec in PARAMETERS:
        if spec.name.startswith("outputs."):
            assert "`outputs.<output>`" in section and f"`{spec.name.split('.', 1)[1]}`" in section
        else:
            assert f"`{spec.name}`" in section, spec.name
    for topic in (*OUTPUTS, "image", "image/compressed", "camera_info", "/diagnostics"):
        assert f"| `{topic}` |" in section, topic


def test_network_size_keeps_the_aspect_and_the_bounds():
    # a 12 MP 4:3 camera at the 1024 x 2048 bound: scale sqrt(2097152 / 12582912) = 0.408,
    # 3072 x 4096 -> 1254.1 x 1672.2 -> 1254 x 1672
    assert bounded_size(3072, 4096, 1024 * 2048) == (1254, 1672)
    assert bounded_size(1024, 2048, 1024 * 2048) == (1024, 2048)  # at the bound: unchanged
    assert bounded_size(10, 10, 1) == (1, 1)
    # a panorama within the pixel bound but wider than a dynamic export takes: the side bound, 8192 / 20000
    assert MAX_SIDE == 8192 and bounded_size(100, 20000, 1 << 26) == (40, 8192)
    for h, w, bound in [(3000, 4000, 10_000), (1080, 1920, 500_000), (7, 5000, 4096), (4097, 3, 1024)]:
        nh, nw = bounded_size(h, w, bound)
        assert nh * nw <= bound and nh >= 1 and nw >= 1
        assert (nh + 1) * (nw + 1) > bound  # no larger size of one scale factor fits
        if min(nh, nw) > 10:
            assert abs(nh / nw - h / w) < 0.02 * h / w


def test_stamp_latency_handles_any_stamp():
    now = 1_700_000_000_500_000_000
    assert stamp_latency_ms(now, 1_700_000_000, 400_000_000) == 100.0
    assert stamp_latency_ms(now, 0, 0) == 1.7000000005e12  # a zero stamp: absurd, but a number
    assert stamp_latency_ms(now, -5, 0) == (now + 5_000_000_000) / 1e6  # negative stamps do not raise
    assert stamp_latency_ms(now, 1_700_000_001, 500_000_000) == -1000.0  # 1 s in the future


def test_requirement_findings_judge_rate_and_latency_with_tolerance_and_window():
    """Hand-computed cases: window 5 s, tolerance 10 %, min_rate 10/s (WARN bound 9/s, ERROR
    bound 4.5/s), max_latency 0.2 s (bound 220 ms)."""
    from collections import deque

    from diagnostic_msgs.msg import DiagnosticStatus

    from pebal_ros.node_diagnostics import requirement_findings
    from pebal_ros.node_parameters import Requirements

    req = Requirements(min_rate=10.0, max_latency=0.2, tolerance=0.1, window=5.0)
    now = 100.0

    def frames(n: int, latency_ms: float, old: int = 0) -> deque:
        """``old`` frames before the window (dropped), then ``n`` spread over the last 5 s."""
        return deque(
            [(90.0 + i * 0.01, 10.0) for i in range(old)] + [(95.0 + 5.0 * (i + 1) / n, latency_ms) for i in range(n)]
        )

    assert requirement_findings(now, frames(50, 100.0, old=7), 80.0, req, 30.0) == []  # 10/s, 100 ms
    assert requirement_findings(now, frames(45, 220.0), 80.0, req, 30.0) == []  # exactly on both bounds
    published = frames(44, 100.0, old=3)
    (found,) = requirement_findings(now, published, 80.0, req, 30.0)  # 8.8/s
    assert len(published) == 44, "frames older than the window are dropped"
    assert found[0] == DiagnosticStatus.WARN
    assert "output rate 8.80 frames/s over the last 5 s (input 30.0/s)" in found[1] and "= 9/s" in found[1]
    (found,) = requirement_findings(now, frames(22, 100.0), 80.0, req, 30.0)  # 4.4/s < 4.5/s
    assert found[0] == DiagnosticStatus.ERROR and "4.40 frames/s" in found[1] and "below half of it (4.5/s)" in found[1]
    assert requirement_findings(now, frames(0, 0.0), 96.0, req, 30.0) == []  # frames for less than one window

    # latency: one frame of 50 over 220 ms is a WARN, a median over it an ERROR
    published = frames(50, 100.0)
    published[10] = (published[10][0], 500.0)
    (found,) = requirement_findings(now, published, 80.0, req, 30.0)
    assert found == (
        DiagnosticStatus.WARN,
        "1 of 50 frames over the last 5 s were later than requirements.max_latency 200 ms + 10% = 220 ms "
        "(worst 500.0 ms)",
    )
    slow = deque([(96.0, 9800.0), (99.0, 9700.0)])  # the issue: 0.1-0.5 Hz out at ~9.8 s latency
    rate, latency = requirement_findings(now, slow, 10.0, req, 30.0)
    assert rate[0] == latency[0] == DiagnosticStatus.ERROR
    assert "0.40 frames/s" in rate[1]
    assert latency[1].startswith("median latency 9750.0 ms over the last 5 s (2 frames, worst 9800.0 ms)")
    # bad stamps (NaN) count for the rate but are not judged as latencies; 0 = not judged
    assert requirement_findings(now, deque([(99.0, math.nan)] * 50), 10.0, req, 30.0) == []
    assert requirement_findings(now, deque(), 10.0, Requirements(), 30.0) == []
