"""Pointwise graded judgments (0-3) of the documents a click log showed, by the annotator LLM or
by a simulated annotator drawn from the human labels.

The scale and prompt follow UMBRELA (Upadhyay et al., 2024, "UMBRELA: UMbrela is the (Open-Source
Reproduction of the) Bing RELevance Assessor"), itself after Thomas et al. (2024, "Large language
models can accurately predict searcher preferences"): one prompt per (query, passage), graded

  0  the passage has nothing to do with the query
  1  related to the query, but does not answer it
  2  has some answer, but unclear or hidden among extraneous information
  3  dedicated to the query and contains the exact answer

(``conf/annotator/prompts/<version>/grade.txt``; answers read by
:func:`uptrain.annotate.parse.parse_grade`; an unparseable answer leaves that document without a
grade, counted, never a guessed one).

**Which documents.** Per query, the documents its log showed: for a simulated log (a value with
``.truth``) every (query, rank) of ``truth["grades"]``, which holds every simulated query's SERP,
zero-session queries included; for a read log the union of the documents its sessions showed,
ordered by best rank, then first appearance in the log. At most ``depth`` per query (the rest cut
and counted). The queries are the collection's with shown documents (the others counted), the
first ``max_queries`` of them (the rest cut and counted). Documents without text in the
collection cannot be judged (counted and left out).

**Quality** against the human grades of the same pairs (the qrels grade; an unjudged document is
grade 0): exact agreement, within-one agreement, Cohen's kappa (unweighted) and linearly weighted
kappa (scikit-learn's ``cohen_kappa_score``; UMBRELA reports kappa against TREC qrels), the
confusion matrix (human grade rows x LLM grade columns), and binary precision / recall / F1 of
"LLM grade >= 2" against "human grade > 0".

The artifact: ``grades.jsonl`` (per query: query_id, docs, grades {doc: grade}, raw outputs,
unparseable, tokens), ``qrels_grade.txt`` (TREC qrels of the grades), ``quality.json``,
``quality.md``, ``stats.json``. Queries are graded in resumable batches of ``batch_queries``
(:meth:`AnnotatorStage.run_shards`): a killed run redoes only the batch in flight.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from omegaconf import DictConfig

from uptrain.annotate.annotator import AnnotatorStage
from uptrain.annotate.budget import PromptFitter, TruncationStats
from uptrain.annotate.parse import GradeParseStats, parse_grade
from uptrain.errors import ConfigError
from uptrain.graph import Artifact
from uptrain.labels.examples import stable_seed

log = logging.getLogger("uptrain")

PROMPT = "grade"  # the template of conf/annotator/prompts/<version>/
BINARY_LLM_GRADE = 2  # "relevant" for the binary agreement: LLM grade >= 2 ...
SIMULATED_NOTE = ("SIMULATED annotator: these grades are drawn from the human labels (annotator=simulated), "
                  "not produced by any model")


# ---- which documents were shown -----------------------------------------------------------

def shown_documents(clicks: Any) -> dict[str, list[str]]:
    """Query key -> the documents the click log showed for it, in order (see the module docstring):
    ``truth["grades"]`` of a simulated log, else the log's sessions (best rank, then first appearance)."""
    truth = getattr(clicks, "truth", None)
    if isinstance(truth, Mapping) and truth.get("grades") is not None:
        out: dict[str, list[str]] = {}
        seen: set[tuple[str, str]] = set()
        for row in truth["grades"]:
            q, d = str(row[0]), str(row[1])
            if (q, d) not in seen:
                seen.add((q, d))
                out.setdefault(q, []).append(d)
        return out
    click_log = clicks.log
    n, R = click_log.docs.shape
    if n == 0:
        return {}
    docs = click_log.docs.ravel()
    valid = docs >= 0
    query = np.repeat(click_log.query, R)[valid]
    rank = np.tile(np.arange(R), n)[valid]
    position = np.arange(n * R)[valid]  # session order, then rank: the first appearance
    docs = docs[valid]
    # per (query, doc): the best rank and the first appearance, then ordered per query by those
    order = np.lexsort((position, rank, docs, query))
    query, docs, rank, position = query[order], docs[order], rank[order], position[order]
    first = np.ones(len(docs), dtype=bool)
    first[1:] = (query[1:] != query[:-1]) | (docs[1:] != docs[:-1])
    query, docs, rank, position = query[first], docs[first], rank[first], position[first]
    order = np.lexsort((position, rank, query))
    out = {}
    for qi, di in zip(query[order], docs[order]):
        out.setdefault(click_log.queries[int(qi)], []).append(click_log.doc_ids[int(di)])
    return out


# ---- agreement with the human grades ------------------------------------------------------

def _number(x: float) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else round(float(x), 6)


def grade_quality(pairs: Sequence[tuple[int, int]], max_grade: int = 3) -> dict:
    """Agreement of (human grade, LLM grade) pairs (see the module docstring for the definitions).

    Kappas are None where undefined (a single category on both sides); the confusion matrix has
    human grade rows and LLM grade columns over the grades 0..max(max_grade, highest human grade).
    """
    from sklearn.metrics import cohen_kappa_score, confusion_matrix, precision_recall_fscore_support

    human = np.array([int(h) for h, _ in pairs], dtype=np.int64)
    llm = np.array([int(g) for _, g in pairs], dtype=np.int64)
    top = max([int(max_grade)] + ([int(human.max()), int(llm.max())] if len(pairs) else []))
    labels = list(range(top + 1))
    out: dict[str, Any] = {"pairs": len(pairs), "grades": labels}
    if not len(pairs):
        return {**out, "exact": None, "within_one": None, "kappa": None, "weighted_kappa": None,
                "confusion": [[0] * len(labels) for _ in labels], "binary": None}
    import warnings

    with warnings.catch_warnings():  # a single category is a NaN kappa (reported as None), not a warning
        warnings.simplefilter("ignore")
        kappa = cohen_kappa_score(human, llm, labels=labels)
        weighted = cohen_kappa_score(human, llm, labels=labels, weights="linear")
    rel_h, rel_l = human > 0, llm >= BINARY_LLM_GRADE
    p, r, f, _ = precision_recall_fscore_support(rel_h, rel_l, average="binary", pos_label=True, zero_division=0)
    return {
        **out,
        "exact": _number(np.mean(human == llm)),
        "within_one": _number(np.mean(np.abs(human - llm) <= 1)),
        "kappa": _number(kappa),
        "weighted_kappa": _number(weighted),
        "confusion": confusion_matrix(human, llm, labels=labels).tolist(),
        "binary": {
            "definition": f"LLM grade >= {BINARY_LLM_GRADE} vs human grade > 0",
            "precision": _number(p), "recall": _number(r), "f1": _number(f),
            "human_relevant": int(rel_h.sum()), "llm_relevant": int(rel_l.sum()),
            "both": int((rel_h & rel_l).sum()),
        },
    }


def quality_markdown(quality: dict) -> str:
    """The agreement table and the confusion matrix, in Markdown."""
    def fmt(x):
        return "n/a" if x is None else f"{x:.4f}"

    lines = []
    if quality.get("simulated"):
        lines += [f"**{SIMULATED_NOTE}.**", ""]
    b = quality.get("binary") or {}
    lines += [
        "| Pairs | Exact | Within one | Cohen's kappa | Weighted kappa (linear) | P (>=2 vs >0) | R | F1 |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {quality['pairs']} | {fmt(quality['exact'])} | {fmt(quality['within_one'])} | {fmt(quality['kappa'])} | "
        f"{fmt(quality['weighted_kappa'])} | {fmt(b.get('precision'))} | {fmt(b.get('recall'))} | {fmt(b.get('f1'))} |",
        "",
        "Confusion (rows: human grade, columns: " + ("simulated" if quality.get("simulated") else "LLM") + " grade):",
        "",
        "| human \\ graded | " + " | ".join(str(g) for g in quality["grades"]) + " |",
        "| --- |" + " ---: |" * len(quality["grades"]),
    ]
    for g, row in zip(quality["grades"], quality["confusion"]):
        lines.append(f"| {g} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)


# ---- the simulated annotator ---------------------------------------------------------------

SIM_KEY = "annotator.simulated"


def _rate(value: Any, name: str, low_open: bool) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = float("nan")
    ok = (0 < x <= 1) if low_open else (0 <= x <= 1)
    if not (math.isfinite(x) and ok):
        raise ConfigError(f"{SIM_KEY}.{name} must be a probability in {'(0, 1]' if low_open else '[0, 1]'}, got {value!r}")
    return x


class SimulatedGrader:
    """A simulated annotator: grades drawn from the human labels, for studies where an LLM's
    error rates are set rather than measured. It is a simulation and says so everywhere.

    **Rates mode** (no ``confusion``): a document is labelled relevant with probability
    ``recall`` = P(grade >= 2 | human relevant) when its human grade is > 0, and with the false
    positive rate ``f`` when it is 0; ``f`` is derived from ``precision``, the target share of
    human-relevant documents among those graded >= 2 over all graded documents, and the base
    rate ``pi`` (the share of human-relevant documents among the graded ones):

        precision = recall pi / (recall pi + f (1 - pi))  =>  f = recall pi (1 - precision) / (precision (1 - pi))

    A target with ``f > 1`` (or no human-relevant, or no non-relevant, graded document while
    precision < 1) cannot be met: a :class:`ConfigError` when the stage is built. A document
    labelled relevant gets grade 3 if its human grade is the collection's maximum grade and > 1,
    else 2; one labelled not relevant gets grade 0.

    **Confusion mode**: ``confusion`` maps each human grade to the probabilities of grades
    0..``max_grade`` (rows summing to 1); it overrides the rates.

    Every draw is one uniform number seeded by (``seed``, query, document), so a document's
    grade does not depend on batch order or on which other documents are graded.
    """

    def __init__(self, recall: float = 0.8, precision: float = 0.7, confusion: Mapping | None = None,
                 seed: int = 0, max_grade: int = 3):
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ConfigError(f"{SIM_KEY}.seed must be a non-negative integer, got {seed!r}")
        self.seed = int(seed)
        self.max_grade = int(max_grade)
        self.confusion = self._check_confusion(confusion) if confusion is not None else None
        self.recall = None if self.confusion else _rate(recall, "recall", low_open=False)
        self.precision = None if self.confusion else _rate(precision, "precision", low_open=True)
        self.false_positive_rate: float | None = None
        self.base_rate: float | None = None
        self.top_grade: int | None = None

    def _check_confusion(self, confusion: Any) -> dict[int, list[float]]:
        if not isinstance(confusion, Mapping) or not confusion:
            raise ConfigError(f"{SIM_KEY}.confusion must map human grades to rows of {self.max_grade + 1} "
                              f"probabilities (of grades 0..{self.max_grade}), got {confusion!r}")
        rows: dict[int, list[float]] = {}
        for key, row in confusion.items():
            try:
                grade = int(key)
            except (TypeError, ValueError):
                raise ConfigError(f"{SIM_KEY}.confusion: the key {key!r} is not a human grade (an integer)") from None
            try:
                probs = [float(p) for p in row]
            except (TypeError, ValueError):
                raise ConfigError(f"{SIM_KEY}.confusion[{grade}] must be a list of probabilities, got {row!r}") from None
            if len(probs) != self.max_grade + 1:
                raise ConfigError(f"{SIM_KEY}.confusion[{grade}] has {len(probs)} probabilities, needs "
                                  f"{self.max_grade + 1} (of grades 0..{self.max_grade}): {row!r}")
            if any(not math.isfinite(p) or p < 0 for p in probs) or abs(sum(probs) - 1.0) > 1e-6:
                raise ConfigError(f"{SIM_KEY}.confusion[{grade}] must be non-negative probabilities summing to 1, "
                                  f"got {probs} (sum {sum(probs):g})")
            rows[grade] = probs
        return rows

    @property
    def mode(self) -> str:
        return "confusion" if self.confusion else "rates"

    def spec(self) -> dict:
        """What determines its grades (the cache key part of a simulated run: no model)."""
        out: dict[str, Any] = {"simulated": True, "mode": self.mode, "seed": self.seed, "max_grade": self.max_grade}
        if self.confusion:
            out["confusion"] = {str(k): v for k, v in sorted(self.confusion.items())}
        else:
            out.update(recall=self.recall, precision=self.precision)
        return out

    def prepare(self, human: Sequence[int], top_grade: int) -> None:
        """Fit the rates to the graded documents' human grades (all of them, before any batch):
        the base rate and the derived false positive rate; a ConfigError for an unreachable target."""
        human = [int(h) for h in human]
        self.top_grade = int(top_grade)
        if self.confusion:
            missing = sorted({h for h in human} - set(self.confusion))
            if missing:
                raise ConfigError(f"{SIM_KEY}.confusion has no row for the human grades {missing} of the graded "
                                  f"documents (rows given: {sorted(self.confusion)}); give one row per human grade")
            return
        n = len(human)
        relevant = sum(1 for h in human if h > 0)
        self.base_rate = relevant / n if n else 0.0
        p, r, pi = self.precision, self.recall, self.base_rate
        if r == 0:
            self.false_positive_rate = 0.0  # nothing is labelled relevant: precision is undefined, not a target
            return
        if relevant == 0 or (relevant == n and p < 1):
            raise ConfigError(
                f"{SIM_KEY}.precision = {p:g} cannot be reached: {relevant} of the {n} graded documents are "
                "human-relevant, so every document graded >= 2 is " + ("non-relevant" if relevant == 0 else "relevant")
                + ". Use annotator.simulated.confusion, or a collection with both kinds among the shown documents")
        f = r * pi * (1 - p) / (p * (1 - pi))
        if f > 1:
            reach = r * pi / (r * pi + (1 - pi))
            raise ConfigError(
                f"{SIM_KEY}.precision = {p:g} cannot be reached at recall {r:g}: the base rate of human-relevant "
                f"documents among the {n} graded ones is {pi:.4f}, so even grading every non-relevant document >= 2 "
                f"gives a precision of {reach:.4f} (the false positive rate would have to be {f:.3f} > 1). Lower "
                "annotator.simulated.precision to at least that, or raise the base rate")
        self.false_positive_rate = f

    def uniform(self, query_id: str, doc_id: str) -> float:
        """The pair's one uniform draw in [0, 1): a function of (seed, query, document) alone."""
        return stable_seed("simulated_grade", self.seed, query_id, doc_id) / 2.0 ** 64

    def grade(self, query_id: str, doc_id: str, human: int) -> int:
        u = self.uniform(query_id, doc_id)
        human = int(human)
        if self.confusion:
            cum = 0.0
            row = self.confusion[human]
            for g, p in enumerate(row):
                cum += p
                if u < cum:
                    return g
            return max(g for g, p in enumerate(row) if p > 0)  # u beyond a sum rounded below 1
        if self.false_positive_rate is None:
            raise RuntimeError("SimulatedGrader.prepare() must run before grade()")
        relevant = u < (self.recall if human > 0 else self.false_positive_rate)
        if not relevant:
            return 0
        return 3 if (human == self.top_grade and human > 1 and self.max_grade >= 3) else 2

    def describe(self) -> str:
        if self.confusion:
            return f"simulated from the human labels by a confusion matrix (seed {self.seed})"
        return (f"simulated from the human labels at recall {self.recall:g} and precision {self.precision:g} "
                f"(false positive rate {self.false_positive_rate if self.false_positive_rate is not None else float('nan'):.4f} "
                f"at a base rate of {self.base_rate if self.base_rate is not None else float('nan'):.4f}; seed {self.seed})")


# ---- the stage -----------------------------------------------------------------------------

def _int_setting(value: Any, name: str, least: int, nullable: bool = False) -> int | None:
    if value is None and nullable:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
        raise ConfigError(f"{name} must be an integer of at least {least}{' or null' if nullable else ''}, got {value!r}")
    return int(value)


class GradeStage(AnnotatorStage[dict]):
    """Pointwise 0-3 grades of each query's shown documents (see the module docstring)."""

    name = "grade"
    inputs = ("data", "clicks")
    version = 1
    accepts_simulated = True

    def __init__(self, annotator: DictConfig | Mapping, depth: int = 10, max_queries: int | None = None,
                 batch_queries: int = 4, max_grade: int = 3, max_new_tokens: int | None = 8):
        super().__init__(annotator, batch_queries)
        # a grade is one digit: decoding stops after max_new_tokens (null: annotator.generation's own),
        # so grading does not pay for the 64 tokens the listwise steps need
        self.max_new_tokens = _int_setting(max_new_tokens, "annotate.grade.max_new_tokens", 1, nullable=True)
        self.depth = _int_setting(depth, "annotate.grade.depth", 1)
        self.max_queries = _int_setting(max_queries, "annotate.grade.max_queries", 1, nullable=True)
        self.max_grade = _int_setting(max_grade, "the grade stage's max_grade", 1)
        self.simulator: SimulatedGrader | None = self._simulator() if self.simulated() else None

    def _simulator(self) -> SimulatedGrader:
        from hydra.utils import get_class

        config = dict(self.annotator["simulated"])
        target = config.pop("_target_", f"{__name__}.SimulatedGrader")
        try:
            cls = get_class(target)
        except Exception as exc:  # noqa: BLE001 - hydra wraps import errors of every kind
            raise ConfigError(f"{SIM_KEY}._target_ {target!r} cannot be imported ({exc})") from None
        try:
            return cls(**config, max_grade=self.max_grade)
        except TypeError as exc:
            raise ConfigError(f"{SIM_KEY}: {exc} (settings: recall, precision, confusion, seed)") from None

    def spec(self) -> dict:
        who = ({"simulated": self.simulator.spec()} if self.simulator else
               {**self.annotator_spec(), "prompt": PROMPT,
                **({"max_new_tokens": self.max_new_tokens} if self.max_new_tokens is not None else {})})
        return {**who, "depth": self.depth, "max_queries": self.max_queries, "max_grade": self.max_grade}

    # --- selection -------------------------------------------------------------------------
    def select(self, collection, clicks) -> tuple[list[tuple[str, list[str]]], dict]:
        """(query_id, documents to grade) in collection order, and the counts of what was left out."""
        shown = shown_documents(clicks)
        counts = {"queries_without_shown_documents": 0, "queries_cut_by_max_queries": 0,
                  "documents_cut_by_depth": 0, "queries_cut_by_depth": 0, "shown_documents_without_text": 0,
                  "log_queries_not_in_collection": sum(1 for q in shown if q not in collection.queries)}
        chosen = []
        for q in collection.queries:
            docs = shown.get(q)
            if not docs:
                counts["queries_without_shown_documents"] += 1
                continue
            known = [d for d in docs if d in collection.docs]
            counts["shown_documents_without_text"] += len(docs) - len(known)
            if known:
                chosen.append((q, known))
            else:
                counts["queries_without_shown_documents"] += 1
        if self.max_queries is not None and len(chosen) > self.max_queries:
            counts["queries_cut_by_max_queries"] = len(chosen) - self.max_queries
            chosen = chosen[: self.max_queries]
        for i, (q, known) in enumerate(chosen):  # the depth cut of the queries graded
            if len(known) > self.depth:
                counts["documents_cut_by_depth"] += len(known) - self.depth
                counts["queries_cut_by_depth"] += 1
                chosen[i] = (q, known[: self.depth])
        if not chosen:
            raise ConfigError(
                f"the grade stage found no query of {getattr(collection, 'name', 'the collection')!r} with shown "
                f"documents in the click log ({ {k: v for k, v in counts.items() if v} }): the log's query keys and "
                "document ids must be the collection's")
        return chosen, counts

    # --- building --------------------------------------------------------------------------
    def build(self, out: Path, work: Path, inputs: Mapping[str, Artifact]) -> None:
        collection = inputs["data"].value
        chosen, counts = self.select(collection, inputs["clicks"].value)
        qrels = collection.qrels
        docs_of = dict(chosen)
        if self.simulator is not None:
            top = max((int(g) for rel in qrels.values() for g in rel.values()), default=0)
            self.simulator.prepare([qrels.get(q, {}).get(d, 0) for q, ds in chosen for d in ds], top)

            def process(batch: list[str]) -> list[dict]:
                return [self._simulated_record(q, docs_of[q], qrels.get(q, {})) for q in batch]
        else:
            def process(batch: list[str]) -> list[dict]:
                return self._llm_records(batch, docs_of, collection)

        records = self.run_shards(work, [q for q, _ in chosen], process, "grade", "graded judgments",
                                  out / "grades.jsonl")
        self._publish(out, records, qrels, counts)

    def _simulated_record(self, query_id: str, docs: list[str], human: Mapping[str, int]) -> dict:
        grades = {d: self.simulator.grade(query_id, d, int(human.get(d, 0))) for d in docs}
        return {"query_id": query_id, "docs": docs, "grades": grades, "outputs": None, "unparseable": 0,
                "prompts": 0, "prompt_tokens": 0, "output_tokens": 0, "simulated": True}

    def _llm_records(self, batch: list[str], docs_of: Mapping[str, list[str]], collection) -> list[dict]:
        backend = self.backend()
        params = self.generation()
        if self.max_new_tokens is not None:
            from dataclasses import replace

            params = replace(params, max_new_tokens=self.max_new_tokens)
        fitter = PromptFitter(self.renderer, backend, self.annotator.get("max_passage_words"))
        jobs, prompts = [], []
        records = {q: {"query_id": q, "docs": list(docs_of[q]), "grades": {}, "outputs": {}, "unparseable": 0,
                       "prompts": 0, "prompt_tokens": 0, "output_tokens": 0, "truncation": {}} for q in batch}
        for q in batch:
            for d in docs_of[q]:
                messages, cut = fitter.render(PROMPT, collection.queries[q], [collection.docs[d]],
                                              reserve=params.max_new_tokens)
                if cut.prompts_truncated:
                    records[q]["truncation"] = TruncationStats().merge(records[q]["truncation"]).merge(cut).cuts()
                jobs.append((q, d))
                prompts.append(messages)
        outputs = backend.generate(prompts, params) if prompts else []
        for (q, d), gen in zip(jobs, outputs):
            r = records[q]
            grade = parse_grade(gen.text, self.max_grade)
            r["outputs"][d] = gen.text
            if grade is None:
                r["unparseable"] += 1
            else:
                r["grades"][d] = grade
            r["prompts"] += 1
            r["prompt_tokens"] += int(gen.prompt_tokens)
            r["output_tokens"] += int(gen.output_tokens)
        return [records[q] for q in batch]

    def _publish(self, out: Path, records: list[dict], qrels: Mapping, counts: dict) -> None:
        simulated = self.simulator is not None
        pairs, unjudged, parse = [], 0, GradeParseStats()
        with open(out / "qrels_grade.txt", "w", encoding="utf-8") as f:
            for r in records:
                human = qrels.get(r["query_id"], {})
                for d in r["docs"]:
                    g = r["grades"].get(d)
                    parse.record(g)
                    if g is None:
                        continue
                    if d not in human:
                        unjudged += 1
                    pairs.append((int(human.get(d, 0)), int(g)))
                    f.write(f"{r['query_id']} 0 {d} {int(g)}\n")
        quality = {"simulated": simulated, **grade_quality(pairs, self.max_grade), "unjudged_pairs_as_grade_0": unjudged,
                   "unparseable": parse.unparseable}
        if simulated:
            quality["note"] = SIMULATED_NOTE
            quality["simulator"] = {**self.simulator.spec(), "false_positive_rate": self.simulator.false_positive_rate,
                                    "base_rate": self.simulator.base_rate}
        (out / "quality.json").write_text(json.dumps(quality, indent=2))
        (out / "quality.md").write_text(quality_markdown(quality) + "\n")
        prompt_tokens = sum(int(r.get("prompt_tokens", 0)) for r in records)
        output_tokens = sum(int(r.get("output_tokens", 0)) for r in records)
        seconds = sum(float(r.get("seconds", 0.0)) for r in records)
        prompts = sum(int(r.get("prompts", 0)) for r in records)
        stats = {
            "simulated": simulated,
            "annotator": self.simulator.describe() if simulated else self.annotator["backend"].get("model"),
            "queries": len(records),
            "documents": parse.total,
            "graded": parse.total - parse.unparseable,
            "prompts": prompts,
            "prompt_tokens": prompt_tokens,
            "output_tokens": output_tokens,
            "seconds": round(seconds, 3),
            "seconds_per_prompt": round(seconds / prompts, 4) if prompts else None,
            "tokens_per_second": round((prompt_tokens + output_tokens) / seconds, 1) if seconds > 0 and prompts else None,
            "unparseable": parse.unparseable,
            "queries_with_unparseable": sum(1 for r in records if r.get("unparseable")),
            "cuts": counts,
            "truncation": TruncationStats.of_records(records, prompts).to_dict(),
        }
        (out / "stats.json").write_text(json.dumps(stats, indent=2))
        problems = {k: v for k, v in counts.items() if v}
        if parse.unparseable:
            problems["unparseable_answers"] = parse.unparseable
        if problems:
            log.warning("[grade] %s", ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in problems.items()))
        if not simulated:
            TruncationStats().merge(stats["truncation"]).warn("grade")
        log.info("[grade]%s %d queries, %d documents graded, kappa %s", " SIMULATED:" if simulated else "",
                 stats["queries"], stats["graded"], quality.get("kappa"))

    # --- reading ---------------------------------------------------------------------------
    def report(self, artifact: Artifact) -> dict[str, str]:
        """The agreement with the human grades and the cost (a simulated run says so in both)."""
        stats = json.loads((artifact.path / "stats.json").read_text())
        table = (artifact.path / "quality.md").read_text()
        cuts = {k: v for k, v in stats["cuts"].items() if v}
        left = ("Left out: " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in cuts.items()) + ".") if cuts else ""
        if stats.get("simulated"):
            title = "Graded judgments (0-3), SIMULATED annotator: agreement with human grades"
            cost = (f"**{SIMULATED_NOTE}.** {stats['annotator']}. {stats['queries']} queries, {stats['documents']} "
                    f"documents graded, no prompts, no model. {left}")
            return {title: table, "Graded judgments, SIMULATED annotator: cost": cost.strip()}
        per = stats.get("seconds_per_prompt")
        cost = (
            f"Annotator {stats['annotator']}: {stats['queries']} queries, {stats['prompts']} prompts (one per shown "
            f"document), {stats['prompt_tokens']} prompt + {stats['output_tokens']} output tokens in {stats['seconds']} s"
            + (f" ({per} s per prompt, {stats['tokens_per_second']} tokens/s)" if per is not None else "")
            + f"; {stats['unparseable']} unparseable answers (those documents have no grade)."
            + TruncationStats.sentence(stats.get("truncation")) + (f" {left}" if left else "")
        )
        return {"Graded judgments (0-3) by the LLM: agreement with human grades": table,
                "Graded judgments: cost": cost}

    def load(self, path: Path) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        with open(path / "grades.jsonl", encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                out[r["query_id"]] = {d: int(g) for d, g in r["grades"].items()}
        return out
