"""The run report in Markdown, and the plain-text summary printed at the end of a run.

Shapes used throughout:

* ``results``: group name (e.g. "in-domain") -> collection name -> :class:`EvalResult`
* ``markers``: group -> collection -> measure -> marker string ("+", "-", "+†", ...)
"""

from __future__ import annotations

import math
import re
from typing import Mapping

from uptrain.evaluate.metrics import EvalResult

MISSING = "n/a"
# counts shown as their own columns in the Collections table, in this order
COUNT_KEYS = ("docs", "queries", "qrels", "judged_queries")


def _num(value: float) -> str:
    return f"{value:.4f}" if value is not None and not math.isnan(value) else MISSING


def _cell(text: str) -> str:
    # a pipe inside a cell would end it early
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[str]], numeric: list[bool]) -> str:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |"]
    lines.append("| " + " | ".join("---:" if n else "---" for n in numeric) + " |")
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _average(group_results: Mapping[str, EvalResult], measure: str) -> float | None:
    values = [r.aggregate[measure] for r in group_results.values() if measure in r.aggregate]
    return sum(values) / len(values) if values else None


def _rows(
    group_results: Mapping[str, EvalResult],
    measures: list[str],
    markers: Mapping[str, Mapping[str, str]] | None,
    average_row: bool,
) -> list[tuple[str, list[tuple[str, str]]]]:
    """(row label, [(number, marker) per measure]) for each collection, then the average."""
    markers = markers or {}
    rows = []
    for name, res in group_results.items():
        marks = markers.get(name, {})
        rows.append(
            (name, [(_num(res.aggregate[m]) if m in res.aggregate else MISSING, marks.get(m, "")) for m in measures])
        )
    if average_row and len(group_results) > 1:
        avg = [_average(group_results, m) for m in measures]
        rows.append(("Average", [(MISSING if a is None else _num(a), "") for a in avg]))
    return rows


def group_measures(group_results: Mapping[str, EvalResult], measures: list[str]) -> list[str]:
    """The measures at least one collection of the group was evaluated with (groups may differ)."""
    present = [m for m in measures if any(m in r.aggregate for r in group_results.values())]
    return present or list(measures)


def results_table(
    group_results: Mapping[str, EvalResult],
    measures: list[str],
    markers: Mapping[str, Mapping[str, str]] | None = None,
    average_row: bool = True,
) -> str:
    """Markdown table: one row per collection, one column per measure (4 decimals + marker).

    ``markers`` is collection -> measure -> marker for this group. An ``Average`` row
    (mean of the collection aggregates) follows when there is more than one collection.
    """
    rows = _rows(group_results, measures, markers, average_row)
    body = [[label] + [num + mark for num, mark in cells] for label, cells in rows]
    return _md_table(["Collection", *measures], body, [False] + [True] * len(measures))


def _legend(baseline_name: str | None, alpha: float, extra: Mapping[str, str] | None) -> list[str]:
    lines = []
    if baseline_name is not None:
        lines.append(
            f"`+` / `-`: significantly better / worse than {baseline_name} "
            f"(two-sided paired t-test, p < {alpha:g})"
        )
    for mark, meaning in (extra or {}).items():
        lines.append(f"`{mark}`: {meaning}")
    return lines


def _flat_counts(stats: Mapping) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in stats.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, (int, float)):
            out[str(key)] = value
        elif isinstance(value, Mapping):
            # counted problems may be nested one level (e.g. {"problems": {...}})
            for k, v in value.items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    out[str(k)] = v
    return out


def _collections_table(stats: Mapping[str, Mapping]) -> str:
    flat = {name: _flat_counts(s) for name, s in stats.items()}
    columns = [k for k in COUNT_KEYS if any(k in f for f in flat.values())]
    rows = []
    for name, counts in flat.items():
        warnings = [f"{k}: {v:g}" for k, v in counts.items() if k not in COUNT_KEYS and v]
        rows.append(
            [name]
            + [f"{counts[k]:g}" if k in counts else MISSING for k in columns]
            + [", ".join(warnings) if warnings else "none"]
        )
    return _md_table(["Collection", *columns, "Warnings"], rows, [False] + [True] * len(columns) + [False])


def _stages_table(stages: list[Mapping]) -> str:
    with_label = any(s.get("label") for s in stages)
    header = ["Stage"] + (["Label"] if with_label else []) + ["Key", "Cache", "Seconds"]
    rows = []
    for s in stages:
        seconds = s.get("seconds")
        rows.append(
            [str(s.get("stage", ""))]
            + ([str(s.get("label") or "")] if with_label else [])
            + [f"`{s.get('key', '')}`", str(s.get("cache", "")), MISSING if seconds is None else f"{float(seconds):.2f}"]
        )
    numeric = [False] * (len(header) - 1) + [True]
    hits = sum(s.get("cache") == "hit" for s in stages)
    total = sum(float(s.get("seconds") or 0.0) for s in stages)
    summary = f"{hits} cache hit(s), {len(stages) - hits} built, {total:.2f} s in total."
    return _md_table(header, rows, numeric) + "\n\n" + summary


def _fenced(text: str, lang: str) -> str:
    # the fence must be longer than any backtick run inside the block
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text.rstrip()}\n{fence}"


def render_report(
    title: str,
    results: Mapping[str, Mapping[str, EvalResult]],
    measures: list[str],
    markers: Mapping[str, Mapping[str, Mapping[str, str]]] | None = None,
    baseline_name: str | None = None,
    stats: Mapping[str, Mapping] | None = None,
    config_yaml: str | None = None,
    stages: list[Mapping] | None = None,
    alpha: float = 0.05,
    legend: Mapping[str, str] | None = None,
    sections: Mapping[str, str] | None = None,
    segments: Mapping[str, Mapping[str, Mapping[str, EvalResult]]] | None = None,
    segment_markers: Mapping[str, Mapping[str, Mapping[str, Mapping[str, str]]]] | None = None,
) -> str:
    """The run's report: a results table per group (then one per collection with query
    ``segments``: group -> collection -> segment -> result), the marker legend, collection
    statistics, further ``sections`` (title -> Markdown body, e.g. annotation quality),
    the stages with their cache status and the resolved config.

    ``legend`` adds lines for further markers, e.g. ``{"†": "significantly better than BM25"}``.
    """
    markers = markers or {}
    parts = [f"# {title}"]
    legend_lines = _legend(baseline_name, alpha, legend)
    if legend_lines:
        parts.append("\n".join(f"{line}  " for line in legend_lines).rstrip())
    for group, group_results in results.items():
        section = [f"## {group}"]
        if group_results:
            section.append(results_table(group_results, group_measures(group_results, measures), markers.get(group)))
            counts = ", ".join(f"{name}: {r.num_queries}" for name, r in group_results.items())
            section.append(f"Evaluated queries (with at least one relevant judgment): {counts}.")
            for name, segs in ((segments or {}).get(group) or {}).items():
                if not segs:
                    continue
                labelled = {f"{seg} (n={r.num_queries})": r for seg, r in segs.items()}
                marks = ((segment_markers or {}).get(group) or {}).get(name) or {}
                marks = {f"{seg} (n={r.num_queries})": marks.get(seg, {}) for seg, r in segs.items()}
                section.append(f"### {name} by query segment\n\n"
                               + results_table(labelled, group_measures(labelled, measures), marks, average_row=False))
        else:
            section.append("No collections.")
        parts.append("\n\n".join(section))
    if stats:
        parts.append("## Collections\n\n" + _collections_table(stats))
    for heading, body in (sections or {}).items():
        parts.append(f"## {heading}\n\n{body.strip()}")
    if stages:
        parts.append("## Stages\n\n" + _stages_table(stages))
    if config_yaml is not None:
        parts.append("## Config\n\n" + _fenced(config_yaml, "yaml"))
    return "\n\n".join(parts) + "\n"


def console_table(
    results: Mapping[str, Mapping[str, EvalResult]],
    measures: list[str],
    markers: Mapping[str, Mapping[str, Mapping[str, str]]] | None = None,
) -> str:
    """Plain-text summary for the terminal: one aligned block per group."""
    markers = markers or {}
    blocks = []
    for group, group_results in results.items():
        measures_g = group_measures(group_results, measures)
        rows = _rows(group_results, measures_g, markers.get(group), average_row=True)
        # markers get a fixed-width slot after the number so the decimal points line up
        mark_w = [max((len(cells[i][1]) for _, cells in rows), default=0) for i in range(len(measures_g))]
        text_rows = [[label] + [num + mark.ljust(mark_w[i]) for i, (num, mark) in enumerate(cells)] for label, cells in rows]
        header = ["Collection", *measures_g]
        widths = [max(len(r[i]) for r in [header, *text_rows]) for i in range(len(header))]

        def line(cells: list[str]) -> str:
            first = cells[0].ljust(widths[0])
            return "  ".join([first] + [c.rjust(w) for c, w in zip(cells[1:], widths[1:])]).rstrip()

        lines = [group, line(header), "  ".join("-" * w for w in widths)]
        lines += [line(r) for r in text_rows]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)
