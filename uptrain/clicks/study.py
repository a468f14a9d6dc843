"""What a ranker's scores follow: document quality or query-document relevance (finding 2 of
Yu et al., arXiv 2511.06635: click-supervised rankers capture document-level signals such as
authority and quality better, LLM-supervised rankers separate relevant from non-relevant
documents better).

The eval path ``click_study`` (``eval.paths.click_study``) reads this run's final ranking of
each evaluated collection (the top ``eval.depth``, reranked when configured) and measures, over
its (query, document) pairs:

``auc``            ROC AUC of the scores against the binary human labels (qrel > 0; an unjudged
                   document is not relevant), per query with both classes in its ranking
                   (scikit-learn's ``roc_auc_score``), then averaged over those queries
                   (``auc_per_query`` keeps each, for paired tests across runs);
                   ``auc_pooled`` is the AUC over all pairs at once.
``quality``        with a simulated click log whose clicks carry a latent document quality
                   (``clicks.simulator.quality_strength`` > 0: q_d ~ N(0, 1), seeded per doc id,
                   the same draw the simulator used), a regression of the scores on the human
                   grade and q_d with query fixed effects (every variable centred per query), by
                   least squares: the standardised coefficients ``beta_relevance``,
                   ``beta_quality`` and the partial correlations ``partial_r_relevance`` (scores
                   and grade, q_d partialled out) and ``partial_r_quality`` (the converse), each
                   from the residuals of the other variable (written here: numpy's lstsq; no
                   installed library computes a partial correlation with fixed effects), each with
                   a standard error from 200 bootstrap resamples of the queries (``*_se``).

``metrics.json`` gets ``click_study.<collection>`` with these numbers; a read log (no latent
quality) gives the AUCs only, and says so.
"""

from __future__ import annotations

import logging
import math
from typing import Mapping

import numpy as np

from uptrain.evaluate.paths import EvalContext, EvalPath, PathResult

log = logging.getLogger("uptrain")


def _centred(values: np.ndarray, groups: np.ndarray) -> np.ndarray:
    out = values.astype(np.float64).copy()
    for g in np.unique(groups):
        m = groups == g
        out[m] -= out[m].mean()
    return out


def _residual(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    if not np.any(x):
        return y
    coef, *_ = np.linalg.lstsq(x[:, None], y, rcond=None)
    return y - x * coef[0]


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    sa, sb = a.std(), b.std()
    return float((a * b).mean() / (sa * sb)) if sa > 0 and sb > 0 else float("nan")


def score_analysis(run: Mapping[str, Mapping[str, float]], qrels: Mapping[str, Mapping[str, int]],
                   quality: Mapping[str, float] | None = None, bootstrap: int = 200, bootstrap_seed: int = 0) -> dict:
    """The measures of the module docstring for one run (query -> doc -> score); each quality
    coefficient's standard error ``*_se`` from ``bootstrap`` resamples of the queries."""
    from sklearn.metrics import roc_auc_score

    qs, scores, grades, docs = [], [], [], []
    aucs: dict[str, float] = {}
    skipped = 0
    for q, ranked in run.items():
        if not ranked:
            continue
        d_ids = list(ranked)
        s = np.array([float(ranked[d]) for d in d_ids])
        g = np.array([int((qrels.get(q) or {}).get(d, 0)) for d in d_ids])
        rel = (g > 0).astype(int)
        if 0 < rel.sum() < len(rel):
            aucs[q] = float(roc_auc_score(rel, s))
        else:
            skipped += 1
        qs += [q] * len(d_ids)
        scores.append(s)
        grades.append(g)
        docs += d_ids
    if not scores:
        return {"pairs": 0, "queries": 0}
    s_all, g_all = np.concatenate(scores), np.concatenate(grades)
    out: dict = {
        "pairs": int(len(s_all)),
        "queries": len(run),
        "auc": float(np.mean(list(aucs.values()))) if aucs else float("nan"),
        "auc_queries": len(aucs),
        "auc_per_query": aucs,
        "auc_queries_skipped_one_class": skipped,
    }
    rel_all = (g_all > 0).astype(int)
    out["auc_pooled"] = float(roc_auc_score(rel_all, s_all)) if 0 < rel_all.sum() < len(rel_all) else float("nan")
    if quality is None:
        out["quality"] = None
        return out
    group = np.array(qs, dtype=object)
    codes = np.unique(group, return_inverse=True)[1]
    y = _centred(s_all, codes)
    r = _centred(g_all.astype(np.float64), codes)
    qd = _centred(np.array([float(quality[d]) for d in docs]), codes)
    out["quality"] = _regression(y, r, qd)
    # standard errors by a bootstrap over queries (the pairs of one query move together)
    rng = np.random.default_rng(bootstrap_seed)
    members = [np.flatnonzero(codes == c) for c in range(codes.max() + 1)]
    draws = {k: [] for k in ("beta_relevance", "beta_quality", "partial_r_relevance", "partial_r_quality")}
    for _ in range(int(bootstrap)):
        idx = np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])
        got = _regression(y[idx], r[idx], qd[idx])
        for k in draws:
            if math.isfinite(got[k]):
                draws[k].append(got[k])
    for k, v in draws.items():
        out["quality"][f"{k}_se"] = float(np.std(v, ddof=1)) if len(v) > 1 else float("nan")
    out["quality"]["bootstrap"] = int(bootstrap)
    return out


def _regression(y: np.ndarray, r: np.ndarray, qd: np.ndarray) -> dict:
    """Standardised least-squares coefficients of y on (r, qd) and the partial correlations."""
    z = [v / v.std() if v.std() > 0 else v for v in (y, r, qd)]
    x = np.stack([z[1], z[2]], axis=1)
    coef, *_ = np.linalg.lstsq(x, z[0], rcond=None)
    return {
        "beta_relevance": float(coef[0]),
        "beta_quality": float(coef[1]),
        "partial_r_relevance": _corr(_residual(z[0], z[2]), _residual(z[1], z[2])),
        "partial_r_quality": _corr(_residual(z[0], z[1]), _residual(z[2], z[1])),
        "r_relevance": _corr(z[0], z[1]),
        "r_quality": _corr(z[0], z[2]),
    }


def latent_quality(ctx: EvalContext, doc_ids) -> tuple[dict[str, float] | None, str]:
    """q_d of the simulated log's documents (the simulator's own seeded draw), or None with why."""
    clicks = ctx.require("clicks").value
    truth = getattr(clicks, "truth", None) or {}
    if not truth or "seed" not in truth:
        return None, "the click log was read from a file: it carries no latent document quality"
    if not float(truth.get("quality_strength", 0.0)):
        return None, "the simulated clicks carry no document quality (clicks.simulator.quality_strength = 0)"
    from uptrain.clicks.simulate import _QUALITY_TAG, seeded_normal

    ids = sorted(set(doc_ids))
    return dict(zip(ids, (float(v) for v in seeded_normal(ids, int(truth["seed"]), _QUALITY_TAG)))), ""


class ClickStudyPath(EvalPath):
    """Finding 2's analysis of this run's final ranking (see the module docstring)."""

    name = "click_study"

    def run(self, ctx: EvalContext) -> PathResult:
        out = PathResult()
        rows, results = [], {}
        note = ""
        for group, names in (ctx.cfg.eval.groups or {}).items():
            for name in names or []:
                data, run = ctx.data(name), ctx.ranked(name)
                quality, note = latent_quality(ctx, [d for r in run.value.values() for d in r])
                res = score_analysis(run.value, data.value.qrels, quality)
                results[name] = res
                qa = res.get("quality") or {}
                rows.append(f"| {name} | {res['pairs']} | {res['auc']:.4f} | {res['auc_pooled']:.4f} | "
                            + " | ".join(f"{qa[k]:.3f}" if k in qa else "n/a" for k in (
                                "beta_relevance", "beta_quality", "partial_r_relevance", "partial_r_quality")) + " |")
        out.metrics["click_study"] = results
        out.sections["Scores: relevance vs document quality"] = (
            "ROC AUC of this run's scores against binary human labels (mean over queries; pooled), and a regression "
            "of the scores on the human grade and the simulator's latent document quality with query fixed effects "
            "(standardised coefficients, partial correlations)." + (f" {note[0].upper() + note[1:]}." if note else "")
            + "\n\n| collection | pairs | AUC | AUC pooled | beta relevance | beta quality | partial r relevance | "
            "partial r quality |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n" + "\n".join(rows))
        return out
