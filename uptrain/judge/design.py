"""A/B measurement design for whole-page relevance: how precisely a sample of queries measures
a level or a paired difference.

Setting (Wang, Whitworth et al., "LLM-based Relevance Assessment for Web-Scale Search Evaluation
at Pinterest", RecSys 2025 EARL workshop, arXiv 2509.03764, Section 3 and Table 3): a population
of N queries, each with a per-query value y_i (one system's sDCG@K from judge labels, or the
paired difference treatment - control), partitioned into H strata (e.g. interest x popularity).
A sample of n queries estimates the population mean Ybar = (1/N) sum_i y_i.

Definitions used throughout (Cochran, *Sampling Techniques*, 3rd ed., ch. 2 and 5):

- Simple random sampling without replacement (SRS): ybar = (1/n) sum y_i, with the unbiased
  variance estimate v(ybar) = (1 - n/N) s^2 / n, s^2 the sample variance (ddof = 1).
- Stratified sampling (SRS without replacement within each stratum): W_h = N_h / N,
  ybar_st = sum_h W_h ybar_h, v(ybar_st) = sum_h W_h^2 (1 - n_h/N_h) s_h^2 / n_h.
- Allocation: proportional n_h ∝ N_h; Neyman (optimal) n_h = n N_h S_h / sum_k N_k S_k, with
  S_h the within-stratum standard deviation (ddof = 1). Integers by largest remainder, each
  stratum at least ``min_per_stratum`` (or all of it when smaller) and at most N_h (see
  :func:`allocate`).
- sigma of a design: the per-query standard deviation equivalent sqrt(n Var(estimator)), so the
  designs compare at equal n as in the paper's Table 3 ("reduction in sigma" = 1 - sigma /
  sigma_SRS at the same n).
- Minimum detectable effect, relative: MDE = (z_{1-alpha/2} + z_{power}) sqrt(2 sigma^2 / n) / |mu|
  (two-sided level alpha, the given power; the two-sample form the paper uses, with mu the level
  the effect is expressed against).
- Heterogeneous effects: a paired t-test per stratum, p-values adjusted across strata by
  Benjamini-Hochberg (1995) (or Benjamini-Yekutieli (2001) with ``method="by"``).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from scipy import stats

log = logging.getLogger("uptrain")

DESIGNS = ("srs", "proportional", "neyman")
ALLOCATIONS = ("proportional", "neyman")
_SAMPLE_TYPE = {"srs": "simple random", "proportional": "stratified (proportional)", "neyman": "stratified (Neyman)"}
_ESTIMATOR = {"srs": "SRS", "proportional": "stratified", "neyman": "stratified"}


# ---------------------------------------------------------------------------------------------
# allocation


def _is_int(x, minimum: int) -> bool:
    if isinstance(x, bool):
        return False
    try:
        return float(x).is_integer() and int(x) >= minimum
    except (TypeError, ValueError, OverflowError):
        return False


def _check_sizes(sizes: Mapping[str, int], what: str = "allocate") -> dict[str, int]:
    if not isinstance(sizes, Mapping) or not sizes:
        raise ValueError(f"{what}: sizes must be a non-empty mapping stratum -> population size N_h")
    out = {}
    for h, N in sizes.items():
        if not _is_int(N, 1):
            raise ValueError(f"{what}: stratum {h!r} has population size {N!r}; every N_h must be an integer >= 1")
        out[str(h)] = int(N)
    return out


def _water_fill(weights: np.ndarray, lower: np.ndarray, upper: np.ndarray, n: float) -> tuple[np.ndarray, float]:
    """x_h = clip(c w_h, lower_h, upper_h) with the scalar c >= 0 such that sum x_h = n.

    Solved exactly on the piecewise-linear, non-decreasing f(c) = sum clip(c w_h, l_h, u_h)
    (breakpoints l_h / w_h and u_h / w_h). Strata with w_h = 0 stay at their lower bound. The
    caller guarantees sum l <= n <= sum over w > 0 of u + sum over w = 0 of l.
    """
    pos = weights > 0

    def f(c: float) -> float:
        return float(np.clip(c * weights, lower, upper).sum())

    if f(0.0) >= n:
        return np.clip(0.0 * weights, lower, upper), 0.0
    points = sorted(set((lower[pos] / weights[pos]).tolist()) | set((upper[pos] / weights[pos]).tolist()))
    prev = 0.0
    for b in points:
        if f(b) >= n:
            break
        prev = b
    else:  # n equals the maximum: every positive-weight stratum at its upper bound
        b = points[-1]
        return np.clip(b * weights, lower, upper), b
    # on (prev, b] the strata with l_h < c w_h < u_h move with slope w_h
    mid = (prev + b) / 2
    free = pos & (mid * weights > lower) & (mid * weights < upper)
    slope = float(weights[free].sum())
    c = b if slope == 0 else prev + (n - f(prev)) / slope
    return np.clip(c * weights, lower, upper), c


def _largest_remainder(x: np.ndarray, upper: np.ndarray, n: int) -> np.ndarray:
    """Integers summing to n from real x (sum x = n, lower <= x <= upper, bounds integer):
    floors, then +1 for the largest fractional parts (ties: the earlier stratum)."""
    base = np.floor(x + 1e-9).astype(np.int64)
    base = np.minimum(base, upper)
    rest = n - int(base.sum())
    if rest < 0:  # float noise pushed floors above n: take back from the smallest fractions
        frac = x - base
        for i in np.argsort(frac, kind="stable")[: -rest]:
            base[i] -= 1
        return base
    if rest:
        frac = np.where(base < upper, x - base, -np.inf)
        order = np.argsort(-frac, kind="stable")
        for i in order[:rest]:
            base[i] += 1
    return base


def _allocate(sizes: Mapping[str, int], n: int, method: str, sds: Mapping[str, float] | None,
              min_per_stratum: int, warn: bool) -> tuple[dict[str, int], dict]:
    N = _check_sizes(sizes)
    names = list(N)
    if method not in ALLOCATIONS:
        raise ValueError(f"allocate: unknown method {method!r}; use one of {ALLOCATIONS}")
    if not _is_int(n, 1):
        raise ValueError(f"allocate: the sample size n must be an integer >= 1, got {n!r}")
    n = int(n)
    if not _is_int(min_per_stratum, 0):
        raise ValueError(f"allocate: min_per_stratum must be an integer >= 0, got {min_per_stratum!r}")
    total = sum(N.values())
    if n > total:
        raise ValueError(f"allocate: the sample size n={n} exceeds the population ({total} queries in {len(N)} strata); "
                         "sampling is without replacement")
    sizes_arr = np.array([N[h] for h in names], dtype=float)
    lower = np.minimum(float(min_per_stratum), sizes_arr)
    if lower.sum() > n:
        raise ValueError(f"allocate: n={n} cannot give each of the {len(N)} strata its minimum of {min_per_stratum} "
                         f"queries (needs {int(lower.sum())}); raise n, lower min_per_stratum or merge small strata "
                         "(uptrain.judge.strata.strata_of)")
    counts: dict = {"method": method, "n": n, "strata": len(N), "population": total,
                    "min_per_stratum": int(min_per_stratum)}
    if method == "neyman":
        if sds is None:
            raise ValueError("allocate: method='neyman' needs sds (stratum -> within-stratum standard deviation S_h)")
        missing = [h for h in names if h not in sds]
        if missing:
            raise ValueError(f"allocate: sds lacks {len(missing)} of the {len(N)} strata (e.g. {missing[:3]})")
        s = np.array([float(sds[h]) for h in names])
        if not np.all(np.isfinite(s)):
            raise ValueError("allocate: sds must be finite numbers")
        if np.any(s < 0):
            bad = [h for h, v in zip(names, s) if v < 0]
            raise ValueError(f"allocate: negative standard deviations for strata {bad[:3]}; S_h must be >= 0")
        weights = sizes_arr * s
        counts["zero_sd"] = [h for h, v in zip(names, s) if v == 0]
    else:
        weights = sizes_arr.copy()
        counts["zero_sd"] = []
    counts["taken_whole_small"] = [h for h, Nh in N.items() if Nh < min_per_stratum]
    pos = weights > 0
    capacity_pos = float(sizes_arr[pos].sum() + lower[~pos].sum())
    counts["zero_sd_topped_up"] = []
    if not pos.any() or n > capacity_pos:
        # the strata with S_h > 0 cannot absorb n (or there are none): fill them whole, and share the
        # rest among the S_h = 0 strata proportionally to N_h
        x = np.where(pos, sizes_arr, lower)
        zero = ~pos
        if n > float(x.sum()):
            y, _ = _water_fill(np.where(zero, sizes_arr, 0.0), np.where(zero, lower, 0.0),
                               np.where(zero, sizes_arr, 0.0), n - float(sizes_arr[pos].sum()))
            x = np.where(zero, y, x)
        counts["zero_sd_topped_up"] = [h for h, v, lo, p in zip(names, x, lower, pos) if not p and v > lo]
        ideal = np.where(pos, np.inf, 0.0)
    else:
        x, c = _water_fill(weights, lower, sizes_arr, float(n))
        ideal = c * weights
    if abs(float(x.sum()) - n) > 1e-6 * max(1, n):  # a bug, never the user's input
        raise AssertionError(f"allocation does not sum to n={n}: {x.tolist()}")
    alloc = _largest_remainder(x, sizes_arr.astype(np.int64), n)
    counts["raised_to_minimum"] = [h for h, v, lo, Nh in zip(names, ideal, lower, sizes_arr)
                                   if v < lo and lo < Nh and h not in counts["zero_sd"]]
    counts["capped_at_size"] = [h for h, v, lo, Nh in zip(names, ideal, lower, sizes_arr) if v > Nh and lo < Nh]
    result = {h: int(a) for h, a in zip(names, alloc)}
    assert sum(result.values()) == n and all(0 <= result[h] <= N[h] for h in names)
    forced = {k: counts[k] for k in ("raised_to_minimum", "capped_at_size", "taken_whole_small", "zero_sd",
                                     "zero_sd_topped_up") if counts[k]}
    if warn and forced:
        log.warning("%s allocation of n=%d over %d strata: %s", method, n, len(N),
                    "; ".join(f"{k.replace('_', ' ')}: {len(v)} ({', '.join(map(str, v[:5]))}"
                              f"{', ...' if len(v) > 5 else ''})" for k, v in forced.items()))
    return result, counts


def allocate(sizes: Mapping[str, int], n: int, method: str = "neyman", sds: Mapping[str, float] | None = None,
             min_per_stratum: int = 2) -> tuple[dict[str, int], dict]:
    """Sample size n_h per stratum h, summing exactly to n.

    ``proportional``: n_h ∝ N_h. ``neyman``: n_h ∝ N_h S_h (``sds``: stratum -> S_h). Bounds:
    each stratum gets at least m_h = min(min_per_stratum, N_h) (so that s_h can be estimated;
    a stratum smaller than the minimum is taken whole) and at most N_h. The real-valued
    allocation is x_h = clip(c w_h, m_h, N_h) with the one c that makes sum x_h = n (the excess
    of a capped stratum and the deficit of a raised one redistributed to the others in
    proportion to their weights w_h), then integers by largest remainder (ties: the earlier
    stratum in ``sizes``' order). Under Neyman a stratum with S_h = 0 gets its minimum only;
    when the strata with S_h > 0 cannot absorb n, they are taken whole and the rest is shared
    among the S_h = 0 strata in proportion to N_h.

    Returns ``(allocation, counts)``; ``counts`` lists the strata ``raised_to_minimum``,
    ``capped_at_size``, ``taken_whole_small`` (N_h below the minimum), ``zero_sd`` and
    ``zero_sd_topped_up``, each also logged as a warning.
    """
    return _allocate(sizes, n, method, sds, min_per_stratum, warn=True)


# ---------------------------------------------------------------------------------------------
# estimators


def _as_sample(sample, what: str) -> np.ndarray:
    arr = np.asarray(sample, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{what}: the sample must be one-dimensional, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what}: the sample holds {int((~np.isfinite(arr)).sum())} non-finite values")
    return arr


def srs_estimate(sample: np.ndarray, population_size: int) -> tuple[float, float]:
    """Mean of a simple random sample (without replacement) and its estimated variance
    (1 - n/N) s^2 / n, s^2 with ddof = 1 (unbiased for Var(ybar) under SRS)."""
    y = _as_sample(sample, "srs_estimate")
    n = y.size
    if not _is_int(population_size, 1):
        raise ValueError(f"srs_estimate: population_size must be an integer >= 1, got {population_size!r}")
    if n < 2:
        raise ValueError(f"srs_estimate: needs at least 2 sampled values to estimate a variance, got {n}")
    if n > population_size:
        raise ValueError(f"srs_estimate: the sample ({n}) is larger than the population ({population_size})")
    return float(y.mean()), float((1 - n / population_size) * y.var(ddof=1) / n)


def stratified_estimate(samples: Mapping[str, np.ndarray], sizes: Mapping[str, int]) -> tuple[float, float]:
    """The stratified estimator ybar_st = sum_h W_h ybar_h (W_h = N_h / N) and its estimated
    variance sum_h W_h^2 (1 - n_h/N_h) s_h^2 / n_h (s_h^2 with ddof = 1).

    Every stratum of ``sizes`` must be sampled. A stratum sampled whole (n_h = N_h) contributes
    no variance, whatever its size (an N_h = 1 stratum with its one query included); a stratum
    with n_h = 1 < N_h has no s_h and is an error (:func:`allocate` guarantees 2).
    """
    N = _check_sizes(sizes, "stratified_estimate")
    S = {str(h): v for h, v in samples.items()} if isinstance(samples, Mapping) else None
    if S is None:
        raise ValueError("stratified_estimate: samples must be a mapping stratum -> sampled values")
    missing = [h for h in N if h not in S]
    extra = [h for h in S if h not in N]
    if missing or extra:
        raise ValueError(f"stratified_estimate: samples and sizes must name the same strata; {len(missing)} strata "
                         f"have no sample (e.g. {missing[:3]}), {len(extra)} samples have no size (e.g. {extra[:3]})")
    total = sum(N.values())
    mean = 0.0
    var = 0.0
    for h, Nh in N.items():
        y = _as_sample(S[h], f"stratified_estimate (stratum {h!r})")
        nh = y.size
        if nh == 0:
            raise ValueError(f"stratified_estimate: stratum {h!r} has no sampled query")
        if nh > Nh:
            raise ValueError(f"stratified_estimate: stratum {h!r} has {nh} sampled values but only {Nh} queries")
        W = Nh / total
        mean += W * float(y.mean())
        if nh == Nh:
            continue
        if nh < 2:
            raise ValueError(f"stratified_estimate: stratum {h!r} has 1 sampled query of {Nh}, so no within-stratum "
                             "variance s_h^2; sample at least 2 per stratum (allocate's min_per_stratum)")
        var += W * W * (1 - nh / Nh) * float(y.var(ddof=1)) / nh
    return mean, var


def _z(q: float) -> float:
    return float(stats.norm.ppf(q))


def _check_level(alpha: float, power: float | None = None) -> None:
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    if power is not None and not 0 < power < 1:
        raise ValueError(f"power must lie in (0, 1), got {power!r}")


def mde(sigma: float, n: int, mu: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Relative minimum detectable effect (z_{1-alpha/2} + z_{power}) sqrt(2 sigma^2 / n) / |mu|.

    ``sigma``: the per-query standard deviation of the design; ``n``: queries per arm; ``mu``:
    the level the effect is relative to (e.g. the mean sDCG). 0.05 / 0.8 give the factor
    1.959964 + 0.841621 = 2.801585.
    """
    _check_level(alpha, power)
    if not math.isfinite(sigma) or sigma < 0:
        raise ValueError(f"mde: sigma must be a finite number >= 0, got {sigma!r}")
    if not _is_int(n, 1):
        raise ValueError(f"mde: n must be an integer >= 1, got {n!r}")
    if not math.isfinite(mu) or mu == 0:
        raise ValueError(f"mde: mu must be a finite non-zero level (the MDE is relative to it), got {mu!r}")
    return (_z(1 - alpha / 2) + _z(power)) * math.sqrt(2 * sigma * sigma / n) / abs(mu)


# ---------------------------------------------------------------------------------------------
# repeated-sampling evaluation of designs


@dataclass
class DesignRow:
    """One row of the design table (the paper's Table 3) for one design at one n.

    ``sigma``: sqrt(n) times the standard deviation (ddof = 1) of the estimate over the
    ``repeats`` samples; ``sigma_analytic``: the mean over repeats of sqrt(n v), v the design's
    variance estimate; ``reduction``: 1 - sigma / sigma_SRS at the same n; ``mde``: relative MDE
    from ``sigma``; ``coverage``: share of repeats whose interval estimate ± z_{1-alpha/2} sqrt(v)
    covers the population mean; ``counts``: what was forced or skipped.
    """

    design: str
    sample: str
    estimator: str
    n: int
    sigma: float
    sigma_analytic: float
    reduction: float
    mde: float
    coverage: float
    repeats: int
    counts: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


class DesignRows(list):
    """The rows of :func:`evaluate_designs` (a list of :class:`DesignRow`), with ``counts``: the
    population, the sizes skipped and why, the reference of the reductions."""

    def __init__(self, rows=(), counts: dict | None = None):
        super().__init__(rows)
        self.counts = counts or {}


@dataclass
class _Population:
    ids: list[str]
    y: np.ndarray
    names: list[str]  # strata, sorted
    index: dict[str, np.ndarray]  # stratum -> positions in y
    sizes: dict[str, int]
    counts: dict

    @property
    def N(self) -> int:
        return int(self.y.size)

    def sds(self) -> dict[str, float]:
        return {h: float(self.y[i].std(ddof=1)) if i.size > 1 else 0.0 for h, i in self.index.items()}


def _population(values: Mapping[str, float], strata: Mapping[str, str], what: str) -> _Population:
    if not isinstance(values, Mapping) or not values:
        raise ValueError(f"{what}: values must be a non-empty mapping query id -> per-query value")
    if not isinstance(strata, Mapping):
        raise ValueError(f"{what}: strata must be a mapping query id -> stratum")
    ids = sorted(str(q) for q in values)
    vals = {str(q): v for q, v in values.items()}
    st = {str(q): str(s) for q, s in strata.items()}
    missing = [q for q in ids if q not in st]
    if missing:
        raise ValueError(f"{what}: {len(missing)} of the {len(ids)} query ids of values have no stratum "
                         f"(e.g. {missing[:3]}); give every query a stratum (uptrain.judge.strata.strata_of)")
    y = np.array([float(vals[q]) for q in ids])
    if not np.all(np.isfinite(y)):
        bad = [q for q, v in zip(ids, y) if not np.isfinite(v)]
        raise ValueError(f"{what}: {len(bad)} values are not finite numbers (e.g. {bad[:3]})")
    labels = np.array([st[q] for q in ids])
    names = sorted(set(labels.tolist()))
    index = {h: np.flatnonzero(labels == h) for h in names}
    counts = {"population": len(ids), "strata": len(names), "stratum_sizes": {h: int(i.size) for h, i in index.items()},
              "strata_ids_without_value": sum(1 for q in st if q not in vals)}
    return _Population(ids, y, names, index, {h: int(i.size) for h, i in index.items()}, counts)


def _pilot_sds(pop: _Population, rng: np.random.Generator, fraction: float) -> tuple[dict[str, float], int]:
    """S_h from a pilot: an SRS of ceil(fraction N) queries, topped up within any stratum that drew
    fewer than 2 (where it has 2); returns the S_h and the queries added by the top-up."""
    m = max(1, min(pop.N, math.ceil(fraction * pop.N)))
    chosen = np.zeros(pop.N, dtype=bool)
    chosen[rng.choice(pop.N, size=m, replace=False)] = True
    added = 0
    sds = {}
    for h in pop.names:
        idx = pop.index[h]
        have = idx[chosen[idx]]
        need = min(2, idx.size) - have.size
        if need > 0:
            extra = rng.choice(idx[~chosen[idx]], size=need, replace=False)
            chosen[extra] = True
            added += need
            have = idx[chosen[idx]]
        sds[h] = float(pop.y[have].std(ddof=1)) if have.size > 1 else 0.0
    return sds, added


def _stratified_draw(pop: _Population, alloc: Mapping[str, int], rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {h: pop.y[rng.choice(pop.index[h], size=alloc[h], replace=False)] for h in pop.names}


def _mde_base(pop: _Population, mde_base: float | None, what: str) -> float:
    mu = float(pop.y.mean()) if mde_base is None else float(mde_base)
    if not math.isfinite(mu) or mu == 0:
        raise ValueError(f"{what}: the MDE is relative to {'the population mean' if mde_base is None else 'mde_base'}, "
                         f"which is {mu!r}; pass mde_base (e.g. the control's mean sDCG when the values are paired "
                         "differences)")
    return mu


def _check_designs(designs: Sequence[str], what: str) -> list[str]:
    designs = [str(d) for d in designs]
    bad = [d for d in designs if d not in DESIGNS]
    if bad or not designs:
        raise ValueError(f"{what}: unknown designs {bad} (or none given); use some of {DESIGNS}")
    if len(set(designs)) != len(designs):
        raise ValueError(f"{what}: designs are repeated: {designs}")
    return designs


def _check_sample_sizes(sizes: Sequence[int], pop: _Population, what: str) -> tuple[list[int], list[int]]:
    if isinstance(sizes, (int, np.integer)):
        sizes = [int(sizes)]
    out = []
    for n in sizes:
        if not _is_int(n, 2):
            raise ValueError(f"{what}: sample sizes must be integers >= 2 (a variance needs 2 queries), got {n!r}")
        out.append(int(n))
    if not out:
        raise ValueError(f"{what}: no sample size given")
    keep = [n for n in out if n <= pop.N]
    skipped = [n for n in out if n > pop.N]
    if not keep:
        raise ValueError(f"{what}: every sample size {out} exceeds the population of {pop.N} queries")
    if skipped:
        log.warning("%s: %d sample sizes exceed the population of %d queries and are skipped: %s",
                    what, len(skipped), pop.N, skipped)
    return keep, skipped


def evaluate_designs(values: Mapping[str, float], strata: Mapping[str, str], sizes: Sequence[int],
                     designs: Sequence[str] = DESIGNS, repeats: int = 500, pilot_fraction: float = 0.1, seed: int = 0,
                     alpha: float = 0.05, power: float = 0.8, min_per_stratum: int = 2,
                     mde_base: float | None = None) -> DesignRows:
    """Measure each design's precision by repeated sampling from the population.

    ``values``: query id -> per-query value (one system's sDCG@K, or the paired difference
    treatment - control: the caller decides); ``strata``: query id -> stratum (every query of
    ``values`` needs one). For each n of ``sizes`` and each design, ``repeats`` samples without
    replacement are drawn (stratified designs: without replacement within each stratum):

    - ``srs``: an SRS of n, :func:`srs_estimate`;
    - ``proportional``: :func:`allocate` proportional (the same allocation every repeat),
      :func:`stratified_estimate`;
    - ``neyman``: per repeat, a pilot (a separate SRS of ``pilot_fraction`` of the population,
      topped up to 2 queries in any stratum that drew fewer) estimates the S_h; the Neyman
      allocation of n from those S_h; then the main stratified sample, drawn independently of the
      pilot (so the main estimator keeps its design-unbiasedness and variance formula; the
      pilot's queries are not counted in n, as when S_h come from an earlier period's labels).
      Only this pilot-estimated design is reported, not Neyman with the true S_h, which no
      experiment knows (:func:`mde_curve` gives that analytic ideal).

    The MDE is relative to the population mean of ``values`` unless ``mde_base`` is given (for
    paired differences pass the control level, since the mean difference is near 0). Random
    streams: ``numpy.random.Generator(PCG64(SeedSequence([seed, design, n])))``, so a seed gives
    the same table and a design's rows do not depend on which other designs are requested.
    Reductions are against the SRS row at the same n; when ``srs`` is not requested, against the
    exact SRS sigma sqrt((1 - n/N) S^2) (noted in the counts). Sizes above the population are
    skipped (warned, in ``counts['skipped_sizes']``); a design that cannot give each stratum its
    minimum at some n is skipped at that n (warned, counted).
    """
    what = "evaluate_designs"
    designs = _check_designs(designs, what)
    _check_level(alpha, power)
    if not _is_int(repeats, 2):
        raise ValueError(f"{what}: repeats must be an integer >= 2, got {repeats!r}")
    if not 0 < pilot_fraction <= 1:
        raise ValueError(f"{what}: pilot_fraction must lie in (0, 1], got {pilot_fraction!r}")
    pop = _population(values, strata, what)
    ns, skipped = _check_sample_sizes(sizes, pop, what)
    mu_base = _mde_base(pop, mde_base, what)
    truth = float(pop.y.mean())
    S2 = float(pop.y.var(ddof=1)) if pop.N > 1 else 0.0
    z = _z(1 - alpha / 2)
    counts = dict(pop.counts)
    counts.update({"skipped_sizes": skipped, "skipped_designs": {}, "population_mean": truth,
                   "mde_base": mu_base, "mde_base_is": "population mean" if mde_base is None else "given",
                   "reduction_reference": "srs rows" if "srs" in designs else "exact SRS sigma sqrt((1 - n/N) S^2)"})
    rows = DesignRows(counts=counts)
    for n in ns:
        srs_sigma = None if "srs" in designs else math.sqrt(max(0.0, (1 - n / pop.N) * S2))
        for design in [d for d in DESIGNS if d in designs]:  # srs first: the reference of the others
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), DESIGNS.index(design), n])))
            est = np.empty(repeats)
            var = np.empty(repeats)
            row_counts: dict = {"skipped_sizes": skipped, "alpha": alpha, "power": power}
            try:
                if design == "srs":
                    for r in range(repeats):
                        est[r], var[r] = srs_estimate(pop.y[rng.choice(pop.N, size=n, replace=False)], pop.N)
                elif design == "proportional":
                    alloc, a_counts = _allocate(pop.sizes, n, "proportional", None, min_per_stratum, warn=True)
                    row_counts["allocation"] = alloc
                    row_counts["forced"] = {k: len(v) for k, v in a_counts.items()
                                            if isinstance(v, list) and v}
                    for r in range(repeats):
                        est[r], var[r] = stratified_estimate(_stratified_draw(pop, alloc, rng), pop.sizes)
                else:
                    forced: dict[str, int] = {}
                    pilot_added = 0
                    mean_alloc = {h: 0.0 for h in pop.names}
                    for r in range(repeats):
                        sds, added = _pilot_sds(pop, rng, pilot_fraction)
                        pilot_added += added
                        alloc, a_counts = _allocate(pop.sizes, n, "neyman", sds, min_per_stratum, warn=False)
                        for k, v in a_counts.items():
                            if isinstance(v, list) and v:
                                forced[k] = forced.get(k, 0) + 1
                        for h in pop.names:
                            mean_alloc[h] += alloc[h] / repeats
                        est[r], var[r] = stratified_estimate(_stratified_draw(pop, alloc, rng), pop.sizes)
                    row_counts["pilot_size"] = max(1, min(pop.N, math.ceil(pilot_fraction * pop.N)))
                    row_counts["pilot_topped_up_queries"] = pilot_added
                    row_counts["mean_allocation"] = {h: round(v, 3) for h, v in mean_alloc.items()}
                    row_counts["repeats_with_forced_allocation"] = forced
                    if forced:
                        log.warning("%s: neyman at n=%d: allocations forced in some of the %d repeats: %s",
                                    what, n, repeats, forced)
            except ValueError as exc:
                if "cannot give each" not in str(exc):
                    raise
                counts["skipped_designs"].setdefault(design, []).append(n)
                log.warning("%s: design %s skipped at n=%d: %s", what, design, n, exc)
                continue
            sigma = float(est.std(ddof=1) * math.sqrt(n))
            sigma_hat = float(np.mean(np.sqrt(n * np.maximum(var, 0.0))))
            coverage = float(np.mean(np.abs(est - truth) <= z * np.sqrt(np.maximum(var, 0.0)) + 1e-12))
            if design == "srs":
                srs_sigma = sigma
            reduction = 1 - sigma / srs_sigma if srs_sigma else float("nan")
            rows.append(DesignRow(design=design, sample=_SAMPLE_TYPE[design], estimator=_ESTIMATOR[design], n=n,
                                  sigma=sigma, sigma_analytic=sigma_hat, reduction=float(reduction),
                                  mde=mde(sigma, n, mu_base, alpha, power), coverage=coverage, repeats=int(repeats),
                                  counts=row_counts))
    if not rows:
        raise ValueError(f"{what}: no design could be evaluated at any of the sizes {ns} "
                         f"(skipped: {counts['skipped_designs']})")
    return rows


def _fmt(x: float, pct: bool = False, digits: int = 1) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{100 * x:.{digits}f}%" if pct else f"{x:.4g}"


def design_table_markdown(rows: Sequence[DesignRow], what: str) -> str:
    """The layout of the paper's Table 3: Sample type | Estimator | n | sigma | Reduction in sigma
    (plus MDE and the interval estimates' coverage); ``what`` names the values measured."""
    if not rows:
        raise ValueError("design_table_markdown: no rows")
    if not str(what).strip():
        raise ValueError("design_table_markdown: say what the values are (e.g. 'paired difference of sDCG@10')")
    reps = sorted({r.repeats for r in rows})
    levels = sorted({(r.counts.get("alpha", 0.05), r.counts.get("power", 0.8)) for r in rows})
    level = "; ".join(f"two-sided level {a:g}, power {p:g}, interval {100 * (1 - a):g}%" for a, p in levels)
    lines = [f"Values: {what}. sigma = sqrt(n) x the standard deviation of the estimate over "
             f"{', '.join(map(str, reps))} repeated samples; reduction in sigma against simple random sampling at "
             f"the same n; MDE relative ({level}); coverage: the share of repeats whose interval estimate covers "
             "the population mean.", "",
             "| Sample type | Estimator | n | sigma | Reduction in sigma | MDE | Coverage |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r.sample} | {r.estimator} | {r.n} | {_fmt(r.sigma)} | "
                     f"{'-' if r.design == 'srs' else _fmt(r.reduction, True)} | {_fmt(r.mde, True, 2)} | "
                     f"{_fmt(r.coverage, True)} |")
    counts = getattr(rows, "counts", {}) or {}
    if counts.get("skipped_sizes"):
        lines += ["", f"Sample sizes above the population of {counts.get('population')} queries, skipped: "
                      f"{counts['skipped_sizes']}."]
    if counts.get("skipped_designs"):
        lines += ["", "Designs skipped where n cannot give each stratum its minimum: "
                      + "; ".join(f"{d} at n={v}" for d, v in counts["skipped_designs"].items()) + "."]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# analytic MDE curves and their plot


def mde_curve(values: Mapping[str, float], strata: Mapping[str, str], sizes: Sequence[int],
              designs: Sequence[str] = DESIGNS, alpha: float = 0.05, power: float = 0.8, min_per_stratum: int = 2,
              mde_base: float | None = None) -> dict[str, list[tuple[int, float]]]:
    """Relative MDE against n per design, analytically from the population (no resampling).

    sigma^2 = n Var(estimator): SRS (1 - n/N) S^2 (S^2 the population variance, ddof = 1);
    stratified n sum_h W_h^2 S_h^2 / n_h (1 - n_h/N_h) with the integer allocation of
    :func:`allocate` (Neyman from the true S_h: the ideal a pilot approaches). MDE relative to
    the population mean, or ``mde_base``. Sizes above the population are skipped (warned); a
    design that cannot give each stratum its minimum at n has no point there (warned).
    """
    what = "mde_curve"
    designs = _check_designs(designs, what)
    _check_level(alpha, power)
    pop = _population(values, strata, what)
    ns, _ = _check_sample_sizes(sizes, pop, what)
    mu = _mde_base(pop, mde_base, what)
    S2 = float(pop.y.var(ddof=1))
    sds = pop.sds()
    out: dict[str, list[tuple[int, float]]] = {d: [] for d in designs}
    for d in designs:
        for n in ns:
            if d == "srs":
                sigma2 = (1 - n / pop.N) * S2
            else:
                try:
                    alloc, _ = _allocate(pop.sizes, n, d, sds, min_per_stratum, warn=False)
                except ValueError as exc:
                    log.warning("%s: design %s has no point at n=%d: %s", what, d, n, exc)
                    continue
                sigma2 = n * sum((pop.sizes[h] / pop.N) ** 2 * sds[h] ** 2 / alloc[h] * (1 - alloc[h] / pop.sizes[h])
                                 for h in pop.names if alloc[h] > 0)
            out[d].append((n, mde(math.sqrt(max(sigma2, 0.0)), n, mu, alpha, power)))
    return out


def mde_plot(curves: Mapping[str, Sequence[tuple[int, float]]], path: str | Path, title: str) -> Path:
    """MDE (percent) against n, one line per design, log-scaled n axis; written as PNG."""
    if not isinstance(curves, Mapping) or not any(len(v) for v in curves.values()):
        raise ValueError("mde_plot: curves must map a design to a non-empty list of (n, mde) points")
    for d, pts in curves.items():
        for pt in pts:
            if len(pt) != 2 or pt[0] <= 0 or not math.isfinite(pt[1]):
                raise ValueError(f"mde_plot: design {d!r} has a bad point {pt!r}; points are (n > 0, finite mde)")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 4))
    try:
        for d, pts in curves.items():
            if not pts:
                continue
            pts = sorted(pts)
            ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], marker="o", label=str(d))
        ax.set_xscale("log")
        ax.set_xlabel("queries sampled (n)")
        ax.set_ylabel("MDE (%)")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=120)
    finally:
        plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# heterogeneous effects


_ATOL = 1e-12  # a paired difference this small is 0
_RTOL = 1e-9  # differences this close (relative) are equal


def heterogeneous_effects(control: Mapping[str, float], treatment: Mapping[str, float], strata: Mapping[str, str],
                          alpha: float = 0.05, method: str = "bh") -> list[dict]:
    """The treatment effect per stratum, tested and adjusted for the number of strata.

    Per stratum: n, the control and treatment means, the mean paired difference (treatment -
    control), its relative size (to the control mean, when non-zero), the paired t-test
    (``scipy.stats.ttest_rel``) p-value, the p-value adjusted over all strata
    (``scipy.stats.false_discovery_control``: Benjamini-Hochberg ``bh``, or Benjamini-Yekutieli
    ``by``) and ``significant`` (adjusted p < alpha). Degenerate strata are decided without the
    t-test (no NaN, no warning) and say so in ``note``: fewer than 2 queries -> p = 1 (untestable);
    every difference 0 (|d| <= 1e-12) -> t = 0, p = 1; every difference the same non-zero value
    (equal to a relative 1e-9, so float noise such as 0.4 - 0.3 vs 0.7 - 0.6 counts as equal:
    zero variance) -> t = ±inf, p = 0. Rows in stratum name order.
    """
    _check_level(alpha)
    if method not in ("bh", "by"):
        raise ValueError(f"heterogeneous_effects: method must be 'bh' (Benjamini-Hochberg) or 'by' "
                         f"(Benjamini-Yekutieli), got {method!r}")
    for name, m in (("control", control), ("treatment", treatment), ("strata", strata)):
        if not isinstance(m, Mapping):
            raise ValueError(f"heterogeneous_effects: {name} must be a mapping query id -> value")
    c = {str(q): float(v) for q, v in control.items()}
    t = {str(q): float(v) for q, v in treatment.items()}
    only_c = [q for q in c if q not in t]
    only_t = [q for q in t if q not in c]
    if only_c or only_t:
        raise ValueError(f"heterogeneous_effects: control and treatment must score the same queries; {len(only_c)} only "
                         f"in control (e.g. {only_c[:3]}), {len(only_t)} only in treatment (e.g. {only_t[:3]})")
    if not c:
        raise ValueError("heterogeneous_effects: no query")
    bad = [q for q in c if not (math.isfinite(c[q]) and math.isfinite(t[q]))]
    if bad:
        raise ValueError(f"heterogeneous_effects: {len(bad)} queries have non-finite values (e.g. {bad[:3]})")
    st = {str(q): str(s) for q, s in strata.items()}
    missing = [q for q in c if q not in st]
    if missing:
        raise ValueError(f"heterogeneous_effects: {len(missing)} of the {len(c)} queries have no stratum "
                         f"(e.g. {missing[:3]})")
    groups: dict[str, list[str]] = {}
    for q in sorted(c):
        groups.setdefault(st[q], []).append(q)
    rows = []
    for h in sorted(groups):
        qs = groups[h]
        a = np.array([c[q] for q in qs])
        b = np.array([t[q] for q in qs])
        d = b - a
        row = {"stratum": h, "n": len(qs), "control_mean": float(a.mean()), "treatment_mean": float(b.mean()),
               "mean_difference": float(d.mean()),
               "relative_difference": float(d.mean() / a.mean()) if a.mean() != 0 else None, "note": ""}
        if len(qs) < 2:
            row.update(t=None, p_raw=1.0, note="fewer than 2 queries: untested, p = 1")
        elif np.all(np.abs(d) <= _ATOL):
            row.update(t=0.0, p_raw=1.0, note="every difference is 0: p = 1")
        elif np.ptp(d) <= _RTOL * float(np.max(np.abs(d))):
            row.update(t=math.copysign(math.inf, d[0]), p_raw=0.0, note="every difference is equal and non-zero: p = 0")
        else:
            res = stats.ttest_rel(b, a)
            row.update(t=float(res.statistic), p_raw=float(res.pvalue))
        rows.append(row)
    adjusted = stats.false_discovery_control(np.array([r["p_raw"] for r in rows]), method=method)
    for r, p in zip(rows, adjusted):
        r["p_adjusted"] = float(p)
        r["significant"] = bool(p < alpha)
        r["adjustment"] = method
    untested = sum(1 for r in rows if r["note"])
    if untested:
        log.warning("heterogeneous_effects: %d of %d strata decided without a t-test (see their note)", untested, len(rows))
    return rows


def heterogeneous_markdown(rows: Sequence[Mapping]) -> str:
    """A Markdown table of :func:`heterogeneous_effects` rows."""
    if not rows:
        raise ValueError("heterogeneous_markdown: no rows")
    method = rows[0].get("adjustment", "bh")
    name = {"bh": "Benjamini-Hochberg", "by": "Benjamini-Yekutieli"}.get(method, method)
    lines = [f"Paired t-test per stratum (treatment - control); p-values adjusted over the {len(rows)} strata by {name}.",
             "", "| Stratum | n | Control | Treatment | Difference | Relative | p | adjusted p | significant | note |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :---: | --- |"]
    for r in rows:
        rel = r.get("relative_difference")
        lines.append(f"| {r['stratum']} | {r['n']} | {r['control_mean']:.4f} | {r['treatment_mean']:.4f} | "
                     f"{r['mean_difference']:+.4f} | {'-' if rel is None else f'{100 * rel:+.2f}%'} | "
                     f"{r['p_raw']:.3g} | {r['p_adjusted']:.3g} | {'yes' if r['significant'] else 'no'} | "
                     f"{r.get('note', '')} |")
    return "\n".join(lines)
