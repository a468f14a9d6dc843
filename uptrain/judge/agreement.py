"""Agreement of a relevance judge with human labels at three levels, as Wang, Whitworth, Cheung,
Zhang, Kamath validate their fine-tuned judge in "LLM-based Relevance Assessment for Web-Scale
Search Evaluation at Pinterest" (RecSys 2025 EARL workshop, arXiv 2509.03764):

* **label level** (:func:`label_agreement`): over the (query, document) pairs both label, the
  exact-match rate, the within-one-grade rate, Cohen's kappa (unweighted and linearly weighted)
  and the confusion matrix (rows human, columns judge), by
  :func:`uptrain.annotate.grade.grade_quality` (scikit-learn's ``cohen_kappa_score``). The paper
  reports 73.7% exact and 91.7% within one grade on its 5-point scale.
* **query level** (:func:`query_agreement`): the query-level metric (sDCG@K from
  :mod:`uptrain.judge.measures`) computed from the judge's labels against the same metric from
  the human labels: Kendall's tau-b and Spearman's rho over the queries (scipy), and the
  distribution of the error judge - human (mean, P10, median, P90; numpy's linear percentile).
  The paper's Table 1, overall: tau 0.652, rho 0.817 on sDCG@25; mean error 0.005, P10 -0.047,
  P90 0.059 (its Figure 3, left, is the histogram of these errors).
* **system level** (:func:`paired_difference_errors`, :func:`system_agreement`): what an A/B
  comparison needs: per query, the error of the paired difference between two systems,
  (judge_a - judge_b) - (human_a - human_b) (the paper's Figure 3, right), and whether the judge
  ranks the systems (their mean metric) as the humans do.

:func:`error_histograms` draws Figure 3, :func:`agreement_markdown` the tables with the paper's
figures (:data:`PAPER`) beside. Correlations are None, never NaN, where undefined (fewer than 3
queries, or a constant side); everything left out is counted in the result and logged.
"""

from __future__ import annotations

import logging
import math
import warnings
from itertools import combinations
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from uptrain.annotate.grade import grade_quality

log = logging.getLogger("uptrain")

Labels = Mapping[str, Mapping[str, int]]

PAPER = {
    "citation": ("Wang, Whitworth, Cheung, Zhang, Kamath, \"LLM-based Relevance Assessment for Web-Scale Search "
                 "Evaluation at Pinterest\", RecSys 2025 EARL workshop, arXiv 2509.03764"),
    "scale": "5-point (1..5)",
    "label": {"exact": 0.737, "within_one": 0.917},
    "query": {"measure": "sDCG@25", "kendall_tau": 0.652, "spearman_rho": 0.817, "error_mean": 0.005,
              "error_p10": -0.047, "error_median": None, "error_p90": 0.059},
}

MIN_CORRELATION_ITEMS = 3  # fewer queries than this: no correlation is reported


# ---- helpers -------------------------------------------------------------------------------

def _num(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def _correlations(a: Sequence[float], b: Sequence[float]) -> dict:
    """Kendall's tau-b and Spearman's rho of two equally long sequences, None where undefined
    (a constant side, fewer than 2 items); scipy's ConstantInputWarning is suppressed."""
    from scipy import stats

    out = {"kendall_tau": None, "kendall_p": None, "spearman_rho": None, "spearman_p": None}
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tau = stats.kendalltau(a, b)  # variant "b": ties corrected
        rho = stats.spearmanr(a, b)
    out.update(kendall_tau=_num(tau.statistic), kendall_p=_num(tau.pvalue),
               spearman_rho=_num(rho.statistic), spearman_p=_num(rho.pvalue))
    return out


def _error_stats(errors: Sequence[float]) -> dict:
    e = np.asarray(errors, dtype=float)
    if not len(e):
        return {"error_mean": None, "error_p10": None, "error_median": None, "error_p90": None, "error_abs_mean": None}
    p10, p50, p90 = np.percentile(e, [10, 50, 90])  # linear interpolation
    return {"error_mean": float(e.mean()), "error_p10": float(p10), "error_median": float(p50),
            "error_p90": float(p90), "error_abs_mean": float(np.abs(e).mean())}


def _finite(values: Mapping[str, float], name: str) -> dict[str, float]:
    out, bad = {}, []
    for q, v in values.items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            f = float("nan")
        if not math.isfinite(f):
            bad.append(str(q))
        out[str(q)] = f
    if bad:
        raise ValueError(f"{name} has non-finite or non-numeric values for {len(bad)} queries "
                         f"(first: {bad[:5]}): a query-level metric must be a number for every query it covers")
    return out


# ---- label level ---------------------------------------------------------------------------

def label_agreement(human: Labels, judge: Labels, max_grade: int,
                    segments: Mapping[str, str] | None = None) -> dict:
    """Agreement of the judge's grades with the human ones over the (query, document) pairs that
    both label: every field of :func:`uptrain.annotate.grade.grade_quality` (``pairs``, ``exact``,
    ``within_one``, ``kappa``, ``weighted_kappa`` (linear), ``confusion`` with human rows and
    judge columns, ``binary``, ``grades``), plus ``judge_only`` and ``human_only``, the pairs only
    one side labels (left out, counted), and, with ``segments`` (query id -> segment), per segment
    ``{pairs, exact, within_one, kappa, weighted_kappa}`` and ``pairs_without_segment``.
    """
    pairs: list[tuple[int, int]] = []
    seg_of_pair: list[str | None] = []
    human_only = judge_only = 0
    for q in set(map(str, human)) | set(map(str, judge)):
        h, j = human.get(q, {}), judge.get(q, {})
        both = [d for d in h if d in j]
        human_only += len(h) - len(both)
        judge_only += sum(1 for d in j if d not in h)
        for d in sorted(both):
            pairs.append((int(h[d]), int(j[d])))
            seg_of_pair.append(None if segments is None else segments.get(q))
    out = {**grade_quality(pairs, max_grade), "human_only": human_only, "judge_only": judge_only}
    if not pairs:
        log.warning("[judge] no (query, document) pair is labelled by both the judge and the humans "
                    "(%d human-only, %d judge-only pairs)", human_only, judge_only)
    elif human_only or judge_only:
        log.warning("[judge] label agreement over %d common pairs; left out %d human-only and %d judge-only pairs",
                    len(pairs), human_only, judge_only)
    if segments is not None:
        by: dict[str, list[tuple[int, int]]] = {}
        missing = 0
        for p, s in zip(pairs, seg_of_pair):
            if s is None:
                missing += 1
            else:
                by.setdefault(str(s), []).append(p)
        out["segments"] = {}
        for s in sorted(by):
            qual = grade_quality(by[s], max_grade)
            out["segments"][s] = {k: qual[k] for k in ("pairs", "exact", "within_one", "kappa", "weighted_kappa")}
        out["pairs_without_segment"] = missing
        if missing:
            log.warning("[judge] %d labelled pairs belong to queries without a segment (in the overall figures only)",
                        missing)
    return out


# ---- query level ---------------------------------------------------------------------------

def _query_block(judge: Sequence[float], human: Sequence[float]) -> dict:
    out = {"queries": len(judge)}
    if len(judge) >= MIN_CORRELATION_ITEMS:
        out.update(_correlations(judge, human))
    else:
        out.update(kendall_tau=None, kendall_p=None, spearman_rho=None, spearman_p=None)
    out.update(_error_stats(np.asarray(judge, dtype=float) - np.asarray(human, dtype=float)))
    return out


def query_agreement(judge_values: Mapping[str, float], human_values: Mapping[str, float],
                    segments: Mapping[str, str] | None = None) -> dict:
    """Agreement of a query-level metric from the judge's labels with the same metric from the
    human labels, over the queries both cover: ``queries``, ``kendall_tau`` (scipy's tau-b),
    ``kendall_p``, ``spearman_rho``, ``spearman_p``, and the error judge - human: ``error_mean``,
    ``error_p10``, ``error_median``, ``error_p90`` (numpy's linear percentile), ``error_abs_mean``;
    ``judge_only`` / ``human_only`` count the queries only one side covers (left out).

    Correlations are None (not NaN, no warning) with fewer than 3 queries or when either side is
    constant. With ``segments`` (query id -> segment): ``segments: {name: the same block}``,
    ``segments_too_small`` (segments of fewer than 3 queries, whose correlations are None) and
    ``queries_without_segment``. The paper's overall figures are in :data:`PAPER`.
    """
    j = _finite(judge_values, "the judge's query-level values")
    h = _finite(human_values, "the human query-level values")
    common = sorted(set(j) & set(h))
    if not common:
        raise ValueError(f"the judge's values ({len(j)} queries) and the human values ({len(h)} queries) share no "
                         "query id: both must be computed over the same query set")
    out = _query_block([j[q] for q in common], [h[q] for q in common])
    out["judge_only"] = len(set(j) - set(h))
    out["human_only"] = len(set(h) - set(j))
    if out["judge_only"] or out["human_only"]:
        log.warning("[judge] query agreement over %d common queries; left out %d judge-only and %d human-only queries",
                    len(common), out["judge_only"], out["human_only"])
    if len(common) < MIN_CORRELATION_ITEMS:
        log.warning("[judge] only %d common queries: no correlation reported", len(common))
    if segments is not None:
        by: dict[str, list[str]] = {}
        missing = 0
        for q in common:
            s = segments.get(q)
            if s is None:
                missing += 1
            else:
                by.setdefault(str(s), []).append(q)
        out["segments"] = {s: _query_block([j[q] for q in by[s]], [h[q] for q in by[s]]) for s in sorted(by)}
        out["segments_too_small"] = sum(1 for s in by if len(by[s]) < MIN_CORRELATION_ITEMS)
        out["queries_without_segment"] = missing
        if out["segments_too_small"] or missing:
            log.warning("[judge] %d segments have fewer than %d queries (no correlations); %d queries have no segment",
                        out["segments_too_small"], MIN_CORRELATION_ITEMS, missing)
    return out


# ---- system level --------------------------------------------------------------------------

def _sign_agree(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per element: the two differences have the same sign (a tie agrees only with a tie)."""
    return np.sign(a) == np.sign(b)


def _systems(judge: Mapping, human: Mapping) -> tuple[list[str], dict]:
    systems = sorted(set(map(str, judge)) & set(map(str, human)))
    left = {"judge_only_systems": sorted(set(map(str, judge)) - set(systems)),
            "human_only_systems": sorted(set(map(str, human)) - set(systems))}
    if left["judge_only_systems"] or left["human_only_systems"]:
        log.warning("[judge] systems left out (only one side has them): %s", left)
    if len(systems) < 2:
        raise ValueError(f"a system-level comparison needs at least 2 systems that both the judge and the humans "
                         f"scored; common: {systems} ({left})")
    return systems, left


def paired_difference_errors(judge: Mapping[str, Mapping[str, float]],
                             human: Mapping[str, Mapping[str, float]]) -> dict:
    """Errors of paired (A/B) differences: judge / human are system -> query -> value.

    For every pair of systems (a, b), a < b in sorted order, over the queries all four of
    judge[a], judge[b], human[a], human[b] cover, the error of the paired difference
    (judge_a - judge_b) - (human_a - human_b). ``pairs["a vs b"]`` = {a, b, n, error_mean,
    error_p10, error_median, error_p90, error_abs_mean, sign_agreement}, with sign_agreement the
    share of those queries where sign(judge difference) = sign(human difference) (a tie agrees
    only with a tie); ``pooled`` = the same over every (pair, query), plus ``errors``, the list of
    all errors (the paper's Figure 3, right). Systems only one side has are left out and listed.
    """
    systems, left = _systems(judge, human)
    J = {s: _finite(judge[s], f"the judge's values of system {s!r}") for s in systems}
    H = {s: _finite(human[s], f"the human values of system {s!r}") for s in systems}
    pairs, all_err, all_agree = {}, [], []
    for a, b in combinations(systems, 2):
        qs = sorted(set(J[a]) & set(J[b]) & set(H[a]) & set(H[b]))
        dj = np.array([J[a][q] - J[b][q] for q in qs], dtype=float)
        dh = np.array([H[a][q] - H[b][q] for q in qs], dtype=float)
        err = dj - dh
        agree = _sign_agree(dj, dh)
        pairs[f"{a} vs {b}"] = {"a": a, "b": b, "n": len(qs), **_error_stats(err),
                                "sign_agreement": float(agree.mean()) if len(qs) else None}
        if not qs:
            log.warning("[judge] systems %r and %r share no query scored by both the judge and the humans", a, b)
        all_err.extend(err.tolist())
        all_agree.extend(agree.tolist())
    pooled = {"n": len(all_err), **_error_stats(all_err),
              "sign_agreement": float(np.mean(all_agree)) if all_agree else None, "errors": all_err}
    return {"systems": systems, **left, "pairs": pairs, "pooled": pooled}


def system_agreement(judge: Mapping[str, Mapping[str, float]], human: Mapping[str, Mapping[str, float]],
                     alpha: float = 0.05) -> dict:
    """Whether the judge ranks systems as the humans do: judge / human are system -> query -> value.

    The system means are taken over the queries that every system covers under both the judge
    and the humans (``queries``; others left out, counted in ``queries_left_out``). ``kendall_tau``
    / ``spearman_rho``: scipy's tau-b / rho between the judge's and the humans' system means (with
    2 systems tau is +1 or -1, which scipy reports with p = 1; None where a side is constant);
    ``pairs``: the number of system pairs; ``sign_agreement``: the share of pairs whose mean
    difference has the same sign under judge and humans (a tie agrees only with a tie);
    ``significant_pairs``: pairs whose human paired t-test (scipy's ``ttest_rel`` over the
    queries) has p < ``alpha``; ``significant_sign_agreement``: among those, the share the judge
    orders the same way (None when there are none).
    """
    from scipy import stats

    systems, left = _systems(judge, human)
    J = {s: _finite(judge[s], f"the judge's values of system {s!r}") for s in systems}
    H = {s: _finite(human[s], f"the human values of system {s!r}") for s in systems}
    everyone = set.intersection(*(set(J[s]) & set(H[s]) for s in systems))
    union = set.union(*(set(J[s]) | set(H[s]) for s in systems))
    qs = sorted(everyone)
    if not qs:
        raise ValueError(f"no query is scored for every one of the systems {systems} by both the judge and the humans")
    if len(union) > len(qs):
        log.warning("[judge] system means over the %d queries every system covers; %d queries left out",
                    len(qs), len(union) - len(qs))
    jm = {s: float(np.mean([J[s][q] for q in qs])) for s in systems}
    hm = {s: float(np.mean([H[s][q] for q in qs])) for s in systems}
    corr = _correlations([jm[s] for s in systems], [hm[s] for s in systems])
    agree, significant, significant_agree = [], 0, 0
    for a, b in combinations(systems, 2):
        same = bool(_sign_agree(np.array([jm[a] - jm[b]]), np.array([hm[a] - hm[b]]))[0])
        agree.append(same)
        ha = np.array([H[a][q] for q in qs])
        hb = np.array([H[b][q] for q in qs])
        if len(qs) < 2 or np.all(ha - hb == (ha - hb)[0]):
            p = None  # no variance of the differences: the t-test is undefined
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                p = _num(stats.ttest_rel(ha, hb).pvalue)
        if p is not None and p < alpha:
            significant += 1
            significant_agree += same
    return {"systems": systems, **left, "queries": len(qs), "queries_left_out": len(union) - len(qs),
            "judge_means": jm, "human_means": hm, "kendall_tau": corr["kendall_tau"], "kendall_p": corr["kendall_p"],
            "spearman_rho": corr["spearman_rho"], "spearman_p": corr["spearman_p"], "pairs": len(agree),
            "sign_agreement": float(np.mean(agree)), "alpha": alpha, "significant_pairs": significant,
            "significant_sign_agreement": significant_agree / significant if significant else None}


# ---- the figure and the tables -------------------------------------------------------------

def error_histograms(query_errors: Sequence[float], pair_errors: Sequence[float], path, title: str = "") -> Path:
    """The paper's Figure 3 as a PNG at ``path``: the histogram of the query-level errors (judge -
    human) beside that of the errors of paired differences between two systems, each with a line
    at 0 and at the mean. Matplotlib's Agg canvas, imported here and used without pyplot (no
    global backend is changed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    panels = [(query_errors, "query-level error (judge - human)"),
              (pair_errors, "error of paired differences\n(judge_a - judge_b) - (human_a - human_b)")]
    for i, (errors, label) in enumerate(panels):
        ax = fig.add_subplot(1, 2, i + 1)
        e = np.asarray(list(errors), dtype=float)
        e = e[np.isfinite(e)]
        if len(e):
            ax.hist(e, bins=min(50, max(10, int(np.sqrt(len(e))))), color="#4c72b0", edgecolor="white")
            ax.axvline(0.0, color="black", linewidth=0.8)
            ax.axvline(float(e.mean()), color="#c44e52", linestyle="--", linewidth=1.0, label=f"mean {e.mean():+.4f}")
            ax.legend(loc="upper right", fontsize=8)
        else:
            ax.text(0.5, 0.5, "no errors", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel(label)
        ax.set_ylabel("queries" if i == 0 else "(pair, query)")
        ax.set_title(f"n = {len(e)}", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    return path


def _f(x, pct: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{100 * x:.1f}%" if pct else f"{x:.4f}"


def agreement_markdown(label: dict | None, query: dict | None, system: dict | None, paper: bool = True) -> str:
    """Markdown tables of the three levels (a None level is left out); with ``paper`` the paper's
    figures (:data:`PAPER`, its 5-point scale and sDCG@25) in a row beside ours."""
    lines: list[str] = []
    if label is not None:
        lines += ["**Label level** (pairs labelled by both)", "",
                  "| | Exact | Within one | Cohen's kappa | Weighted kappa (linear) | Pairs |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |",
                  f"| judge | {_f(label.get('exact'), True)} | {_f(label.get('within_one'), True)} | "
                  f"{_f(label.get('kappa'))} | {_f(label.get('weighted_kappa'))} | {label.get('pairs', 0)} |"]
        for s, v in (label.get("segments") or {}).items():
            lines.append(f"| {s} | {_f(v.get('exact'), True)} | {_f(v.get('within_one'), True)} | {_f(v.get('kappa'))} | "
                         f"{_f(v.get('weighted_kappa'))} | {v.get('pairs', 0)} |")
        if paper:
            lines.append(f"| paper ({PAPER['scale']}) | {_f(PAPER['label']['exact'], True)} | "
                         f"{_f(PAPER['label']['within_one'], True)} | n/a | n/a | n/a |")
        lines.append("")
    if query is not None:
        lines += ["**Query level** (query-level metric from judge labels vs from human labels; error = judge - human)",
                  "", "| | Kendall tau | Spearman rho | Error mean | P10 | Median | P90 | Queries |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]

        def row(name, v):
            return (f"| {name} | {_f(v.get('kendall_tau'))} | {_f(v.get('spearman_rho'))} | {_f(v.get('error_mean'))} | "
                    f"{_f(v.get('error_p10'))} | {_f(v.get('error_median'))} | {_f(v.get('error_p90'))} | "
                    f"{v.get('queries', 'n/a')} |")

        lines.append(row("overall", query))
        for s, v in (query.get("segments") or {}).items():
            lines.append(row(s, v))
        if paper:
            lines.append(row(f"paper, overall ({PAPER['query']['measure']})", {**PAPER["query"], "queries": "n/a"}))
        lines.append("")
    if system is not None:
        lines += ["**System level** (systems ranked by their mean metric)", "",
                  "| Kendall tau | Spearman rho | Sign agreement (pairs) | Sign agreement (human-significant pairs) | Systems |",
                  "| ---: | ---: | ---: | ---: | ---: |",
                  f"| {_f(system.get('kendall_tau'))} | {_f(system.get('spearman_rho'))} | "
                  f"{_f(system.get('sign_agreement'))} ({system.get('pairs', 0)}) | "
                  f"{_f(system.get('significant_sign_agreement'))} ({system.get('significant_pairs', 0)}) | "
                  f"{len(system.get('systems', []))} |", ""]
    if paper:
        lines.append(f"Paper: {PAPER['citation']}.")
    return "\n".join(lines).rstrip() + "\n"
