"""Clicks against human grades: each click model's relevance estimate of the judged (query, document)
pairs of a log, per grade, and its rank correlation with the grades (scipy's Spearman rho and
Kendall tau-b, ties handled by both). Run on a real log with graded judgments (the TREC Session
Track), it says how much relevance each click model reads out of real behaviour.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from scipy.stats import kendalltau, spearmanr

from uptrain.clicks.log import ClickLog


def grade_agreement(log: ClickLog, grades: Mapping[tuple[str, str], int], models: Sequence[str],
                    model_kwargs: Mapping[str, dict] | None = None) -> dict:
    """model -> {"pairs", "spearman_rho", "kendall_tau", "per_grade": {grade: {"pairs", "mean", "std"}}};
    every model fit on the whole ``log``; ``grades`` maps (query key, doc id) -> grade (judged pairs only)."""
    from uptrain.clicks.models import make

    model_kwargs = model_kwargs or {}
    pairs = sorted(grades)
    g = np.array([grades[p] for p in pairs], dtype=float)
    out: dict = {}
    for name in models:
        model = make(name, **dict(model_kwargs.get(name) or {})).fit(log)
        table = model.relevance_table()
        est = np.array([table.get(p, np.nan) for p in pairs], dtype=float)
        ok = np.isfinite(est)
        row: dict = {"pairs": int(ok.sum()), "not_estimated": int((~ok).sum())}
        if ok.sum() >= 3 and len(np.unique(g[ok])) > 1:
            if len(np.unique(est[ok])) == 1:  # one value for every pair (GCTR, RCTR): no rank correlation
                row["spearman_rho"] = row["kendall_tau"] = float("nan")
            else:
                row["spearman_rho"] = float(spearmanr(est[ok], g[ok]).statistic)
                row["kendall_tau"] = float(kendalltau(est[ok], g[ok]).statistic)
        row["per_grade"] = {
            str(int(v)): {"pairs": int(((g == v) & ok).sum()), "mean": float(est[(g == v) & ok].mean()),
                          "std": float(est[(g == v) & ok].std())}
            for v in sorted(np.unique(g[ok]))
        }
        out[name] = row
    return out


def agreement_table(result: Mapping[str, dict], judged: int, unjudged: int) -> str:
    grades = sorted({int(k) for r in result.values() for k in r["per_grade"]})
    head = "| model | pairs | Spearman rho | Kendall tau | " + " | ".join(f"mean @ grade {v}" for v in grades) + " |"
    sep = "| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in grades) + " |"
    rows = []
    for name, r in result.items():
        cells = []
        for v in grades:
            c = r["per_grade"].get(str(v))
            cells.append("n/a" if not c else f"{c['mean']:.3f} (n={c['pairs']})")
        rho, tau = r.get("spearman_rho"), r.get("kendall_tau")
        def fmt(x):
            return "n/a" if x is None else ("n/a (constant)" if x != x else f"{x:.3f}")

        rows.append(f"| {name} | {r['pairs']} | {fmt(rho)} | {fmt(tau)} | " + " | ".join(cells) + " |")
    return (f"Each model fit on the whole log; its relevance estimate of the {judged} shown (query, document) pairs "
            f"that have a human grade ({unjudged} shown pairs have none), per grade, and its rank correlation with "
            "the grades (scipy: Spearman rho, Kendall tau-b; n/a (constant): the model gives every pair one value, "
            "as GCTR and RCTR do by design).\n\n" + "\n".join([head, sep, *rows]))
