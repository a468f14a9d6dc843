"""The in-memory form of a test collection and its on-disk artifact.

Every loader (ir_datasets, BEIR folder, TREC files) returns a :class:`Collection`;
the data stage stores it as plain files a user can open: ``docs.parquet``
(doc_id, text), ``queries.parquet`` (query_id, text), ``qrels.txt`` (TREC qrels)
and ``stats.json`` (counts and the counted problems found while loading).
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

    def judged_queries(self) -> list[str]:
        """Queries that have at least one positive judgment (relevance > 0)."""
        return [q for q in self.queries if any(r > 0 for r in self.qrels.get(q, {}).values())]

    def summary(self) -> dict:
        return {
            "name": self.name,
            "docs": len(self.docs),
            "queries": len(self.queries),
            "qrels": sum(len(v) for v in self.qrels.values()),
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
        for k in ("docs", "queries", "qrels"):
            stats.pop(k, None)
        return cls(
            name=name,
            docs=dict(zip(docs_df["doc_id"].astype(str), docs_df["text"].astype(str))),
            queries=dict(zip(q_df["query_id"].astype(str), q_df["text"].astype(str))),
            qrels=qrels,
            stats=stats,
        )
