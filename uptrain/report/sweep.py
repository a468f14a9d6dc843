"""The sweep report: many finished runs side by side, in the layout of Table 4 of
Zhang et al., "Leveraging LLMs for Utility-Focused Annotation" (arXiv 2504.05220).

    uptrain-report multirun/utilsel/2025-06-01/10-00-00 outputs/human/2025-06-01/09-00-00
    uptrain-report multirun/ --baseline human --measures in_domain=RR@10,nDCG@10 out_of_domain=nDCG@10
    uptrain-report multirun/ --findings --reference experiments/utility/reference.csv --out report/

Each PATH is a run directory (it holds ``metrics.json``) or a folder searched
recursively for them (a Hydra multirun directory). A run directory's nested
``baseline_<name>/`` copy is used only when no run of the sweep has that name.
Of two runs with one experiment name, the newer ``metrics.json`` is kept.

Rows are grouped by ``report_row.group`` (:data:`ROW_GROUPS` first, then the others
alphabetically); within a group, rows with a ``report_row.order`` come first in that
order, the others follow by experiment name. Columns: each evaluation group's collections x measures, and the group
average (the mean of its collection values, as the run wrote it) for groups of
several collections. A cell's markers come from the two-sided paired t-test of
:func:`uptrain.evaluate.significance.paired_ttest` over per-query values: ``+`` /
``-`` significantly better / worse than the baseline run, ``†`` significantly
better than the run's ``second_baseline``; an average cell is tested on the
queries of all its collections pooled (ids prefixed with the collection name).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from uptrain.evaluate.significance import marker, paired_ttest
from uptrain.report import findings as findings_mod
from uptrain.report import plots
from uptrain.report.markdown import MISSING, _md_table

ALPHA = 0.05
ROW_GROUPS = ("baselines", "LLMs", "relevance vs utility", "loss", "positive sampling", "combination")
EVAL_GROUPS = ("in_domain", "out_of_domain")
DEFAULT_MEASURES = {"in_domain": ["RR@10", "nDCG@10"], "out_of_domain": ["nDCG@10"]}
FALLBACK_MEASURES = ["nDCG@10"]  # for evaluation groups other than the two above
AVERAGE = "average"
# words of a label_source that name how labels are mixed or where they come from, not the label family
SOURCE_WORDS = {"curriculum", "interleave", "llm", "human"}


class SweepError(Exception):
    """A problem with the inputs, reported in one line with exit status 2."""


@dataclass
class Run:
    """One finished run: its directory and its ``metrics.json``."""

    path: Path
    metrics: dict[str, Any]
    mtime: float

    @property
    def name(self) -> str:
        return str(self.metrics.get("name") or self.path.name)

    def _row(self) -> dict[str, Any]:
        return self.metrics.get("report_row") or {}

    @property
    def row_group(self) -> str:
        return str(self._row().get("group") or "other")

    @property
    def label(self) -> str:
        return str(self._row().get("label") or self.name)

    @property
    def order(self) -> float | None:
        order = self._row().get("order")
        return None if order is None else float(order)

    @property
    def human_ratio(self) -> float | None:
        ratio = self.metrics.get("human_ratio")
        return None if ratio is None else float(ratio)

    @property
    def second_baseline(self) -> str | None:
        return self.metrics.get("second_baseline") or None

    @property
    def label_source(self) -> str:
        return str(self.metrics.get("label_source") or "")

    @property
    def family(self) -> str:
        """The label family: the first word of label_source that is not a source or mixing word
        ("curriculum(llm:utilsel -> human 20%)" -> "utilsel"), else "human", else the name's first part."""
        words = "".join(c if c.isalnum() else " " for c in self.label_source.lower()).split()
        rest = [w for w in words if w not in SOURCE_WORDS and not w.isdigit()]
        if rest:
            return rest[0]
        return "human" if "human" in words else self.name.split("_")[0]

    def collections(self, group: str) -> list[str]:
        return list(self.metrics.get("groups", {}).get(group, {}).get("collections", {}))

    def value(self, group: str, measure: str, collection: str | None = None) -> float | None:
        """A collection's aggregate, or with ``collection=None`` the group average."""
        g = self.metrics.get("groups", {}).get(group, {})
        table = g.get("average", {}) if collection is None else g.get("collections", {}).get(collection, {})
        value = table.get(measure)
        return None if value is None else float(value)

    def per_query(self, group: str, measure: str, collection: str | None = None) -> dict[str, float] | None:
        """Query id -> value; with ``collection=None`` all the group's collections pooled as "collection/id"."""
        by_collection = self.metrics.get("per_query", {}).get(group, {})
        if collection is not None:
            values = by_collection.get(collection, {}).get(measure)
            return None if values is None else {str(q): float(v) for q, v in values.items()}
        pooled: dict[str, float] = {}
        for c in self.collections(group):
            values = by_collection.get(c, {}).get(measure)
            if values is None:
                return None  # a pooled test over some collections only would not match the average
            pooled.update({f"{c}/{q}": float(v) for q, v in values.items()})
        return pooled or None


def load_run(metrics_path: Path) -> Run:
    try:
        metrics = json.loads(metrics_path.read_text())
    except (OSError, ValueError) as e:
        raise SweepError(f"cannot read {metrics_path}: {e}") from None
    if not isinstance(metrics, dict):
        raise SweepError(f"{metrics_path} does not hold a JSON object")
    return Run(metrics_path.parent, metrics, metrics_path.stat().st_mtime)


def _newest(runs: Iterable[Run], warn: Callable[[str], None] | None) -> dict[str, Run]:
    """Name -> the run with the newest metrics.json; ``warn`` hears about each one dropped."""
    kept: dict[str, Run] = {}
    for run in runs:
        old = kept.get(run.name)
        if old is not None:
            newer, older = (run, old) if run.mtime > old.mtime else (old, run)
            if warn:
                warn(f"two runs named '{run.name}': kept {newer.path} (newer), ignored {older.path}")
            run = newer
        kept[run.name] = run
    return kept


def discover(paths: list[Path], warn: Callable[[str], None] | None = None) -> list[Run]:
    """The runs under ``paths`` (run directories or folders searched recursively), one per name."""
    found: list[Run] = []
    nested: list[Run] = []
    for path in paths:
        files = [path / "metrics.json"] if (path / "metrics.json").is_file() else sorted(path.rglob("metrics.json"))
        if not files:
            raise SweepError(f"no metrics.json in or under {path}")
        dirs = {f.parent for f in files}
        for f in files:
            # a run's baseline_<name>/ copy sits below another run's directory
            inside_run = any(parent in dirs for parent in f.parent.parents)
            (nested if inside_run else found).append(load_run(f))
    runs = _newest(found, warn)
    for name, copy in _newest(nested, None).items():
        runs.setdefault(name, copy)
    return list(runs.values())


def sort_rows(runs: list[Run]) -> list[Run]:
    """Table 4's row order: known groups first, then others alphabetically; by ``order``, else name."""
    def key(run: Run):
        g = run.row_group
        group_key = (ROW_GROUPS.index(g), "") if g in ROW_GROUPS else (len(ROW_GROUPS), g)
        return group_key, run.order is None, run.order or 0.0, run.name

    return sorted(runs, key=key)


@dataclass(frozen=True)
class Column:
    group: str
    collection: str | None  # None: the group average
    measure: str

    @property
    def key(self) -> str:
        return f"{self.group}/{self.collection or AVERAGE}/{self.measure}"

    @property
    def header(self) -> str:
        where = self.collection or f"{self.group} avg"
        return f"{where} {self.measure}"


def parse_measures(tokens: list[str] | None) -> dict[str, list[str]]:
    """``GROUP=M1,M2`` sets one evaluation group's measures; bare names set those of every other group."""
    tokens = tokens or []
    named = {g: m.split(",") for g, _, m in (t.partition("=") for t in tokens if "=" in t)}
    bare = [t for t in tokens if "=" not in t]
    return {**({"*": bare} if bare else DEFAULT_MEASURES), **named}


def columns(runs: list[Run], measures: dict[str, list[str]]) -> list[Column]:
    groups: list[str] = []
    collections: dict[str, list[str]] = {}
    for run in runs:
        for g in run.metrics.get("groups", {}):
            if g not in collections:
                groups.append(g)
                collections[g] = []
            collections[g] += [c for c in run.collections(g) if c not in collections[g]]
    groups.sort(key=lambda g: (EVAL_GROUPS.index(g) if g in EVAL_GROUPS else len(EVAL_GROUPS), g))
    cols = []
    for g in groups:
        names = measures.get(g) or measures.get("*") or FALLBACK_MEASURES
        cols += [Column(g, c, m) for c in collections[g] for m in names]
        if len(collections[g]) > 1:
            cols += [Column(g, None, m) for m in names]
    return cols


def cell(run: Run, col: Column, baseline: Run | None, second: Run | None) -> dict[str, Any]:
    """Value and markers of one cell, with the p-values behind them."""
    value = run.value(col.group, col.measure, col.collection)
    out: dict[str, Any] = {"value": value, "marker": "", "p_baseline": None, "p_second": None}
    mine = run.per_query(col.group, col.measure, col.collection)
    if value is None or mine is None or run is baseline:
        return out
    for other, field, better, worse in ((baseline, "p_baseline", "+", "-"), (second, "p_second", "†", "")):
        theirs = other.per_query(col.group, col.measure, col.collection) if other is not None else None
        if theirs:
            out[field] = paired_ttest(mine, theirs).p
            out["marker"] += marker(mine, theirs, alpha=ALPHA, better=better, worse=worse)
    return out


def build(runs: list[Run], baseline_name: str, measures: dict[str, list[str]]) -> dict[str, Any]:
    """The sweep's numbers, as written to sweep.json."""
    by_name = {r.name: r for r in runs}
    baseline = by_name.get(baseline_name)
    cols = columns(runs, measures)
    rows = []
    for run in sort_rows(runs):
        second = by_name.get(run.second_baseline) if run.second_baseline else None
        rows.append({
            "name": run.name, "group": run.row_group, "label": run.label, "path": str(run.path),
            "label_source": run.label_source, "family": run.family, "human_ratio": run.human_ratio,
            "second_baseline": run.second_baseline, "second_baseline_present": second is not None,
            "cells": {c.key: cell(run, c, baseline, second) for c in cols},
        })
    return {
        "baseline": baseline_name if baseline else None,
        "baseline_requested": baseline_name,
        "test": "two-sided paired t-test over per-query values",
        "alpha": ALPHA,
        "columns": [{"key": c.key, "group": c.group, "collection": c.collection, "measure": c.measure} for c in cols],
        "rows": rows,
    }


def results_table(data: dict[str, Any]) -> str:
    """Markdown: a Group column filled on each group's first row (the paper's row spans), then Method."""
    cols = data["columns"]
    body, previous = [], None
    for row in data["rows"]:
        cells = []
        for c in cols:
            x = row["cells"][c["key"]]
            cells.append(MISSING if x["value"] is None else f"{x['value']:.3f}{x['marker']}")
        body.append([row["group"] if row["group"] != previous else "", row["label"], *cells])
        previous = row["group"]
    header = ["Group", "Method"] + [Column(c["group"], c["collection"], c["measure"]).header for c in cols]
    return _md_table(header, body, [False, False] + [True] * len(cols))


def legend(data: dict[str, Any]) -> str:
    base = data["baseline"]
    lines = [
        f"Markers: {data['test']} (scipy), alpha = {data['alpha']:g}.",
        f"`+` / `-`: significantly better / worse than {base} (p < {data['alpha']:g}); {base} itself carries no marker."
        if base else f"No `+` / `-` markers: the baseline run '{data['baseline_requested']}' is not in the sweep.",
        "`†`: significantly better than the run's second baseline (see Runs), when that run is in the sweep.",
        "Average columns: the mean of the group's collection values; their test pools the queries of all its "
        "collections (query ids prefixed with the collection name).",
    ]
    return "  \n".join(lines)


def runs_table(data: dict[str, Any]) -> str:
    rows = [
        [r["label"], f"`{r['name']}`", r["label_source"] or MISSING,
         MISSING if r["human_ratio"] is None else f"{r['human_ratio']:g}",
         (r["second_baseline"] or "") + ("" if r["second_baseline_present"] or not r["second_baseline"] else " (absent)"),
         f"`{r['path']}`"]
        for r in data["rows"]
    ]
    return _md_table(["Method", "Experiment", "Label source", "Human labels %", "Second baseline", "Run directory"],
                     rows, [False, False, False, True, False, False])


def render(data: dict[str, Any]) -> str:
    parts = ["# Sweep report", f"{len(data['rows'])} runs. Baseline: {data['baseline'] or 'none'}.",
             "## Results", results_table(data), legend(data), "## Runs", runs_table(data), "## Plots"]
    for title, key in (("Human-label ratio in curriculum learning (the paper's Figure 3)", "curriculum"),
                       ("In-domain against out-of-domain nDCG@10", "in_vs_out")):
        plot = data["plots"][key]
        parts.append(f"### {title}\n\n" + (f"![{key}]({plot})" if plot else f"Not drawn: {data['plot_notes'][key]}"))
    if "findings" in data:
        parts += ["## Findings of the paper", findings_mod.findings_table(data["findings"])]
    if "reference" in data:
        parts += ["## Findings next to the paper's numbers", findings_mod.side_by_side_table(data["reference"])]
    if data["ignored"]:
        parts += ["## Ignored runs", "\n".join(f"- {w}" for w in data["ignored"])]
    return "\n\n".join(parts) + "\n"


def curriculum_series(runs: list[Run], baseline: Run | None, panels: list[str]) -> dict[str, list]:
    """family -> [(human ratio %, measure -> in-domain value)] for the curriculum plot.

    The curves: curriculum runs (phases joined by "->") per label family, each starting at 0%
    from the single-phase run named after the family (utilsel, utilrank, replug); interleaving
    mixes in one stage, so its runs ("+" in the label source) form their own series; the loss
    and sampling ablations stay off the plot.
    """
    curriculum = [r for r in runs if r.human_ratio is not None and "->" in r.label_source]
    families = {r.family for r in curriculum}
    series: dict[str, list[tuple[float, dict[str, float | None]]]] = {}
    for run in runs:
        if run.human_ratio is None or run is baseline:
            continue
        mixed = "->" in run.label_source or "+" in run.label_source
        if run in curriculum or (run.name in families and not mixed):
            key = run.family
        elif run.label_source.startswith("interleave") or "+" in run.label_source:
            key = run.family + " interleave"
        else:
            continue
        series.setdefault(key, []).append((run.human_ratio, {m: run.value("in_domain", m) for m in panels}))
    return series


def draw_plots(runs: list[Run], data: dict[str, Any], out: Path) -> None:
    by_name = {r.name: r for r in runs}
    baseline = by_name.get(data["baseline"] or "")
    panels = ["nDCG@10", "RR@10"]
    series = curriculum_series(runs, baseline, panels)
    notes, paths = {}, {}
    if series:
        base = (baseline.name, {m: baseline.value("in_domain", m) for m in panels}) if baseline else None
        paths["curriculum"] = plots.curriculum_plot(series, base, out / "curriculum.png").name
    else:
        notes["curriculum"] = "no run has a human_ratio (the share of human labels in its training)."
    points = [(r.name, r.value("in_domain", "nDCG@10"), r.value("out_of_domain", "nDCG@10")) for r in runs]
    points = [p for p in points if p[1] is not None and p[2] is not None]
    if points:
        paths["in_vs_out"] = plots.in_vs_out_plot(points, out / "in_vs_out.png").name
    else:
        notes["in_vs_out"] = "no run has both in-domain and out-of-domain nDCG@10."
    data["plots"] = {k: paths.get(k) for k in ("curriculum", "in_vs_out")}
    data["plot_notes"] = notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="uptrain-report", description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="run directories or multirun folders")
    parser.add_argument("--out", type=Path, help="output folder (default: the first PATH if a multirun folder, else ./report)")
    parser.add_argument("--baseline", default="human", help="experiment the +/- markers compare against (default: human)")
    parser.add_argument("--measures", nargs="+", metavar="[GROUP=]M", help="e.g. in_domain=RR@10,nDCG@10 out_of_domain=nDCG@10")
    parser.add_argument("--findings", action="store_true", help="check the paper's findings on these runs")
    parser.add_argument("--reference", type=Path, nargs="+", help="the paper's numbers (CSV: table,group,method,collection,measure,value,marker)")
    args = parser.parse_args(argv)

    def warn(message: str) -> None:
        print(f"uptrain-report: warning: {message}", file=sys.stderr)

    ignored: list[str] = []  # duplicate names, also listed in the report

    def drop(message: str) -> None:
        ignored.append(message)
        warn(message)

    try:
        for p in args.paths:
            if not p.is_dir():
                raise SweepError(f"{p}: no such directory")
        runs = discover(args.paths, drop)
    except SweepError as e:
        print(f"uptrain-report: error: {e}", file=sys.stderr)
        return 2
    if args.baseline not in {r.name for r in runs}:
        warn(f"baseline '{args.baseline}' is not among the runs: no +/- markers")
    first = args.paths[0]
    out = args.out or (first if not (first / "metrics.json").is_file() else Path("report"))
    out.mkdir(parents=True, exist_ok=True)

    data = build(runs, args.baseline, parse_measures(args.measures))
    data["ignored"] = ignored
    draw_plots(runs, data, out)
    if args.findings or args.reference:
        by_name = {r.name: r for r in runs}
        data["findings"] = findings_mod.evaluate(by_name)
        if args.reference:
            data["reference"] = findings_mod.side_by_side(by_name, args.reference, warn)
    (out / "sweep.json").write_text(json.dumps(data, indent=2, ensure_ascii=False))
    (out / "sweep.md").write_text(render(data))
    print(f"report: {out / 'sweep.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
