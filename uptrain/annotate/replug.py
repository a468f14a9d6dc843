"""REPLUG utility labels: the LLM's likelihood of an answer given the query and one passage.

Shi et al. (2023), as the baseline of Zhang et al. (arXiv 2504.05220, Sec. 5): every pool
passage d of query q gets the utility

    u(q, d) = log P_LM(a | prompt(q, d))

(the summed log-probability of the answer's tokens after the "answer the question from
this information" prompt with d as the only passage). Training turns the utilities of a
query's passages into U = softmax(u / tau) and minimises KL(U || R) against the
retriever's softmax R over the same passages (:class:`uptrain.losses.KLDivergence`).

The answer ``a`` comes from ``answers``:

``pseudo``   the annotation pipeline's pseudo answer (needs its relsel and answer steps).
             Not the paper's setting: the paper scores ground-truth answers, which SciFact
             and most retrieval collections do not have. A query without a pseudo answer
             (nothing relevance-selected) gets no utility and is skipped in training.
``<path>``   a JSONL file of ``{"query_id": ..., "answers": [...]}`` (or ``"answer"``) rows
             with ground-truth answers (MS MARCO QA, NQ); the first answer is scored.

Scored queries are committed one line at a time to shards in the work directory, so a
killed run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from uptrain.annotate.prompts import PromptRenderer
from uptrain.annotate.quality import selection_quality
from uptrain.annotate.shards import ShardWriter, collect, pending
from uptrain.annotate.stage import annotated_pool, backend_spec
from uptrain.graph import Artifact, Stage

log = logging.getLogger("uptrain")


@dataclass
class UtilityLabels:
    """One query's REPLUG utilities: doc id -> answer log-likelihood (absent: not scored)."""

    query_id: str
    answer: str
    utilities: dict[str, float]

    def best(self) -> list[str]:
        """The passage of highest utility (a one-element list; empty when nothing was scored)."""
        if not self.utilities:
            return []
        return [max(self.utilities, key=lambda d: (self.utilities[d], d))]


def read_answer_file(path: str | Path) -> dict[str, str]:
    """query_id -> first ground-truth answer, from JSONL rows with ``answers`` (list) or ``answer``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"REPLUG answer file {path} does not exist: give a JSONL file of "
            '{"query_id": ..., "answers": [...]} rows, or annotate.replug_answers=pseudo'
        )
    answers = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            value = row.get("answers", row.get("answer"))
            if isinstance(value, list):
                value = next((a for a in value if str(a).strip()), "")
            if "query_id" not in row or not str(value or "").strip():
                continue
            answers[str(row["query_id"])] = str(value).strip()
    return answers


class ReplugStage(Stage[dict]):
    """Scores every pool passage of each annotated query with the answer's log-likelihood."""

    name = "replug"
    version = 1

    def __init__(
        self,
        annotator: DictConfig | dict,
        answers: str = "pseudo",
        max_queries: int | None = None,
        batch_queries: int = 4,
    ):
        self.annotator = OmegaConf.to_container(annotator, resolve=True) if isinstance(annotator, DictConfig) else dict(annotator)
        self.answers = str(answers)
        self.max_queries = max_queries
        self.batch_queries = int(batch_queries)
        self.renderer = PromptRenderer(version=self.annotator.get("prompt_version", "v1"))
        # pseudo answers come from the annotation artifact; a file of answers needs none
        self.inputs = ("data", "pool", "annotations") if self.answers == "pseudo" else ("data", "pool")

    def _answer_source(self) -> dict:
        if self.answers == "pseudo":
            return {"kind": "pseudo"}
        data = Path(self.answers).read_bytes() if Path(self.answers).is_file() else b""
        return {"kind": "file", "sha256": hashlib.sha256(data).hexdigest()}

    def spec(self) -> dict:
        return {
            "backend": backend_spec(self.annotator),
            "prompts": self.renderer.fingerprint(),
            "max_passage_words": self.annotator.get("max_passage_words"),
            "answers": self._answer_source(),
            "max_queries": self.max_queries,
        }

    def _answers(self, inputs: Mapping[str, Artifact]) -> dict[str, str]:
        if self.answers == "pseudo":
            return {q: (a.answer or "").strip() for q, a in inputs["annotations"].value.items()}
        return read_answer_file(self.answers)

    def build(self, out: Path, work: Path, inputs: Mapping[str, Artifact]) -> None:
        collection = inputs["data"].value
        pool = annotated_pool(inputs["pool"].value, self.max_queries, "score")
        answers = self._answers(inputs)
        shards = work / "shards"
        left = set(pending(shards, [e.query_id for e in pool], "replug"))
        todo = [e for e in pool if e.query_id in left]
        if todo:
            backend = instantiate(self.annotator["backend"])
            writer = ShardWriter(shards)
            words = self.annotator.get("max_passage_words")
            bar = tqdm(total=len(pool), initial=len(pool) - len(todo), unit="q", desc="replug", dynamic_ncols=True)
            try:
                for start in range(0, len(todo), self.batch_queries):
                    batch = todo[start : start + self.batch_queries]
                    contexts, conts, owners = [], [], []
                    for e in batch:
                        answer = answers.get(e.query_id, "")
                        if not answer:
                            continue
                        for d in e.candidates:
                            contexts.append(self.renderer.render("answer", e.query, [collection.docs.get(d, "")], max_words=words))
                            conts.append(answer)
                            owners.append((e.query_id, d))
                    t0 = time.time()
                    tokens0 = backend.stats.prompt_tokens
                    scores = backend.loglikelihood(contexts, conts) if contexts else []
                    per_query = (time.time() - t0) / len(batch)
                    tokens = (backend.stats.prompt_tokens - tokens0) / len(batch)
                    by_query: dict[str, dict[str, float]] = {}
                    for (q, d), s in zip(owners, scores):
                        by_query.setdefault(q, {})[d] = float(s)
                    for e in batch:
                        writer.append({
                            "query_id": e.query_id,
                            "answer": answers.get(e.query_id, ""),
                            "utilities": by_query.get(e.query_id, {}),
                            "prompt_tokens": round(tokens),
                            "seconds": round(per_query, 3),
                        })
                    bar.update(len(batch))
            finally:
                writer.close()
                bar.close()
        self._publish(out, work, pool)

    def _publish(self, out: Path, work: Path, pool) -> None:
        ordered = collect(work / "shards", [e.query_id for e in pool], "REPLUG scoring", out / "utilities.jsonl")
        labels = [UtilityLabels(r["query_id"], r["answer"], r["utilities"]) for r in ordered]
        human = {e.query_id: list(e.positives) for e in pool}
        # the top-1 passage by utility, judged against the human positives as the other steps are
        quality = selection_quality({u.query_id: u.best() for u in labels}, human)
        with open(out / "qrels_replug.txt", "w") as f:
            for u in labels:
                for d in u.best():
                    f.write(f"{u.query_id} 0 {d} 1\n")
        seconds = sum(float(r["seconds"]) for r in ordered)
        tokens = sum(int(r["prompt_tokens"]) for r in ordered)
        stats = {
            "queries": len(labels),
            "queries_without_answer": sum(1 for u in labels if not u.answer),
            "passages_scored": sum(len(u.utilities) for u in labels),
            "answers": self.answers if self.answers != "pseudo" else "pseudo (the pipeline's pseudo answers, not the paper's ground truth)",
            "prompt_tokens": tokens,
            "seconds": round(seconds, 1),
            "passages_per_second": round(sum(len(u.utilities) for u in labels) / max(seconds, 1e-9), 1),
            "quality_top1": quality,
        }
        (out / "stats.json").write_text(json.dumps(stats, indent=2))
        if stats["queries_without_answer"]:
            log.warning("[replug] %d of %d queries have no answer to score: no utility, skipped in training",
                        stats["queries_without_answer"], len(labels))

    def load(self, path: Path) -> dict[str, UtilityLabels]:
        out = {}
        with open(path / "utilities.jsonl", encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                out[r["query_id"]] = UtilityLabels(r["query_id"], r["answer"], r["utilities"])
        return out
