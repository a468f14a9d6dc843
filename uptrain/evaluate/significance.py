"""Paired significance tests between two systems' per-query values.

Two-sided paired t-test over the queries both systems were evaluated on, as used
for the +/- (and a second baseline's dagger) markers of the result tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np
from scipy import stats

from uptrain.evaluate.metrics import EvalResult


@dataclass
class TTest:
    t: float
    p: float
    n: int  # number of common queries
    mean_diff: float  # mean of a - b


def paired_ttest(a: Mapping[str, float], b: Mapping[str, float]) -> TTest:
    """Two-sided paired t-test of a against b over their common query ids.

    Degenerate cases are resolved without NaN or warnings: fewer than two common
    queries or all differences zero give t = 0, p = 1; a constant non-zero
    difference gives t = +/-inf, p = 0 (the limit scipy also reports).
    """
    common = [q for q in a if q in b]
    n = len(common)
    if n == 0:
        return TTest(t=0.0, p=1.0, n=0, mean_diff=0.0)
    x = np.array([float(a[q]) for q in common], dtype=np.float64)
    y = np.array([float(b[q]) for q in common], dtype=np.float64)
    d = x - y
    mean_diff = float(d.mean())
    scale = float(np.abs(d).max())
    if n < 2 or scale == 0.0:
        return TTest(t=0.0, p=1.0, n=n, mean_diff=mean_diff)
    # differences equal up to rounding: the variance is zero and t is infinite
    if float(np.ptp(d)) <= 1e-12 * scale:
        return TTest(t=math.copysign(math.inf, mean_diff), p=0.0, n=n, mean_diff=mean_diff)
    res = stats.ttest_rel(x, y)
    return TTest(t=float(res.statistic), p=float(res.pvalue), n=n, mean_diff=mean_diff)


def marker(
    a_per_query: Mapping[str, float],
    b_per_query: Mapping[str, float],
    alpha: float = 0.05,
    better: str = "+",
    worse: str = "-",
) -> str:
    """``better`` if a is significantly above b (p < alpha), ``worse`` if significantly below, else ""."""
    res = paired_ttest(a_per_query, b_per_query)
    if res.p < alpha:
        if res.mean_diff > 0:
            return better
        if res.mean_diff < 0:
            return worse
    return ""


def compare(
    result_a: EvalResult,
    result_b: EvalResult,
    alpha: float = 0.05,
    better: str = "+",
    worse: str = "-",
    measures: list[str] | None = None,
) -> dict[str, str]:
    """Measure -> marker of a against b, for the measures both results have (or those given)."""
    names = measures if measures is not None else [m for m in result_a.measures if m in result_b.per_query]
    return {
        m: marker(result_a.per_query[m], result_b.per_query[m], alpha=alpha, better=better, worse=worse)
        for m in names
    }
