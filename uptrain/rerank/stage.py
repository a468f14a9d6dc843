"""The rerank stage: re-score the top-``depth`` of a first-stage run with a model's ``score_pairs``.

For each query of the collection, the run's best ``depth`` documents (by the run's own
order: descending score, then doc id) are scored as (query, passage) pairs and written
back, ordered by the new score, as a TREC run (``run.trec``, the retrieve stage's file
name, so evaluation reads either the same way). Every gap is counted in
``rerank_stats.json``, never silent: queries with fewer than ``depth`` candidates, run
documents missing from the collection (dropped), collection queries the run lacks and
run queries the collection lacks, and the pairs the model truncated.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Mapping

from uptrain.graph import Artifact, Stage
from uptrain.retrieve.runfile import Run, ranked, read_trec_run, write_trec_run
from uptrain.retrieve.stage import RUN_FILE

log = logging.getLogger("uptrain")

RERANK_STATS = "rerank_stats.json"


def rerank(collection, run: Mapping[str, Mapping[str, float]], model, depth: int = 100, batch_size: int = 64,
           show_progress: bool = True) -> tuple[Run, dict]:
    """(re-ranked run, stats): each collection query's top-``depth`` of ``run`` re-scored by ``model``."""
    pairs_q, pairs_p, owners = [], [], []
    short = missing_docs = no_candidates = 0
    for qid, query in collection.queries.items():
        candidates = [d for d, _ in ranked(run.get(qid, {}))[:depth]]
        if qid not in run:
            no_candidates += 1
            continue
        if len(candidates) < depth:
            short += 1
        for d in candidates:
            if d not in collection.docs:
                missing_docs += 1
                continue
            pairs_q.append(query)
            pairs_p.append(collection.docs[d])
            owners.append((qid, d))
    extra_queries = sum(1 for q in run if q not in collection.queries)
    before = dict(model.truncation_counts)
    t0 = time.time()
    scores = model.score_pairs(pairs_q, pairs_p, batch_size=batch_size, show_progress=show_progress,
                               desc=f"rerank {collection.name}")
    seconds = time.time() - t0
    out: Run = {}
    for (qid, d), s in zip(owners, scores.tolist()):
        out.setdefault(qid, {})[d] = float(s)
    truncated = {k: int(v - before.get(k, 0)) for k, v in model.truncation_counts.items() if k.endswith("truncated")}
    stats = {
        "collection": collection.name,
        "family": model.family,
        "depth": int(depth),
        "queries": len(out),
        "pairs_scored": len(owners),
        "pairs_truncated": truncated.get("pairs_truncated", truncated.get("passages_truncated", 0)),
        "truncation": truncated,
        "seconds": round(seconds, 3),
        "pairs_per_second": round(len(owners) / max(seconds, 1e-9), 1),
        "queries_short_of_depth": short,
        "queries_not_in_run": no_candidates,
        "run_queries_not_in_collection": extra_queries,
        "missing_docs": missing_docs,
    }
    for key, what in (("missing_docs", "run documents are not in the collection and were dropped"),
                      ("queries_not_in_run", "collection queries have no candidates in the run"),
                      ("run_queries_not_in_collection", "run queries are not in the collection")):
        if stats[key]:
            log.warning("[rerank %s] %d %s", collection.name, stats[key], what)
    return out, stats


def append_tail(reranked: Mapping[str, Mapping[str, float]], first: Mapping[str, Mapping[str, float]],
                depth: int) -> tuple[Run, int]:
    """Each query's reranked top-``depth``, then the first stage's documents below rank ``depth`` in
    their first-stage order, scored below every reranked document; returns (run, tail documents)."""
    out: Run = {}
    tail_docs = 0
    for qid, scores in reranked.items():
        row = dict(scores)
        floor = min(row.values()) if row else 0.0
        tail = [d for d, _ in ranked(first.get(qid, {}))[depth:] if d not in row]
        for i, d in enumerate(tail, 1):
            row[d] = floor - float(i)
        tail_docs += len(tail)
        out[qid] = row
    return out, tail_docs


class RerankStage(Stage[dict]):
    """Inputs: ``data`` (the collection), ``run`` (a first-stage run artifact), ``model`` (any family)."""

    name = "rerank"
    inputs = ("data", "run", "model")
    version = 2  # 2: the first stage's documents below the depth follow the reranked ones

    def __init__(self, depth: int = 100, batch_size: int = 64, tag: str = "uptrain-rerank", show_progress: bool = True,
                 keep_tail: bool = True):
        if isinstance(depth, bool) or int(depth) != depth or depth < 1:
            raise ValueError(f"rerank depth must be a positive integer, got {depth!r}")
        self.depth = int(depth)
        self.batch_size = int(batch_size)
        self.tag = tag
        self.show_progress = show_progress
        self.keep_tail = bool(keep_tail)

    def spec(self) -> dict:
        # batch_size changes speed, not scores; the tag is written into every line of the run
        return {"depth": self.depth, "tag": self.tag, "keep_tail": self.keep_tail}

    def build(self, out: Path, work: Path, inputs: Mapping[str, Artifact]) -> None:
        run, stats = rerank(inputs["data"].value, inputs["run"].value, inputs["model"].value,
                            depth=self.depth, batch_size=self.batch_size, show_progress=self.show_progress)
        depth = self.depth
        if self.keep_tail:
            # without the tail a reranked run would lose every recall measure beyond the depth
            run, stats["tail_docs"] = append_tail(run, inputs["run"].value, self.depth)
            depth = None
        write_trec_run(out / RUN_FILE, run, tag=self.tag, depth=depth)
        (out / RERANK_STATS).write_text(json.dumps(stats, indent=2))
        log.info("[rerank %s] %d queries, %d pairs in %.1fs (%.0f pairs/s)", stats["collection"], stats["queries"],
                 stats["pairs_scored"], stats["seconds"], stats["pairs_per_second"])

    def report(self, artifact: Artifact) -> dict[str, str]:
        """What was re-scored, how fast, and every gap between the run and the collection."""
        st = json.loads((artifact.path / RERANK_STATS).read_text())
        cut = ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in st["truncation"].items() if v) or "none"
        text = (
            f"The top {st['depth']} of the first-stage run re-scored by the {st['family'].replace('_', '-')}: "
            f"{st['queries']} queries, {st['pairs_scored']} (query, passage) pairs in {st['seconds']} s "
            f"({st['pairs_per_second']} pairs/s); truncated: {cut}. Queries with fewer than {st['depth']} "
            f"candidates: {st['queries_short_of_depth']}; collection queries absent from the run: "
            f"{st['queries_not_in_run']}; run queries absent from the collection: "
            f"{st['run_queries_not_in_collection']}; run documents absent from the collection (dropped): "
            f"{st['missing_docs']}."
            + (f" Below them, the first stage's next {st['tail_docs']} documents in its order (so recall beyond "
               f"the depth is the first stage's)." if st.get("tail_docs") is not None else "")
        )
        return {f"Reranking ({st['collection']})": text}

    def load(self, path: Path) -> dict:
        return read_trec_run(path / RUN_FILE)
