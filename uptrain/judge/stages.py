"""The judge's label stage: every (query, document) pair the systems' top K hold, graded once.

The pairs are the union over systems of each query's top K (a document two systems share is
judged once); the stage's key is the judge (its spec, and for a trained judge its model
artifact) with the digest of the pair list, so the same pairs by the same judge are never
graded twice. Queries are graded in resumable batches (:func:`uptrain.annotate.shards.run_sharded`):
a killed run redoes only the batch in flight.

Artifact: ``labels.jsonl`` (per query: query_id, docs, grades, probs, expected; an LLM judge's
raw outputs), ``qrels_judge.txt`` (TREC qrels of the grades), ``stats.json`` (pairs, labelled,
unlabelled, seconds, pairs per second, prompts and tokens).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from uptrain.annotate.shards import run_sharded
from uptrain.graph import Artifact, Stage
from uptrain.judge.base import Judge

log = logging.getLogger("uptrain")


@dataclass
class JudgeLabels:
    grades: dict[str, dict[str, int]] = field(default_factory=dict)  # query -> doc -> grade (labelled pairs only)
    expected: dict[str, dict[str, float]] = field(default_factory=dict)
    probs: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)

    def merge(self, other: "JudgeLabels") -> "JudgeLabels":
        for name in ("grades", "expected", "probs"):
            for q, v in getattr(other, name).items():
                getattr(self, name).setdefault(q, {}).update(v)
        return self


def pairs_digest(pairs: Mapping[str, list[str]]) -> str:
    body = json.dumps(sorted((q, sorted(ds)) for q, ds in pairs.items()), separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


class JudgeLabelStage(Stage[JudgeLabels]):
    name = "judge_label"
    version = 1
    #: queries can be split across jobs (annotate.shard / annotate.num_shards)
    shardable = True

    def __init__(self, judge: Judge, pairs: Mapping[str, list[str]], batch_queries: int = 8, part: str | None = None):
        self.judge = judge
        self.pairs = {q: list(ds) for q, ds in pairs.items() if ds}
        self.batch_queries = int(batch_queries)
        self.part = part  # which fold's queries (for the label only)
        self.inputs = ("data", "model") if judge.trainable else ("data",)

    def spec(self) -> dict:
        return {"judge": self.judge.spec(), "max_grade": self.judge.max_grade, "pairs": pairs_digest(self.pairs),
                "n_pairs": sum(len(v) for v in self.pairs.values())}

    def build(self, out: Path, work: Path, inputs: Mapping[str, Artifact]) -> None:
        collection = inputs["data"].value
        judge = self.judge
        if "model" in inputs:
            judge.use(inputs["model"].value)
        human = collection.qrels
        if judge.needs_human:
            top = max((int(g) for rel in human.values() for g in rel.values()), default=0)
            judge.prepare([int(human.get(q, {}).get(d, 0)) for q, ds in self.pairs.items() for d in ds], top)
        ids = list(self.pairs)

        def process(batch: list[str]) -> list[dict]:
            items = [(q, collection.queries[q], self.pairs[q], [collection.docs[d] for d in self.pairs[q]]) for q in batch]
            graded = judge.grade_many(items, human=human if judge.needs_human else None)
            records = []
            for (q, _, docs, _), g in zip(items, graded):
                r = {"query_id": q, "docs": docs,
                     "grades": {d: v for d, v in zip(docs, g.grades) if v is not None},
                     "probs": {d: [round(x, 6) for x in p] for d, p in zip(docs, g.probs) if p is not None},
                     "expected": {d: round(e, 6) for d, e in zip(docs, g.expected) if e is not None},
                     "unlabelled": sum(v is None for v in g.grades)}
                for key in ("prompts", "prompt_tokens", "output_tokens", "outputs", "truncation"):
                    if key in g.cost:
                        r[key] = g.cost[key]
                records.append(r)
            return records

        what = f"judge labels{f' ({self.part})' if self.part else ''}"
        records = run_sharded(work / "shards", ids, self.batch_queries, process, f"judge {judge.name}"
                              + (f" {self.part}" if self.part else ""), what=what, out=out / "labels.jsonl")
        n_pairs = sum(len(r["docs"]) for r in records)
        unlabelled = sum(int(r.get("unlabelled", 0)) for r in records)
        seconds = sum(float(r.get("seconds", 0.0)) for r in records)
        with open(out / "qrels_judge.txt", "w", encoding="utf-8") as f:
            for r in records:
                for d, g in r["grades"].items():
                    f.write(f"{r['query_id']} 0 {d} {int(g)}\n")
        stats = {
            "judge": judge.name, "simulated": judge.simulated, "describe": judge.describe(),
            "queries": len(records), "pairs": n_pairs, "labelled": n_pairs - unlabelled, "unlabelled": unlabelled,
            "seconds": round(seconds, 3),
            "pairs_per_second": round(n_pairs / seconds, 2) if seconds > 0 else None,
            "prompts": sum(int(r.get("prompts", 0)) for r in records),
            "prompt_tokens": sum(int(r.get("prompt_tokens", 0)) for r in records),
            "output_tokens": sum(int(r.get("output_tokens", 0)) for r in records),
            "queries_truncated": sum(1 for r in records if r.get("truncation")),
        }
        (out / "stats.json").write_text(json.dumps(stats, indent=2))
        if unlabelled:
            log.warning("[judge %s] %d of %d pairs got no readable grade (left unlabelled)", judge.name, unlabelled, n_pairs)

    def load(self, path: Path) -> JudgeLabels:
        labels = JudgeLabels(stats=json.loads((path / "stats.json").read_text()))
        with open(path / "labels.jsonl", encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                labels.grades[r["query_id"]] = {d: int(g) for d, g in r["grades"].items()}
                labels.expected[r["query_id"]] = {d: float(e) for d, e in r["expected"].items()}
                labels.probs[r["query_id"]] = r["probs"]
        return labels
