"""The sweep report: many finished runs side by side, in the layout of Table 4 of
Zhang et al., "Leveraging LLMs for Utility-Focused Annotation" (arXiv 2504.05220).

    uptrain-report multirun/utilsel/2025-06-01/10-00-00 outputs/human/2025-06-01/09-00-00
    uptrain-report multirun/ --baseline human --measures in_domain=RR@10,nDCG@10 out_of_domain=nDCG@10
    uptrain-report multirun/human/2025-06-01_10-00-00 --baseline 'human loss=infonce'
    uptrain-report multirun/ --findings --reference experiments/utility/reference.csv --out report/

Each PATH is a run directory (it holds ``metrics.json``) or a folder searched
recursively for them (a Hydra multirun directory). A row is a run: an experiment name
with the overrides it ran with (``metrics["overrides"]``, else the job's
``.hydra/overrides.yaml``; ``+exp=`` and ``hydra.*`` left out). Runs of one experiment
are labelled by the overrides that differ between them, e.g. ``Human (loss=conj_infonce)``
in a ``--multirun loss=...`` sweep. Only runs alike in name and overrides (re-runs) are
merged, the newest ``metrics.json`` kept; the report counts and lists them. A run
directory's nested ``baseline_<name>/`` copies are rows only when no run of the sweep
has that name (the jobs of a sweep each hold one: alike copies are one row).

``--baseline NAME [KEY=VALUE ...]`` picks the run the ``+`` / ``-`` markers compare with:
the one run of that name holding those overrides; of several, the one with none of the
overrides that vary between them, else the first row (with a warning).

Rows are grouped by ``report_row.group`` (:data:`ROW_GROUPS` first, then the others
alphabetically); within a group, rows with a ``report_row.order`` come first in that
order, the others follow by experiment name (runs of one name: the one without varying
overrides first, then by their values). Columns: each evaluation group's collections x
measures, and the group average (the mean of its collection values, as the run wrote it) for groups of
several collections. A cell's markers come from the two-sided paired t-test of
:func:`uptrain.evaluate.significance.paired_ttest` over per-query values: ``+`` /
``-`` significantly better / worse than the baseline run, ``†`` significantly
better than the run's ``second_baseline``; an average cell is tested on the
queries of all its collections pooled (ids prefixed with the collection name).
``†`` compares with the run of the second baseline's name that shares the most overrides
with the row (in a ``labels.human_ratio`` sweep: the one at the same ratio). The paper's
findings are stated per experiment name: of several runs of a name they use the baseline
run, else the one without varying overrides, else the first row, and say so.

Query segments (``metrics["groups"][g]["segments"][collection][segment]``, else
``metrics["results"][collection]["segments"]``) get one table each, the same rows and
columns, values only: metrics.json does not list a segment's queries, so there is no
paired test; in sweep.json each cell carries ``segments``: segment -> value.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import yaml

from uptrain.evaluate.significance import marker, paired_ttest
from uptrain.report import findings as findings_mod
from uptrain.report import plots
from uptrain.report.markdown import MISSING, _md_table

ALPHA = 0.05
ROW_GROUPS = ("baselines", "LLMs", "relevance vs utility", "loss", "positive sampling", "combination")
EVAL_GROUPS = ("in_domain", "out_of_domain")
DEFAULT_MEASURES = {"in_domain": ["RR@10", "nDCG@10"], "out_of_domain": ["nDCG@10"]}
FALLBACK_MEASURES = ["nDCG@10"]  # for evaluation groups other than the two above
# groups whose collections are one collection at several settings (rag: <collection>@<k>), not averaged
NOT_AVERAGED = ("rag",)
AVERAGE = "average"
# words of a label_source that name how labels are mixed or where they come from, not the label family
SOURCE_WORDS = {"curriculum", "interleave", "llm", "human"}
# override keys that do not tell runs of one experiment apart: the experiment itself (the row's
# name says it) and Hydra's own settings (output folders, launchers)
SKIP_OVERRIDE_KEYS = ("exp",)
SKIP_OVERRIDE_PREFIXES = ("hydra.", "hydra/")


class SweepError(Exception):
    """A problem with the inputs, reported in one line with exit status 2."""


@dataclass
class Run:
    """One finished run: its directory and its ``metrics.json``."""

    path: Path
    metrics: dict[str, Any]
    mtime: float
    overrides: list[str] = field(default_factory=list)  # as given on the command line, in order
    varied: dict[str, str] = field(default_factory=dict)  # those that differ between runs of this name
    merged: list[Path] = field(default_factory=list)  # re-runs (or alike baseline copies) shown as this row
    nested: bool = False  # a baseline_<name>/ copy inside another run's directory

    @property
    def name(self) -> str:
        return str(self.metrics.get("name") or self.path.name)

    @property
    def settings(self) -> dict[str, str]:
        """The overrides as key -> value, without the experiment and Hydra's own keys."""
        return override_settings(self.overrides)

    @property
    def identity(self) -> tuple:
        """Runs alike in this are re-runs of one another."""
        return self.name, tuple(sorted(self.settings.items()))

    def _row(self) -> dict[str, Any]:
        return self.metrics.get("report_row") or {}

    @property
    def row_group(self) -> str:
        return str(self._row().get("group") or "other")

    @property
    def base_label(self) -> str:
        return str(self._row().get("label") or self.name)

    @property
    def label(self) -> str:
        """The experiment's label, with the overrides that tell it from other runs of its name."""
        if not self.varied:
            return self.base_label
        return f"{self.base_label} ({', '.join(f'{k}={v}' for k, v in self.varied.items())})"

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

    def segments(self, group: str, collection: str) -> dict[str, dict[str, Any]]:
        """Segment -> measure -> value of one collection of a group ({} when the run has none)."""
        by_collection = self.metrics.get("groups", {}).get(group, {}).get("segments") or {}
        found = by_collection.get(collection)
        if found is None and collection in self.collections(group):
            found = (self.metrics.get("results") or {}).get(collection, {}).get("segments")
        return found if isinstance(found, dict) else {}

    def segment_value(self, group: str, measure: str, segment: str, collection: str | None = None) -> float | None:
        """A segment's value on a collection, or with ``collection=None`` the mean over the group's
        collections (None unless every one of them has the segment)."""
        if collection is not None:
            value = self.segments(group, collection).get(segment, {}).get(measure)
            return None if value is None else float(value)
        names = self.collections(group)
        values = [self.segment_value(group, measure, segment, c) for c in names]
        if not names or any(v is None for v in values):
            return None
        return sum(values) / len(values)

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


def _split_override(text: str) -> tuple[str, str]:
    """'+loss=kl' -> ('loss', 'kl'); a deletion '~key' keeps its '~' in the key."""
    body = text.strip().lstrip("+")
    key, _, value = body.partition("=")
    return key.strip(), value.strip()


def override_settings(overrides: Iterable[str]) -> dict[str, str]:
    """Key -> value of Hydra overrides (the last one of a key wins), without the experiment
    (``+exp=``) and ``hydra.*`` keys."""
    out: dict[str, str] = {}
    for text in overrides:
        key, value = _split_override(str(text))
        if not key or key in SKIP_OVERRIDE_KEYS or key.startswith(SKIP_OVERRIDE_PREFIXES):
            continue
        out.pop(key, None)  # a later override of a key moves it to its place
        out[key] = value
    return out


def read_overrides(run_dir: Path, metrics: dict[str, Any]) -> list[str]:
    """The run's Hydra task overrides: metrics.json's ``overrides``, else its ``.hydra/overrides.yaml``."""
    listed = metrics.get("overrides")
    if isinstance(listed, list):
        return [str(o) for o in listed]
    path = run_dir / ".hydra" / "overrides.yaml"
    if path.is_file():
        try:
            listed = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise SweepError(f"cannot read {path}: {e}") from None
        if isinstance(listed, list):
            return [str(o) for o in listed]
    return []


def load_run(metrics_path: Path) -> Run:
    try:
        metrics = json.loads(metrics_path.read_text())
    except (OSError, ValueError) as e:
        raise SweepError(f"cannot read {metrics_path}: {e}") from None
    if not isinstance(metrics, dict):
        raise SweepError(f"{metrics_path} does not hold a JSON object")
    run_dir = metrics_path.parent
    return Run(run_dir, metrics, metrics_path.stat().st_mtime, read_overrides(run_dir, metrics))


def _describe(run: Run) -> str:
    settings = run.settings
    return f"'{run.name}'" + (f" ({', '.join(f'{k}={v}' for k, v in settings.items())})" if settings else "")


def merge_reruns(runs: Iterable[Run], warn: Callable[[str], None] | None) -> list[Run]:
    """One run per (name, overrides): the newest metrics.json; the others are listed in its
    ``merged`` and ``warn`` hears about each one dropped."""
    kept: dict[tuple, Run] = {}
    for run in runs:
        old = kept.get(run.identity)
        if old is not None:
            newer, older = (run, old) if run.mtime > old.mtime else (old, run)
            if warn:
                warn(f"two runs named {_describe(run)} with the same overrides: kept {newer.path} (newer), "
                     f"ignored {older.path}")
            newer.merged += [older.path, *older.merged]
            older.merged = []
            run = newer
        kept[run.identity] = run
    return list(kept.values())


def label_varied(runs: list[Run]) -> None:
    """Set each run's ``varied``: its overrides whose value differs between the runs of its name."""
    by_name: dict[str, list[Run]] = {}
    for run in runs:
        by_name.setdefault(run.name, []).append(run)
    for same in by_name.values():
        settings = [r.settings for r in same]
        keys = {k for s in settings for k in s}
        varying = {k for k in keys if len({s.get(k) for s in settings}) > 1}
        for run, s in zip(same, settings):
            run.varied = {k: v for k, v in s.items() if k in varying}


def discover(paths: list[Path], warn: Callable[[str], None] | None = None) -> list[Run]:
    """The runs under ``paths`` (run directories or folders searched recursively), one per
    experiment name and overrides."""
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
    runs = merge_reruns(found, warn)
    names = {r.name for r in runs}
    for copy in merge_reruns([r for r in nested if r.name not in names], None):  # each job's copy: not a warning
        copy.nested = True
        runs.append(copy)
    label_varied(runs)
    return runs


def choose_baseline(runs: list[Run], spec: str, warn: Callable[[str], None] | None = None) -> Run | None:
    """The run ``spec`` ("NAME [KEY=VALUE ...]") names: among the runs of NAME holding those
    overrides, the only one, else the one none of the varying overrides apply to, else the first row."""
    if not spec.split():
        return None
    name, *wanted = spec.split()
    want = override_settings(wanted)
    candidates = [r for r in sort_rows(runs) if r.name == name and all(r.settings.get(k) == v for k, v in want.items())]
    if len(candidates) <= 1:
        return candidates[0] if candidates else None
    plain = [r for r in candidates if not r.varied]
    if len(plain) == 1:
        return plain[0]
    if warn:
        warn(f"{len(candidates)} runs match the baseline '{spec}': using '{candidates[0].label}' "
             f"(name one with --baseline '{name} KEY=VALUE')")
    return candidates[0]


def closest(runs: list[Run], name: str, to: Run) -> Run | None:
    """The run named ``name`` that shares the most overrides with ``to`` (the first row of a tie)."""
    mine = set(to.settings.items())
    candidates = [r for r in sort_rows(runs) if r.name == name and r is not to]
    if not candidates:
        return None
    return max(candidates, key=lambda r: len(mine & set(r.settings.items())))  # max keeps the first of a tie


def representatives(runs: list[Run], baseline: Run | None = None) -> tuple[dict[str, Run], list[str]]:
    """Name -> one run, for the paper's findings (stated per experiment name): the only run of the
    name, else the baseline run chosen for the markers, else the one none of the varying overrides
    apply to, else the first row; with a note for each name of several runs."""
    out: dict[str, Run] = {}
    notes = []
    for name in dict.fromkeys(r.name for r in sort_rows(runs)):
        chosen = baseline if baseline is not None and baseline.name == name else choose_baseline(runs, name)
        out[name] = chosen
        count = sum(r.name == name for r in runs)
        if count > 1:
            notes.append(f"{count} runs named '{name}': the findings use '{chosen.label}'")
    return out, notes


def sort_rows(runs: list[Run]) -> list[Run]:
    """Table 4's row order: known groups first, then others alphabetically; by ``order``, else name."""
    def key(run: Run):
        g = run.row_group
        group_key = (ROW_GROUPS.index(g), "") if g in ROW_GROUPS else (len(ROW_GROUPS), g)
        # runs of one name: the one without varying overrides first, then by their values (20 before 100)
        varied = [(k, _natural(v)) for k, v in run.varied.items()]
        return group_key, run.order is None, run.order or 0.0, run.name, bool(varied), varied

    return sorted(runs, key=key)


def _natural(text: str) -> list:
    """'lr=1e-5' sorts by its parts, numbers as numbers: 20 before 100."""
    parts = []
    for token in re.split(r"(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)", text):
        if not token:
            continue
        try:
            parts.append((0, float(token), ""))
        except ValueError:
            parts.append((1, 0.0, token))
    return parts


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
        if len(collections[g]) > 1 and g not in NOT_AVERAGED:
            cols += [Column(g, None, m) for m in names]
    return cols


def cell(run: Run, col: Column, baseline: Run | None, second: Run | None, segments: list[str] = ()) -> dict[str, Any]:
    """Value and markers of one cell, with the p-values behind them, and its value per query segment."""
    value = run.value(col.group, col.measure, col.collection)
    out: dict[str, Any] = {"value": value, "marker": "", "p_baseline": None, "p_second": None}
    seg = {s: run.segment_value(col.group, col.measure, s, col.collection) for s in segments}
    if any(v is not None for v in seg.values()):
        out["segments"] = seg
    mine = run.per_query(col.group, col.measure, col.collection)
    if value is None or mine is None or run is baseline:
        return out
    for other, field_, better, worse in ((baseline, "p_baseline", "+", "-"), (second, "p_second", "†", "")):
        theirs = other.per_query(col.group, col.measure, col.collection) if other is not None else None
        if theirs:
            out[field_] = paired_ttest(mine, theirs).p
            out["marker"] += marker(mine, theirs, alpha=ALPHA, better=better, worse=worse)
    return out


def segment_queries(runs: list[Run], segments: list[str]) -> dict[str, dict[str, int]]:
    """Segment -> collection -> its number of queries (the ``queries`` the runs wrote; the first run
    that has it: every run of a sweep evaluates the same queries)."""
    out: dict[str, dict[str, int]] = {s: {} for s in segments}
    for run in runs:
        for g in run.metrics.get("groups", {}):
            for c in run.collections(g):
                for s, values in run.segments(g, c).items():
                    n = values.get("queries") if isinstance(values, dict) else None
                    if s in out and n is not None:
                        out[s].setdefault(c, int(n))
    return out


def segment_names(runs: list[Run]) -> list[str]:
    """Every query segment of the runs, in the order the runs list them."""
    names: dict[str, None] = {}
    for run in runs:
        for g in run.metrics.get("groups", {}):
            for c in run.collections(g):
                names.update(dict.fromkeys(run.segments(g, c)))
    return list(names)


def build(runs: list[Run], baseline_name: str, measures: dict[str, list[str]],
          warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The sweep's numbers, as written to sweep.json. ``baseline_name``: "NAME [KEY=VALUE ...]"."""
    baseline = choose_baseline(runs, baseline_name, warn)
    cols = columns(runs, measures)
    segments = segment_names(runs)
    rows = []
    for run in sort_rows(runs):
        second = closest(runs, run.second_baseline, run) if run.second_baseline else None
        rows.append({
            "name": run.name, "group": run.row_group, "label": run.label, "path": str(run.path),
            "overrides": run.overrides, "varied": run.varied, "baseline_copy": run.nested,
            "merged": [str(p) for p in run.merged],
            "label_source": run.label_source, "family": run.family, "human_ratio": run.human_ratio,
            "second_baseline": run.second_baseline, "second_baseline_present": second is not None,
            "second_baseline_label": second.label if second is not None else None,
            "cells": {c.key: cell(run, c, baseline, second, segments) for c in cols},
        })
    return {
        "baseline": baseline.name if baseline else None,
        "baseline_label": baseline.label if baseline else None,
        "baseline_path": str(baseline.path) if baseline else None,
        "baseline_requested": baseline_name,
        "test": "two-sided paired t-test over per-query values",
        "alpha": ALPHA,
        "columns": [{"key": c.key, "group": c.group, "collection": c.collection, "measure": c.measure} for c in cols],
        "segments": segments,
        "segment_queries": segment_queries(runs, segments),
        "merged": sum(len(r["merged"]) for r in rows),
        "rows": rows,
    }


def _table(data: dict[str, Any], cols: list[dict[str, Any]], text: Callable[[dict[str, Any]], str]) -> str:
    """Markdown: a Group column filled on each group's first row (the paper's row spans), then Method."""
    body, previous = [], None
    for row in data["rows"]:
        cells = [text(row["cells"][c["key"]]) for c in cols]
        body.append([row["group"] if row["group"] != previous else "", row["label"], *cells])
        previous = row["group"]
    header = ["Group", "Method"] + [Column(c["group"], c["collection"], c["measure"]).header for c in cols]
    return _md_table(header, body, [False, False] + [True] * len(cols))


def results_table(data: dict[str, Any]) -> str:
    return _table(data, data["columns"],
                  lambda x: MISSING if x["value"] is None else f"{x['value']:.3f}{x['marker']}")


def segment_table(data: dict[str, Any], segment: str) -> str:
    """The results of one query segment: the columns some run has the segment in, values only."""
    def value(x: dict[str, Any]) -> float | None:
        return (x.get("segments") or {}).get(segment)

    cols = [c for c in data["columns"] if any(value(r["cells"][c["key"]]) is not None for r in data["rows"])]
    return _table(data, cols, lambda x: MISSING if value(x) is None else f"{value(x):.3f}")


def legend(data: dict[str, Any]) -> str:
    base = data["baseline_label"]
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
    def second(r: dict[str, Any]) -> str:
        if not r["second_baseline"]:
            return ""
        return r["second_baseline_label"] or f"{r['second_baseline']} (absent)"

    def overrides(r: dict[str, Any]) -> str:
        shown = [o for o in r["overrides"] if override_settings([o])]
        return " ".join(f"`{o}`" for o in shown) or MISSING

    rows = [
        [r["label"], f"`{r['name']}`", overrides(r), r["label_source"] or MISSING,
         MISSING if r["human_ratio"] is None else f"{r['human_ratio']:g}", second(r),
         f"`{r['path']}`" + (" (baseline copy)" if r["baseline_copy"] else "")
         + (f", {len(r['merged'])} more merged" if r["merged"] else "")]
        for r in data["rows"]
    ]
    return _md_table(["Method", "Experiment", "Overrides", "Label source", "Human labels %", "Second baseline",
                      "Run directory"], rows, [False, False, False, False, True, False, False])


def merged_section(data: dict[str, Any]) -> str:
    lines = []
    for r in data["rows"]:
        if not r["merged"]:
            continue
        n = len(r["merged"]) + 1
        what = (f"{n} copies of the baseline run {r['label']} in the jobs' directories" if r["baseline_copy"]
                else f"{n} runs of {r['label']} alike in name and overrides (re-runs)")
        lines.append(f"- {what}: one row, the newest `{r['path']}`; merged: "
                     + ", ".join(f"`{p}`" for p in r["merged"]))
    return "\n".join(lines)


def render(data: dict[str, Any]) -> str:
    merged = data["merged"]
    count = f"{len(data['rows'])} runs" + (f" ({merged} re-runs or baseline copies merged into them, see below)"
                                           if merged else "")
    parts = ["# Sweep report", f"{count}. Baseline: {data['baseline_label'] or 'none'}.",
             "## Results", results_table(data), legend(data)]
    if data["segments"]:
        parts += ["## Results by query segment",
                  "Each segment's value of every measure, the same rows and columns as above where some run has "
                  "the segment; no markers (metrics.json does not list a segment's queries, so there is no "
                  "paired test)."]
        for segment in data["segments"]:
            counts = data.get("segment_queries", {}).get(segment) or {}
            parts += [f"### Segment `{segment}`", segment_table(data, segment)]
            if counts:
                parts.append("Queries: " + ", ".join(f"{c} {n}" for c, n in counts.items()) + ".")
    parts += ["## Runs", runs_table(data), "## Plots"]
    for title, key in (("Human-label ratio in curriculum learning (the paper's Figure 3)", "curriculum"),
                       ("In-domain against out-of-domain nDCG@10", "in_vs_out")):
        plot = data["plots"][key]
        parts.append(f"### {title}\n\n" + (f"![{key}]({plot})" if plot else f"Not drawn: {data['plot_notes'][key]}"))
    if "findings" in data:
        parts += ["## Findings of the paper", findings_mod.findings_table(data["findings"])]
        if data.get("findings_notes"):
            parts.append("\n".join(f"- {n}" for n in data["findings_notes"]))
    if "reference" in data:
        parts += ["## Findings next to the paper's numbers", findings_mod.side_by_side_table(data["reference"])]
    if merged:
        parts += ["## Merged runs", merged_section(data)]
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
    baseline = next((r for r in runs if str(r.path) == data["baseline_path"]), None)
    panels = ["nDCG@10", "RR@10"]
    series = curriculum_series(runs, baseline, panels)
    notes, paths = {}, {}
    if series:
        base = (baseline.label, {m: baseline.value("in_domain", m) for m in panels}) if baseline else None
        paths["curriculum"] = plots.curriculum_plot(series, base, out / "curriculum.png").name
    else:
        notes["curriculum"] = "no run has a human_ratio (the share of human labels in its training)."
    points = [(r.label, r.value("in_domain", "nDCG@10"), r.value("out_of_domain", "nDCG@10")) for r in runs]
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
    parser.add_argument("--baseline", default="human", metavar="'NAME [KEY=VALUE ...]'",
                        help="run the +/- markers compare against: an experiment name, with overrides where "
                             "it ran with several (default: human)")
    parser.add_argument("--measures", nargs="+", metavar="[GROUP=]M", help="e.g. in_domain=RR@10,nDCG@10 out_of_domain=nDCG@10")
    parser.add_argument("--findings", action="store_true", help="check the paper's findings on these runs")
    parser.add_argument("--reference", type=Path, nargs="+", help="the paper's numbers (CSV: table,group,method,collection,measure,value,marker)")
    args = parser.parse_args(argv)

    def warn(message: str) -> None:
        print(f"uptrain-report: warning: {message}", file=sys.stderr)

    try:
        for p in args.paths:
            if not p.is_dir():
                raise SweepError(f"{p}: no such directory")
        runs = discover(args.paths, warn)
    except SweepError as e:
        print(f"uptrain-report: error: {e}", file=sys.stderr)
        return 2
    first = args.paths[0]
    out = args.out or (first if not (first / "metrics.json").is_file() else Path("report"))
    out.mkdir(parents=True, exist_ok=True)

    data = build(runs, args.baseline, parse_measures(args.measures), warn)
    if data["baseline"] is None:
        warn(f"baseline '{args.baseline}' is not among the runs: no +/- markers")
    draw_plots(runs, data, out)
    if args.findings or args.reference:
        baseline = next((r for r in runs if str(r.path) == data["baseline_path"]), None)
        by_name, notes = representatives(runs, baseline)
        data["findings_notes"] = notes
        data["findings"] = findings_mod.evaluate(by_name)
        if args.reference:
            data["reference"] = findings_mod.side_by_side(by_name, args.reference, warn)
    (out / "sweep.json").write_text(json.dumps(data, indent=2, ensure_ascii=False))
    (out / "sweep.md").write_text(render(data))
    print(f"report: {out / 'sweep.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
