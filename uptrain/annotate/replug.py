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
``gold``     the training collection's own gold answers (a QA collection: SQuAD, or a BEIR
             folder with ``answers.jsonl``; :mod:`uptrain.data.qa`): the paper's "REPLUG (Human)".
             The first answer of each question is scored; a question without one is skipped.
``<path>``   a JSONL file of ``{"query_id": ..., "answers": [...]}`` (or ``"answer"``) rows
             with ground-truth answers (MS MARCO QA, NQ); the first answer is scored.

Scored queries are committed one line at a time to shards in the work directory, so a
killed run resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from omegaconf import DictConfig

from uptrain.annotate.annotator import AnnotatorStage, annotated_pool
from uptrain.annotate.budget import PromptFitter, TruncationStats
from uptrain.annotate.quality import selection_quality
from uptrain.cache import file_digest
from uptrain.errors import ConfigError
from uptrain.graph import Artifact

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


class AnswerFileMissing(ConfigError, FileNotFoundError):
    """The REPLUG answer file named in the config does not exist."""


def missing_answers_error(path: Path) -> AnswerFileMissing:
    return AnswerFileMissing(
        f"The REPLUG answer file {str(path)!r} (absolute: {str(Path(path).absolute())!r}) does not exist. Give a "
        'JSONL file of {"query_id": ..., "answers": [...]} rows with labels.replug_answers=PATH (a path relative '
        "to the directory uptrain runs in, or absolute; or the replug source's answers parameter), or score the "
        "pipeline's pseudo answers with labels.replug_answers=pseudo."
    )


def read_answer_file(path: str | Path) -> dict[str, str]:
    """query_id -> first ground-truth answer, from JSONL rows with ``answers`` (list) or ``answer``."""
    path = Path(path)
    if not path.is_file():
        raise missing_answers_error(path)
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


class ReplugStage(AnnotatorStage[dict]):
    """Scores every pool passage of each annotated query with the answer's log-likelihood."""

    name = "replug"
    version = 2  # see AnnotatorStage

    def __init__(
        self,
        annotator: DictConfig | dict,
        answers: str = "pseudo",
        max_queries: int | None = None,
        batch_queries: int = 4,
    ):
        super().__init__(annotator, batch_queries)
        self.answers = str(answers)
        self.max_queries = max_queries
        # pseudo answers come from the annotation artifact; gold ones and a file of answers need none
        self.inputs = ("data", "pool", "annotations") if self.answers == "pseudo" else ("data", "pool")
        self._check_answers()

    def _check_answers(self) -> None:
        if self.answers not in ("pseudo", "gold") and not Path(self.answers).expanduser().is_file():
            raise missing_answers_error(Path(self.answers).expanduser())

    def validate(self) -> None:
        super().validate()
        self._check_answers()

    def _answer_source(self) -> dict:
        if self.answers in ("pseudo", "gold"):
            return {"kind": self.answers}  # gold: the data input's key covers the answers
        self._check_answers()
        return {"kind": "file", "sha256": file_digest(Path(self.answers).expanduser())}

    def spec(self) -> dict:
        return {
            **self.model_spec(),
            "answers": self._answer_source(),
            "max_queries": self.max_queries,
        }

    def _answers(self, inputs: Mapping[str, Artifact]) -> dict[str, str]:
        if self.answers == "pseudo":
            return {q: (a.answer or "").strip() for q, a in inputs["annotations"].value.items()}
        if self.answers == "gold":
            collection = inputs["data"].value
            if not collection.answers:
                raise ConfigError(f"labels.replug_answers=gold, but the training collection '{collection.name}' carries "
                                  "no gold answers: train on a QA collection (data=squad) or give a JSONL answer file")
            return {q: a[0] for q, a in collection.answers.items() if a}
        return read_answer_file(Path(self.answers).expanduser())

    def build(self, out: Path, work: Path, inputs: Mapping[str, Artifact]) -> None:
        collection = inputs["data"].value
        pool = annotated_pool(inputs["pool"].value, self.max_queries, "score")
        answers = self._answers(inputs)
        fitter = None

        def score(batch: list) -> list[dict]:
            nonlocal fitter
            backend = self.backend()
            fitter = fitter or PromptFitter(self.renderer, backend, self.annotator.get("max_passage_words"))
            contexts, conts, owners = [], [], []
            cuts: dict[str, TruncationStats] = {}
            for e in batch:
                answer = answers.get(e.query_id, "")
                if not answer:
                    continue
                reserve = backend.count_tokens(answer)  # the continuation follows the prompt in the context
                for d in e.candidates:
                    messages, cut = fitter.render("answer", e.query, [collection.docs.get(d, "")], reserve=reserve)
                    if cut.prompts_truncated:
                        cuts.setdefault(e.query_id, TruncationStats()).merge(cut)
                    contexts.append(messages)
                    conts.append(answer)
                    owners.append((e.query_id, d))
            tokens0 = backend.stats.prompt_tokens
            scores = backend.loglikelihood(contexts, conts) if contexts else []
            tokens = (backend.stats.prompt_tokens - tokens0) / len(batch)
            by_query: dict[str, dict[str, float]] = {}
            for (q, d), s in zip(owners, scores):
                by_query.setdefault(q, {})[d] = float(s)
            return [{
                "query_id": e.query_id,
                "answer": answers.get(e.query_id, ""),
                "utilities": by_query.get(e.query_id, {}),
                "prompt_tokens": round(tokens),
                "truncation": cuts[e.query_id].cuts() if e.query_id in cuts else {},
            } for e in batch]

        ordered = self.run_shards(work, pool, score, "replug", "REPLUG scoring", out / "utilities.jsonl")
        self._publish(out, ordered, pool)

    def _publish(self, out: Path, ordered: list[dict], pool) -> None:
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
        passages = sum(len(u.utilities) for u in labels)
        truncation = TruncationStats.of_records(ordered, passages)
        stats = {
            "queries": len(labels),
            "queries_without_answer": sum(1 for u in labels if not u.answer),
            "passages_scored": passages,
            "answers": {"pseudo": "pseudo (the pipeline's pseudo answers, not the paper's ground truth)",
                        "gold": "gold (the training collection's ground-truth answers: REPLUG (Human))"}.get(
                            self.answers, self.answers),
            "prompt_tokens": tokens,
            "seconds": round(seconds, 1),
            "passages_per_second": round(passages / max(seconds, 1e-9), 1),
            "truncation": truncation.to_dict(),
            "quality_top1": quality,
        }
        (out / "stats.json").write_text(json.dumps(stats, indent=2))
        truncation.warn("replug")
        if stats["queries_without_answer"]:
            log.warning("[replug] %d of %d queries have no answer to score: no utility, skipped in training",
                        stats["queries_without_answer"], len(labels))

    def report(self, artifact: Artifact) -> dict[str, str]:
        st = json.loads((artifact.path / "stats.json").read_text())
        q = st["quality_top1"]
        return {"REPLUG utilities": (
            f"{st['queries']} queries ({st['queries_without_answer']} without an answer), "
            f"{st['passages_scored']} passages scored in {st['seconds']} s "
            f"({st['passages_per_second']} passages/s); answers: {st['answers']}. "
            f"Top-1 passage by utility against the human qrels: precision {q['precision']:.4f}, "
            f"recall {q['recall']:.4f}.{TruncationStats.sentence(st.get('truncation'))}"
        )}

    def load(self, path: Path) -> dict[str, UtilityLabels]:
        out = {}
        with open(path / "utilities.jsonl", encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                out[r["query_id"]] = UtilityLabels(r["query_id"], r["answer"], r["utilities"])
        return out
