"""The annotate stage: LLM labels for every training query of the pool, resumable.

Queries are annotated in batches; each finished query is committed as one line of an
append-only shard in the stage's work directory, so killing the process at any
moment loses at most the batch in flight, and the same command continues with the
queries not yet done. When every query is done, the artifact is published:

  labels.jsonl      one record per query: every step's output (selected ids, pseudo answer,
                    ranking), raw model text, tokens, unparseable answers
  qrels_<step>.txt  the step's positives as TREC qrels (relsel, utilsel, utilrank)
  quality.json      precision / recall / avg positives against the human qrels (Table 1)
  table1.md         the same as a Markdown table
  stats.json        prompts, tokens, wall time, tokens/s, unparseable answers per step,
                    prompts fitted to the context (``truncation``: prompts over the budget,
                    passages shortened, words and tokens cut; the instruction and the question
                    are never cut), and the estimated GPU-hours of the job at the paper's scale
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Mapping

from omegaconf import DictConfig

from uptrain.annotate.annotator import AnnotatorStage, annotated_pool
from uptrain.annotate.budget import TruncationStats
from uptrain.annotate.quality import selection_quality, table1_markdown
from uptrain.annotate.steps import SELECTION_STEPS, STEPS, QueryAnnotation, check_steps
from uptrain.errors import ConfigError
from uptrain.graph import Artifact

log = logging.getLogger("uptrain")


class AnnotateStage(AnnotatorStage[dict]):
    name = "annotate"
    inputs = ("data", "pool")
    version = 2  # see AnnotatorStage

    def __init__(
        self,
        annotator: DictConfig | dict,
        steps: list[str] = list(STEPS),
        utilrank_k: float = 10.0,
        max_queries: int | None = None,
        batch_queries: int = 4,
        paper_queries: int = 502_939,
        gpu_tokens_per_second: float = 5_000.0,
    ):
        super().__init__(annotator, batch_queries)
        self.steps = check_steps(steps, "annotate.steps")
        self.utilrank_k = float(utilrank_k)
        if not 0 < self.utilrank_k <= 100:
            raise ConfigError(f"annotate.utilrank_k is a percentage in (0, 100], got {utilrank_k!r}")
        self.max_queries = max_queries
        self.paper_queries = int(paper_queries)
        self.gpu_tokens_per_second = float(gpu_tokens_per_second)

    def spec(self) -> dict:
        return {
            **self.annotator_spec(),
            "steps": self.steps,
            "utilrank_k": self.utilrank_k,
            "max_queries": self.max_queries,
        }

    def build(self, out: Path, work: Path, inputs: Mapping[str, Artifact]) -> None:
        collection = inputs["data"].value
        pool = annotated_pool(inputs["pool"].value, self.max_queries, "annotate")

        def annotate(batch: list) -> list[dict]:
            items = [QueryAnnotation(e.query_id, e.query, list(e.candidates)) for e in batch]
            return self.annotate(items, collection.docs, self.steps, self.utilrank_k)

        ordered = self.run_shards(work, pool, annotate, "annotate", "annotation", out / "labels.jsonl")
        self._publish(out, ordered, pool)

    def _publish(self, out: Path, ordered: list[dict], pool) -> None:
        anns = [QueryAnnotation.from_dict({k: v for k, v in r.items() if k != "seconds"}) for r in ordered]
        human = {e.query_id: list(e.positives) for e in pool}
        quality = {}
        for step in SELECTION_STEPS:
            if step not in self.steps:
                continue
            selected = {a.query_id: a.positives(step) for a in anns}
            quality[step] = selection_quality(selected, human)
            with open(out / f"qrels_{step}.txt", "w") as f:
                for q, docs in selected.items():
                    for d in docs:
                        f.write(f"{q} 0 {d} 1\n")
        (out / "quality.json").write_text(json.dumps(quality, indent=2))
        (out / "table1.md").write_text(table1_markdown(quality) + "\n")
        prompt_tokens = sum(a.prompt_tokens for a in anns)
        output_tokens = sum(a.output_tokens for a in anns)
        seconds = sum(float(r.get("seconds", 0.0)) for r in ordered)
        per_query = (prompt_tokens + output_tokens) / len(anns)
        truncation = TruncationStats.of_records(ordered, sum(a.prompts for a in anns))
        stats = {
            "queries": len(anns),
            "passages_judged": sum(len(a.candidates) for a in anns),
            "prompts": sum(a.prompts for a in anns),
            "prompt_tokens": prompt_tokens,
            "output_tokens": output_tokens,
            "seconds": round(seconds, 1),
            "tokens_per_second": round((prompt_tokens + output_tokens) / max(seconds, 1e-9), 1),
            "unparseable": {s: sum(a.unparseable.get(s, 0) for a in anns) for s in SELECTION_STEPS if s in self.steps},
            "queries_without_relsel": sum(1 for a in anns if not a.relsel) if "relsel" in self.steps else None,
            "truncation": truncation.to_dict(),
            "paper_scale": {
                "queries": self.paper_queries,
                "tokens_per_query": round(per_query, 1),
                "assumed_gpu_tokens_per_second": self.gpu_tokens_per_second,
                "gpu_hours": round(self.paper_queries * per_query / self.gpu_tokens_per_second / 3600, 1),
            },
        }
        (out / "stats.json").write_text(json.dumps(stats, indent=2))
        truncation.warn("annotate")
        log.info("[annotate] %s", json.dumps({k: stats[k] for k in ("queries", "prompts", "tokens_per_second", "unparseable")}))

    def report(self, artifact: Artifact) -> dict[str, str]:
        """Annotation quality against the human labels (the paper's Table 1) and its cost."""
        stats = json.loads((artifact.path / "stats.json").read_text())
        scale = stats["paper_scale"]
        cost = (
            f"{stats['queries']} queries, {stats['passages_judged']} passages judged, {stats['prompts']} prompts, "
            f"{stats['prompt_tokens']} prompt + {stats['output_tokens']} output tokens in {stats['seconds']} s "
            f"({stats['tokens_per_second']} tokens/s); unparseable answers: {stats['unparseable']}."
            f"{TruncationStats.sentence(stats.get('truncation'))} At the paper's scale ({scale['queries']} queries) "
            f"and an assumed {scale['assumed_gpu_tokens_per_second']:.0f} tokens/s per GPU: about "
            f"{scale['gpu_hours']} GPU-hours."
        )
        return {
            "Annotation quality against human labels (Table 1 layout)": (artifact.path / "table1.md").read_text(),
            "Annotation cost": cost,
        }

    def load(self, path: Path) -> dict[str, QueryAnnotation]:
        records = {}
        with open(path / "labels.jsonl", encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                r.pop("seconds", None)
                records[r["query_id"]] = QueryAnnotation.from_dict(r)
        return records
