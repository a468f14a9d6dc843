"""The generator stage: an LLM's answer to each test question from the top-k passages of a run.

For each question (the collection's questions with gold answers; a seeded sample of
``max_questions`` of them when set), the generator sees the question and k passages through
the ``rag_answer`` prompt (``conf/annotator/prompts/<version>/rag_answer.txt``: the utility
paper's "answer the question based on the given information", asking for a short answer), and
writes one answer. Where the passages come from is ``context``:

``run``    the evaluated run's top-k (the RAG setting of Zhang et al., arXiv 2504.05220, Tables 3 and 5)
``gold``   the question's judged relevant passages (qrels > 0, at most k): the upper bound a
           perfect retriever gives this generator
``none``   no passage (closed book): what the generator answers from its own parameters

Generation goes through the annotator backends (transformers on CPU, vLLM on GPUs, llama.cpp),
greedy by default; the answer is read by the one output parser (:func:`uptrain.annotate.parse.parse_short_answer`:
reasoning and an "Answer:" label removed, with ``first_line`` (default) cut to its first non-empty
line, then leading passage labels and enumerators such as "[1]" or "1." removed; both counted). Prompts that do
not fit the model's context lose passage words, never the instruction or the question (counted
under ``truncation``). Answers are committed one question at a time to resumable shards, so a
killed run loses nothing done. The stage is keyed by the run (its artifact key), k, the context
mode, the questions and the generator (model hash, decoding, prompts).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Mapping

from omegaconf import DictConfig

from uptrain.annotate.annotator import AnnotatorStage
from uptrain.annotate.budget import PromptFitter, TruncationStats
from uptrain.annotate.parse import parse_short_answer
from uptrain.errors import ConfigError
from uptrain.graph import Artifact

log = logging.getLogger("uptrain")

CONTEXTS = ("run", "gold", "none")
PROMPT = "rag_answer"


def question_sample(collection, max_questions: int | None, seed: int = 0) -> list[str]:
    """The questions with gold answers, in collection order; with ``max_questions``, a seeded
    sample of that many (chosen by a hash of (seed, id), so it does not depend on file order)."""
    questions = [q for q in collection.queries if collection.answers.get(q)]
    if max_questions is not None and len(questions) > int(max_questions):
        def draw(q: str) -> bytes:
            return hashlib.sha256(f"rag\x1f{int(seed)}\x1f{q}".encode()).digest()

        chosen = set(sorted(questions, key=draw)[: int(max_questions)])
        questions = [q for q in questions if q in chosen]
    return questions


def top_passages(run: Mapping[str, Mapping[str, float]], query_id: str, k: int) -> list[str]:
    from uptrain.retrieve.runfile import ranked

    return [d for d, _ in ranked(run.get(query_id) or {})[:k]]


class GenerateStage(AnnotatorStage[dict]):
    """One answer per test question from k passages (see the module docstring)."""

    name = "rag_generate"
    version = 1

    def __init__(self, generator: DictConfig | Mapping, k: int = 5, context: str = "run",
                 max_questions: int | None = None, seed: int = 0, batch_queries: int = 4, first_line: bool = True):
        super().__init__(generator, batch_queries)
        if context not in CONTEXTS:
            raise ConfigError(f"rag context must be one of {', '.join(CONTEXTS)}, got {context!r}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"rag.k must hold integers of at least 1, got {k!r}")
        if max_questions is not None and (isinstance(max_questions, bool) or int(max_questions) < 1):
            raise ConfigError(f"rag.max_questions must be a positive integer or null, got {max_questions!r}")
        if PROMPT not in self.renderer.stages:
            raise ConfigError(f"the generator's prompts (version {self.renderer.version}, {self.renderer.directory}) "
                              f"have no {PROMPT}.txt: add one (fields {{query}} and {{passages}})")
        self.k, self.context = int(k), context
        self.max_questions = None if max_questions is None else int(max_questions)
        self.seed, self.first_line = int(seed), bool(first_line)
        self.inputs = ("data", "run") if context == "run" else ("data",)

    def spec(self) -> dict:
        return {**self.annotator_spec(), "k": self.k if self.context != "none" else 0, "context": self.context,
                "max_questions": self.max_questions, "seed": self.seed, "first_line": self.first_line}

    def _passages(self, collection, run, query_id: str) -> list[str]:
        if self.context == "none":
            return []
        if self.context == "gold":
            return [d for d, r in (collection.qrels.get(query_id) or {}).items() if r > 0][: self.k]
        return top_passages(run, query_id, self.k)

    def build(self, out: Path, work: Path, inputs: Mapping[str, Artifact]) -> None:
        collection = inputs["data"].value
        run = inputs["run"].value if self.context == "run" else {}
        questions = question_sample(collection, self.max_questions, self.seed)
        if not questions:
            raise ConfigError(f"collection '{collection.name}' has no question with a gold answer: the RAG path needs a "
                              "QA collection (SquadSource, or a BEIR folder with answers.jsonl beside corpus.jsonl)")
        fitter = None
        params = self.generation()

        def answer(batch: list[str]) -> list[dict]:
            nonlocal fitter
            backend = self.backend()
            fitter = fitter or PromptFitter(self.renderer, backend, self.annotator.get("max_passage_words"))
            prompts, shown, cuts = [], [], []
            for q in batch:
                ids = self._passages(collection, run, q)
                messages, cut = fitter.render(PROMPT, collection.queries[q], [collection.docs.get(d, "") for d in ids],
                                              reserve=params.max_new_tokens)
                prompts.append(messages)
                shown.append(ids)
                cuts.append(cut)
            generations = backend.generate(prompts, params)
            records = []
            for q, ids, cut, g in zip(batch, shown, cuts, generations):
                text, changes = parse_short_answer(g.text, self.first_line)
                records.append({
                    "query_id": q, "answer": text, "raw": g.text, "passages": ids,
                    "prompt_tokens": g.prompt_tokens, "output_tokens": g.output_tokens, **changes,
                    "truncation": cut.cuts() if cut.prompts_truncated else {},
                })
            return records

        desc = f"RAG answers ({self.context}{'' if self.context == 'none' else f', top-{self.k}'})"
        ordered = self.run_shards(work, questions, answer, desc, "RAG generation", out / "answers.jsonl")
        seconds = sum(float(r.get("seconds", 0.0)) for r in ordered)
        truncation = TruncationStats.of_records(ordered, len(ordered))
        stats = {
            "questions": len(ordered),
            "questions_in_collection": len(collection.queries),
            "questions_with_answers": sum(1 for q in collection.queries if collection.answers.get(q)),
            "context": self.context,
            "k": self.k,
            "empty_answers": sum(1 for r in ordered if not r["answer"]),
            "cut_to_first_line": sum(1 for r in ordered if r["cut_to_first_line"]),
            "label_removed": sum(1 for r in ordered if r["label_removed"]),
            "questions_without_passages": sum(1 for r in ordered if not r["passages"]) if self.context != "none" else 0,
            "prompt_tokens": sum(int(r["prompt_tokens"]) for r in ordered),
            "output_tokens": sum(int(r["output_tokens"]) for r in ordered),
            "seconds": round(seconds, 1),
            "seconds_per_question": round(seconds / max(len(ordered), 1), 3),
            "truncation": truncation.to_dict(),
        }
        (out / "stats.json").write_text(json.dumps(stats, indent=2))
        truncation.warn("rag")
        for key, text in (("empty_answers", "empty answers (they score 0)"),
                          ("questions_without_passages", "questions with no passage to show (the run ranks nothing for them)")):
            if stats[key]:
                log.warning("[rag] %d of %d %s", stats[key], len(ordered), text)
        if stats["cut_to_first_line"] or stats["label_removed"]:
            log.info("[rag] of %d answers, %d cut to their first line (rag.first_line), %d lost a leading passage "
                     "label or enumerator", len(ordered), stats["cut_to_first_line"], stats["label_removed"])

    def load(self, path: Path) -> dict:
        answers = {}
        with open(path / "answers.jsonl", encoding="utf-8") as f:
            for line in f:
                r = json.loads(line)
                answers[r["query_id"]] = r
        return {"answers": answers, "stats": json.loads((path / "stats.json").read_text())}
