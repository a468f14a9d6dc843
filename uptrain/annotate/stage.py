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
  steps.md          per step: its prompting scheme (``annotator.scheme``, :mod:`uptrain.annotate.steps`)
                    beside its quality and cost (prompts, forward passes of single-token steps,
                    generated tokens, seconds), and for each probability-scored step the mean
                    probability of the human-positive passages against the others
  stats.json        prompts, tokens, wall time, tokens/s, unparseable answers per step,
                    prompts fitted to the context (``truncation``: prompts over the budget,
                    passages shortened, words and tokens cut; the instruction and the question
                    are never cut), the estimated GPU-hours of the job at the paper's scale,
                    ``steps`` (the per-step scheme and cost of steps.md) and ``scores`` (the
                    probability means)

Per-step costs are measured per batch and kept beside the shards (``step_costs.jsonl`` in the
work directory, one line per batch), so a resumed run reports them too: each query carries an
equal share of its batch's cost, from the last batch that annotated it (queries annotated by an
earlier version without these lines are counted under ``steps_cost_missing``). The records of
``labels.jsonl`` hold the annotations only, so the paper's scheme writes what earlier runs wrote.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Mapping

from omegaconf import DictConfig

from uptrain.annotate.annotator import AnnotatorStage, annotated_pool
from uptrain.annotate.budget import TruncationStats
from uptrain.annotate.backends.base import Backend, next_tokens_unsupported
from uptrain.annotate.shards import job_path, job_paths
from uptrain.annotate.quality import score_separation, selection_quality, steps_markdown, table1_markdown
from uptrain.annotate.steps import SELECTION_STEPS, STEPS, QueryAnnotation, add_costs, check_scheme, check_steps
from uptrain.errors import ConfigError
from uptrain.graph import Artifact

log = logging.getLogger("uptrain")

STEP_COSTS = "step_costs.jsonl"
_INTEGER_COSTS = ("prompts", "forward_passes", "generated_tokens", "prompt_tokens", "windows")


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
        self.scheme = check_scheme(self.annotator.get("scheme"))
        self.utilrank_k = float(utilrank_k)
        if not 0 < self.utilrank_k <= 100:
            raise ConfigError(f"annotate.utilrank_k is a percentage in (0, 100], got {utilrank_k!r}")
        self.max_queries = max_queries
        self.paper_queries = int(paper_queries)
        self.gpu_tokens_per_second = float(gpu_tokens_per_second)

    def spec(self) -> dict:
        spec = self.annotator_spec()
        if not spec.get("scheme", True):  # an empty scheme is the paper's: the key of a run without one
            del spec["scheme"]
        return {
            **spec,
            "steps": self.steps,
            "utilrank_k": self.utilrank_k,
            "max_queries": self.max_queries,
        }

    def validate(self) -> None:
        """The annotator's checks, then the scheme against the backend class: a single-token scheme
        on a backend that cannot score next tokens is a user error before any model loads."""
        super().validate()
        cls = self.backend_class()
        backend_ok = not (isinstance(cls, type) and issubclass(cls, Backend)) or cls.scores_next_tokens()
        if self.scheme.scores_next_tokens(self.steps) and not backend_ok:
            raise next_tokens_unsupported(getattr(cls, "name", cls.__name__))

    def build(self, out: Path, work: Path, inputs: Mapping[str, Artifact]) -> None:
        collection = inputs["data"].value
        pool = annotated_pool(inputs["pool"].value, self.max_queries, "annotate")

        costs = job_path(Path(work) / STEP_COSTS)  # a sharded job appends to its own file

        def annotate(batch: list) -> list[dict]:
            items = [QueryAnnotation(e.query_id, e.query, list(e.candidates)) for e in batch]
            records = self.annotate(items, collection.docs, self.steps, self.utilrank_k)
            line = {"query_ids": [a.query_id for a in items],
                    "steps": self.pipeline(self.steps, self.utilrank_k).batch_costs}
            costs.parent.mkdir(parents=True, exist_ok=True)
            with open(costs, "a", encoding="utf-8") as f:  # before the records commit: a kill redoes the batch
                f.write(json.dumps(line) + "\n")
                f.flush()
                os.fsync(f.fileno())
            return records

        ordered = self.run_shards(work, pool, annotate, "annotate", "annotation", out / "labels.jsonl")
        self._publish(out, ordered, pool, step_costs(Path(work) / STEP_COSTS, [r["query_id"] for r in ordered]))

    def _publish(self, out: Path, ordered: list[dict], pool, costs: tuple[dict, int] | None = None) -> None:
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
        step_cost, cost_missing = costs if costs is not None else ({}, len(anns))
        for step in self.steps:  # a step with no recorded cost still names its scheme
            step_cost.setdefault(step, {"scheme": self.scheme.describe(step, int(self.annotator.get("window", 16)))})
        scored = sorted({s for a in anns for s in a.scores})
        separation = {s: score_separation({a.query_id: a.scores.get(s, {}) for a in anns}, human) for s in scored}
        (out / "steps.md").write_text(steps_markdown(step_cost, quality, separation, cost_missing) + "\n")
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
            "steps": step_cost,
            "steps_cost_missing": cost_missing,
            "scores": separation,
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
        quality = (artifact.path / "table1.md").read_text()
        steps = artifact.path / "steps.md"
        if steps.is_file():  # artifacts of earlier versions have no per-step table
            quality += "\nPer step: the prompting scheme (annotator.scheme) beside its quality and cost.\n\n" + steps.read_text()
        return {
            "Annotation quality against human labels (Table 1 layout)": quality,
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


def step_costs(path: Path, query_ids: list[str]) -> tuple[dict, int]:
    """Per step, the summed cost of ``query_ids`` from the batch lines at ``path`` (each query an
    equal share of the last batch that annotated it), and how many of the queries no line covers.
    Sharded jobs' files beside ``path`` (:func:`uptrain.annotate.shards.job_paths`) are read too."""
    latest: dict[str, tuple[int, dict]] = {}
    for part in job_paths(path):
        with open(part, encoding="utf-8") as f:
            for raw in f:
                try:
                    line = json.loads(raw)
                except json.JSONDecodeError:  # a torn last line of a killed run: its batch was redone
                    continue
                for q in line["query_ids"]:
                    latest[q] = (len(line["query_ids"]), line["steps"])
    totals: dict[str, dict] = {}
    for q in query_ids:
        if q not in latest:
            continue
        size, steps = latest[q]
        for step, cost in steps.items():
            share = {k: (v / size if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "scheme" else v)
                     for k, v in cost.items()}
            add_costs(totals.setdefault(step, {}), share)
    for cost in totals.values():
        for key in _INTEGER_COSTS:
            if cost.get(key) is not None:
                cost[key] = int(round(cost[key]))
        cost["seconds"] = round(float(cost.get("seconds", 0.0)), 2)
        if cost.get("windows"):
            cost["mean_label_mass"] = round(cost.pop("label_mass", 0.0) / cost["windows"], 4)
        else:
            cost.pop("label_mass", None)
    missing = sum(1 for q in query_ids if q not in latest)
    if missing:
        log.warning("[annotate] %d of %d queries have no per-step cost (annotated before costs were kept); "
                    "the per-step table covers the other %d", missing, len(query_ids), len(query_ids) - missing)
    return totals, missing
