"""From the PEBAL anomaly score (an energy) to a decision and to a probability in [0, 1].

The runtime score is the smoothed inlier free energy ``E = -logsumexp(logits[:19])``: higher =
more anomalous, unbounded, and on a model-dependent scale. Two things are derived from it:

* a **decision threshold** (energy value): a pixel is anomalous when ``score >= threshold``. The
  threshold is part of the model's operating point, stored with the alarm settings it was chosen
  with (:mod:`pebal_core.alarms.operating_point`).
* an **anomaly probability** for consumers that fuse evidence (occupancy grids): a logistic
  calibration centred on the threshold,
  ``p(s) = 1 / (1 + exp(-(s - threshold) / scale))``, so ``p = 0.5`` exactly at the threshold and
  ``scale`` (energy units) sets the slope: ``p = 0.73`` at ``threshold + scale``, ``0.95`` at
  ``threshold + 2.944 * scale``. The map is strictly increasing, so the maximum of ``p`` over a
  region is ``p`` of the maximum score (reduce scores first, calibrate the few maxima after).
"""

from __future__ import annotations

import math

import numpy as np

DEFAULT_PROBABILITY_SCALE = 1.0
"""Energy units per unit of logit in :func:`anomaly_probability`."""


def anomaly_probability(
    score: np.ndarray | float, threshold: float, scale: float = DEFAULT_PROBABILITY_SCALE
) -> np.ndarray:
    """Logistic anomaly probability (float32, same shape as ``score``); NaN scores stay NaN."""
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"probability scale must be a positive number of energy units, got {scale}")
    z = (np.asarray(score, dtype=np.float64) - threshold) / scale
    # 0.5 * (1 + tanh(z / 2)) == 1 / (1 + exp(-z)) without overflow for large |z|
    return (0.5 * (1.0 + np.tanh(0.5 * z))).astype(np.float32)
