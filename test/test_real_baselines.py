"""`pebal eval` with the real ENet checkpoint on the real anomaly sets reproduces numbers that a
third party computed and published (the tables and the ``course`` protocol: ``docs/data_sources.md``).

This checks the ENet architecture and weights, its RGB/255 input, the ``validation/<SET>``
loader (skipping images without anomaly, void kept), the score definitions (void = 20-way
softmax of channel 19, MSP / MaxLogit / entropy over the 19 known channels), the pooled metrics
(AP = scikit-learn, FPR95 = the ``ood_metrics`` definition) and the ``course`` resize protocol,
all at once, against results nobody on this project produced.

Subset kept in ``make test`` (ENet on 2 CPU cores; the full reproduction over all five sets and
both resolutions takes far longer and is ``benchmarks/real_data_baselines.py``, numbers in
``docs/real_data_results.md``):

* RoadAnomaly21 (all 10 images) at native 1280x720: pins the published void-channel numbers
  AuPRC 17.71 / FPR95 82.84 and the MSP / MaxLogit / MaxEntropy columns of
  ``baseline_enet_subset.json``;
* fs_static at 512x1024 with the ``course`` resize protocol (PIL bilinear image, nearest labels):
  20 of 30 images used (10 have no anomaly pixel), published void numbers 7.37 / 56.58 and the
  other columns. It costs about as much as RoadAnomaly21 at native resolution.
"""

from __future__ import annotations

import json

import pytest

from pebal_core import cli
from pebal_core.preprocessing import UNIT_RANGE

ENET = "models/enet_cityscapes_void_yurnero14/model_best.pth"
# baseline_enet_subset.json column -> pebal_core.scoring method
COLUMNS = {"MSP": "msp", "MaxLogit": "maxlogit", "MaxEntropy": "entropy", "Void": "abstention"}
# yurnero14/Anomaly-Segmentation eval/results.txt (docs/data_sources.md), ENet void channel (AuPRC %, FPR95 %)
PUBLISHED_VOID = {("RoadAnomaly21", False): (17.71, 82.84), ("fs_static", True): (7.37, 56.58)}
TOLERANCE = 0.05  # percentage points (the reproduction criterion)


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("subset,resized", [("RoadAnomaly21", False), ("fs_static", True)])
def test_pebal_eval_reproduces_published_enet_numbers(realdata, tmp_path, subset, resized):
    args = [
        "eval",
        "--model",
        str(realdata / ENET),
        "--arch",
        "enet",
        "--dataset",
        f"validation/{subset}",
        "--root",
        str(realdata / "Validation_Dataset"),
        "--fpr95",
        "ood_metrics",
        "--methods",
        *COLUMNS.values(),
        "--out",
        str(tmp_path),
        "--no-plots",
        "--no-progress",
    ]
    if resized:
        args += ["--input-size", "512", "1024", "--resize-protocol", "course"]
    assert cli.main(args) == 0
    report = json.loads((tmp_path / "results.json").read_text())
    reference = json.loads((realdata / "baseline_enet_subset.json").read_text())[f"{subset}|resize512x1024={resized}"]

    assert report["n_images"] == reference["n_images_used"]
    assert report["model"]["normalization"] == UNIT_RANGE.to_dict()  # RGB/255, no mean/std
    void = report["methods"]["abstention"]
    prevalence = 100 * void["n_anomaly_pixels"] / (void["n_anomaly_pixels"] + void["n_inlier_pixels"])
    assert prevalence == pytest.approx(reference["anomaly_prevalence_pct"], abs=1e-9)  # same pixels counted

    lines = []
    for column, method in COLUMNS.items():
        r = report["methods"][method]
        assert r["fpr95_definition"] == "ood_metrics"
        ap, fpr95 = 100 * r["ap"], 100 * r["fpr95"]
        ref = reference[column]
        lines.append(f"{column}: AP {ap:.3f} (ref {ref['AuPRC']:.3f}), FPR95 {fpr95:.3f} (ref {ref['FPR95']:.3f})")
        assert abs(ap - ref["AuPRC"]) <= TOLERANCE, lines[-1]
        assert abs(fpr95 - ref["FPR95"]) <= TOLERANCE, lines[-1]
    print(f"{subset} resized={resized}: " + "; ".join(lines))
    published_ap, published_fpr95 = PUBLISHED_VOID[(subset, resized)]
    assert abs(100 * void["ap"] - published_ap) <= TOLERANCE
    assert abs(100 * void["fpr95"] - published_fpr95) <= TOLERANCE
