"""Annotation quality against human labels, in the layout of the paper's Table 1.

For each step's positives P_q and the human positives H_q of query q (arXiv 2504.05220,
Table 1): precision = mean over queries with P_q non-empty of |P_q & H_q| / |P_q|,
recall = mean over queries with H_q non-empty of |P_q & H_q| / |H_q|, and the average
number of positives per query, mean |P_q| over all annotated queries.
"""

from __future__ import annotations

from typing import Mapping, Sequence


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
