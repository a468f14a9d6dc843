"""Held-out evaluation of click models (Chuklin, Markov, de Rijke 2015, chapter 5).

Definitions (ranks 0-based, only shown ranks count; a rank is clicked when clicked at least once):

``log_likelihood``  mean over sessions of the mean over the session's shown ranks of
                    ln P(C_r = c_r | c_<r), with the model's *conditional* probabilities
                    (section 5.1; PyClick's ``LogLikelihood`` averages the same way). <= 0.
``perplexity_at``   per rank r: 2 ** (-(1/|S_r|) sum_{s in S_r} log2 P(C_r = c_r)) with the
                    *unconditional* (marginal) probabilities, S_r the sessions showing rank r
                    (section 5.2; Dupret and Piwowarski 2008). At least 1 (a perfect
                    prediction); 2 is a coin flip, a model worse than that goes above 2.
``perplexity``      the mean of the per-rank perplexities (over ranks shown at least once).
``ctr_error``       mean over the (query, rank) cells of the log of |mean predicted P(C_r = 1)
                    - observed CTR|, both averaged over the sessions of that query showing rank
                    r: how far the model's marginal click rate is from the click rate seen (a
                    mean absolute error over cells, each cell weighing the same). >= 0.

Probabilities are clipped by the model to [eps, 1 - eps] (see :mod:`uptrain.clicks.models.base`)
so every value is finite; the number clipped and the unseen pairs that got the model's default
are reported under ``predict_stats``.
"""

from __future__ import annotations

import logging
import time
from typing import Mapping

import numpy as np

from uptrain.clicks.log import ClickLog
from uptrain.errors import ConfigError

log = logging.getLogger("uptrain")

UNASSIGNED = "unassigned"


def _observed(model, clog: ClickLog, conditional: bool) -> tuple[np.ndarray, np.ndarray]:
    """(n, R) P(C_r = c_r) under the model (1 where nothing is shown) and the shown mask."""
    shown = clog.shown
    p = np.asarray(model.click_probabilities(clog, conditional=conditional), dtype=np.float64)
    if p.shape != shown.shape:
        raise ConfigError(f"click model {getattr(model, 'name', model)} returned probabilities of shape {p.shape} for a log of shape {shown.shape}")
    obs = np.where(clog.clicked & shown, p, 1 - p)
    return np.where(shown, obs, 1.0), shown


def _check(clog: ClickLog) -> None:
    if not isinstance(clog, ClickLog):
        raise ConfigError(f"click model evaluation needs a ClickLog, got {type(clog).__name__}")
    if len(clog) == 0:
        raise ConfigError("click model evaluation needs a log with at least one session; this one is empty")


def _ll_per_session(obs: np.ndarray, shown: np.ndarray) -> np.ndarray:
    k = shown.sum(axis=1)
    total = np.log(obs).sum(axis=1)
    return np.where(k > 0, total / np.maximum(k, 1), 0.0), k > 0


def log_likelihood(model, clog: ClickLog) -> float:
    """Mean over sessions of the mean over shown ranks of ln P(C_r = c_r | clicks above)."""
    _check(clog)
    obs, shown = _observed(model, clog, conditional=True)
    per, ok = _ll_per_session(obs, shown)
    return float(per[ok].mean()) if ok.any() else 0.0


def _perplexity_from(obs: np.ndarray, shown: np.ndarray) -> tuple[float, list[float]]:
    cnt = shown.sum(axis=0)
    l2 = np.where(shown, np.log2(obs), 0.0).sum(axis=0)
    at = np.where(cnt > 0, 2.0 ** (-l2 / np.maximum(cnt, 1)), np.nan)
    valid = cnt > 0
    overall = float(at[valid].mean()) if valid.any() else float("nan")
    return overall, [float(x) for x in at]


def perplexity(model, clog: ClickLog) -> tuple[float, list[float]]:
    """(overall, per rank): per rank 2 ** (-mean over sessions showing it of log2 P(C_r = c_r)) with
    unconditional probabilities; overall = the mean of the per-rank values (NaN for a rank never shown)."""
    _check(clog)
    obs, shown = _observed(model, clog, conditional=False)
    return _perplexity_from(obs, shown)


def _ctr_error_from(p: np.ndarray, clicked: np.ndarray, shown: np.ndarray, query: np.ndarray) -> float:
    n, R = shown.shape
    cell = (query[:, None] * R + np.arange(R)[None, :])[shown]
    if cell.size == 0:
        return 0.0
    uniq, inv = np.unique(cell, return_inverse=True)
    cnt = np.bincount(inv).astype(np.float64)
    pred = np.bincount(inv, weights=p[shown]) / cnt
    obs = np.bincount(inv, weights=clicked[shown].astype(np.float64)) / cnt
    return float(np.abs(pred - obs).mean())


def ctr_error(model, clog: ClickLog) -> float:
    """Mean over (query, rank) cells of |mean predicted marginal P(C_r = 1) - observed CTR| (see the module doc)."""
    _check(clog)
    p = model.click_probabilities(clog, conditional=False)
    shown = clog.shown
    return _ctr_error_from(p, clog.clicked & shown, shown, clog.query)


def _measures(cond_obs, uncond_obs, p_uncond, clicked, shown, query, rows) -> dict:
    per, ok = _ll_per_session(cond_obs[rows], shown[rows])
    ppl, at = _perplexity_from(uncond_obs[rows], shown[rows])
    return {
        "log_likelihood": float(per[ok].mean()) if ok.any() else 0.0,
        "perplexity": ppl,
        "perplexity_at": at,
        "ctr_error": _ctr_error_from(p_uncond[rows], clicked[rows], shown[rows], query[rows]),
        "sessions": int(rows.sum()) if rows.dtype == bool else int(len(rows)),
    }


def evaluate(model, clog: ClickLog, buckets: Mapping[str, str] | None = None) -> dict:
    """All measures on ``clog``, overall and per query segment.

    ``buckets`` maps a query key to a segment name (a frequency bucket: ``high``, ``medium``,
    ``low``); queries it does not name fall in ``"unassigned"`` (counted like any other segment).
    Returns ``{"log_likelihood", "perplexity", "perplexity_at", "ctr_error", "sessions",
    "segments": {name: the same keys}, "predict_stats": {...}}``.
    """
    _check(clog)
    shown = clog.shown
    clicked = clog.clicked & shown
    p_cond = np.asarray(model.click_probabilities(clog, conditional=True), dtype=np.float64)
    stats_cond = dict(getattr(model, "predict_stats", {}) or {})
    p_unc = np.asarray(model.click_probabilities(clog, conditional=False), dtype=np.float64)
    stats_unc = dict(getattr(model, "predict_stats", {}) or {})
    cond_obs = np.where(shown, np.where(clicked, p_cond, 1 - p_cond), 1.0)
    unc_obs = np.where(shown, np.where(clicked, p_unc, 1 - p_unc), 1.0)
    everyone = np.ones(len(clog), dtype=bool)
    out = _measures(cond_obs, unc_obs, p_unc, clicked, shown, clog.query, everyone)
    segments: dict[str, dict] = {}
    if buckets is not None:
        names = np.array([str(buckets.get(q, UNASSIGNED)) for q in clog.queries], dtype=object)
        seg_of = names[clog.query] if len(clog.queries) else np.zeros(0, dtype=object)
        unassigned = int((seg_of == UNASSIGNED).sum())
        if unassigned:
            log.info("click model evaluation: %d sessions have a query in no bucket (segment %r)", unassigned, UNASSIGNED)
        for seg in sorted(set(seg_of.tolist())):
            rows = seg_of == seg
            segments[seg] = _measures(cond_obs, unc_obs, p_unc, clicked, shown, clog.query, rows)
    out["segments"] = segments
    out["predict_stats"] = {
        **{k: v for k, v in stats_unc.items() if k != "clipped"},
        "clipped_conditional": int(stats_cond.get("clipped", 0)),
        "clipped_unconditional": int(stats_unc.get("clipped", 0)),
        **({"multi_click_sessions": stats_cond["multi_click_sessions"]} if "multi_click_sessions" in stats_cond else {}),
    }
    ps = out["predict_stats"]
    if ps.get("unseen_impressions") or ps["clipped_conditional"] or ps["clipped_unconditional"]:
        log.warning(
            "click model %s on %d sessions: %d of %d impressions (%d pairs) were not in the training log and got "
            "the model's default; %d conditional and %d marginal probabilities were clipped to [eps, 1 - eps]",
            getattr(model, "name", model), len(clog), ps.get("unseen_impressions", 0), ps.get("impressions", 0),
            ps.get("unseen_pairs", 0), ps["clipped_conditional"], ps["clipped_unconditional"],
        )
    return out


def evaluate_all(
    names: list[str],
    train: ClickLog,
    test: ClickLog,
    buckets: Mapping[str, str] | None = None,
    progress: bool = True,
    **model_kwargs,
) -> dict[str, dict]:
    """Fit each named model on ``train`` and evaluate it on ``test``: ``{name: evaluate(...) plus
    "fit_stats" and "params"}``. ``model_kwargs`` go to every model (iterations, prior, ...)."""
    from uptrain.clicks.models import make

    if not names:
        raise ConfigError("evaluate_all needs at least one click model name")
    results: dict[str, dict] = {}
    for name in names:
        model = make(name, **model_kwargs)
        t0 = time.perf_counter()
        model.fit(train)
        res = evaluate(model, test, buckets)
        res["fit_stats"] = dict(model.fit_stats)
        res["params"] = model.params()
        results[model.name] = res
        if progress:
            log.info(
                "click model %s: fit %.2fs (%d iterations), held-out log-likelihood %.4f, perplexity %.4f (%.1fs in all)",
                model.name, model.fit_stats["seconds"], model.fit_stats["iterations"], res["log_likelihood"],
                res["perplexity"], time.perf_counter() - t0,
            )
    return results
