"""A small timing of the click samplers and the click models' fits on a synthetic log.

The log: ``queries`` queries, each with its own ``docs_per_query`` documents; a session draws a
query uniformly and shows a random ``ranks`` of its documents in random order (so every
document is seen at many ranks). Attractiveness is uniform in [0.05, 0.9] per document,
satisfaction uniform in [0.1, 0.9], the PBM examination 1 / (r + 1) ** 0.7 (0-based r); the
log's clicks come from the PBM. Each sampler is timed on the same attractiveness matrix and
each model fitted on the PBM log with its default settings.
"""

from __future__ import annotations

import time

import numpy as np

from uptrain.clicks.log import from_arrays
from uptrain.errors import ConfigError


def synthetic_serps(sessions: int, ranks: int, queries: int, docs_per_query: int, rng: np.random.Generator):
    """(query (n,), docs (n, R)) with random SERPs drawn from per-query document lists (document ids
    ``q * docs_per_query + k``)."""
    if ranks > docs_per_query:
        raise ConfigError(f"click_bench: docs_per_query ({docs_per_query}) must be at least ranks ({ranks})")
    query = rng.integers(0, queries, sessions)
    docs = np.empty((sessions, ranks), dtype=np.int64)
    chunk = 200_000  # bounded memory for the random permutations
    for start in range(0, sessions, chunk):
        stop = min(sessions, start + chunk)
        perm = np.argsort(rng.random((stop - start, docs_per_query)), axis=1)[:, :ranks]
        docs[start:stop] = query[start:stop, None] * docs_per_query + perm
    return query, docs


def click_bench(
    sessions: int = 1_000_000,
    ranks: int = 10,
    queries: int = 1000,
    docs_per_query: int = 30,
    seed: int = 0,
    models: list[str] | None = None,
) -> dict:
    """Time every sampler (sessions/s) and each model's fit (seconds, iterations) on a synthetic PBM log.

    Returns ``{"setup": {...}, "sampling": {sampler: {"seconds", "sessions_per_s"}},
    "fit": {model: {"seconds", "iterations", "converged", "sessions_per_s"}}}``.
    """
    from uptrain.clicks.models import CLICK_MODELS, make
    from uptrain.clicks.sampling import sample

    if sessions < 1 or ranks < 1 or queries < 1:
        raise ConfigError("click_bench needs at least one session, rank and query")
    names = list(CLICK_MODELS) if models is None else list(models)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    query, docs = synthetic_serps(sessions, ranks, queries, docs_per_query, rng)
    n_docs = queries * docs_per_query
    alpha = rng.uniform(0.05, 0.9, n_docs)
    sat = rng.uniform(0.1, 0.9, n_docs)
    exam = 1.0 / (np.arange(ranks) + 1.0) ** 0.7
    attr = alpha[docs]
    setup_s = time.perf_counter() - t0

    ubm_gamma = np.tile(exam[:, None], (1, ranks + 1))
    params = {
        "pbm": {"exam": exam},
        "cm": {},
        "dcm": {"lam": np.full(ranks, 0.6)},
        "ubm": {"gamma": ubm_gamma},
        "dbn": {"sat": sat[docs], "gamma": 0.9},
        "sdbn": {"sat": sat[docs]},
    }
    sampling: dict[str, dict] = {}
    clicks = None
    for name, kw in params.items():
        t = time.perf_counter()
        c = sample(name, rng, attr=attr, **kw)
        dt = time.perf_counter() - t
        sampling[name] = {"seconds": round(dt, 4), "sessions_per_s": round(sessions / dt) if dt > 0 else None}
        if name == "pbm":
            clicks = c
        del c

    t = time.perf_counter()
    clog = from_arrays(query, docs, clicks, [f"q{i}" for i in range(queries)], [f"d{i}" for i in range(n_docs)])
    clog.pairs()
    build_s = time.perf_counter() - t

    fits: dict[str, dict] = {}
    for name in names:
        model = make(name)
        t = time.perf_counter()
        model.fit(clog)
        dt = time.perf_counter() - t
        fits[model.name] = {
            "seconds": round(dt, 4),
            "em_seconds": model.fit_stats["seconds"],
            "iterations": model.fit_stats["iterations"],
            "converged": model.fit_stats["converged"],
            "sessions_per_s": round(sessions / dt) if dt > 0 else None,
        }
    return {
        "setup": {
            "sessions": sessions, "ranks": ranks, "queries": queries, "docs_per_query": docs_per_query, "seed": seed,
            "serps_seconds": round(setup_s, 4), "log_seconds": round(build_s, 4), "clicks": int(clog.n_clicks),
        },
        "sampling": sampling,
        "fit": fits,
    }


def pbm_em_loop(clog, iterations: int = 5, prior: float = 0.5, pseudo_count: float = 2.0, eps: float = 1e-6):
    """The reference of the speed ratio: PBM's EM as a Python loop over sessions and ranks (the shape
    of a per-session implementation such as PyClick's), with the same updates, smoothing and clip as
    :class:`uptrain.clicks.models.pbm.PBM`. Returns (examination list, attractiveness dict)."""
    clicked = clog.clicked.tolist()
    docs = clog.docs.tolist()
    queries = clog.query.tolist()
    R = clog.n_ranks
    alpha: dict = {}
    gamma = [prior] * R
    for _ in range(iterations):
        num_a: dict = {}
        den_a: dict = {}
        num_e = [0.0] * R
        den_e = [0.0] * R
        for s in range(len(queries)):
            q = queries[s]
            for r in range(R):
                d = docs[s][r]
                if d < 0:
                    continue
                key = (q, d)
                a = alpha.get(key, prior)
                g = gamma[r]
                if clicked[s][r]:
                    pa = pe = 1.0
                else:
                    skip = 1.0 - min(max(a * g, eps), 1 - eps)
                    pa = a * (1 - g) / skip
                    pe = g * (1 - a) / skip
                num_a[key] = num_a.get(key, 0.0) + pa
                den_a[key] = den_a.get(key, 0.0) + 1.0
                num_e[r] += pe
                den_e[r] += 1.0
        alpha = {k: min(max((prior * pseudo_count + num_a[k]) / (pseudo_count + den_a[k]), eps), 1 - eps) for k in num_a}
        gamma = [min(max((prior * pseudo_count + num_e[r]) / (pseudo_count + den_e[r]), eps), 1 - eps) for r in range(R)]
    return gamma, alpha


def bench_clicks(sessions: int = 1_000_000, ref_sessions: int = 20_000, iterations: int = 5, seed: int = 0,
                 simulate_sessions: int | None = None) -> dict:
    """The click workload of ``make bench``: samplers and fits on ``sessions`` synthetic sessions
    (:func:`click_bench`), the simulator over a synthetic collection, and the speed ratio of the
    vectorised PBM EM over the per-session loop (:func:`pbm_em_loop`) on ``ref_sessions`` sessions,
    ``iterations`` EM iterations each, with the parameters of both compared (the guard)."""
    from uptrain.clicks.models import make
    from uptrain.clicks.simulate import simulate_bench

    out = {"models": click_bench(sessions=sessions, seed=seed)}
    rng = np.random.default_rng(seed + 1)
    query, docs = synthetic_serps(ref_sessions, 10, 200, 30, rng)
    alpha = rng.uniform(0.05, 0.9, 200 * 30)
    exam = 1.0 / (np.arange(10) + 1.0) ** 0.7
    from uptrain.clicks.sampling import sample_pbm

    clog = from_arrays(query, docs, sample_pbm(alpha[docs], exam, rng), [f"q{i}" for i in range(200)],
                       [f"d{i}" for i in range(200 * 30)])
    t = time.perf_counter()
    ref_gamma, ref_alpha = pbm_em_loop(clog, iterations)
    loop_s = time.perf_counter() - t
    model = make("pbm", iterations=iterations, tol=0.0)
    t = time.perf_counter()
    model.fit(clog)
    vec_s = time.perf_counter() - t
    table = model.relevance_table()
    diff_alpha = max(abs(table[(f"q{q}", f"d{d}")] - v) for (q, d), v in ref_alpha.items())
    diff_gamma = float(np.max(np.abs(np.asarray(model.params()["examination"]) - np.asarray(ref_gamma))))
    out["em_vs_loop"] = {
        "sessions": ref_sessions, "iterations": iterations,
        "loop_seconds": round(loop_s, 3), "vectorised_seconds": round(vec_s, 4),
        "ratio": round(loop_s / vec_s, 1) if vec_s > 0 else None,
        "max_abs_diff": max(diff_alpha, diff_gamma),
    }
    out["simulate"] = simulate_bench(sessions=simulate_sessions or sessions, seed=seed)
    return out
