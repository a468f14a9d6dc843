"""The clicks-vs-LLM-labels study's sweep report: per-bucket results and a verdict on each finding
of Yu et al., "Can LLM Annotations Replace User Clicks for Learning to Rank?" (arXiv 2511.06635;
only its abstract is public, so the findings are checked as the abstract states them).

    python -m uptrain.report.clicks_study multirun/reproduce-clicks/demo --out report/clicks

SWEEP_DIR is searched recursively for ``metrics.json`` (one per job directory of the Hydra
multirun over the study's experiments, ``conf/exp/cvl_*``, ``schedule_*``, ``famol*``). A run is
identified by its ``name``; of two job directories with the same name the later one is used (the
newer ``metrics.json``; of equal times, the later directory in natural order: job 10 after job 9),
and the report lists the one left out. ``metrics.json`` copies below another run's directory
(``baseline_<name>/``) are not runs of the sweep and are counted, not read.

Every run must hold per-bucket results of the evaluated collection
(``results.<collection>.segments.<bucket>``); the per-query values
(``per_query.<group>.<collection>.<measure>``) are split into buckets by the run's
``segmentations.frequency.queries`` (query id -> [bucket, sessions]), else by another run's (every
run of a sweep evaluates the same held-out queries on the same click log; counted and reported).

Written to ``--out``:

``sweep.md``
    (a) the per-bucket table: one row per run, each measure overall and per bucket; ``+`` / ``-``
    mark a value significantly above / below the BM25 run (``cvl_bm25``) by a two-sided paired
    t-test (:func:`uptrain.evaluate.significance.paired_ttest`, scipy's ``ttest_rel``) over the
    queries of that bucket; (b) the LLM label quality of every run with a grade stage
    (``artifacts/grade*/quality.json``: Cohen's kappa, exact and within-one agreement, binary
    precision and recall of LLM grade >= 2 against human grade > 0), SIMULATED where the annotator
    was; (c) the verdicts below, each with its numbers and an interpretation paragraph generated
    from them.
``results.json``
    every number of the tables and verdicts.
``buckets.png``, ``famol_weight.png``, ``quality_vs_relevance.png``
    the measure per bucket per run; each FAMOL run's click weight w(f) against sessions per query
    (evaluated by :func:`uptrain.labels.frequency.make_weighting` from the run's
    ``config.yaml``: its famol phase's resolved ``weighting``) with the evaluated queries as a rug and the buckets'
    frequency ranges; partial r of the scores with the latent document quality against partial r
    with the human grade (:mod:`uptrain.clicks.study`), with bootstrap standard errors.

Verdicts (``holds``, ``holds, not significant``, ``does not hold``, ``not run``, ``not measured``;
alpha = ``--alpha``):

Finding 1  per bucket, the click run (``--click``) against the LLM run (``--llm``) on ``--measure``:
           paired t-test over that bucket's queries; the click run should be above on ``high``,
           the LLM run on ``medium`` and ``low``. A bucket ``holds`` (right direction, p < alpha),
           ``holds, not significant`` (right direction, p >= alpha) or ``does not hold`` (wrong
           direction or a tie). The finding holds when all three buckets hold, holds, not
           significant when all three go the right way, else it does not hold.
Finding 2  (i) the LLM run's per-query ROC AUC of its scores against the binary human labels above
           the click run's (paired t-test over the queries in both runs' ``auc_per_query``); (ii)
           the click run's partial correlation with the latent document quality above the LLM
           run's: z = (r_click - r_llm) / sqrt(se_click^2 + se_llm^2), two-sided normal p. This
           treats the two bootstrap estimates as independent, which they are not (both runs are
           scored on the same queries and documents), so the p-value is approximate. (ii) is ``not
           measured`` when ``quality`` is null (a click log read from a file carries no latent
           quality); the finding's verdict combines the measured parts as finding 1 does its
           buckets.
Finding 3  every combined run (``--combined``) against both single-signal runs per bucket: better
           than each (paired t-tests), the weaker (larger) of the two p-values decides the bucket;
           a run's verdict combines its buckets as above. Scheduling runs are the combined runs not
           in ``--famol``. Each family (scheduling, FAMOL) is judged by its best run by overall
           ``--measure`` (chosen on the same test queries it is then tested on, so the family
           verdicts lean optimistic; every run's own verdict is reported); "FAMOL improves more":
           the best FAMOL run against the best scheduling run, overall, paired t-test. The finding
           combines the two families and the comparison; it is ``not run`` when a run it needs is
           absent, and says which.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from pathlib import Path
from statistics import mean
from typing import Any, Callable, Mapping, Sequence

import yaml
from scipy import stats

from uptrain.evaluate.significance import paired_ttest
from uptrain.report import plots  # noqa: F401  (selects matplotlib's Agg backend)
from uptrain.report.findings import FAILS, HOLDS, HOLDS_NS, NOT_RUN
from uptrain.report.markdown import MISSING, _md_table
from uptrain.report.sweep import Run, SweepError, _natural, load_run

log = logging.getLogger("uptrain")

NOT_MEASURED = "not measured"
BUCKETS = ("high", "medium", "low")
EXTRA_BUCKETS = ("unseen",)  # shown in the table where a run has it; no verdict reads it
GROUP, COLLECTION = "clicks", "clicks_test"
BASELINE = "cvl_bm25"
CLICK, LLM = "cvl_click_dbn", "cvl_llm"
COMBINED = ("schedule_llm_click", "schedule_click_llm", "schedule_bucketwise", "famol", "famol_step", "famol_learned",
            "famol_losses")
FAMOL = ("famol", "famol_step", "famol_learned", "famol_losses")
MEASURE = "nDCG@10"
ALPHA = 0.05
# finding 1: the side each bucket should favour (+1: the click run above the LLM run)
FINDING1_SIDE = {"high": +1, "medium": -1, "low": -1}
PROG = "uptrain-clicks-study"


# ---- numbers ---------------------------------------------------------------------------------

def _num(x: Any) -> float | None:
    """A finite float, else None (JSON has no inf / NaN)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def compare(a: Mapping[str, float], b: Mapping[str, float]) -> dict[str, Any]:
    """Paired t-test of a against b over their common queries, with both means over those queries."""
    common = [q for q in a if q in b]
    t = paired_ttest(a, b)
    return {
        "n": t.n,
        "mean_a": _num(mean(float(a[q]) for q in common)) if common else None,
        "mean_b": _num(mean(float(b[q]) for q in common)) if common else None,
        "diff": _num(t.mean_diff) if common else None,
        "t": _num(t.t),
        "p": _num(t.p),
    }


def direction_status(diff: float | None, p: float | None, alpha: float, side: int = +1) -> str:
    """``holds`` (diff on ``side`` of 0, p < alpha), ``holds, not significant``, ``does not hold``
    (wrong side or a tie), ``not measured`` (nothing to compare)."""
    if diff is None or p is None:
        return NOT_MEASURED
    if diff * side > 0:
        return HOLDS if p < alpha else HOLDS_NS
    return FAILS


def combine(statuses: Sequence[str]) -> str:
    """All ``holds``: holds; all in the right direction: holds, not significant; any failing:
    does not hold; else (something unmeasured, nothing failing) not measured."""
    if not statuses:
        return NOT_MEASURED
    if any(s == FAILS for s in statuses):
        return FAILS
    if any(s != HOLDS and s != HOLDS_NS for s in statuses):
        return NOT_MEASURED
    return HOLDS if all(s == HOLDS for s in statuses) else HOLDS_NS


def _fmt(x: Any, digits: int = 3) -> str:
    if x is None:
        return MISSING
    if isinstance(x, float) and not math.isfinite(x):
        return MISSING
    return f"{x:.{digits}f}"


def _p(x: float | None) -> str:
    return MISSING if x is None else f"{x:.3g}"


# ---- the runs --------------------------------------------------------------------------------

class StudyRun:
    """One job of the sweep: its ``metrics.json`` (through :class:`uptrain.report.sweep.Run`) and
    the query -> bucket map its per-bucket tests use."""

    def __init__(self, run: Run, group: str, collection: str):
        self.run, self.group, self.collection = run, group, collection
        self.segments = run.segments(group, collection) or (
            (run.metrics.get("results") or {}).get(collection) or {}).get("segments") or {}
        freq = (run.metrics.get("segmentations") or {}).get("frequency") or {}
        self.frequency = freq
        self.query_map: dict[str, tuple[str, int]] = {
            str(q): (str(v[0]), int(v[1])) for q, v in (freq.get("queries") or {}).items()}
        self.query_map_from: str | None = str(run.path) if self.query_map else None

    name = property(lambda self: self.run.name)
    label = property(lambda self: self.run.base_label)
    path = property(lambda self: self.run.path)

    @property
    def measures(self) -> list[str]:
        return [str(m) for m in self.run.metrics.get("measures") or []]

    def overall(self, measure: str) -> float | None:
        value = ((self.run.metrics.get("results") or {}).get(self.collection) or {}).get(measure)
        return _num(value)

    def bucket_value(self, measure: str, bucket: str) -> float | None:
        return _num((self.segments.get(bucket) or {}).get(measure))

    def per_query(self, measure: str, bucket: str | None = None, required: bool = True) -> dict[str, float] | None:
        """Query id -> value (of one bucket's queries); None when absent and not ``required``."""
        values = self.run.per_query(self.group, measure, self.collection)
        if values is None and not required:
            return None
        if values is None:
            raise SweepError(f"{self.path}: run '{self.name}' has no per-query {measure} on {self.collection} "
                             f"(per_query.{self.group}.{self.collection}.{measure}); its tests cannot be run")
        if bucket is None:
            return values
        return {q: v for q, v in values.items() if (self.query_map.get(q) or ("",))[0] == bucket}

    def click_study(self) -> dict[str, Any]:
        return ((self.run.metrics.get("click_study") or {}).get(self.collection)) or {}

    def config(self) -> dict[str, Any] | None:
        path = self.path / "config.yaml"
        if not path.is_file():
            return None
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise SweepError(f"cannot read {path}: {e}") from None
        return data if isinstance(data, dict) else None

    def grade_quality(self) -> tuple[dict[str, Any] | None, str | None]:
        """The grade stage's ``quality.json`` (``artifacts/grade/``, else another ``artifacts/grade*/``)."""
        arts = self.path / "artifacts"
        found = [arts / "grade" / "quality.json"] + sorted(arts.glob("grade*/quality.json"))
        for path in found:
            if path.is_file():
                try:
                    return json.loads(path.read_text()), str(path)
                except (OSError, ValueError) as e:
                    raise SweepError(f"cannot read {path}: {e}") from None
        return None, None

    def llm_supervised(self) -> bool:
        source = self.run.label_source.lower()
        return "grade" in source or "llm" in source or self.grade_quality()[0] is not None


def load_sweep(sweep_dir: Path, warn: Callable[[str], None], group: str = GROUP,
               collection: str = COLLECTION) -> tuple[dict[str, StudyRun], dict[str, Any]]:
    """Name -> run of the sweep (the later of two of a name), and what was left out."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise SweepError(f"{sweep_dir}: no such directory")
    files = sorted(sweep_dir.rglob("metrics.json"))
    if not files:
        raise SweepError(f"no metrics.json in or under {sweep_dir}")
    dirs = {f.parent for f in files}
    top = [f for f in files if not any(p in dirs for p in f.parent.parents)]
    loaded = sorted((load_run(f) for f in top), key=lambda r: (r.mtime, _natural(str(r.path))))
    runs: dict[str, StudyRun] = {}
    replaced = []
    for run in loaded:
        old = runs.get(run.name)
        if old is not None:
            replaced.append({"name": run.name, "kept": str(run.path), "left_out": str(old.path)})
            warn(f"two job directories of run '{run.name}': using the later {run.path}, leaving out {old.path}")
        runs[run.name] = StudyRun(run, group, collection)
    for r in runs.values():
        if not r.segments:
            raise SweepError(
                f"{r.path}: run '{r.name}' has no per-bucket results (results.{collection}.segments): the study "
                "needs every run evaluated per query-frequency bucket (eval=clicks, eval.segments.frequency)")
    # a run without its query -> bucket map borrows another's (same held-out queries, same click log)
    donor = next((r for r in runs.values() if r.query_map), None)
    borrowed = []
    for r in runs.values():
        if not r.query_map:
            if donor is None:
                raise SweepError(
                    f"{r.path}: run '{r.name}' does not list its queries' buckets (segmentations.frequency.queries) "
                    "and no other run of the sweep does: the per-bucket paired tests cannot be run")
            r.query_map, r.query_map_from = donor.query_map, str(donor.path)
            borrowed.append(r.name)
            warn(f"run '{r.name}' ({r.path}) lists no query buckets: using those of {donor.path}")
    info = {"metrics_files": len(files), "nested_copies_not_read": len(files) - len(top),
            "replaced": replaced, "query_buckets_borrowed": borrowed}
    return runs, info


def _order(runs: Mapping[str, StudyRun], click: str, llm: str, combined: Sequence[str]) -> list[StudyRun]:
    first = [n for n in (BASELINE, click, llm) if n in runs]
    last = [n for n in combined if n in runs and n not in first]
    rest = sorted((n for n in runs if n not in first and n not in last), key=_natural)
    return [runs[n] for n in first + rest + last]


# ---- (a) the per-bucket table ----------------------------------------------------------------

def bucket_table(ordered: list[StudyRun], measures: list[str], buckets: list[str], baseline: StudyRun | None,
                 alpha: float) -> list[dict[str, Any]]:
    """Per run: measure -> {"all" | bucket: {value, marker, p, n}} against the baseline run."""
    rows = []
    for run in ordered:
        cells: dict[str, dict[str, Any]] = {}
        for m in measures:
            cells[m] = {}
            for b in ["all", *buckets]:
                value = run.overall(m) if b == "all" else run.bucket_value(m, b)
                cell: dict[str, Any] = {"value": value, "marker": "", "p": None, "n": None}
                if baseline is not None and run is not baseline and value is not None:
                    mine = run.per_query(m, None if b == "all" else b, required=False)
                    theirs = baseline.per_query(m, None if b == "all" else b, required=False)
                    if mine is None or theirs is None:
                        cell["untested"] = "no per-query values in " + (run.name if mine is None else baseline.name)
                        cells[m][b] = cell
                        continue
                    c = compare(mine, theirs)
                    cell.update(p=c["p"], n=c["n"], diff=c["diff"])
                    if c["p"] is not None and c["p"] < alpha and c["diff"]:
                        cell["marker"] = "+" if c["diff"] > 0 else "-"
                cells[m][b] = cell
        rows.append({"name": run.name, "label": run.label, "path": str(run.path),
                     "label_source": run.run.label_source, "cells": cells})
    return rows


def bucket_queries(ordered: list[StudyRun], buckets: list[str]) -> dict[str, Any]:
    """Evaluated queries per bucket (the first run's map; every run of a sweep shares it) and the
    click log's frequency range of each bucket."""
    first = ordered[0]
    counts = {b: sum(1 for v in first.query_map.values() if v[0] == b) for b in buckets}
    ranges = {}
    for b, v in ((first.frequency.get("buckets") or {}).items()):
        ranges[b] = {k: v.get(k) for k in ("queries", "sessions", "min_frequency", "max_frequency")}
    mismatched = []
    for run in ordered:
        for b in buckets:
            written = (run.segments.get(b) or {}).get("queries")
            mine = sum(1 for v in run.query_map.values() if v[0] == b)
            if written is not None and int(written) != mine:
                mismatched.append({"run": run.name, "bucket": b, "segment_queries": int(written), "mapped": mine})
    # queries with per-query values but no bucket: in the "all" column and its tests only
    unmapped = {}
    for run in ordered:
        for m in run.measures:
            values = run.per_query(m, required=False) or {}
            n = sum(1 for q in values if q not in run.query_map)
            if n:
                unmapped[run.name] = max(n, unmapped.get(run.name, 0))
    return {"evaluated": counts, "log": ranges, "count_mismatches": mismatched, "queries_without_bucket": unmapped}


# ---- (b) LLM label quality -------------------------------------------------------------------

def label_quality(ordered: list[StudyRun]) -> list[dict[str, Any]]:
    rows = []
    for run in ordered:
        if not run.llm_supervised():
            continue
        q, path = run.grade_quality()
        row: dict[str, Any] = {"name": run.name, "label": run.label, "path": path, "found": q is not None}
        if q is not None:
            binary = q.get("binary") or {}
            row.update(simulated=bool(q.get("simulated")), pairs=q.get("pairs"), kappa=_num(q.get("kappa")),
                       weighted_kappa=_num(q.get("weighted_kappa")), exact=_num(q.get("exact")),
                       within_one=_num(q.get("within_one")), precision=_num(binary.get("precision")),
                       recall=_num(binary.get("recall")))
        rows.append(row)
    return rows


def _quality_words(row: dict[str, Any] | None, name: str) -> str:
    if row is None:
        return f"{name} has no grade stage"
    if not row["found"]:
        return f"the LLM labels of {name}: quality not found (no artifacts/grade*/quality.json)"
    who = "SIMULATED from the human labels" if row["simulated"] else "from an LLM annotator"
    return (f"the LLM labels of {name} were {who}, at kappa {_fmt(row['kappa'])}, exact agreement "
            f"{_fmt(row['exact'])}, precision {_fmt(row['precision'])} and recall {_fmt(row['recall'])} against "
            f"the human grades ({row['pairs']} pairs)")


# ---- (c) the findings ------------------------------------------------------------------------

def finding1(runs: Mapping[str, StudyRun], click: str, llm: str, measure: str, alpha: float) -> dict[str, Any]:
    needs = [n for n in (click, llm) if n not in runs]
    out: dict[str, Any] = {"title": "Clicks win on high-frequency queries, LLM labels on medium and low",
                           "measure": measure, "click": click, "llm": llm}
    if needs:
        return {**out, "verdict": NOT_RUN, "needs": needs, "buckets": {}}
    buckets = {}
    for b in BUCKETS:
        c = compare(runs[click].per_query(measure, b), runs[llm].per_query(measure, b))
        c["click_mean"], c["llm_mean"] = c.pop("mean_a"), c.pop("mean_b")
        c["favours"] = "click" if FINDING1_SIDE[b] > 0 else "llm"
        c["status"] = direction_status(c["diff"], c["p"], alpha, FINDING1_SIDE[b]) if c["n"] else NOT_MEASURED
        buckets[b] = c
    return {**out, "verdict": combine([c["status"] for c in buckets.values()]), "needs": [], "buckets": buckets}


def finding2(runs: Mapping[str, StudyRun], click: str, llm: str, alpha: float) -> dict[str, Any]:
    out: dict[str, Any] = {"title": "Clicks follow document quality, LLM labels separate relevant from non-relevant",
                           "click": click, "llm": llm}
    needs = [n for n in (click, llm) if n not in runs]
    if needs:
        return {**out, "verdict": NOT_RUN, "needs": needs, "auc": None, "quality": None}
    cs, ls = runs[click].click_study(), runs[llm].click_study()
    auc: dict[str, Any] = {"click_auc": _num(cs.get("auc")), "llm_auc": _num(ls.get("auc")),
                           "click_auc_pooled": _num(cs.get("auc_pooled")), "llm_auc_pooled": _num(ls.get("auc_pooled"))}
    pa, pc = ls.get("auc_per_query"), cs.get("auc_per_query")
    if not isinstance(pa, dict) or not isinstance(pc, dict):
        missing = [n for n, v in ((llm, pa), (click, pc)) if not isinstance(v, dict)]
        auc.update(status=NOT_MEASURED, reason=f"no click_study.{runs[click].collection}.auc_per_query in "
                                               + ", ".join(missing))
    else:
        c = compare({str(k): float(v) for k, v in pa.items()}, {str(k): float(v) for k, v in pc.items()})
        auc.update(n=c["n"], llm_mean=c["mean_a"], click_mean=c["mean_b"], diff=c["diff"], t=c["t"], p=c["p"],
                   status=direction_status(c["diff"], c["p"], alpha) if c["n"] else NOT_MEASURED)
    qc, ql = cs.get("quality"), ls.get("quality")
    quality: dict[str, Any] = {"independence_assumed": True}
    if not qc or not ql:
        null = [n for n, v in ((click, qc), (llm, ql)) if not v]
        quality.update(status=NOT_MEASURED, reason="quality is null for " + ", ".join(null)
                       + " (a click log read from a file carries no latent document quality)")
    else:
        rc, rl = _num(qc.get("partial_r_quality")), _num(ql.get("partial_r_quality"))
        sc, sl = _num(qc.get("partial_r_quality_se")), _num(ql.get("partial_r_quality_se"))
        quality.update(click_partial_r_quality=rc, llm_partial_r_quality=rl, click_se=sc, llm_se=sl,
                       bootstrap=qc.get("bootstrap"))
        if rc is None or rl is None or sc is None or sl is None:
            quality.update(status=NOT_MEASURED, reason="partial_r_quality or its standard error is missing or not finite")
        else:
            diff, se = rc - rl, math.sqrt(sc ** 2 + sl ** 2)
            if se > 0:
                z = diff / se
                p = float(2.0 * stats.norm.sf(abs(z)))
            else:  # no spread in either bootstrap: the same convention as paired_ttest
                z, p = (math.copysign(math.inf, diff), 0.0) if diff else (0.0, 1.0)
            quality.update(diff=diff, se=se, z=_num(z), p=p, status=direction_status(diff, p, alpha))
    measured = [x["status"] for x in (auc, quality) if x["status"] != NOT_MEASURED]
    verdict = combine(measured) if measured else NOT_MEASURED
    return {**out, "verdict": verdict, "needs": [], "auc": auc, "quality": quality,
            "parts_not_measured": [k for k, x in (("auc", auc), ("quality", quality)) if x["status"] == NOT_MEASURED]}


def finding3(runs: Mapping[str, StudyRun], click: str, llm: str, combined: Sequence[str], famol: Sequence[str],
             measure: str, alpha: float) -> dict[str, Any]:
    schedules = [n for n in combined if n not in famol]
    famols = [n for n in combined if n in famol] + [n for n in famol if n not in combined]
    out: dict[str, Any] = {"title": "Data scheduling and FAMOL beat either signal alone on every bucket; FAMOL more",
                           "measure": measure, "click": click, "llm": llm, "schedules": schedules, "famols": famols}
    singles = [n for n in (click, llm) if n not in runs]
    per_run: dict[str, Any] = {}
    if not singles:
        for name in [*schedules, *famols]:
            if name not in runs:
                continue
            rb = {}
            for b in BUCKETS:
                mine = runs[name].per_query(measure, b)
                vc, vl = compare(mine, runs[click].per_query(measure, b)), compare(mine, runs[llm].per_query(measure, b))
                if not vc["n"] or not vl["n"]:
                    status = NOT_MEASURED
                elif vc["diff"] > 0 and vl["diff"] > 0:
                    status = HOLDS if max(vc["p"], vl["p"]) < alpha else HOLDS_NS
                else:
                    status = FAILS
                rb[b] = {"mean": vc["mean_a"], "click_mean": vc["mean_b"], "llm_mean": vl["mean_b"],
                         "diff_click": vc["diff"], "diff_llm": vl["diff"], "p_click": vc["p"], "p_llm": vl["p"],
                         "p": None if vc["p"] is None or vl["p"] is None else max(vc["p"], vl["p"]),
                         "n": min(vc["n"], vl["n"]), "status": status}
            per_run[name] = {"overall": runs[name].overall(measure), "buckets": rb,
                             "verdict": combine([x["status"] for x in rb.values()])}

    def best(names: list[str]) -> str | None:
        present = [n for n in names if n in per_run and per_run[n]["overall"] is not None]
        return max(present, key=lambda n: per_run[n]["overall"]) if present else None  # max: the first of a tie

    families = {}
    for family, names in (("scheduling", schedules), ("famol", famols)):
        chosen = best(names)
        # what it takes to judge the family: the single-signal runs, and a run of the family if none ran
        needs = singles + ([] if any(n in runs for n in names) else names)
        families[family] = {"runs": [n for n in names if n in per_run], "best": chosen,
                            "verdict": per_run[chosen]["verdict"] if chosen else NOT_RUN,
                            "needs": [] if chosen else (needs or names)}
    bf, bs = families["famol"]["best"], families["scheduling"]["best"]
    if bf and bs:
        c = compare(runs[bf].per_query(measure), runs[bs].per_query(measure))
        more = {"famol": bf, "scheduling": bs, "famol_mean": c["mean_a"], "scheduling_mean": c["mean_b"],
                "diff": c["diff"], "n": c["n"], "t": c["t"], "p": c["p"],
                "status": direction_status(c["diff"], c["p"], alpha) if c["n"] else NOT_MEASURED, "needs": []}
    else:
        needs = families["famol"]["needs"] + families["scheduling"]["needs"]
        more = {"status": NOT_RUN, "needs": list(dict.fromkeys(needs))}
    parts = [families["scheduling"]["verdict"], families["famol"]["verdict"], more["status"]]
    needs = list(dict.fromkeys(singles + families["scheduling"]["needs"] + families["famol"]["needs"] + more["needs"]))
    verdict = NOT_RUN if NOT_RUN in parts else combine(parts)
    return {**out, "verdict": verdict, "needs": needs if verdict == NOT_RUN else [], "runs": per_run,
            "families": families, "famol_improves_more": more}


# ---- interpretation stubs (generated from the numbers) ---------------------------------------

def _upper(text: str) -> str:
    return text[:1].upper() + text[1:]


def _needs_text(f: dict[str, Any]) -> str:
    return "not run: needs " + ", ".join(f"`{n}`" for n in f["needs"]) + " (+exp=NAME)"


def interpret1(f: dict[str, Any], counts: dict[str, int], quality: dict[str, dict], alpha: float) -> str:
    if f["verdict"] == NOT_RUN:
        return f"Nothing to interpret: {_needs_text(f)}."
    n = ", ".join(f"{f['buckets'][b]['n']} {b}" for b in BUCKETS)
    held = [b for b in BUCKETS if f["buckets"][b]["status"] == HOLDS]
    return (f"The verdict rests on paired tests over {n} frequency test queries ({f['measure']}, alpha {alpha:g}; "
            f"evaluated per bucket: " + ", ".join(f"{b} {counts.get(b, 0)}" for b in BUCKETS) + "); "
            f"{len(held)} of 3 buckets are significant in the expected direction. It compares one click run "
            f"(`{f['click']}`) with one LLM run: {_quality_words(quality.get(f['llm']), '`' + f['llm'] + '`')}.")


def interpret2(f: dict[str, Any], quality: dict[str, dict]) -> str:
    if f["verdict"] == NOT_RUN:
        return f"Nothing to interpret: {_needs_text(f)}."
    a, q = f["auc"], f["quality"]
    parts = []
    if a["status"] == NOT_MEASURED:
        parts.append(f"(i) is not measured: {a['reason']}.")
    else:
        parts.append(f"(i) rests on {a['n']} queries with both relevant and non-relevant documents in both runs' "
                     "rankings (binary human labels).")
    if q["status"] == NOT_MEASURED:
        parts.append(f"(ii) is not measured: {q['reason']}.")
    else:
        parts.append(f"(ii) rests on the simulator's latent document quality and bootstrap standard errors "
                     f"({q.get('bootstrap') or 'an unstated number of'} resamples of the queries); its z-test treats "
                     "the two runs' bootstrap estimates as independent although both are scored on the same queries.")
    parts.append(_upper(_quality_words(quality.get(f["llm"]), "`" + f["llm"] + "`")) + ".")
    return " ".join(parts)


def interpret3(f: dict[str, Any], counts: dict[str, int], quality: dict[str, dict]) -> str:
    ran = list(f["runs"])
    if not ran:
        return f"Nothing to interpret: {_needs_text(f)}."
    parts = [f"{len(ran)} combined run(s) compared per bucket with `{f['click']}` and `{f['llm']}` over "
             + ", ".join(f"{counts.get(b, 0)} {b}" for b in BUCKETS) + " frequency test queries."]
    for fam in ("scheduling", "famol"):
        best = f["families"][fam]["best"]
        if best:
            parts.append(f"The {fam} family is judged by `{best}`, its best of {len(f['families'][fam]['runs'])} "
                         f"by overall {f['measure']} on these same test queries.")
    labelled = [quality[n] for n in ran if n in quality]
    if labelled:
        parts.append("LLM labels: " + "; ".join(_quality_words(r, "`" + r["name"] + "`") for r in labelled) + ".")
    if f["verdict"] == NOT_RUN:
        parts.append(f"The verdict is {_needs_text(f)}.")
    return " ".join(parts)


# ---- plots -----------------------------------------------------------------------------------

def _save(fig, path: Path) -> str:
    from uptrain.report.plots import _save as save

    return save(fig, path).name


def buckets_plot(rows: list[dict[str, Any]], measure: str, buckets: list[str], path: Path) -> str:
    """Grouped bars: ``measure`` per bucket (and over all queries), one bar per run."""
    import matplotlib.pyplot as plt
    import numpy as np

    groups = ["all", *buckets]
    width = 0.8 / max(len(rows), 1)
    fig, ax = plt.subplots(figsize=(max(7, 1.6 * len(groups) + 0.25 * len(rows)), 4.5))
    x = np.arange(len(groups))
    for i, row in enumerate(rows):
        values = [row["cells"][measure][g]["value"] for g in groups]
        ax.bar(x + (i - (len(rows) - 1) / 2) * width, [np.nan if v is None else v for v in values], width,
               label=row["label"])
    ax.set_xticks(x, [f"{g}" for g in groups])
    ax.set_xlabel("query-frequency bucket of the click log")
    ax.set_ylabel(measure)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="x-small", ncol=2)
    fig.tight_layout()
    return _save(fig, path)


def famol_curves(runs: list[StudyRun]) -> tuple[list[dict[str, Any]], list[str]]:
    """Each FAMOL run's weighting (its famol phase's resolved ``weighting`` in config.yaml) and w at the
    evaluated queries."""
    from uptrain.errors import ConfigError
    from uptrain.labels.frequency import make_weighting

    out, notes = [], []
    for run in runs:
        cfg = run.config()
        entries = [e for ph in ((cfg or {}).get("phases") or []) if isinstance(ph, dict)
                   for e in (ph.get("labels") if isinstance(ph.get("labels"), list) else [])
                   if isinstance(e, dict) and e.get("source") == "famol"]
        if not entries:
            continue
        spec = entries[0].get("weighting")
        try:
            w = make_weighting(spec)
        except (ConfigError, ValueError) as e:
            raise SweepError(f"{run.path}: config.yaml, the famol phase's weighting {spec!r}: {e}") from None
        if getattr(w, "learned", False):
            # what training learned (the phase's train_stats.json: famol.final), one weight per bucket
            final = _learned_weights(run.path)
            if final is None:
                notes.append(f"run '{run.name}' learns its weights and its training artifact holds none: not drawn")
                continue
            w = make_weighting({"kind": "step", "weights": final})
            w.kind = "learned"
        points = [(f, b, w(f, b)) for f, b in ((s, b) for b, s in run.query_map.values())]
        out.append({"name": run.name, "label": run.label, "weighting": w.spec(), "object": w, "points": points})
    for run in runs:
        if run.name in FAMOL and run.config() is None:
            notes.append(f"run '{run.name}' has no config.yaml: its weight is not drawn")
    return out, notes


def _learned_weights(run_dir: Path) -> dict[str, float] | None:
    """The learned per-bucket click weights of a run's FAMOL phase (``artifacts/train_*/train_stats.json``)."""
    for stats in sorted(Path(run_dir).glob("artifacts/train_*/train_stats.json")):
        try:
            final = (json.loads(stats.read_text()).get("famol") or {}).get("final")
        except (OSError, json.JSONDecodeError):
            continue
        if final:
            return {str(b): float(v) for b, v in final.items()}
    return None


def famol_weight_plot(curves: list[dict[str, Any]], ranges: dict[str, dict], buckets: list[str], path: Path) -> str:
    """w(f) against sessions per query (symlog: 0 sessions shown), the queries as a rug, the buckets' ranges."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4.2))
    known = [b for b in buckets if b in ranges and ranges[b].get("min_frequency") is not None]
    for i, b in enumerate(known):
        lo, hi = ranges[b]["min_frequency"], ranges[b]["max_frequency"]
        ax.axvspan(lo, hi, color=f"C{7 + i % 3}", alpha=0.08)
        ax.axvline(lo, color="gray", linestyle=":", linewidth=0.8)
        ax.text(math.sqrt(max(lo, 0.5) * max(hi, 1)), 1.02, b, ha="center", fontsize=8,
                transform=ax.get_xaxis_transform())
    for i, c in enumerate(curves):
        w = c["object"]
        pts = []
        for k, b in enumerate(reversed(known)):  # low first: at a shared boundary the lower bucket comes first
            lo, hi = int(ranges[b]["min_frequency"]), int(ranges[b]["max_frequency"])
            grid = sorted({lo, hi, *np.unique(np.round(np.geomspace(max(lo, 1), max(hi, 1), 60)).astype(int))})
            pts += [(f, k, w(f, b)) for f in grid if lo <= f <= hi]
        pts.sort()
        spec = ", ".join(f"{k}={v}" for k, v in c["weighting"].items() if k != "kind")
        if pts:
            ax.plot([p[0] for p in pts], [p[2] for p in pts], color=f"C{i}",
                    label=f"{c['label']} ({c['weighting']['kind']}: {spec})")
        if c["points"]:
            ax.scatter([p[0] for p in c["points"]], [p[2] for p in c["points"]], color=f"C{i}", s=12, zorder=3)
    fs = sorted({p[0] for c in curves for p in c["points"]})
    if fs:
        ax.plot(fs, [0.02] * len(fs), "|", color="black", markersize=10, transform=ax.get_xaxis_transform(),
                label="evaluated queries")
    ax.set_xscale("symlog", linthresh=1)
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("sessions per query in the click log (symlog)")
    ax.set_ylabel("click weight w(f); LLM weight 1 - w(f)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small")
    fig.tight_layout()
    return _save(fig, path)


def quality_points(ordered: list[StudyRun]) -> list[dict[str, Any]]:
    out = []
    for run in ordered:
        q = run.click_study().get("quality")
        if not q:
            continue
        x, y = _num(q.get("partial_r_relevance")), _num(q.get("partial_r_quality"))
        if x is None or y is None:
            continue
        out.append({"name": run.name, "label": run.label, "partial_r_relevance": x, "partial_r_quality": y,
                    "partial_r_relevance_se": _num(q.get("partial_r_relevance_se")),
                    "partial_r_quality_se": _num(q.get("partial_r_quality_se"))})
    return out


def quality_plot(points: list[dict[str, Any]], path: Path) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 5))
    for i, p in enumerate(points):
        ax.errorbar(p["partial_r_relevance"], p["partial_r_quality"], xerr=p["partial_r_relevance_se"] or 0,
                    yerr=p["partial_r_quality_se"] or 0, fmt="o", color=f"C{i % 10}", capsize=3)
        ax.annotate(p["label"], (p["partial_r_relevance"], p["partial_r_quality"]), textcoords="offset points",
                    xytext=(5, 5), fontsize="x-small")
    ax.axhline(0, color="gray", linewidth=0.8)
    ax.axvline(0, color="gray", linewidth=0.8)
    ax.set_xlabel("partial r: scores ~ human grade (quality partialled out)")
    ax.set_ylabel("partial r: scores ~ latent document quality")
    ax.set_title("What the scores follow (error bars: bootstrap standard errors)", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


# ---- rendering -------------------------------------------------------------------------------

def render(data: dict[str, Any]) -> str:
    alpha, measure = data["alpha"], data["measure"]
    buckets = data["buckets"]
    parts = ["# Clicks vs LLM labels: the sweep",
             f"{len(data['runs'])} runs from `{data['sweep_dir']}`. Test: two-sided paired t-test over per-query "
             f"values (scipy), alpha = {alpha:g}."]
    if data["load"]["replaced"]:
        parts.append("Runs of one name in two job directories (the later used):\n\n" + "\n".join(
            f"- `{r['name']}`: used `{r['kept']}`, left out `{r['left_out']}`" for r in data["load"]["replaced"]))
    # (a)
    base = data["baseline"]
    header, numeric = ["Method"], [False]
    for m in data["measures"]:
        header += [f"{m} {b}" for b in ["all", *buckets]]
        numeric += [True] * (1 + len(buckets))
    body = []
    for row in data["table"]:
        cells = [row["label"]]
        for m in data["measures"]:
            for b in ["all", *buckets]:
                c = row["cells"][m][b]
                cells.append(MISSING if c["value"] is None else f"{c['value']:.3f}{c['marker']}")
        body.append(cells)
    q = data["bucket_queries"]
    parts += ["## (a) Results per query-frequency bucket", _md_table(header, body, numeric),
              "Evaluated queries per bucket: " + ", ".join(f"{b} {q['evaluated'].get(b, 0)}" for b in buckets)
              + ". Buckets over every query of the click log (sessions per query): "
              + ", ".join(f"{b} {v['min_frequency']}-{v['max_frequency']}" for b, v in q["log"].items()) + ".",
              (f"`+` / `-`: significantly better / worse than {base['label']} (`{base['name']}`) over that "
               f"bucket's queries (p < {alpha:g}); `all`: over every evaluated query." if base else
               f"No `+` / `-` markers: the BM25 run `{BASELINE}` is not in the sweep.")]
    if q["count_mismatches"]:
        parts.append("Bucket counts that differ from the run's own `queries`: " + "; ".join(
            f"{x['run']} {x['bucket']}: {x['segment_queries']} written, {x['mapped']} mapped"
            for x in q["count_mismatches"]))
    if q["queries_without_bucket"]:
        parts.append("Queries with values but no bucket (in `all` only): " + ", ".join(
            f"`{n}` {k}" for n, k in q["queries_without_bucket"].items()) + ".")
    if data["load"]["query_buckets_borrowed"]:
        parts.append("Runs without their own query buckets (those of another run used): "
                     + ", ".join(f"`{n}`" for n in data["load"]["query_buckets_borrowed"]) + ".")
    # (b)
    rows = []
    for r in data["label_quality"]:
        if not r["found"]:
            rows.append([r["label"], f"`{r['name']}`", "not found", *([MISSING] * 6)])
            continue
        rows.append([r["label"], f"`{r['name']}`", "SIMULATED" if r["simulated"] else "LLM",
                     str(r["pairs"]), _fmt(r["kappa"]), _fmt(r["exact"]), _fmt(r["within_one"]),
                     _fmt(r["precision"]), _fmt(r["recall"])])
    parts += ["## (b) LLM label quality",
              "Grades of the documents the log showed against the human grades (the grade stage's quality.json); "
              "precision and recall of LLM grade >= 2 against human grade > 0. SIMULATED: the grades were drawn "
              "from the human labels, not produced by an LLM."]
    parts.append(_md_table(["Method", "Experiment", "Annotator", "Pairs", "Cohen's kappa", "Exact", "Within one",
                            "Precision", "Recall"], rows, [False, False, False] + [True] * 6)
                 if rows else "No LLM-supervised run in the sweep.")
    # (c)
    parts.append("## (c) The paper's findings")
    f1, f2, f3 = data["findings"]["1"], data["findings"]["2"], data["findings"]["3"]
    parts.append(f"### Finding 1: {f1['title']} — **{f1['verdict']}**")
    if f1["verdict"] == NOT_RUN:
        parts.append(_upper(_needs_text(f1)) + ".")
    else:
        parts.append(_md_table(
            ["Bucket", "Expected", "Queries", f"Clicks ({f1['click']})", f"LLM ({f1['llm']})", "Click - LLM", "p",
             "Verdict"],
            [[b, "clicks > LLM" if c["favours"] == "click" else "LLM > clicks", str(c["n"]), _fmt(c["click_mean"]),
              _fmt(c["llm_mean"]), _fmt(c["diff"], 4), _p(c["p"]), c["status"]] for b, c in f1["buckets"].items()],
            [False, False, True, True, True, True, True, False]))
        parts.append(f"{measure}, means over the bucket's queries both runs evaluated.")
    parts.append("Interpretation: " + data["interpretation"]["1"])
    parts.append(f"### Finding 2: {f2['title']} — **{f2['verdict']}**")
    if f2["verdict"] == NOT_RUN:
        parts.append(_upper(_needs_text(f2)) + ".")
    else:
        a, qq = f2["auc"], f2["quality"]
        if a["status"] == NOT_MEASURED:
            parts.append(f"(i) ROC AUC: not measured ({a['reason']}).")
        else:
            parts.append(f"(i) ROC AUC of the scores against the binary human labels, mean over {a['n']} queries: "
                         f"LLM {_fmt(a['llm_mean'], 4)}, clicks {_fmt(a['click_mean'], 4)}, LLM - clicks "
                         f"{_fmt(a['diff'], 4)}, paired t-test p = {_p(a['p'])}: **{a['status']}**. (As written: "
                         f"LLM {_fmt(a['llm_auc'], 4)}, clicks {_fmt(a['click_auc'], 4)}; pooled "
                         f"{_fmt(a['llm_auc_pooled'], 4)} / {_fmt(a['click_auc_pooled'], 4)}.)")
        if qq["status"] == NOT_MEASURED:
            parts.append(f"(ii) Partial r with document quality: not measured ({qq['reason']}).")
        else:
            parts.append(f"(ii) Partial r of the scores with the latent document quality: clicks "
                         f"{_fmt(qq['click_partial_r_quality'])} (se {_fmt(qq['click_se'])}), LLM "
                         f"{_fmt(qq['llm_partial_r_quality'])} (se {_fmt(qq['llm_se'])}); z = "
                         f"{_fmt(qq['z'], 2)}, two-sided normal p = {_p(qq['p'])}: **{qq['status']}**. The z-test "
                         "treats the two bootstrap estimates as independent.")
    parts.append("Interpretation: " + data["interpretation"]["2"])
    parts.append(f"### Finding 3: {f3['title']} — **{f3['verdict']}**")
    if f3["runs"]:
        rows = []
        for name, r in f3["runs"].items():
            for b, c in r["buckets"].items():
                rows.append([f"`{name}`", b, str(c["n"]), _fmt(c["mean"]), _fmt(c["click_mean"]), _fmt(c["llm_mean"]),
                             _p(c["p_click"]), _p(c["p_llm"]), c["status"]])
            rows.append([f"`{name}`", "**run**", "", _fmt(r["overall"]), "", "", "", "", f"**{r['verdict']}**"])
        parts.append(_md_table(["Run", "Bucket", "Queries", measure, "Clicks", "LLM", "p vs clicks", "p vs LLM",
                                "Verdict"], rows, [False, False, True, True, True, True, True, True, False]))
        parts.append("A bucket holds when the run is above both single-signal runs; the larger of its two p-values "
                     "decides significance.")
    fam = f3["families"]
    parts.append("Families (each judged by its best run by overall " + measure + "): " + "; ".join(
        f"{k} {('`' + v['best'] + '`') if v['best'] else '(none run)'}: {v['verdict']}" for k, v in fam.items()) + ".")
    m = f3["famol_improves_more"]
    if m["status"] == NOT_RUN:
        parts.append("FAMOL improves more: not run (needs " + ", ".join(f"`{n}`" for n in m["needs"]) + ").")
    else:
        parts.append(f"FAMOL improves more: `{m['famol']}` {_fmt(m['famol_mean'])} vs `{m['scheduling']}` "
                     f"{_fmt(m['scheduling_mean'])} over {m['n']} queries, difference {_fmt(m['diff'], 4)}, paired "
                     f"t-test p = {_p(m['p'])}: **{m['status']}**.")
    if f3["verdict"] == NOT_RUN:
        parts.append(_upper(_needs_text(f3)) + ".")
    parts.append("Interpretation: " + data["interpretation"]["3"])
    # plots
    parts.append("## Plots")
    for key, title in (("buckets", f"{measure} per bucket"), ("famol_weight", "FAMOL's click weight w(f)"),
                       ("quality_vs_relevance", "Scores: document quality against relevance")):
        plot = data["plots"].get(key)
        parts.append(f"### {title}\n\n" + (f"![{key}]({plot})" if plot else f"Not drawn: {data['plot_notes'][key]}"))
    if data["notes"]:
        parts += ["## Notes", "\n".join(f"- {n}" for n in data["notes"])]
    return "\n\n".join(parts) + "\n"


# ---- the report ------------------------------------------------------------------------------

def clicks_study_report(sweep_dir: Path | str, out: Path | str | None = None, alpha: float = ALPHA,
                        measure: str = MEASURE, click: str = CLICK, llm: str = LLM,
                        combined: Sequence[str] = COMBINED, famol: Sequence[str] = FAMOL,
                        group: str = GROUP, collection: str = COLLECTION,
                        warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Write sweep.md, results.json and the plots of the module docstring to ``out`` (default:
    ``SWEEP_DIR/clicks_study``) and return results.json's content. Raises
    :class:`uptrain.report.sweep.SweepError` on bad input (no runs, a run without segments, ...)."""
    sweep_dir = Path(sweep_dir)
    out = Path(out) if out is not None else sweep_dir / "clicks_study"
    notes: list[str] = []

    def note(message: str) -> None:
        notes.append(message)
        (warn or log.warning)(message)

    if not 0.0 < float(alpha) < 1.0:
        raise SweepError(f"--alpha must be in (0, 1), got {alpha}")
    runs, load = load_sweep(sweep_dir, note, group, collection)
    ordered = _order(runs, click, llm, combined)
    measures = list(dict.fromkeys(m for r in ordered for m in r.measures))
    if measure not in measures:
        raise SweepError(f"--measure {measure} is not among the runs' measures ({', '.join(measures) or 'none'})")
    buckets = [*BUCKETS, *(b for b in EXTRA_BUCKETS if any(b in r.segments for r in ordered))]
    missing_buckets = {r.name: [b for b in BUCKETS if b not in r.segments] for r in ordered}
    for name, gone in missing_buckets.items():
        if gone:
            note(f"run '{name}' has no results for bucket(s) {', '.join(gone)}")
    baseline = runs.get(BASELINE)
    if baseline is None:
        note(f"the BM25 run '{BASELINE}' is not in the sweep: no +/- markers")
    table = bucket_table(ordered, measures, buckets, baseline, alpha)
    counts = bucket_queries(ordered, buckets)
    for name, n in counts["queries_without_bucket"].items():
        note(f"run '{name}': {n} queries with per-query values are in no frequency bucket (counted in 'all' only)")
    for x in counts["count_mismatches"]:
        note(f"run '{x['run']}' bucket {x['bucket']}: {x['segment_queries']} queries written, {x['mapped']} in its "
             "query -> bucket map")
    quality = label_quality(ordered)
    for r in quality:
        if not r["found"]:
            note(f"run '{r['name']}' is LLM-supervised but has no artifacts/grade*/quality.json")
    by_name = {r["name"]: r for r in quality}
    findings = {"1": finding1(runs, click, llm, measure, alpha), "2": finding2(runs, click, llm, alpha),
                "3": finding3(runs, click, llm, combined, famol, measure, alpha)}
    for k, f in findings.items():
        if f["verdict"] == NOT_RUN:
            note(f"finding {k} not run: needs " + ", ".join(f["needs"]))
    interpretation = {"1": interpret1(findings["1"], counts["evaluated"], by_name, alpha),
                      "2": interpret2(findings["2"], by_name),
                      "3": interpret3(findings["3"], counts["evaluated"], by_name)}
    out.mkdir(parents=True, exist_ok=True)
    plot_paths: dict[str, str | None] = {}
    plot_notes: dict[str, str] = {}
    plot_paths["buckets"] = buckets_plot(table, measure, buckets, out / "buckets.png")
    curves, curve_notes = famol_curves(ordered)
    for n in curve_notes:
        note(n)
    if curves:
        plot_paths["famol_weight"] = famol_weight_plot(curves, counts["log"], buckets, out / "famol_weight.png")
    else:
        plot_paths["famol_weight"] = None
        plot_notes["famol_weight"] = "no run has a FAMOL label source (config.yaml labels.source: famol)."
    points = quality_points(ordered)
    if points:
        plot_paths["quality_vs_relevance"] = quality_plot(points, out / "quality_vs_relevance.png")
    else:
        plot_paths["quality_vs_relevance"] = None
        plot_notes["quality_vs_relevance"] = ("every run's click_study quality is null (a click log read from a "
                                              "file carries no latent document quality).")
    for key, why in plot_notes.items():
        note(f"{key}.png not drawn: {why}")
    data = {
        "sweep_dir": str(sweep_dir), "alpha": alpha, "measure": measure, "measures": measures, "buckets": buckets,
        "group": group, "collection": collection,
        "test": "two-sided paired t-test over per-query values (scipy.stats.ttest_rel via "
                "uptrain.evaluate.significance.paired_ttest)",
        "baseline": {"name": baseline.name, "label": baseline.label, "path": str(baseline.path)} if baseline else None,
        "runs": [{"name": r.name, "label": r.label, "path": str(r.path), "label_source": r.run.label_source,
                  "query_buckets_from": r.query_map_from} for r in ordered],
        "load": load, "bucket_queries": counts, "missing_buckets": {k: v for k, v in missing_buckets.items() if v},
        "table": table, "label_quality": quality, "findings": findings, "interpretation": interpretation,
        "famol_weights": [{"name": c["name"], "label": c["label"], "weighting": c["weighting"],
                           "queries": [{"sessions": f, "bucket": b, "w": w} for f, b, w in c["points"]]}
                          for c in curves],
        "quality_points": points, "plots": plot_paths, "plot_notes": plot_notes, "notes": notes,
    }
    (out / "results.json").write_text(json.dumps(data, indent=2, ensure_ascii=False))
    (out / "sweep.md").write_text(render(data))
    return data


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, metavar="SWEEP_DIR", help="the study's multirun folder")
    parser.add_argument("--out", type=Path, help="output folder (default: SWEEP_DIR/clicks_study)")
    parser.add_argument("--alpha", type=float, default=ALPHA, help="significance level (default 0.05)")
    parser.add_argument("--measure", default=MEASURE, help="the measure of the verdicts and bars (default nDCG@10)")
    parser.add_argument("--click", default=CLICK, help="the click-supervised run (default cvl_click_dbn)")
    parser.add_argument("--llm", default=LLM, help="the LLM-supervised run (default cvl_llm)")
    parser.add_argument("--combined", default=",".join(COMBINED), help="the combined runs, comma-separated")
    parser.add_argument("--famol", default=",".join(FAMOL), help="which combined runs are FAMOL, comma-separated")
    parser.add_argument("--collection", default=COLLECTION, help="the evaluated collection (default clicks_test)")
    args = parser.parse_args(argv)

    def warn(message: str) -> None:
        print(f"{PROG}: warning: {message}", file=sys.stderr)

    try:
        data = clicks_study_report(args.sweep_dir, args.out, alpha=args.alpha, measure=args.measure,
                                   click=args.click, llm=args.llm, combined=_names(args.combined),
                                   famol=_names(args.famol), collection=args.collection, warn=warn)
    except SweepError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    out = args.out or args.sweep_dir / "clicks_study"
    print(f"report: {out / 'sweep.md'}")
    for k, f in data["findings"].items():
        print(f"finding {k}: {f['verdict']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
