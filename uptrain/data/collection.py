"""The in-memory form of a test collection and its on-disk artifact.

Every loader (ir_datasets, BEIR folder, TREC files) returns a :class:`Collection`;
the data stage stores it as plain files a user can open: ``docs.parquet``
(doc_id, text), ``queries.parquet`` (query_id, text), ``qrels.txt`` (TREC qrels),
``stats.json`` (counts and the counted problems found while loading) and, for a question
answering collection, ``answers.jsonl`` (``{"query_id": ..., "answers": [...]}`` per question
with gold answers: the RAG path's ground truth and REPLUG (Human)'s answers).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass
class Collection:
    name: str
    docs: dict[str, str]  # doc_id -> text the encoder and BM25 see (fields already joined)
    queries: dict[str, str]  # query_id -> text
    qrels: dict[str, dict[str, int]]  # query_id -> doc_id -> graded relevance
    stats: dict = field(default_factory=dict)  # counts and counted warnings
    answers: dict[str, list[str]] = field(default_factory=dict)  # query_id -> gold answers (QA collections)

    def judged_queries(self) -> list[str]:
        """Queries that have at least one positive judgment (relevance > 0)."""
        return [q for q in self.queries if any(r > 0 for r in self.qrels.get(q, {}).values())]

    def summary(self) -> dict:
        return {
            "name": self.name,
            "docs": len(self.docs),
            "queries": len(self.queries),
            "qrels": sum(len(v) for v in self.qrels.values()),
            **({"questions_with_answers": len(self.answers)} if self.answers else {}),
            **self.stats,
        }

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        pd.DataFrame({"doc_id": list(self.docs), "text": list(self.docs.values())}).to_parquet(
            path / "docs.parquet", index=False
        )
        pd.DataFrame({"query_id": list(self.queries), "text": list(self.queries.values())}).to_parquet(
            path / "queries.parquet", index=False
        )
        with open(path / "qrels.txt", "w") as f:
            for qid, rels in self.qrels.items():
                for did, rel in rels.items():
                    f.write(f"{qid} 0 {did} {rel}\n")
        if self.answers:
            with open(path / "answers.jsonl", "w", encoding="utf-8") as f:
                for qid, answers in self.answers.items():
                    f.write(json.dumps({"query_id": qid, "answers": list(answers)}, ensure_ascii=False) + "\n")
        (path / "stats.json").write_text(json.dumps({"name": self.name, **self.summary()}, indent=2))

    @classmethod
    def load(cls, path: str | Path) -> "Collection":
        path = Path(path)
        docs_df = pd.read_parquet(path / "docs.parquet")
        q_df = pd.read_parquet(path / "queries.parquet")
        qrels: dict[str, dict[str, int]] = {}
        with open(path / "qrels.txt") as f:
            for line in f:
                qid, _, did, rel = line.split()
                qrels.setdefault(qid, {})[did] = int(rel)
        stats = json.loads((path / "stats.json").read_text())
        name = stats.pop("name")
        for k in ("docs", "queries", "qrels", "questions_with_answers"):
            stats.pop(k, None)
        answers: dict[str, list[str]] = {}
        if (path / "answers.jsonl").is_file():
            with open(path / "answers.jsonl", encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        row = json.loads(line)
                        answers[str(row["query_id"])] = [str(a) for a in row["answers"]]
        return cls(
            name=name,
            docs=dict(zip(docs_df["doc_id"].astype(str), docs_df["text"].astype(str))),
            queries=dict(zip(q_df["query_id"].astype(str), q_df["text"].astype(str))),
            qrels=qrels,
            stats=stats,
            answers=answers,
        )
