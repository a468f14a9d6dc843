"""Findings of Zhang et al., "Leveraging LLMs for Utility-Focused Annotation"
(arXiv 2504.05220, Sec. 6), checked on a sweep's runs and on the paper's own numbers.

A finding is a function registered with ``@finding(title)``: it takes experiment
name -> results and returns ``(status, evidence)``, status one of ``holds``,
``does not hold``, ``not run`` (a run it needs is missing, or the measure was not
evaluated). Results are duck-typed: ``value(group, measure)`` (the evaluation
group's mean, groups ``in_domain`` / ``out_of_domain``) and ``per_query(group,
measure)`` (query id -> value, or None); :class:`uptrain.report.sweep.Run`
provides both, :class:`PaperResults` the first and ``published_marker`` instead
of per-query values.

The paper's numbers (``--reference``, a long-format CSV with header
``table,group,method,collection,measure,value,marker``) are mapped thus:

* experiment -> paper method (:data:`PAPER_METHODS`, case-insensitive): the whole
  name must match, except the curriculum rows, matched by "20%" / "100%" in a
  method name without "REPLUG"; of several matching rows sets, the first
  (table, group, method) in file order is used;
* collection -> evaluation group: the ``group`` column if it names one
  (in-domain, out-of-domain, BEIR), else in-domain when the collection names MS
  MARCO, its dev set or TREC DL 19/20 (:data:`IN_DOMAIN_WORDS`), else out-of-domain;
* a group's value: its "avg"/"average" row if there is one, else the mean of its
  collections; MRR@10 is RR@10; values above 1 mean the file is in percent;
* significance: the published marker ("-" = significantly worse than Human).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from statistics import mean
from typing import Any, Callable, Mapping

from uptrain.evaluate.significance import paired_ttest
from uptrain.report.markdown import _md_table

HOLDS, FAILS, NOT_RUN = "holds", "does not hold", "not run"
HOLDS_NS = "holds, not significant"  # the right direction, but a paired t-test cannot tell it from chance
ALPHA = 0.05
CLOSE = 0.01  # "close to human": at most this far below, absolute nDCG@10
IN, OUT = "in_domain", "out_of_domain"
NDCG = "nDCG@10"
WHERE = {IN: "in-domain", OUT: "out-of-domain avg"}

Results = Any  # value(group, measure), per_query(group, measure); see the module docstring
Verdict = tuple[str, str]
FINDINGS: list[tuple[str, Callable[[Mapping[str, Results]], Verdict]]] = []

PAPER_METHODS = {  # experiment -> the paper's row names for it (arXiv v2 Tables 2, 4 and 6)
    "human": ("Human",), "relsel": ("RelSel", "Relevance selection"), "utilsel": ("UtilSel", "Utility selection"),
    "utilrank": ("UtilRank",), "replug": ("REPLUG",),
    "interleave": ("Interleave", "Interleave (Pos-one)"), "utilsel_infonce": ("InfoNCE",),
    "utilsel_conj_infonce": ("Conj-InfoNCE",), "utilsel_disj_infonce": ("Disj-InfoNCE",),
    "utilsel_cl20": ("UtilSel (CL 20%)", "20%"), "utilsel_cl100": ("UtilSel (CL 100%)", "100%"),
}
IN_DOMAIN_WORDS = ("ms marco", "msmarco", "ms-marco", "dev", "dl19", "dl20", "dl-19", "dl-20", "dl 19", "dl 20", "trec dl")
REFERENCE_COLUMNS = ("table", "group", "method", "collection", "measure", "value", "marker")


def finding(title: str):
    """Register a finding under ``title`` (the order of registration is the order of the report)."""
    def register(fn):
        FINDINGS.append((title, fn))
        return fn
    return register


def _missing(runs: Mapping[str, Results], names: list[str]) -> Verdict | None:
    gone = [n for n in names if n not in runs]
    return (NOT_RUN, "missing runs: " + ", ".join(gone)) if gone else None


def _ttest_text(a: Results, b: Results, group: str, measure: str) -> str:
    pa, pb = a.per_query(group, measure), b.per_query(group, measure)
    return f" (paired t-test p = {paired_ttest(pa, pb).p:.3g})" if pa and pb else ""


def _above(runs: Mapping[str, Results], a: str, b: str, group: str, measure: str = NDCG) -> tuple:
    """Is a's mean above b's? (ok, text with the numbers and the p-value, significant or None
    when there are no per-query values to test)."""
    va, vb = runs[a].value(group, measure), runs[b].value(group, measure)
    where = f"{WHERE.get(group, group)} {measure}"
    if va is None or vb is None:
        return None, f"{where}: not evaluated", None
    pa, pb = runs[a].per_query(group, measure), runs[b].per_query(group, measure)
    significant = paired_ttest(pa, pb).p < ALPHA if pa and pb else None
    return va > vb, f"{where}: {a} {va:.3f} vs {b} {vb:.3f}{_ttest_text(runs[a], runs[b], group, measure)}", significant


def _verdict(checks: list[tuple]) -> Verdict:
    """``holds`` when every evaluated comparison goes the finding's way and, where it can be
    tested, significantly so; ``holds, not significant`` when the direction is right but a
    paired t-test cannot tell it from chance."""
    known = [c for c in checks if c[0] is not None]
    text = "; ".join(c[1] for c in checks)
    if not known:
        return NOT_RUN, text
    if not all(c[0] for c in known):
        return FAILS, text
    tested = [c[2] for c in known if len(c) > 2 and c[2] is not None]
    return (HOLDS_NS if tested and not all(tested) else HOLDS), text


def _significantly_worse(a: Results, b: Results, group: str, measure: str) -> tuple[bool, str]:
    pa, pb = a.per_query(group, measure), b.per_query(group, measure)
    if pa and pb:
        t = paired_ttest(pa, pb)
        worse = t.p < ALPHA and t.mean_diff < 0
        return worse, f"paired t-test p = {t.p:.3g}: {'' if worse else 'not '}significantly worse"
    published = getattr(a, "published_marker", None)
    mark = published(group, measure) if published else None
    if mark is not None:
        worse = "-" in mark
        return worse, f"published marker '{mark}': {'' if worse else 'not '}significantly worse"
    return False, "significance not tested (no per-query values)"


@finding("Utility-focused selection (UtilSel, UtilRank) beats relevance selection (RelSel), nDCG@10")
def utility_over_relevance(runs: Mapping[str, Results]) -> Verdict:
    if gap := _missing(runs, ["utilsel", "relsel"]):
        return gap
    llm = [n for n in ("utilsel", "utilrank") if n in runs]
    return _verdict([_above(runs, n, "relsel", g) for n in llm for g in (IN, OUT)])


@finding("Disj-InfoNCE beats InfoNCE and Conj-InfoNCE on UtilSel labels, nDCG@10")
def disj_over_other_losses(runs: Mapping[str, Results]) -> Verdict:
    disj = "utilsel_disj_infonce" if "utilsel_disj_infonce" in runs else "utilsel"  # utilsel uses Disj-InfoNCE
    if gap := _missing(runs, [disj, "utilsel_infonce", "utilsel_conj_infonce"]):
        return gap
    return _verdict([_above(runs, disj, o, g) for o in ("utilsel_infonce", "utilsel_conj_infonce") for g in (IN, OUT)])


@finding("Curriculum learning (UtilSel labels, then all human labels) beats interleaving, in-domain nDCG@10")
def curriculum_over_interleave(runs: Mapping[str, Results]) -> Verdict:
    if gap := _missing(runs, ["utilsel_cl100", "interleave"]):
        return gap
    return _verdict([_above(runs, "utilsel_cl100", "interleave", IN)])


@finding(f"Curriculum with 20% of the human labels is close to all human labels: in-domain nDCG@10 "
         f"not significantly worse and at most {CLOSE} below")
def curriculum20_close_to_human(runs: Mapping[str, Results]) -> Verdict:
    if gap := _missing(runs, ["utilsel_cl20", "human"]):
        return gap
    a, b = runs["utilsel_cl20"], runs["human"]
    va, vb = a.value(IN, NDCG), b.value(IN, NDCG)
    if va is None or vb is None:
        return NOT_RUN, f"in-domain {NDCG}: not evaluated"
    worse, test = _significantly_worse(a, b, IN, NDCG)
    close = round(vb - va, 9) <= CLOSE  # rounding: 0.01 apart must count as within 0.01
    text = (f"in-domain {NDCG}: utilsel_cl20 {va:.3f} vs human {vb:.3f} ({va - vb:+.3f}, "
            f"{'within' if close else 'more than'} {CLOSE} below); {test}")
    return (HOLDS if close and not worse else FAILS), text


@finding("LLM labels generalize better: UtilSel's out-of-domain average nDCG@10 is above Human's")
def llm_labels_generalize(runs: Mapping[str, Results]) -> Verdict:
    if gap := _missing(runs, ["utilsel", "human"]):
        return gap
    return _verdict([_above(runs, "utilsel", "human", OUT)])


def evaluate(runs: Mapping[str, Results]) -> list[dict[str, str]]:
    """Every registered finding on ``runs``: [{"id", "title", "status", "evidence"}]."""
    out = []
    for title, fn in FINDINGS:
        status, evidence = fn(runs)
        out.append({"id": fn.__name__, "title": title, "status": status, "evidence": evidence})
    return out


def findings_table(items: list[dict[str, str]]) -> str:
    rows = [[str(i), f["title"], f["status"], f["evidence"]] for i, f in enumerate(items, 1)]
    return _md_table(["#", "Finding", "Status", "Evidence"], rows, [True, False, False, False])


def _measure_key(name: str) -> str:
    return name.strip().lower().replace("mrr", "rr")


def _eval_group(row: Mapping[str, str]) -> str:
    if "llm test" in row["collection"].lower():
        return "llm_test"  # the paper's LLM-judged test collection is its own group
    group = row["group"].strip().lower().replace("_", "-")
    if group in ("in-domain", "out-of-domain", "beir"):
        return IN if group == "in-domain" else OUT
    return IN if any(w in row["collection"].lower() for w in IN_DOMAIN_WORDS) else OUT


def _matches(pattern: str, method: str) -> bool:
    method = method.strip().lower()
    if pattern.endswith("%"):
        return pattern in method and not any(w in method for w in ("replug", "utilrank"))
    return method == pattern.lower()


@dataclass
class PaperResults:
    """One method's rows of the reference CSV, read through the same interface as a run."""

    method: str
    rows: list[dict[str, str]] = field(default_factory=list)
    scale: float = 1.0  # 0.01 when the file is in percent

    def _rows(self, group: str, measure: str) -> list[dict[str, str]]:
        key = _measure_key(measure)
        return [r for r in self.rows if _measure_key(r["measure"]) == key and _eval_group(r) == group]

    def value(self, group: str, measure: str) -> float | None:
        if group == IN and measure == NDCG:
            # in-domain, every table of the paper prints MS MARCO Dev MRR@10 (the ablations nothing else),
            # so the paper's side compares that measure throughout
            measure = "RR@10"
        rows = self._rows(group, measure)
        averages = [r for r in rows if any(w in r["collection"].lower() for w in ("avg", "average", "mean"))]
        rows = averages or rows
        return mean(float(r["value"]) * self.scale for r in rows) if rows else None

    def per_query(self, group: str, measure: str) -> None:
        return None  # a paper publishes means only

    def published_marker(self, group: str, measure: str) -> str | None:
        rows = self._rows(group, measure)
        return "".join((r.get("marker") or "").strip() for r in rows) if rows else None


def load_reference(paths: Path | list[Path]) -> dict[str, PaperResults]:
    """Experiment name -> the paper's rows for it, from one or more CSV files (read in order).

    A method's rows are pooled over every file and table that prints it under one of its
    names (:data:`PAPER_METHODS`); where two tables print the same collection and measure,
    the first one read is kept. ValueError when a header is not the expected one.
    """
    rows = []
    for path in [paths] if isinstance(paths, (str, Path)) else list(paths):
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            absent = [c for c in REFERENCE_COLUMNS if c not in (reader.fieldnames or [])]
            if absent:
                raise ValueError(f"{path} lacks the columns {', '.join(absent)} (expected {','.join(REFERENCE_COLUMNS)})")
            for r in reader:
                try:
                    float(r["value"])
                except (TypeError, ValueError):
                    continue  # a dash or an empty cell: not reported in the paper
                rows.append({k: (v or "") for k, v in r.items() if k})
    scale = 0.01 if any(float(r["value"]) > 1 for r in rows) else 1.0
    out = {}
    for name, patterns in PAPER_METHODS.items():
        chosen, seen, names = [], set(), []
        for pattern in patterns:
            for r in rows:
                key = (r["collection"], _measure_key(r["measure"]))
                if _matches(pattern, r["method"]) and key not in seen:
                    seen.add(key)
                    chosen.append(r)
                    if r["method"] not in names:
                        names.append(r["method"])
            if chosen:
                break  # an exact name wins over the looser "20%" / "100%" patterns
        if chosen:
            out[name] = PaperResults(" / ".join(names), chosen, scale)
    return out


def side_by_side(runs: Mapping[str, Results], path: Path | list[Path], warn: Callable[[str], None]) -> dict[str, Any]:
    """Each finding on the paper's numbers and on ours: {"file", "note", "methods", "rows"}."""
    files = ", ".join(str(p) for p in ([path] if isinstance(path, (str, Path)) else path))
    try:
        paper = load_reference(path)
    except (OSError, ValueError) as e:
        warn(f"reference not used: {e}")
        return {"file": files, "note": f"The reference file could not be used: {e}", "methods": {}, "rows": []}
    rows = []
    for item, ours in zip(evaluate(paper), evaluate(runs)):
        rows.append({"title": item["title"], "paper_status": item["status"], "paper_evidence": item["evidence"],
                     "status": ours["status"], "evidence": ours["evidence"]})
    return {"file": files, "note": None, "methods": {n: p.method for n, p in paper.items()}, "rows": rows}


def side_by_side_table(ref: Mapping[str, Any]) -> str:
    if ref["note"]:
        return ref["note"]
    mapping = ", ".join(f"{method} = `{name}`" for name, method in ref["methods"].items()) or "none matched"
    rows = [[r["title"], f"{r['paper_status']}: {r['paper_evidence']}", f"{r['status']}: {r['evidence']}"]
            for r in ref["rows"]]
    return (f"Paper numbers from `{ref['file']}`; rows used: {mapping}. On the paper's side, \"not run\" "
            "means the file has no row for a method the finding needs. The paper's in-domain values are "
            "MS MARCO Dev MRR@10 (the one in-domain measure every table prints), ours SciFact nDCG@10.\n\n"
            + _md_table(["Finding", "Paper", "Ours"], rows, [False, False, False]))
