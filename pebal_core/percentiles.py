"""Percentile summaries of timing samples (node diagnostics, bag scoring reports)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def percentiles(values: Iterable[float], quantiles: Sequence[float] = (50, 95)) -> dict[str, float]:
    """``{"p<q>": q-th percentile for q in quantiles, "max": largest value}`` of ``values`` (in
    their own unit, e.g. milliseconds; numpy's linear interpolation), or ``{}`` when there are none."""
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0:
        return {}
    out = {f"p{q:g}": float(v) for q, v in zip(quantiles, np.percentile(arr, list(quantiles)), strict=True)}
    out["max"] = float(arr.max())
    return out
