"""Annotation quality against human labels, in the layout of the paper's Table 1.

For each step's positives P_q and the human positives H_q of query q (arXiv 2504.05220,
Table 1): precision = mean over queries with P_q non-empty of |P_q & H_q| / |P_q|,
recall = mean over queries with H_q non-empty of |P_q & H_q| / |H_q|, and the average
number of positives per query, mean |P_q| over all annotated queries.

Probability-scored steps (the single-token schemes of :mod:`uptrain.annotate.steps`) are also
summarised by how their probabilities separate the human labels (:func:`score_separation`): the
mean probability over the (query, passage) pairs scored whose passage is a human positive of its
query, against the mean over the other scored pairs.
"""

from __future__ import annotations

from typing import Mapping, Sequence

DASH = "\u2014"


def selection_quality(selected: Mapping[str, Sequence[str]], human: Mapping[str, Sequence[str]]) -> dict:
    queries = list(selected)
    precisions, recalls = [], []
    for q in queries:
        p, h = set(selected[q]), set(human.get(q, ()))
        if p:
            precisions.append(len(p & h) / len(p))
        if h:
            recalls.append(len(p & h) / len(h))
    n = len(queries)
    return {
        "queries": n,
        "precision": sum(precisions) / len(precisions) if precisions else 0.0,
        "recall": sum(recalls) / len(recalls) if recalls else 0.0,
        "avg_positives": sum(len(set(selected[q])) for q in queries) / n if n else 0.0,
        "queries_without_positive": sum(1 for q in queries if not selected[q]),
    }


def table1_markdown(rows: Mapping[str, dict]) -> str:
    lines = [
        "| Annotation | Precision | Recall | Avg. positives | Queries without positive |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['precision']:.4f} | {r['recall']:.4f} | {r['avg_positives']:.2f} | "
            f"{r['queries_without_positive']} |"
        )
    return "\n".join(lines)



def score_separation(scores: Mapping[str, Mapping[str, float]], human: Mapping[str, Sequence[str]]) -> dict:
    """Mean probability of human-positive vs other scored passages (``scores``: query -> passage ->
    probability); a mean over no pair is None."""
    pos, other = [], []
    for q, by_doc in scores.items():
        h = set(human.get(q, ()))
        for d, p in by_doc.items():
            (pos if d in h else other).append(float(p))
    return {
        "mean_positive": sum(pos) / len(pos) if pos else None,
        "positives": len(pos),
        "mean_other": sum(other) / len(other) if other else None,
        "others": len(other),
    }


def _fmt(value, spec: str) -> str:
    return DASH if value is None else format(value, spec)


_SCORED = {"relsel": "P(relevant)", "utilrank": "label probability (normalised over its window)"}


def steps_markdown(costs: Mapping[str, dict], quality: Mapping[str, dict], separation: Mapping[str, dict] | None = None,
                   cost_missing: int = 0) -> str:
    """Per step, its scheme beside its Table 1 quality (none for the pseudo answer) and its cost:
    prompts, forward passes (single-token steps; a generating step runs one per generated token
    instead), generated tokens, seconds; then one line per probability-scored step."""
    lines = [
        "| Step | Scheme | Precision | Recall | Avg. positives | Prompts | Forward passes | Generated tokens | Seconds |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for step, c in costs.items():
        q = quality.get(step, {})
        lines.append(
            f"| {step} | {c.get('scheme', DASH)} | {_fmt(q.get('precision'), '.4f')} | {_fmt(q.get('recall'), '.4f')} | "
            f"{_fmt(q.get('avg_positives'), '.2f')} | {_fmt(c.get('prompts'), 'd')} | {_fmt(c.get('forward_passes'), 'd')} | "
            f"{_fmt(c.get('generated_tokens'), 'd')} | {_fmt(c.get('seconds'), '.1f')} |"
        )
    notes = []
    for step, sep in (separation or {}).items():
        what = _SCORED.get(step, "probability")
        notes.append(f"- {step}: mean {what} {_fmt(sep['mean_positive'], '.3f')} over {sep['positives']} human-positive "
                     f"passages vs {_fmt(sep['mean_other'], '.3f')} over {sep['others']} other passages.")
    for step, c in costs.items():
        if c.get("mean_label_mass") is not None:
            notes.append(f"- {step}: the window's labels took on average {c['mean_label_mass']:.3f} of the "
                         "next-token probability after '[' (the rest went to other tokens).")
    if cost_missing:
        notes.append(f"- {cost_missing} queries were annotated without per-step costs (an earlier version); "
                     "the costs above leave them out.")
    return "\n".join(lines + ([""] + notes if notes else []))
