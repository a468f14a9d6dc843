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

Prompts repeat across runs: two retrievers with the same top-k for a question give the same
prompt, and the gold and closed-book references are the same for every experiment. With
``memo_dir`` (the rag path passes ``<cache>/rag_memo``), each distinct prompt is answered once
per generator (keyed by the generator's full spec and the prompt's text) and its raw answer
reused by every later stage; reused answers are counted (``answers_reused``). Identical prompts
then get identical answers in every run, so paired comparisons between runs differ only where
their passages do.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
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


class AnswerMemo:
    """Raw generator answers by prompt, for one generator: an append-only JSONL file, one line a commit
    (a torn last line from a killed writer is ignored), safe for concurrent appenders."""

    def __init__(self, directory: Path, generator_spec: dict):
        from uptrain.cache import canonical_json

        self.key = hashlib.sha256(canonical_json(generator_spec).encode()).hexdigest()[:16]
        self.path = Path(directory) / f"{self.key}.jsonl"
        self.answers: dict[str, dict] = {}
        if self.path.is_file():
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a torn line of a killed writer
                    self.answers[row["prompt"]] = row

    @staticmethod
    def prompt_key(messages) -> str:
        from uptrain.cache import canonical_json

        return hashlib.sha256(canonical_json(messages).encode()).hexdigest()

    def get(self, messages) -> dict | None:
        return self.answers.get(self.prompt_key(messages))

    def put(self, messages, text: str, prompt_tokens: int, output_tokens: int) -> None:
        row = {"prompt": self.prompt_key(messages), "text": text, "prompt_tokens": int(prompt_tokens),
               "output_tokens": int(output_tokens)}
        self.answers[row["prompt"]] = row
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)  # one write of one line: concurrent appenders never interleave it
        finally:
            os.close(fd)


def top_passages(run: Mapping[str, Mapping[str, float]], query_id: str, k: int) -> list[str]:
    from uptrain.retrieve.runfile import ranked

    return [d for d, _ in ranked(run.get(query_id) or {})[:k]]


class GenerateStage(AnnotatorStage[dict]):
    """One answer per test question from k passages (see the module docstring)."""

    name = "rag_generate"
    version = 1

    def __init__(self, generator: DictConfig | Mapping, k: int = 5, context: str = "run",
                 max_questions: int | None = None, seed: int = 0, batch_queries: int = 4, first_line: bool = True,
                 memo_dir: str | Path | None = None):
        super().__init__(generator, batch_queries)
        self.memo_dir = Path(memo_dir) if memo_dir else None  # where answers are shared; not in the key
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
        memo = AnswerMemo(self.memo_dir, self.annotator_spec()) if self.memo_dir else None

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
            known = [memo.get(p) if memo else None for p in prompts]
            todo = [p for p, k in zip(prompts, known) if k is None]
            fresh = iter(backend.generate(todo, params) if todo else [])
            records = []
            for q, messages, ids, cut, hit in zip(batch, prompts, shown, cuts, known):
                if hit is None:
                    g = next(fresh)
                    raw, prompt_tokens, output_tokens = g.text, g.prompt_tokens, g.output_tokens
                    if memo is not None:
                        memo.put(messages, raw, prompt_tokens, output_tokens)
                else:
                    raw, prompt_tokens, output_tokens = hit["text"], 0, 0  # no tokens spent on a reused answer
                text, changes = parse_short_answer(raw, self.first_line)
                records.append({
                    "query_id": q, "answer": text, "raw": raw, "passages": ids,
                    "prompt_tokens": prompt_tokens, "output_tokens": output_tokens, **changes,
                    "reused": hit is not None, "truncation": cut.cuts() if cut.prompts_truncated else {},
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
            "answers_reused": sum(1 for r in ordered if r.get("reused")),
            "questions_without_passages": sum(1 for r in ordered if not r["passages"]) if self.context != "none" else 0,
            "prompt_tokens": sum(int(r["prompt_tokens"]) for r in ordered),
            "output_tokens": sum(int(r["output_tokens"]) for r in ordered),
            "seconds": round(seconds, 1),
            "seconds_per_question": round(seconds / max(len(ordered), 1), 3),
            # what a question costs when it is generated (reused answers take no model time)
            "seconds_per_generated_question": round(
                seconds / max(sum(1 for r in ordered if not r.get("reused")), 1), 3),
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
