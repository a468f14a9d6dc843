"""Effectiveness measures of a run through ir_measures, with per-query values kept.

The measures are computed by ir_measures' default pipeline, which picks a provider
per measure (``RR@10`` goes to the MS MARCO provider, which applies the cutoff;
pytrec_eval would silently compute ``RR`` without it). Around it this module fixes
three things ir_measures leaves open:

* the query set: every qrels query with at least one judgment of relevance > 0;
  a query of that set without a ranking counts 0 (ir_measures would skip it, which
  inflates the mean), and run queries outside the set are ignored;
* the order of tied scores: each ranking is re-scored by its rank, with ties broken
  by ascending document id as in the run file, because providers break ties
  differently (pytrec_eval by descending document id, the MS MARCO provider by
  input order) and would otherwise disagree on the same run;
* the aggregate: the mean of the per-query values over the query set.

Gains are the relevance grades as given; ir_measures' nDCG uses linear gain and
counts a negative grade (e.g. Cranfield's -1) as gain 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import ir_measures

from uptrain.retrieve.runfile import ranked


@dataclass
class EvalResult:
    measures: list[str]  # measure names as given by the config
    aggregate: dict[str, float]  # measure -> mean over the evaluated queries
    per_query: dict[str, dict[str, float]]  # measure -> query id -> value
    num_queries: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "measures": list(self.measures),
            "aggregate": dict(self.aggregate),
            "per_query": {m: dict(v) for m, v in self.per_query.items()},
            "num_queries": self.num_queries,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EvalResult":
        measures = list(d["measures"])
        return cls(
            measures=measures,
            aggregate={m: float(d["aggregate"][m]) for m in measures},
            per_query={m: {str(q): float(x) for q, x in d["per_query"][m].items()} for m in measures},
            num_queries=int(d["num_queries"]),
        )


def parse_measures(measures: list[str]) -> dict[str, Any]:
    """Measure name -> ir_measures measure; ValueError listing every name that is unusable."""
    if isinstance(measures, str):
        raise ValueError(f"measures must be a list of names, got the string {measures!r}")
    parsed: dict[str, Any] = {}
    bad: list[str] = []
    for name in measures:
        try:
            m = ir_measures.parse_measure(str(name))
            # a name can parse yet have no provider (e.g. Bpref@10: no cutoff for Bpref)
            if not ir_measures.DefaultPipeline.supports(m):
                raise ValueError("no provider")
        except Exception as e:
            bad.append(f"{name!r} ({e})")
            continue
        parsed[name] = m
    if bad:
        raise ValueError(
            "ir_measures cannot evaluate these measures: " + "; ".join(bad)
            + " (expected names like 'RR@10', 'R@100', 'nDCG@10')"
        )
    if not parsed:
        raise ValueError("no measures given")
    return parsed


def evaluate_run(
    run: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    measures: list[str],
) -> EvalResult:
    """Evaluate ``run`` (query -> doc -> score) against graded ``qrels`` (query -> doc -> grade)."""
    parsed = parse_measures(measures)
    names = list(parsed)  # unique, in the given order

    queries = [str(q) for q, rels in qrels.items() if any(int(r) > 0 for r in rels.values())]
    if not queries:
        raise ValueError("the qrels have no query with a judgment of relevance > 0; there is nothing to evaluate")
    qset = set(queries)
    eval_qrels = {str(q): {str(d): int(r) for d, r in qrels[q].items()} for q in qrels if str(q) in qset}
    eval_run: dict[str, dict[str, float]] = {}
    for q, scores in run.items():
        q = str(q)
        if q in qset and scores:
            order = ranked({str(d): s for d, s in scores.items()})
            n = len(order)
            eval_run[q] = {d: float(n - i) for i, (d, _) in enumerate(order)}

    per_query: dict[str, dict[str, float]] = {name: {q: 0.0 for q in queries} for name in names}
    by_measure: dict[Any, list[str]] = {}
    for name, m in parsed.items():
        by_measure.setdefault(m, []).append(name)
    if eval_run:
        # query ids go to the providers as 1..n: gdeval (ERR@k, ir_measures' only ERR provider) reads
        # numeric topic ids only, and fails on any other; every result is mapped back
        alias = {q: str(i + 1) for i, q in enumerate(queries)}
        back = {a: q for q, a in alias.items()}
        aliased_qrels = {alias[q]: rels for q, rels in eval_qrels.items()}
        aliased_run = {alias[q]: scores for q, scores in eval_run.items()}
        for metric in ir_measures.iter_calc(list(by_measure), aliased_qrels, aliased_run):
            q = back.get(metric.query_id)
            if q is None:
                continue
            for name in by_measure[metric.measure]:
                per_query[name][q] = float(metric.value)

    aggregate = {name: sum(per_query[name].values()) / len(queries) for name in names}
    return EvalResult(measures=names, aggregate=aggregate, per_query=per_query, num_queries=len(queries))
