"""The annotation/training pool: per query, its human positives plus retrieved hard negatives.

Following Zhang et al. (arXiv 2504.05220), each training query gets the documents judged
relevant (qrel relevance > 0) and the top-``depth`` documents of a first-stage retriever
that are not judged relevant; the union, shuffled, is what an annotator (or an LLM) sees.
The retriever is an argument (anything with ``search(queries, k, show_progress)``), so
negatives from a dense retriever can be added beside BM25's.

The shuffle of query q uses an RNG seeded with sha256(f"{seed}:{q}"), so a query's order
depends only on the seed and its own id, not on which other queries are pooled.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from uptrain.data.collection import Collection

_FIELDS = ("query_id", "query", "positives", "negatives", "candidates", "bm25_scores")


class Retriever(Protocol):
    def search(self, queries: dict[str, str], k: int, show_progress: bool = True) -> dict[str, dict[str, float]]: ...


@dataclass
class PoolEntry:
    query_id: str
    query: str
    positives: list[str]  # judged relevant (qrel > 0), in qrels order
    negatives: list[str]  # top-depth retrieved documents not judged relevant, in rank order
    candidates: list[str]  # positives + negatives, shuffled per (seed, query_id)
    bm25_scores: dict[str, float] = field(default_factory=dict)  # candidates the retriever returned


def query_rng(seed: int, query_id: str) -> random.Random:
    """An RNG seeded from int(sha256(f"{seed}:{query_id}")[:16], 16): stable across runs and processes."""
    digest = hashlib.sha256(f"{seed}:{query_id}".encode("utf-8")).hexdigest()
    return random.Random(int(digest[:16], 16))


def build_pool(
    collection: Collection,
    retriever: Retriever,
    depth: int = 30,
    seed: int = 0,
    query_ids: list[str] | None = None,
    show_progress: bool = True,
    require_positive: bool = True,
    inject_positives: bool = True,
) -> tuple[list[PoolEntry], dict]:
    """Pool entries for ``query_ids`` (default: all queries) and counts.

    With ``require_positive`` false a query without a human positive still gets an entry
    (its retrieved documents only): click and LLM labels can then label it. With
    ``inject_positives`` false the candidates are the retrieved top ``depth`` only (a human
    positive is a candidate only where the retriever found it): labels that must not see the
    human judgments (click and LLM labels evaluated against them) then cannot learn from a
    positive injected into the candidates, not even as a negative. ``positives`` still holds the
    judgments (for quality reports); ``stats["positives_not_retrieved"]`` counts those left out.

    stats: queries (entries built), skipped_no_positive (queries without a qrel > 0, left out
    when ``require_positive``), without_positive (entries that have none),
    mean_positives and mean_negatives (per entry), empty_query (entries whose query text
    is blank, which therefore have no retrieved negatives).
    """
    if depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}")
    if query_ids is None:
        query_ids = list(collection.queries)
    missing = [q for q in query_ids if q not in collection.queries]
    if missing:
        raise KeyError(f"{len(missing)} query id(s) not in collection {collection.name!r}, e.g. {missing[:5]}")

    positives: dict[str, list[str]] = {}
    skipped = 0
    for qid in dict.fromkeys(query_ids):  # keep order, drop repeats
        pos = [d for d, rel in collection.qrels.get(qid, {}).items() if rel > 0]
        if pos or not require_positive:
            positives[qid] = pos
        else:
            skipped += 1

    queries = {qid: collection.queries[qid] for qid in positives}
    # retrieve extra so `depth` negatives remain after removing the positives
    run = {}
    if depth > 0 and queries:
        k = depth + max((len(p) for p in positives.values()), default=0)
        run = retriever.search(queries, k=k, show_progress=show_progress)

    entries: list[PoolEntry] = []
    empty = 0
    not_retrieved = 0
    for qid, pos in positives.items():
        ranked = run.get(qid, {})
        pos_set = set(pos)
        if inject_positives:
            negatives = [d for d in ranked if d not in pos_set][:depth]
            candidates = pos + negatives
        else:
            top = list(ranked)[:depth]
            negatives = [d for d in top if d not in pos_set]
            candidates = list(top)
            not_retrieved += sum(1 for d in pos if d not in set(top))
        query_rng(seed, qid).shuffle(candidates)
        scores = {d: float(ranked[d]) for d in candidates if d in ranked}
        if not queries[qid].strip():
            empty += 1
        entries.append(PoolEntry(qid, queries[qid], list(pos), negatives, candidates, scores))

    n = len(entries)
    stats = {
        "queries": n,
        "skipped_no_positive": skipped,
        "without_positive": sum(1 for e in entries if not e.positives),
        "mean_positives": sum(len(e.positives) for e in entries) / n if n else 0.0,
        "mean_negatives": sum(len(e.negatives) for e in entries) / n if n else 0.0,
        "empty_query": empty,
        **({"inject_positives": False, "positives_not_retrieved": not_retrieved} if not inject_positives else {}),
    }
    return entries, stats


def save_pool(path: str | Path, entries: list[PoolEntry]) -> None:
    """Write one JSON object per line; a reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for e in entries:
                f.write(json.dumps(asdict(e), ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_pool(path: str | Path) -> list[PoolEntry]:
    path = Path(path)
    entries = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
                if set(obj) != set(_FIELDS):
                    raise ValueError(f"fields {sorted(obj)} differ from {sorted(_FIELDS)}")
                entry = PoolEntry(
                    query_id=str(obj["query_id"]),
                    query=str(obj["query"]),
                    positives=[str(d) for d in obj["positives"]],
                    negatives=[str(d) for d in obj["negatives"]],
                    candidates=[str(d) for d in obj["candidates"]],
                    bm25_scores={str(d): float(s) for d, s in obj["bm25_scores"].items()},
                )
            except (ValueError, TypeError, AttributeError) as err:
                raise ValueError(f"{path}, line {lineno}: malformed pool entry: {err}") from err
            entries.append(entry)
    return entries

