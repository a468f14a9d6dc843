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
                    and the estimated GPU-hours of the job at the paper's scale
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Mapping

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from uptrain.annotate.backends.base import GenerationParams
from uptrain.annotate.prompts import PromptRenderer
from uptrain.annotate.quality import selection_quality, table1_markdown
from uptrain.annotate.shards import ShardWriter, collect, pending
from uptrain.annotate.steps import STEPS, AnnotationPipeline, QueryAnnotation
from uptrain.graph import Artifact, Stage

log = logging.getLogger("uptrain")

# backend arguments that change speed or placement, not outputs
_RUNTIME_KEYS = {"device", "batch_size", "cache_dir", "gpu_memory_utilization", "tensor_parallel_size"}


def backend_spec(annotator: dict) -> dict:
    """The annotator backend's settings that determine its outputs (for cache keys)."""
    return {k: v for k, v in annotator["backend"].items() if k not in _RUNTIME_KEYS}


def annotated_pool(pool: list, max_queries: int | None, action: str) -> list:
    """The first ``max_queries`` pool entries (all when None): the queries the LLM labels."""
    pool = pool[:max_queries] if max_queries else pool
    if not pool:
        raise ValueError(f"the pool is empty: no training query to {action}")
    return pool


def annotator_spec(annotator: dict, renderer: PromptRenderer) -> dict:
    """Everything about the annotator that determines its answers: model, decoding, prompts, windows."""
    return {
        "backend": backend_spec(annotator),
        "generation": annotator.get("generation", {}),
        "prompts": renderer.fingerprint(),
        "window": annotator.get("window", 16),
        "max_passage_words": annotator.get("max_passage_words"),
    }
SELECTION_STEPS = ("relsel", "utilsel", "utilrank")


def _plain(cfg) -> dict:
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


class AnnotateStage(Stage[dict]):
    name = "annotate"
    inputs = ("data", "pool")
    version = 1

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
        self.annotator = _plain(annotator)
        self.steps = list(steps)
        self.utilrank_k = float(utilrank_k)
        self.max_queries = max_queries
        self.batch_queries = int(batch_queries)
        self.paper_queries = int(paper_queries)
        self.gpu_tokens_per_second = float(gpu_tokens_per_second)
        self.renderer = PromptRenderer(version=self.annotator.get("prompt_version", "v1"))

    def spec(self) -> dict:
        return {
            **annotator_spec(self.annotator, self.renderer),
            "steps": self.steps,
            "utilrank_k": self.utilrank_k,
            "max_queries": self.max_queries,
        }

    def _pipeline(self) -> AnnotationPipeline:
        backend = instantiate(self.annotator["backend"])
        return AnnotationPipeline(
            backend=backend,
            renderer=self.renderer,
            params=GenerationParams(**self.annotator.get("generation", {})),
            steps=self.steps,
            window_size=int(self.annotator.get("window", 16)),
            max_passage_words=self.annotator.get("max_passage_words"),
            utilrank_k=self.utilrank_k,
        )

    def build(self, out: Path, work: Path, inputs: Mapping[str, Artifact]) -> None:
        collection = inputs["data"].value
        pool = annotated_pool(inputs["pool"].value, self.max_queries, "annotate")
        shards = work / "shards"
        left = set(pending(shards, [e.query_id for e in pool], "annotate"))
        todo = [e for e in pool if e.query_id in left]
        if todo:
            pipeline = self._pipeline()
            writer = ShardWriter(shards)
            bar = tqdm(total=len(pool), initial=len(pool) - len(todo), unit="q", desc="annotate", dynamic_ncols=True)
            tokens, t0 = 0, time.time()
            try:
                for start in range(0, len(todo), self.batch_queries):
                    batch = todo[start : start + self.batch_queries]
                    items = [QueryAnnotation(e.query_id, e.query, list(e.candidates)) for e in batch]
                    b0 = time.time()
                    pipeline.run(items, collection.docs)
                    per_query = (time.time() - b0) / len(items)
                    for it in items:
                        record = it.to_dict()
                        record["seconds"] = round(per_query, 3)
                        writer.append(record)
                        tokens += it.prompt_tokens + it.output_tokens
                    bar.update(len(items))
                    bar.set_postfix(tok_s=f"{tokens / max(time.time() - t0, 1e-9):.0f}")
            finally:
                writer.close()
                bar.close()
        self._publish(out, work, pool, collection)

    def _publish(self, out: Path, work: Path, pool, collection) -> None:
        ordered = collect(work / "shards", [e.query_id for e in pool], "annotation", out / "labels.jsonl")
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
            "paper_scale": {
                "queries": self.paper_queries,
                "tokens_per_query": round(per_query, 1),
                "assumed_gpu_tokens_per_second": self.gpu_tokens_per_second,
                "gpu_hours": round(self.paper_queries * per_query / self.gpu_tokens_per_second / 3600, 1),
            },
        }
        (out / "stats.json").write_text(json.dumps(stats, indent=2))
        log.info("[annotate] %s", json.dumps({k: stats[k] for k in ("queries", "prompts", "tokens_per_second", "unparseable")}))

    def load(self, path: Path) -> dict[str, QueryAnnotation]:
        records = {}
        with open(path / "labels.jsonl", encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                r.pop("seconds", None)
                records[r["query_id"]] = QueryAnnotation.from_dict(r)
        return records
