"""The LLM test collection (Zhang et al., arXiv 2504.05220, Sec. 5): test queries re-judged by the LLM.

A fixed, seeded sample of ``queries`` judged test queries; for each, the top-``depth``
passages of several named systems' runs are pooled (round-robin by rank, duplicates
dropped) and judged by the annotator with the same steps and prompts as training
annotation (by default relsel -> answer -> utilsel; the ``label_step``'s passages are
relevant, the rest of the pool judged not relevant). Every run that names the same
collection, sample, systems and annotator shares this one cached artifact, and is then
evaluated on its labels (RR@10, nDCG@10, R@5, R@10 in the paper).

Judged queries are committed to shards one by one, so a killed build resumes. The
artifact is a :class:`Collection` (pooled documents only, the sampled queries, the LLM
qrels) plus ``agreement.json``: precision and recall of the LLM's relevant passages
against the human qrels on the same pools.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Mapping, Sequence

from omegaconf import DictConfig

from uptrain.annotate.annotator import AnnotatorStage
from uptrain.annotate.budget import TruncationStats
from uptrain.annotate.quality import selection_quality
from uptrain.annotate.steps import SELECTION_STEPS, QueryAnnotation, check_steps
from uptrain.data.collection import Collection
from uptrain.errors import ConfigError
from uptrain.graph import Artifact
from uptrain.labels.examples import stable_seed

log = logging.getLogger("uptrain")


def sample_queries(query_ids: Sequence[str], n: int | None, seed: int) -> list[str]:
    """A seeded sample of n query ids (all when n is None or larger), in a stable order."""
    order = sorted(query_ids, key=lambda q: (stable_seed("llm_test", seed, q), q))
    return order if not n else order[: int(n)]


def pool_runs(runs: Sequence[Mapping[str, Mapping[str, float]]], query_id: str, depth: int) -> list[str]:
    """Round-robin union of the systems' top-``depth`` documents for one query."""
    ranked = []
    for run in runs:
        scores = run.get(query_id, {})
        ranked.append(sorted(scores, key=lambda d: (-scores[d], d))[:depth])
    pooled: list[str] = []
    for rank in range(depth):
        for docs in ranked:
            if rank < len(docs) and docs[rank] not in pooled:
                pooled.append(docs[rank])
    return pooled


class LLMTestSetStage(AnnotatorStage[Collection]):
    name = "llm_testset"
    version = 2  # see AnnotatorStage

    def __init__(
        self,
        annotator: DictConfig | dict,
        systems: Sequence[str],
        queries: int | None = 200,
        depth: int = 20,
        seed: int = 0,
        steps: Sequence[str] = ("relsel", "answer", "utilsel"),
        label_step: str = "utilsel",
        batch_queries: int = 4,
    ):
        super().__init__(annotator, batch_queries)
        self.systems = list(systems)
        if not self.systems:
            raise ConfigError("eval.llm_test.systems is empty: name the experiments whose runs are pooled")
        self.queries = queries
        self.depth = int(depth)
        self.seed = int(seed)
        self.steps = check_steps(steps, "eval.llm_test.steps")
        if label_step not in SELECTION_STEPS or label_step not in self.steps:
            raise ConfigError(f"eval.llm_test.label_step must be a selection step among eval.llm_test.steps "
                              f"({', '.join(self.steps)}): relsel, utilsel or utilrank; got {label_step!r}")
        self.label_step = label_step
        self.inputs = ("data",) + tuple(f"run_{s}" for s in self.systems)

    def spec(self) -> dict:
        return {
            **self.annotator_spec(),
            "systems": self.systems,
            "queries": self.queries,
            "depth": self.depth,
            "seed": self.seed,
            "steps": self.steps,
            "label_step": self.label_step,
        }

    def build(self, out: Path, work: Path, inputs: Mapping[str, Artifact]) -> None:
        collection: Collection = inputs["data"].value
        runs = [inputs[f"run_{s}"].value for s in self.systems]
        chosen = sample_queries(collection.judged_queries(), self.queries, self.seed)
        if not chosen:
            raise ValueError(f"{collection.name} has no judged query to sample for the LLM test collection")

        def judge(batch: list[str]) -> list[dict]:
            items = [QueryAnnotation(q, collection.queries[q], pool_runs(runs, q, self.depth)) for q in batch]
            return self.annotate(items, collection.docs, self.steps)

        records = self.run_shards(work, chosen, judge, "llm_test", "LLM test collection", time_key=None)
        anns = [QueryAnnotation.from_dict(r) for r in records]
        qrels = {a.query_id: {d: int(d in set(a.positives(self.label_step))) for d in a.candidates} for a in anns}
        pooled = {d for a in anns for d in a.candidates}
        llm = Collection(
            name=f"{collection.name}_llm",
            docs={d: collection.docs[d] for d in collection.docs if d in pooled},
            queries={q: collection.queries[q] for q in chosen},
            qrels=qrels,
            stats={"source": collection.name, "systems": ",".join(self.systems), "depth": self.depth,
                   "queries_without_relevant": sum(1 for a in anns if not a.positives(self.label_step))},
        )
        llm.save(out)
        human = {q: [d for d, r in collection.qrels.get(q, {}).items() if r > 0 and d in pooled] for q in chosen}
        agreement = selection_quality({a.query_id: a.positives(self.label_step) for a in anns}, human)
        agreement["unparseable"] = {s: sum(a.unparseable.get(s, 0) for a in anns) for s in self.steps}
        agreement["pooled_per_query"] = sum(len(a.candidates) for a in anns) / len(anns)
        truncation = TruncationStats.of_records(records, sum(a.prompts for a in anns))
        agreement["truncation"] = truncation.to_dict()
        truncation.warn("llm_test")
        (out / "agreement.json").write_text(json.dumps(agreement, indent=2))
        with open(out / "judgments.jsonl", "w", encoding="utf-8") as f:
            for a in anns:
                f.write(json.dumps(a.to_dict(), ensure_ascii=False) + "\n")

    def report(self, artifact: Artifact) -> dict[str, str]:
        a = json.loads((artifact.path / "agreement.json").read_text())
        return {"LLM test collection": (
            f"{a['queries']} test queries, {a['pooled_per_query']:.1f} pooled passages per query judged by the "
            f"annotator; {a['queries_without_positive']} queries without a relevant passage (not evaluated). "
            f"Against the human qrels on the same pools: precision {a['precision']:.4f}, recall {a['recall']:.4f}; "
            f"unparseable answers: {a['unparseable']}.{TruncationStats.sentence(a.get('truncation'))}"
        )}

    def load(self, path: Path) -> Collection:
        return Collection.load(path)
