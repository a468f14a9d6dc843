"""The RAG study's report: the utility study's retrievers judged by the answers a generator writes
from their passages, beside Tables 3 and 5 of Zhang et al., "Leveraging LLMs for Utility-Focused
Annotation" (arXiv 2504.05220; v2 numbering, see experiments/utility_annotation/REFERENCES.md).

    python -m uptrain.report.rag_study multirun/reproduce-rag/demo --out report/rag
    uptrain-rag-study DIR [DIR ...] --out OUT [--reference CSV ...] [--collection NAME]

Each DIR is a run directory or a folder searched recursively for ``metrics.json`` (a Hydra
multirun of the ``rag_*`` experiments, ``conf/exp/rag_*.yaml``); runs are found as the sweep
report finds them (:func:`uptrain.report.sweep.discover`: re-runs merged, a job's
``baseline_<name>/`` copy used only when no run of the sweep has that name, and marked). A run is a
row when it evaluated the collection (``--collection``, default ``squad_test``: SQuAD's unseen
test articles) by retrieval or by the ``rag`` path (:mod:`uptrain.rag.path`); the others are
counted and listed. Written to ``--out``:

``study.md``
    (1) **The RAG table**, rows in the paper's order (BM25, Zero-shot, Human, REPLUG, REPLUG
    (Human), RelSel, UtilSel, UtilRank, then the CL 20% and CL 100% curricula, REPLUG / UtilSel /
    UtilRank each; other experiments after, by name), labelled by ``report_row.label`` with the
    experiment name beside. Columns: the collection's R@1, R@5, nDCG@10 (retrieval group, the
    one of ``in_domain`` / ``out_of_domain`` / ... that holds the collection); answer recall@1/5/20
    (a gold answer string in the top-k passages; Karpukhin et al. 2020's top-k accuracy, see
    :mod:`uptrain.rag.measures`); for each generation depth k the runs have (``rag.k``: 1 and 5),
    EM, F1, ROUGE-L and BLEU-4 of the answers written from the top-k passages. Markers as in the
    paper's tables: ``+`` / ``-`` significantly better / worse than ``rag_human``, ``†``
    significantly better than REPLUG with the same share of human labels (``rag_replug``; for a
    ``*_cl20`` / ``*_cl100`` run ``rag_replug_cl20`` / ``rag_replug_cl100``, or ``rag_replug``
    when that run is absent, which the Runs table says; on every row but that REPLUG run's own,
    Human's included, which the paper leaves unmarked); each a two-sided paired t-test
    (:func:`uptrain.evaluate.significance.paired_ttest`, scipy's ``ttest_rel``) over the
    per-question values of ``metrics.json``'s ``per_query`` at alpha = 0.05. BLEU-4's cell is
    corpus BLEU, which has no per-question value; its test uses the per-question smoothed sentence
    BLEU-4 that ``per_query`` stores (the paper prints no marker on BLEU for that reason). Then
    the reference rows, which do not depend on the retriever and are taken from the first row
    that has them: the generator from the judged ("gold") passages, an upper bound, and closed
    book (no passage); and the generator's cost (seconds per question at each k).
    (2) **The paper beside it** (``--reference``: the paper's long-format CSVs, by default the
    repository's ``reference_table3_rag.csv`` and ``reference_table5_rag.csv`` where present):
    for the methods both have, the paper's Table 5 (top-5: Recall@5, EM, F1; both generators, NQ
    and HotpotQA) and Table 3 (top-1: Recall@1, ROUGE-L, BLEU-4) beside ours, in percent; and the
    order of the methods in each paper column against ours (Kendall's tau-b over the shared
    methods, scipy), since a 135M-parameter generator on SQuAD cannot reach the numbers of
    Llama-3.1-8B on NQ, while the order of the retrievers can agree. The paper's "Recall@k" is
    undefined in its text; ours beside it is answer recall@k.
    (3) **Findings** with a verdict each (``holds``, ``holds, not significant``, ``does not
    hold``, ``not run``), the numbers and tests in the evidence and the same comparison on the
    paper's Table 5 beside it (values and published markers; the paper does not test every pair):

    (a) utility labels give better RAG than REPLUG: ``rag_utilsel`` and ``rag_utilrank`` against
        ``rag_replug`` on F1 at top-5 and answer recall@5;
    (b) REPLUG (Human) (the paper's Sec. 5.2: a retriever warmed up on the human labels, then
        fine-tuned on REPLUG utilities; ``rag_replug_human``) gives better RAG than REPLUG
        (``rag_replug``, the likelihood of the gold answers), the same two measures;
    (c) UtilSel-CL20% is close to Human: its F1 at top-5 is not significantly below
        ``rag_human``'s and at most :data:`uptrain.report.findings.CLOSE` (0.01) below (the
        convention of findings.py's curriculum finding: both conditions);
    (d) LLM-label retrievers match or beat human labels on RAG: ``rag_utilsel`` against
        ``rag_human`` on both measures, each either above Human or at most CLOSE below, and never
        significantly below;
    (e) better retrieval, better answers: across the table's runs, Spearman's rho (scipy)
        between answer recall@5 and F1 at top-5 is positive (``holds`` when p < alpha), and no
        run's F1 exceeds the gold-passage reference's at its depth.

    "holds" needs every comparison in the finding's direction and significant; "holds, not
    significant" the direction without significance (or without per-question values to test);
    a tie is not "better" and does not hold. A missing run, or a missing measure (a depth not
    generated, no gold-passage reference for (e)) where no evaluated part already fails, makes a
    finding ``not run`` with the reason, the evaluated parts still in its evidence. Then one
    generator check line: when the gold-passage F1 is below :data:`GOLD_F1_LOW` the generator
    answers poorly even from the gold passage, so answer measures separate retrievers weakly and
    answer recall is the more informative column.
``study.json``
    every value of the tables with its markers, p-values and numbers of paired questions, the
    paper columns and orderings, the findings and the counts of everything skipped.
``rag.png``
    per run, F1 at top-5 and answer recall@5 side by side, the gold-passage F1 as a line.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from scipy import stats

from uptrain.evaluate.significance import paired_ttest
from uptrain.report import plots  # noqa: F401  (selects matplotlib's Agg backend)
from uptrain.report.findings import CLOSE, FAILS, HOLDS, HOLDS_NS, NOT_RUN
from uptrain.report.markdown import MISSING, _md_table
from uptrain.report.sweep import Run, SweepError, _natural, closest, discover, representatives

log = logging.getLogger("uptrain")

PROG = "uptrain-rag-study"
COLLECTION = "squad_test"
ALPHA = 0.05
TOP = 5  # the findings' depth: F1 at top-5 and answer recall@5 (the paper's Table 5)
GOLD_F1_LOW = 0.3  # below this gold-passage F1 the generator check warns that answers separate retrievers weakly
RETRIEVAL_MEASURES = ("R@1", "R@5", "nDCG@10")
RECALL_KS = (1, 5, 20)
ANSWER_MEASURES = ("EM", "F1", "ROUGE-L", "BLEU-4")
REFERENCES = {"gold": "Gold passages (upper bound)", "none": "Closed book (no passage)"}
HUMAN, REPLUG = "rag_human", "rag_replug"
# the paper's row order (Tables 3 and 5), BM25 and the zero-shot encoder first
ORDER = ("rag_bm25", "rag_zeroshot", "rag_human", "rag_replug", "rag_replug_human", "rag_replug_pseudo", "rag_relsel",
         "rag_utilsel",
         "rag_utilrank", "rag_replug_cl20", "rag_utilsel_cl20", "rag_utilrank_cl20", "rag_replug_cl100",
         "rag_utilsel_cl100", "rag_utilrank_cl100")
# experiment -> the paper's row name (arXiv v2 Tables 3 and 5)
PAPER_METHODS = {
    "rag_human": "Human", "rag_replug": "REPLUG", "rag_replug_human": "REPLUG (Human)", "rag_utilsel": "UtilSel",
    "rag_utilrank": "UtilRank", "rag_replug_cl20": "REPLUG (CL 20%)", "rag_utilsel_cl20": "UtilSel (CL 20%)",
    "rag_utilrank_cl20": "UtilRank (CL 20%)", "rag_replug_cl100": "REPLUG (CL 100%)",
    "rag_utilsel_cl100": "UtilSel (CL 100%)", "rag_utilrank_cl100": "UtilRank (CL 100%)",
}
PAPER_TABLE_K = {"3": 1, "5": 5}  # passages given to the generator in the paper's Table 3 (top-1) and Table 5 (top-5)
PAPER_COMPARED = ("Recall", "EM", "F1", "ROUGE-L", "BLEU-4")  # paper measures with a counterpart in our table
_REPO = Path(__file__).resolve().parents[2]
DEFAULT_REFERENCES = tuple(_REPO / "experiments" / "utility_annotation" / f for f in
                           ("reference_table5_rag.csv", "reference_table3_rag.csv"))
PAPER_COLUMNS = ("table", "group", "method", "collection", "measure", "value", "marker")

Warn = Callable[[str], None]


# ---- columns and values ------------------------------------------------------------------------

@dataclass(frozen=True)
class Col:
    """One column of the RAG table: a retrieval measure, an answer recall, or an answer measure at depth k."""

    kind: str  # "retrieval" | "recall" | "answer"
    measure: str  # ir_measures name, answer_recall@k, or EM / F1 / ROUGE-L / BLEU-4
    k: int | None = None  # generation depth (answer) or recall depth (recall)

    @property
    def key(self) -> str:
        return f"{self.measure}@top{self.k}" if self.kind == "answer" else self.measure

    @property
    def header(self) -> str:
        if self.kind == "recall":
            return f"AR@{self.k}"
        return f"{self.measure} top-{self.k}" if self.kind == "answer" else self.measure

    @property
    def text(self) -> str:
        """The column in words, for evidence."""
        if self.kind == "recall":
            return f"answer recall@{self.k}"
        return f"{self.measure} at top-{self.k}" if self.kind == "answer" else self.measure


def answer_col(measure: str, k: int) -> Col:
    return Col("answer", measure, k)


def recall_col(k: int) -> Col:
    return Col("recall", f"answer_recall@{k}", k)


def _num(x: Any) -> float | None:
    """A finite float, else None (JSON has no NaN)."""
    if x is None or isinstance(x, bool):
        return None
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _rag(run: Run, collection: str) -> dict[str, Any]:
    entry = (run.metrics.get("rag") or {}).get(collection)
    return entry if isinstance(entry, dict) else {}


def retrieval_group(run: Run, collection: str) -> str | None:
    """The evaluation group (in_domain first) that holds the collection's retrieval measures."""
    groups = [g for g in (run.metrics.get("groups") or {}) if g != "rag" and collection in run.collections(g)]
    groups.sort(key=lambda g: (g != "in_domain", g != "out_of_domain", g))
    return groups[0] if groups else None


def generation_ks(run: Run, collection: str) -> list[int]:
    """The depths the generator answered from: ``rag.<c>.at_k`` keys, else the ``<c>@<k>`` rows of group rag."""
    ks = set()
    for k in _rag(run, collection).get("at_k") or {}:
        if str(k).isdigit():
            ks.add(int(k))
    for name in run.collections("rag"):
        head, _, tail = name.rpartition("@")
        if head == collection and tail.isdigit():
            ks.add(int(tail))
    return sorted(ks)


def primary_k(run: Run, collection: str) -> int | None:
    k = _rag(run, collection).get("k")
    return int(k) if isinstance(k, int) and not isinstance(k, bool) else None


def value(run: Run, col: Col, collection: str) -> float | None:
    """The run's aggregate in one column (corpus BLEU for BLEU-4), None when it did not evaluate it."""
    if col.kind == "retrieval":
        group = retrieval_group(run, collection)
        return None if group is None else _num(run.value(group, col.measure, collection))
    rag = _rag(run, collection)
    if col.kind == "recall":
        found = _num(rag.get(col.measure))
        if found is not None:
            return found
        for k in generation_ks(run, collection):
            found = _num(run.value("rag", col.measure, f"{collection}@{k}"))
            if found is not None:
                return found
        return None
    found = _num(((rag.get("at_k") or {}).get(str(col.k)) or {}).get(col.measure))
    return found if found is not None else _num(run.value("rag", col.measure, f"{collection}@{col.k}"))


def per_question(run: Run, col: Col, collection: str) -> dict[str, float] | None:
    """Question id -> the run's value in one column (sentence BLEU-4 for BLEU-4), None when absent."""
    if col.kind == "retrieval":
        group = retrieval_group(run, collection)
        return None if group is None else run.per_query(group, col.measure, collection)
    if col.kind == "recall":
        ks = generation_ks(run, collection)
        first = primary_k(run, collection)
        for k in ([first] if first in ks else []) + ks:  # every depth's row carries every answer recall
            found = run.per_query("rag", col.measure, f"{collection}@{k}")
            if found:
                return found
        return None
    return run.per_query("rag", col.measure, f"{collection}@{col.k}")


def columns(runs: Sequence[Run], collection: str) -> list[Col]:
    ks = sorted({k for r in runs for k in generation_ks(r, collection)})
    return ([Col("retrieval", m) for m in RETRIEVAL_MEASURES] + [recall_col(k) for k in RECALL_KS]
            + [answer_col(m, k) for k in ks for m in ANSWER_MEASURES])


def has_collection(run: Run, collection: str) -> bool:
    return bool(_rag(run, collection)) or retrieval_group(run, collection) is not None \
        or bool(generation_ks(run, collection))


def sort_rows(runs: Iterable[Run]) -> list[Run]:
    """The paper's order (:data:`ORDER`), other experiments after by name; runs of one name by their overrides."""
    def key(run: Run):
        known = ORDER.index(run.name) if run.name in ORDER else len(ORDER)
        return known, run.name, bool(run.varied), [(k, _natural(v)) for k, v in run.varied.items()]

    return sorted(runs, key=key)


def replug_partner(name: str) -> str:
    """REPLUG with the same share of human labels: rag_replug_cl20 / rag_replug_cl100 for a *_cl20 / *_cl100 run."""
    for share in ("cl20", "cl100"):
        if name.endswith("_" + share):
            return f"rag_replug_{share}"
    return REPLUG


# ---- the table ---------------------------------------------------------------------------------

def _test(mine: Mapping[str, float] | None, theirs: Mapping[str, float] | None) -> dict[str, Any] | None:
    if not mine or not theirs:
        return None
    t = paired_ttest(mine, theirs)
    # t is infinite for a constant non-zero difference (p = 0): JSON gets null for it
    return {"p": _num(t.p), "n": t.n, "mean_diff": _num(t.mean_diff), "t": _num(t.t)}


def cell(run: Run, col: Col, collection: str, human: Run | None, replug: Run | None, counts: dict[str, int]) -> dict:
    """Value, markers and the tests behind them of one cell."""
    v = value(run, col, collection)
    out: dict[str, Any] = {"value": v, "marker": "", "human": None, "replug": None}
    if v is None:
        counts["cells_missing"] += 1
        return out
    mine = per_question(run, col, collection)
    for other, field_, better, worse in ((human, "human", "+", "-"), (replug, "replug", "†", "")):
        if other is None:
            continue
        test = _test(mine, per_question(other, col, collection))
        if test is None:
            counts["tests_without_per_question"] += 1
            continue
        out[field_] = test
        if test["p"] is not None and test["p"] < ALPHA and test["n"] >= 2:
            out["marker"] += better if test["mean_diff"] > 0 else (worse if test["mean_diff"] < 0 else "")
    return out


def _references(rows: Sequence[Run], collection: str, warn: Warn, counts: dict[str, int]) -> dict[str, Any]:
    """gold / none -> the first row's reference answers (they do not depend on the retriever)."""
    out: dict[str, Any] = {}
    for ref in REFERENCES:
        found = [(r, (_rag(r, collection).get("references") or {}).get(ref)) for r in rows]
        found = [(r, e) for r, e in found if isinstance(e, dict)]
        if not found:
            continue
        run, entry = found[0]
        values = {m: _num(entry.get(m)) for m in ANSWER_MEASURES}
        differ = [r.name for r, e in found[1:] if any(
            _num(e.get(m)) is not None and values[m] is not None and abs(_num(e.get(m)) - values[m]) > 1e-9
            for m in ANSWER_MEASURES)]
        if differ:
            counts["reference_disagreements"] += len(differ)
            warn(f"the {ref} reference of {', '.join(differ)} differs from {run.name}'s (other questions or another "
                 f"generator?): the table shows {run.name}'s")
        k = entry.get("k")
        out[ref] = {"label": REFERENCES[ref], "from": run.name, "path": str(run.path),
                    "k": int(k) if isinstance(k, int) else None, "values": values,
                    "seconds_per_question": _num(entry.get("seconds_per_question")), "differing_runs": differ}
    return out


def build(runs: Sequence[Run], collection: str, warn: Warn) -> dict[str, Any]:
    """The RAG table's numbers (rows, references, cost) as study.json holds them."""
    counts = {"cells_missing": 0, "tests_without_per_question": 0, "reference_disagreements": 0}
    skipped = [r for r in runs if not has_collection(r, collection)]
    rows = sort_rows(r for r in runs if has_collection(r, collection))
    for r in skipped:
        warn(f"run '{r.name}' ({r.path}) did not evaluate collection '{collection}': not a row")
    cols = columns(rows, collection)
    table = []
    fallbacks = []
    for run in rows:
        human = closest(rows, HUMAN, run) if run.name != HUMAN else None
        partner = replug_partner(run.name)
        replug_name = partner if any(r.name == partner for r in rows) else REPLUG
        if replug_name != partner and run.name != partner:
            fallbacks.append(run.name)
        replug = closest(rows, replug_name, run) if run.name != partner and run.name != replug_name else None
        rag = _rag(run, collection)
        cost = {str(k): _num(((rag.get("at_k") or {}).get(str(k)) or {}).get("seconds_per_question"))
                for k in generation_ks(run, collection)}
        table.append({
            "name": run.name, "label": run.label, "path": str(run.path), "baseline_copy": run.nested,
            "overrides": run.overrides, "varied": run.varied, "questions": rag.get("questions"),
            "primary_k": primary_k(run, collection),
            "human": None if human is None else {"name": human.name, "label": human.label, "path": str(human.path)},
            "replug": None if replug is None else {"name": replug.name, "label": replug.label, "path": str(replug.path)},
            "replug_wanted": partner, "seconds_per_question": cost,
            "cells": {c.key: cell(run, c, collection, human, replug, counts) for c in cols},
        })
    if fallbacks:
        warn(f"no REPLUG run with the same share of human labels for {', '.join(fallbacks)}: their † compares "
             "with rag_replug")
    if rows and not any(r.name == HUMAN for r in rows):
        warn(f"no {HUMAN} run: no +/- markers")
    generators = {json.dumps((r.metrics.get("rag_generator") or {}).get("backend") or {}, sort_keys=True)
                  for r in rows}
    spec = next(((r.metrics.get("rag_generator") or {}) for r in rows if r.metrics.get("rag_generator")), {})
    if len(generators) > 1:
        warn(f"the runs used {len(generators)} different generator backends: answer measures are not comparable")
    return {
        "collection": collection,
        "alpha": ALPHA,
        "test": "two-sided paired t-test over per-question values (scipy ttest_rel)",
        "columns": [{"key": c.key, "kind": c.kind, "measure": c.measure, "k": c.k, "header": c.header} for c in cols],
        "generation_ks": sorted({c.k for c in cols if c.kind == "answer"}),
        "generator": spec,
        "generators_used": len(generators),
        "rows": table,
        "references": _references(rows, collection, warn, counts),
        "stats": {"runs_found": len(runs), "rows": len(rows), "baseline_copies_as_rows": sum(r.nested for r in rows),
                  "skipped_without_collection": [str(r.path) for r in skipped], "dagger_fallbacks": fallbacks,
                  **counts},
    }


# ---- findings ----------------------------------------------------------------------------------

Check = tuple  # (ok: bool | None, text, significant: bool | None (no test applies), record)


def _fmt(x: float | None, digits: int = 3) -> str:
    return MISSING if x is None else f"{x:.{digits}f}"


def _p(test: Mapping[str, Any] | None) -> str:
    if not test or test.get("p") is None:
        return "no per-question values: not tested"
    return f"paired t-test over {test['n']} questions, p = {test['p']:.3g}"


class Study:
    """Experiment name -> its representative run (:func:`uptrain.report.sweep.representatives`), read at one collection."""

    def __init__(self, rows: Sequence[Run], collection: str):
        self.collection = collection
        self.rows = list(rows)
        self.runs, self.notes = representatives(self.rows)

    def missing(self, names: Iterable[str]) -> list[str]:
        return [n for n in names if n not in self.runs]

    def value(self, name: str, col: Col) -> float | None:
        return value(self.runs[name], col, self.collection)

    def per_question(self, name: str, col: Col) -> dict[str, float] | None:
        return per_question(self.runs[name], col, self.collection)

    def compare(self, a: str, b: str, col: Col) -> dict[str, Any]:
        va, vb = self.value(a, col), self.value(b, col)
        test = _test(self.per_question(a, col), self.per_question(b, col)) if va is not None and vb is not None else None
        return {"a": a, "b": b, "measure": col.key, "value_a": va, "value_b": vb, "test": test}


def _above(study: Study, a: str, b: str, col: Col) -> Check:
    """Is a above b in this column? (ok, text, significant, record); ok None when either lacks the value."""
    rec = study.compare(a, b, col)
    if rec["value_a"] is None or rec["value_b"] is None:
        gone = [n for n, v in ((a, rec["value_a"]), (b, rec["value_b"])) if v is None]
        return None, f"{col.text}: not evaluated for {', '.join(gone)}", None, rec
    test = rec["test"]
    significant = bool(test and test["p"] is not None and test["p"] < ALPHA)
    text = f"{col.text}: {a} {rec['value_a']:.3f} vs {b} {rec['value_b']:.3f} ({_p(test)})"
    return rec["value_a"] > rec["value_b"], text, significant, rec


def _combine(checks: Sequence[Check]) -> dict[str, Any]:
    """does not hold: any evaluated check in the wrong direction (a tie included), whatever else is missing;
    else not run: some check could not be evaluated (a measure missing); holds: every check in the right
    direction and, where a test applies, significant; holds, not significant: the direction without
    significance (or without per-question values to test)."""
    text = "; ".join(c[1] for c in checks)
    known = [c for c in checks if c[0] is not None]
    records = [c[3] for c in checks if len(c) > 3 and c[3] is not None]
    if not all(c[0] for c in known):
        status = FAILS
    elif len(known) < len(checks):
        status = NOT_RUN
    elif any(c[2] is False for c in known):
        status = HOLDS_NS
    else:
        status = HOLDS
    return {"status": status, "evidence": text, "checks": records}


def _not_run(reason: str) -> dict[str, Any]:
    return {"status": NOT_RUN, "evidence": reason, "checks": []}


def _gap(study: Study, names: Sequence[str]) -> dict[str, Any] | None:
    gone = study.missing(names)
    return _not_run("missing runs: " + ", ".join(gone)) if gone else None


def utility_over_replug(study: Study) -> dict[str, Any]:
    methods = ["rag_utilsel", "rag_utilrank"]
    if gap := _gap(study, methods + [REPLUG]):
        return gap
    return _combine([_above(study, n, REPLUG, c) for n in methods for c in (answer_col("F1", TOP), recall_col(TOP))])


def replug_human_over_replug(study: Study) -> dict[str, Any]:
    if gap := _gap(study, ["rag_replug_human", REPLUG]):
        return gap
    return _combine([_above(study, "rag_replug_human", REPLUG, c) for c in (answer_col("F1", TOP), recall_col(TOP))])


def _close(study: Study, a: str, b: str, col: Col) -> tuple[str | None, str, dict]:
    """'beats' (above, significantly), 'matches' (above, or at most CLOSE below, and not significantly below),
    'short' (more than CLOSE below or significantly below), None (not evaluated); with the evidence."""
    rec = study.compare(a, b, col)
    va, vb, test = rec["value_a"], rec["value_b"], rec["test"]
    if va is None or vb is None:
        return None, f"{col.text}: not evaluated", rec
    significant = bool(test and test["p"] is not None and test["p"] < ALPHA)
    worse = significant and va < vb
    close = round(vb - va, 9) <= CLOSE  # rounding: 0.01 apart counts as within 0.01
    status = "beats" if va > vb and significant else ("matches" if close and not worse else "short")
    gap = "above" if va >= vb else (f"at most {CLOSE} below" if close else f"more than {CLOSE} below")
    text = (f"{col.text}: {a} {va:.3f} vs {b} {vb:.3f} ({va - vb:+.3f}, {gap}; {_p(test)}: "
            f"{'' if worse else 'not '}significantly below)")
    return status, text, rec


def cl20_close_to_human(study: Study) -> dict[str, Any]:
    if gap := _gap(study, ["rag_utilsel_cl20", HUMAN]):
        return gap
    status, text, rec = _close(study, "rag_utilsel_cl20", HUMAN, answer_col("F1", TOP))
    if status is None:
        return {"status": NOT_RUN, "evidence": text, "checks": [rec]}
    return {"status": HOLDS if status != "short" else FAILS, "evidence": text, "checks": [rec]}


def llm_matches_human(study: Study) -> dict[str, Any]:
    if gap := _gap(study, ["rag_utilsel", HUMAN]):
        return gap
    parts = [_close(study, "rag_utilsel", HUMAN, c) for c in (answer_col("F1", TOP), recall_col(TOP))]
    known = [s for s, _, _ in parts if s is not None]
    text = "; ".join(f"{t} -> {s}" if s else t for s, t, _ in parts)
    status = FAILS if "short" in known else (NOT_RUN if len(known) < len(parts) else HOLDS)
    return {"status": status, "evidence": text, "checks": [r for _, _, r in parts]}


def retrieval_to_answers(study: Study, references: Mapping[str, Any]) -> dict[str, Any]:
    """Spearman's rho between answer recall@TOP and F1 at top-TOP over the table's runs, and the gold bound."""
    f1, ar = answer_col("F1", TOP), recall_col(TOP)
    points = [(r.label, value(r, ar, study.collection), value(r, f1, study.collection)) for r in study.rows]
    points = [p for p in points if p[1] is not None and p[2] is not None]
    record: dict[str, Any] = {"measure_x": ar.key, "measure_y": f1.key, "n": len(points),
                              "points": [{"label": a, "x": x, "y": y} for a, x, y in points], "rho": None, "p": None}
    checks: list[Check] = []
    if len(points) < 3:
        return {**_not_run(f"{len(points)} runs with both {ar.text} and {f1.text}: a rank correlation needs at least 3"),
                "checks": [record]}
    xs, ys = [p[1] for p in points], [p[2] for p in points]
    if len(set(xs)) == 1:
        return {**_not_run(f"{ar.text} is {xs[0]:.3f} for all {len(points)} runs: no spread in retrieval to relate "
                           "answers to"), "checks": [record]}
    if len(set(ys)) == 1:
        checks.append((False, f"{f1.text} is {ys[0]:.3f} for all {len(points)} runs while {ar.text} ranges "
                              f"{min(xs):.3f}-{max(xs):.3f}: answers do not improve with retrieval (rho undefined)",
                       None, record))
    else:
        res = stats.spearmanr(xs, ys)
        rho, p = _num(res.statistic), _num(res.pvalue)
        record.update(rho=rho, p=p)
        checks.append((None if rho is None else rho > 0,
                       f"Spearman rho between {ar.text} and {f1.text} over {len(points)} runs = {_fmt(rho)} "
                       f"(p = {_fmt(p, 3) if p is None else f'{p:.3g}'})", None if p is None else p < ALPHA, record))
    gold = references.get("gold")
    if gold is None:
        checks.append((None, "no gold-passage reference (rag.references lacks gold): the upper bound is not checked",
                       None, None))
    else:
        k = gold.get("k") or TOP
        g = gold["values"].get("F1")
        col = answer_col("F1", k)
        runs = [(r.label, value(r, col, study.collection)) for r in study.rows]
        runs = [(a, v) for a, v in runs if v is not None]
        if g is None or not runs:
            checks.append((None, f"gold-passage F1 or {col.text}: not evaluated", None, None))
        else:
            above = [f"{a} {v:.3f}" for a, v in runs if v > g + 1e-12]
            checks.append((not above, f"gold-passage F1 (top-{k}) {g:.3f}: " + (
                f"above it: {', '.join(above)}" if above else f"all {len(runs)} runs at or below it"), None,
                {"gold_F1": g, "k": k, "above": above}))
    return _combine(checks)


FINDINGS = (
    ("utility_over_replug", "Utility labels give better RAG than REPLUG: UtilSel and UtilRank above REPLUG on F1 at "
     "top-5 and answer recall@5"),
    ("replug_human_over_replug", "REPLUG (Human) gives better RAG than REPLUG: the human-label warm-up before the "
     "REPLUG fine-tuning above REPLUG alone on F1 at top-5 and answer recall@5"),
    ("cl20_close_to_human", f"UtilSel-CL20% is close to Human: F1 at top-5 not significantly below and at most "
     f"{CLOSE} below"),
    ("llm_matches_human", f"LLM-label retrievers match or beat human labels on RAG: UtilSel above Human, or at most "
     f"{CLOSE} below and not significantly below, on F1 at top-5 and answer recall@5"),
    ("retrieval_to_answers", "Better retrieval, better answers: across runs, answer recall@5 and F1 at top-5 rise "
     "together (Spearman rho > 0), and no run exceeds the gold-passage reference"),
)


def evaluate(study: Study, references: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for fid, title in FINDINGS:
        fn = globals()[fid]
        result = fn(study, references) if fid == "retrieval_to_answers" else fn(study)
        out.append({"id": fid, "title": title, **result})
    return out


def generator_check(references: Mapping[str, Any]) -> dict[str, Any]:
    gold = references.get("gold")
    f1 = None if gold is None else gold["values"].get("F1")
    if f1 is None:
        return {"status": NOT_RUN, "gold_F1": None, "text": "Generator check: not run (no gold-passage reference: "
                                                              "add gold to rag.references)."}
    k = gold.get("k")
    where = f"from the gold passages (up to {k})" if k else "from the gold passages"
    if f1 < GOLD_F1_LOW:
        text = (f"Generator check: the generator answers poorly even {where}: F1 {f1:.3f} (below {GOLD_F1_LOW}). "
                "Answer measures therefore separate retrievers weakly; answer recall@k, which needs no generator, "
                "is the more informative column.")
        return {"status": "low", "gold_F1": f1, "threshold": GOLD_F1_LOW, "text": text}
    text = (f"Generator check: the generator reaches F1 {f1:.3f} {where}, at least {GOLD_F1_LOW}: answer measures "
            "can tell retrievers apart.")
    return {"status": "ok", "gold_F1": f1, "threshold": GOLD_F1_LOW, "text": text}


# ---- the paper ---------------------------------------------------------------------------------

def _norm(text: str) -> str:
    return " ".join(str(text).lower().split())


_PAPER_TO_EXP = {_norm(v): k for k, v in PAPER_METHODS.items()}


def _measure_base(measure: str) -> tuple[str, int | None]:
    head, _, tail = measure.partition("@")
    return head.strip(), (int(tail) if tail.strip().isdigit() else None)


def load_paper(paths: Sequence[Path], warn: Warn) -> dict[str, Any]:
    """The paper's rows (values as fractions), with counts of what is not compared."""
    rows: list[dict[str, Any]] = []
    skipped: dict[str, int] = {}
    problems: list[str] = []
    for path in paths:
        try:
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                absent = [c for c in PAPER_COLUMNS if c not in (reader.fieldnames or [])]
                if absent:
                    raise ValueError(f"lacks the columns {', '.join(absent)} (expected {','.join(PAPER_COLUMNS)})")
                read = []
                for r in reader:
                    v = _num((r.get("value") or "").strip())
                    if v is None:
                        skipped["no value"] = skipped.get("no value", 0) + 1
                        continue
                    read.append({k: (r.get(k) or "").strip() for k in PAPER_COLUMNS} | {"value": v,
                                                                                          "printed": r["value"].strip()})
        except (OSError, ValueError, KeyError) as e:
            problems.append(f"{path}: {e}")
            warn(f"reference {path} not used: {e}")
            continue
        scale = 0.01 if any(r["value"] > 1 for r in read) else 1.0  # the paper prints percent
        for r in read:
            r["value"] *= scale
            r["percent"] = scale == 0.01
        rows += read
    kept = []
    for r in rows:
        base, _ = _measure_base(r["measure"])
        if base not in PAPER_COMPARED:
            key = f"measure {r['measure']}"
            skipped[key] = skipped.get(key, 0) + 1
            continue
        if r["table"] not in PAPER_TABLE_K:
            key = f"table {r['table']}"
            skipped[key] = skipped.get(key, 0) + 1
            continue
        r["experiment"] = _PAPER_TO_EXP.get(_norm(r["method"]))
        if r["experiment"] is None:
            skipped[f"method {r['method']}"] = skipped.get(f"method {r['method']}", 0) + 1
            continue
        kept.append(r)
    if skipped:
        warn("paper rows not compared: " + ", ".join(f"{k}: {n}" for k, n in sorted(skipped.items())))
    return {"files": [str(p) for p in paths], "rows": kept, "not_compared": skipped, "problems": problems}


def _our_col(table: str, measure: str) -> Col:
    k = PAPER_TABLE_K[table]
    base, at = _measure_base(measure)
    return recall_col(at or k) if base == "Recall" else answer_col(base, k)


def paper_columns(paper: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The paper's columns (table, collection, generator, measure) in file order, each with its rows by experiment."""
    cols: dict[tuple, dict[str, Any]] = {}
    for r in paper["rows"]:
        key = (r["table"], r["collection"], r["group"], r["measure"])
        col = cols.setdefault(key, {"table": r["table"], "collection": r["collection"], "generator": r["group"],
                                    "measure": r["measure"], "ours": _our_col(r["table"], r["measure"]).key,
                                    "values": {}})
        col["values"].setdefault(r["experiment"], {"value": r["value"], "printed": r["printed"], "marker": r["marker"]})
    return list(cols.values())


def _order_text(values: Mapping[str, float], labels: Mapping[str, str]) -> str:
    """'A > B = C' from high to low."""
    ordered = sorted(values.items(), key=lambda kv: -kv[1])
    parts = []
    for i, (name, v) in enumerate(ordered):
        if i:
            parts.append(" = " if abs(ordered[i - 1][1] - v) <= 1e-12 else " > ")
        parts.append(labels.get(name, name))
    return "".join(parts)


def _kendall(x: Sequence[float], y: Sequence[float]) -> tuple[float | None, float | None, str | None]:
    if len(x) < 2:
        return None, None, f"{len(x)} shared method(s): an order needs at least 2"
    if len(set(x)) == 1 or len(set(y)) == 1:
        return None, None, "constant values on one side: tau undefined"
    res = stats.kendalltau(x, y)
    return _num(res.statistic), _num(res.pvalue), None


def compare_paper(data: Mapping[str, Any], paper: Mapping[str, Any]) -> dict[str, Any]:
    """Side-by-side values and the order of the shared methods in each of the paper's columns."""
    study_rows = {r["name"]: r for r in data["rows"] if not r["varied"]}
    for r in data["rows"]:  # several runs of a name: the first row stands for it
        study_rows.setdefault(r["name"], r)
    labels = {n: r["label"] for n, r in study_rows.items()}
    cols = paper_columns(paper)
    tables: dict[str, Any] = {}
    orderings = []
    for col in cols:
        ours = {n: (study_rows[n]["cells"].get(col["ours"]) or {}) for n in col["values"] if n in study_rows}
        shared = {n: c["value"] for n, c in ours.items() if c.get("value") is not None}
        names = [n for n in col["values"] if n in shared]
        x = [col["values"][n]["value"] for n in names]
        y = [shared[n] for n in names]
        tau, p, why = _kendall(x, y)
        orderings.append({
            "table": col["table"], "collection": col["collection"], "generator": col["generator"],
            "measure": col["measure"], "ours": col["ours"], "methods": names, "n": len(names), "tau": tau, "p": p,
            "note": why, "paper_order": _order_text({n: col["values"][n]["value"] for n in names}, labels),
            "our_order": _order_text({n: shared[n] for n in names}, labels),
        })
        t = tables.setdefault(col["table"], {"k": PAPER_TABLE_K[col["table"]], "columns": [], "methods": []})
        t["columns"].append(col)
        t["methods"] += [n for n in col["values"] if n not in t["methods"]]
    for t in tables.values():
        t["shared"] = [n for n in t["methods"] if n in study_rows]
        t["not_run_here"] = [n for n in t["methods"] if n not in study_rows]
        order = [c["key"] for c in data["columns"]]
        t["ours"] = sorted(dict.fromkeys(c["ours"] for c in t["columns"]),
                           key=lambda k: order.index(k) if k in order else len(order))
    return {"files": paper["files"], "problems": paper["problems"], "not_compared": paper["not_compared"],
            "tables": tables, "orderings": orderings, "labels": labels}


def _paper_pair(paper_cols: Sequence[Mapping[str, Any]], a: str, b: str, measure: str, table: str = "5") -> str | None:
    """'F1 (Table 5): 58.8+† vs 53.7- (NQ, Llama-3.1-8B); ...; a above b in x of y'."""
    cols = [c for c in paper_cols if c["table"] == table and _measure_base(c["measure"])[0] == measure
            and a in c["values"] and b in c["values"]]
    if not cols:
        return None
    parts, above = [], 0
    for c in cols:
        va, vb = c["values"][a], c["values"][b]
        above += va["value"] > vb["value"]
        where = c["collection"] + (f", {c['generator']}" if c["generator"] else "")
        parts.append(f"{va['printed']}{va['marker']} vs {vb['printed']}{vb['marker']} ({where})")
    return (f"{cols[0]['measure']} (Table {table}): {PAPER_METHODS[a]} vs {PAPER_METHODS[b]} "
            + "; ".join(parts) + f"; above in {above} of {len(cols)}")


def _paper_rho(paper_cols: Sequence[Mapping[str, Any]], table: str = "5") -> str | None:
    """Spearman rho between the paper's Recall@k and F1 over its methods, per collection and generator."""
    recall = {c["collection"]: c for c in paper_cols if c["table"] == table and _measure_base(c["measure"])[0] == "Recall"}
    parts = []
    for c in paper_cols:
        if c["table"] != table or c["measure"] != "F1" or c["collection"] not in recall:
            continue
        r = recall[c["collection"]]["values"]
        names = [n for n in c["values"] if n in r]
        if len(names) < 3:
            continue
        res = stats.spearmanr([r[n]["value"] for n in names], [c["values"][n]["value"] for n in names])
        parts.append(f"{c['collection']}, {c['generator']}: rho {_fmt(_num(res.statistic))} over {len(names)} methods")
    return ("paper (Table 5, Recall@5 vs F1): " + "; ".join(parts)) if parts else None


def paper_evidence(paper_cols: Sequence[Mapping[str, Any]]) -> dict[str, str | None]:
    """Finding id -> the same comparison on the paper's Table 5 numbers (values and published markers)."""
    def join(*texts):
        found = [t for t in texts if t]
        return " | ".join(found) if found else None

    return {
        "utility_over_replug": join(*(_paper_pair(paper_cols, m, REPLUG, x) for m in ("rag_utilsel", "rag_utilrank")
                                      for x in ("F1", "Recall"))),
        "replug_human_over_replug": join(*(_paper_pair(paper_cols, "rag_replug_human", REPLUG, x) for x in ("F1", "Recall"))),
        "cl20_close_to_human": _paper_pair(paper_cols, "rag_utilsel_cl20", HUMAN, "F1"),
        "llm_matches_human": join(*(_paper_pair(paper_cols, "rag_utilsel", HUMAN, x) for x in ("F1", "Recall"))),
        "retrieval_to_answers": _paper_rho(paper_cols),
    }


# ---- the plot ----------------------------------------------------------------------------------

def draw(data: Mapping[str, Any], path: Path) -> str | None:
    """Bars of F1 at top-TOP and answer recall@TOP per run, the gold-passage F1 as a dashed line; the reason when not drawn."""
    import matplotlib.pyplot as plt

    f1, ar = answer_col("F1", TOP).key, recall_col(TOP).key
    rows = [(r["label"], r["cells"].get(f1, {}).get("value"), r["cells"].get(ar, {}).get("value")) for r in data["rows"]]
    if not any(a is not None or b is not None for _, a, b in rows):
        return f"no run has F1 at top-{TOP} or answer recall@{TOP}"
    width = 0.38
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len(rows) + 2), 4.5))
    xs = list(range(len(rows)))
    nan = float("nan")  # a value the run lacks: no bar
    ax.bar([x - width / 2 for x in xs], [nan if a is None else a for _, a, _ in rows], width, label=f"F1, top-{TOP}")
    ax.bar([x + width / 2 for x in xs], [nan if b is None else b for _, _, b in rows], width,
           label=f"answer recall@{TOP}")
    gold = data["references"].get("gold")
    if gold and gold["values"].get("F1") is not None:
        ax.axhline(gold["values"]["F1"], color="gray", linestyle="--",
                   label=f"F1 from the gold passages ({gold['values']['F1']:.3f})")
    ax.set_xticks(xs)
    ax.set_xticklabels([r[0] for r in rows], rotation=35, ha="right", fontsize="small")
    ax.set_ylim(0, 1.25)  # room for the legend above the bars
    ax.set_ylabel("value")
    ax.set_title(f"RAG on {data['collection']}: answers (F1) and retrieval (answer recall)", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small", loc="upper center", ncol=3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=120)
    plt.close(fig)
    return None


# ---- Markdown ----------------------------------------------------------------------------------

def _pct(x: float | None) -> str:
    return MISSING if x is None else f"{100 * x:.1f}"


def _ref_k(data: Mapping[str, Any], ref: str, entry: Mapping[str, Any]) -> int | None:
    """The depth whose columns show a reference row: the gold passages' k; closed book under the primary depth."""
    if ref == "gold" and entry.get("k"):
        return entry["k"]
    primary = next((r["primary_k"] for r in data["rows"] if r["primary_k"] is not None), None)
    return primary if primary is not None else (data["generation_ks"][-1] if data["generation_ks"] else None)


def rag_table(data: Mapping[str, Any]) -> str:
    cols = data["columns"]
    header = ["Method", "Experiment"] + [c["header"] for c in cols]
    body = []
    for r in data["rows"]:
        cells = [MISSING if r["cells"][c["key"]]["value"] is None
                 else f"{r['cells'][c['key']]['value']:.3f}{r['cells'][c['key']]['marker']}" for c in cols]
        body.append([r["label"], f"`{r['name']}`" + (" (baseline copy)" if r["baseline_copy"] else ""), *cells])
    for ref, entry in data["references"].items():
        shown_k = _ref_k(data, ref, entry)
        cells = []
        for c in cols:
            v = entry["values"].get(c["measure"]) if c["kind"] == "answer" and c["k"] == shown_k else None
            cells.append(MISSING if v is None else f"{v:.3f}")
        body.append([f"*{entry['label']}*", f"from `{entry['from']}`", *cells])
    return _md_table(header, body, [False, False] + [True] * len(cols))


def legend(data: Mapping[str, Any]) -> str:
    refs = data["references"]
    lines = [
        f"Markers: {data['test']}, alpha = {data['alpha']:g}: `+` / `-` significantly better / worse than "
        f"`{HUMAN}`; `†` significantly better than REPLUG with the same share of human labels (`{REPLUG}`, "
        "`rag_replug_cl20`, `rag_replug_cl100`; see Runs). A row carries no marker against itself.",
        "R@1, R@5, nDCG@10: retrieval against the judged passages; AR@k: answer recall@k (a gold answer string "
        "in the top-k passages, no generator); EM / F1 (SQuAD normalisation) and ROUGE-L: means over questions; "
        "BLEU-4: corpus BLEU (sacrebleu), which has no per-question value, so its markers test the per-question "
        "smoothed sentence BLEU-4.",
    ]
    if refs:
        gold = refs.get("gold")
        lines.append("Reference rows (from one run; they do not depend on the retriever): "
                     + "; ".join(f"{e['label']}" + (f", up to {e['k']} judged passages" if ref == "gold" and e["k"]
                                                    else ", shown under the primary depth") for ref, e in refs.items())
                     + "." + ("" if gold else " No gold-passage reference: rag.references lacks gold."))
    else:
        lines.append("No reference rows: no run answered from the gold passages or closed book (rag.references).")
    return "  \n".join(lines)


def cost_table(data: Mapping[str, Any]) -> str:
    ks = data["generation_ks"]
    body = [[r["label"], f"`{r['name']}`", str(r["questions"]) if r["questions"] is not None else MISSING,
             *[_fmt(r["seconds_per_question"].get(str(k)), 2) for k in ks]] for r in data["rows"]]
    for ref, e in data["references"].items():
        shown = _ref_k(data, ref, e)
        body.append([f"*{e['label']}*", f"from `{e['from']}`", MISSING,
                     *[_fmt(e["seconds_per_question"], 2) if k == shown else MISSING for k in ks]])
    return _md_table(["Method", "Experiment", "Questions"] + [f"s/question top-{k}" for k in ks], body,
                     [False, False, True] + [True] * len(ks))


def paper_tables(cmp: Mapping[str, Any], data: Mapping[str, Any]) -> list[str]:
    out = []
    labels = cmp["labels"]
    by_name = {}
    for r in data["rows"]:
        by_name.setdefault(r["name"], r)
    headers = {c["key"]: c["header"] for c in data["columns"]}
    for table in sorted(cmp["tables"], key=lambda t: -int(t) if t.isdigit() else 0):
        t = cmp["tables"][table]
        if not t["shared"]:
            out.append(f"### Table {table} (top-{t['k']})\n\nNo method of the paper's Table {table} was run here.")
            continue
        header = ["Method"] + [f"ours {headers.get(k, k)}" for k in t["ours"]] + [
            f"{c['collection']} {c['measure']}" + (f" ({c['generator']})" if c["generator"] else "") for c in t["columns"]]
        body = []
        for n in t["shared"]:
            cells = by_name[n]["cells"]
            ours = [MISSING if (cells.get(k) or {}).get("value") is None
                    else f"{_pct(cells[k]['value'])}{cells[k]['marker']}" for k in t["ours"]]
            theirs = [f"{c['values'][n]['printed']}{c['values'][n]['marker']}" if n in c["values"] else MISSING
                      for c in t["columns"]]
            body.append([labels.get(n, n), *ours, *theirs])
        note = f" Paper methods not run here: {', '.join(PAPER_METHODS[n] for n in t['not_run_here'])}." \
            if t["not_run_here"] else ""
        out.append(f"### Table {table} (top-{t['k']})\n\nValues in %, markers as printed (ours: tested as in the "
                   f"RAG table).{note}\n\n" + _md_table(header, body, [False] + [True] * (len(header) - 1)))
    return out


def ordering_table(cmp: Mapping[str, Any], data: Mapping[str, Any]) -> str:
    headers = {c["key"]: c["header"] for c in data["columns"]}
    body = [[f"Table {o['table']}", o["collection"], o["generator"] or "(retrieval)", o["measure"],
             headers.get(o["ours"], o["ours"]),
             str(o["n"]), _fmt(o["tau"]), MISSING if o["p"] is None else f"{o['p']:.3g}", o["paper_order"],
             o["our_order"] + (f" ({o['note']})" if o["note"] else "")] for o in cmp["orderings"]]
    return _md_table(["Paper table", "Collection", "Generator", "Paper measure", "Ours", "Methods", "Kendall tau",
                      "p", "Paper's order", "Our order"], body,
                     [False, False, False, False, False, True, True, True, False, False])


def findings_table(items: Sequence[Mapping[str, Any]]) -> str:
    rows = [[str(i), f["title"], f["status"], f["evidence"], f.get("paper") or MISSING] for i, f in enumerate(items, 1)]
    return _md_table(["#", "Finding", "Status", "Evidence (ours)", "The paper (Table 5, values and printed markers)"],
                     rows, [True, False, False, False, False])


def runs_table(data: Mapping[str, Any]) -> str:
    body = []
    for r in data["rows"]:
        dagger = MISSING
        if r["replug"]:
            dagger = r["replug"]["label"] + ("" if r["replug"]["name"] == r["replug_wanted"]
                                             else f" (no `{r['replug_wanted']}`)")
        shown = [o for o in r["overrides"] if not o.lstrip("+").startswith(("exp=", "hydra"))]
        body.append([r["label"], f"`{r['name']}`", " ".join(f"`{o}`" for o in shown) or MISSING,
                     r["human"]["label"] if r["human"] else MISSING, dagger,
                     f"`{r['path']}`" + (" (baseline copy)" if r["baseline_copy"] else "")])
    return _md_table(["Method", "Experiment", "Overrides", "+/- against", "† against", "Run directory"], body,
                     [False] * 6)


def render(data: Mapping[str, Any]) -> str:
    gen = (data.get("generator") or {}).get("backend") or {}
    model = gen.get("model") or gen.get("_target_") or "unknown"
    questions = sorted({r["questions"] for r in data["rows"] if r["questions"] is not None})
    st = data["stats"]
    parts = [
        "# The RAG study: retrievers judged by the answers they lead to",
        "Zhang et al., \"Leveraging LLMs for Utility-Focused Annotation\" (arXiv 2504.05220), Tables 3 and 5, on "
        f"collection `{data['collection']}`; generator `{model}`; "
        f"{'/'.join(map(str, questions)) or MISSING} questions; {st['rows']} runs"
        + (f" ({st['baseline_copies_as_rows']} from baseline copies)" if st["baseline_copies_as_rows"] else "")
        + ". Generated by `uptrain-rag-study`.",
        "## The RAG table", rag_table(data), legend(data),
        "### Generator cost", cost_table(data),
    ]
    cmp = data.get("paper")
    parts.append("## The paper beside it")
    if cmp is None:
        parts.append("Not compared: no reference file (--reference) was given or found.")
    else:
        parts.append(
            f"Paper numbers from {', '.join(f'`{f}`' for f in cmp['files'])}. The paper answers with Llama-3.1-8B "
            "and Qwen-2.5-32B-Int8 on MS MARCO QA (Table 3) and NQ / HotpotQA (Table 5), from RetroMAE retrievers "
            "trained on MS MARCO; absolute values from a small generator on SQuAD cannot match them, so compare the "
            "order of the methods. The paper's Recall@k is undefined in its text; ours beside it is answer recall@k.")
        if cmp["problems"]:
            parts.append("Not used: " + "; ".join(cmp["problems"]))
        parts += paper_tables(cmp, data)
        parts += ["### The order of the methods",
                  "Kendall's tau-b (scipy) between the paper's values and ours over the methods both have, per "
                  "paper column (1: the same order, -1: reversed; with few methods p is large).",
                  ordering_table(cmp, data)]
        if cmp["not_compared"]:
            parts.append("Paper rows not compared: " + ", ".join(f"{k} ({n})" for k, n in sorted(cmp["not_compared"].items()))
                         + ".")
    parts += ["## Findings", findings_table(data["findings"]), data["generator_check"]["text"]]
    if data.get("findings_notes"):
        parts.append("\n".join(f"- {n}" for n in data["findings_notes"]))
    parts += ["## Plot", f"![rag]({data['plot']})" if data.get("plot") else f"Not drawn: {data['plot_note']}",
              "## Runs", runs_table(data)]
    notes = []
    if st["skipped_without_collection"]:
        notes.append(f"{len(st['skipped_without_collection'])} runs without collection `{data['collection']}`, not "
                     "rows: " + ", ".join(f"`{p}`" for p in st["skipped_without_collection"]))
    for key, what in (("cells_missing", "cells not evaluated (n/a)"),
                      ("tests_without_per_question", "tests not made (no per-question values on one side)"),
                      ("reference_disagreements", "runs whose reference answers differ from the shown ones")):
        if st[key]:
            notes.append(f"{st[key]} {what}")
    if data["generators_used"] > 1:
        notes.append(f"{data['generators_used']} different generator backends among the runs")
    if notes:
        parts += ["## Counts", "\n".join(f"- {n}" for n in notes)]
    return "\n\n".join(parts) + "\n"


# ---- the command -------------------------------------------------------------------------------

def choose_collection(runs: Sequence[Run], wanted: str | None) -> str:
    if wanted is not None:
        if not any(has_collection(r, wanted) for r in runs):
            known = sorted({c for r in runs for c in (r.metrics.get("rag") or {})})
            raise SweepError(f"no run evaluated collection '{wanted}' (QA collections of these runs: "
                             f"{', '.join(known) or 'none'}); name one with --collection")
        return wanted
    if any(has_collection(r, COLLECTION) for r in runs):
        return COLLECTION
    known = sorted({c for r in runs for c in (r.metrics.get("rag") or {}) if isinstance((r.metrics.get("rag") or {})[c], dict)})
    if len(known) == 1:
        return known[0]
    raise SweepError(f"no run evaluated '{COLLECTION}' and the runs' QA collections are "
                     f"{', '.join(known) or 'none (no metrics.json has a rag section)'}: name one with --collection")


def rag_study(paths: Sequence[Path], out: Path, references: Sequence[Path] | None = None,
              collection: str | None = None, warn: Warn | None = None) -> dict[str, Any]:
    """Find the runs under ``paths``, write ``out/study.md``, ``study.json`` and ``rag.png``; return study.json's data.
    ``references``: the paper's CSVs (None: the repository's Table 3 and 5 files where present; []: none).
    Raises :class:`uptrain.report.sweep.SweepError` for a path without runs or a collection no run evaluated."""
    notes: list[str] = []

    def _warn(message: str) -> None:  # every warning: logged, kept in study.json, and told to the caller
        notes.append(message)
        log.warning(message)
        if warn is not None:
            warn(message)

    for p in paths:
        if not Path(p).is_dir():
            raise SweepError(f"{p}: no such directory")
    runs = discover([Path(p) for p in paths], _warn)
    name = choose_collection(runs, collection)
    data = build(runs, name, _warn)
    rows = sort_rows(r for r in runs if has_collection(r, name))
    study = Study(rows, name)
    data["findings_notes"] = study.notes
    data["findings"] = evaluate(study, data["references"])
    data["generator_check"] = generator_check(data["references"])
    if references is None:
        references = [p for p in DEFAULT_REFERENCES if p.is_file()]
        if references:
            _warn("paper numbers from the repository's " + ", ".join(p.name for p in references)
                  + " (--reference to choose others)")
    data["paper"] = None
    if references:
        data["paper"] = compare_paper(data, load_paper(list(references), _warn))
        evidence = paper_evidence([c for t in data["paper"]["tables"].values() for c in t["columns"]])
        for f in data["findings"]:
            f["paper"] = evidence.get(f["id"])
    out.mkdir(parents=True, exist_ok=True)
    data["plot_note"] = draw(data, out / "rag.png")
    data["plot"] = None if data["plot_note"] else "rag.png"
    data["notes"] = notes
    (out / "study.json").write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str))
    (out / "study.md").write_text(render(data))
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="run directories or multirun folders")
    parser.add_argument("--out", type=Path, required=True, help="where study.md, study.json and rag.png go")
    parser.add_argument("--reference", type=Path, nargs="+", metavar="CSV",
                        help="the paper's numbers (table,group,method,collection,measure,value,marker); default: the "
                             "repository's reference_table5_rag.csv and reference_table3_rag.csv where present")
    parser.add_argument("--collection", default=None, help=f"the QA collection (default {COLLECTION})")
    args = parser.parse_args(argv)
    handler = None
    if not log.handlers:  # the warnings on stderr, once each
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"{PROG}: warning: %(message)s"))
        log.addHandler(handler)
    try:
        data = rag_study(args.dirs, args.out, args.reference, args.collection)
    except SweepError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return 2
    finally:
        if handler is not None:
            log.removeHandler(handler)
    print(f"report: {args.out / 'study.md'}")
    for f in data["findings"]:
        print(f"finding {f['id']}: {f['status']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
