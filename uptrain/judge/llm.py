"""A prompted graded judge through the annotator backends (UMBRELA-style, Upadhyay et al. 2024).

One prompt per (query, passage): ``conf/annotator/prompts/<version>/grade.txt`` (the 0-3 scale of
UMBRELA, after Thomas et al. 2024), answered by the configured annotator backend
(``judge.grader.annotator``, by default the run's ``annotator``: SmolLM2-135M-Instruct through
transformers) and read by the one grade parser, :func:`uptrain.annotate.parse.parse_grade`. An
answer without a readable grade leaves the pair unlabelled (counted, never guessed). The
probabilities are one-hot on the parsed grade: a generative judge gives no distribution.

Prompts are fitted to the model's context by the annotator's :class:`PromptFitter` (passages
shortened, counted); the label stage runs them in resumable batches of queries, so a killed run
redoes only the batch in flight, and its artifact is cached like annotation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from uptrain.errors import ConfigError
from uptrain.judge.base import Judge, JudgeGrades, one_hot


@dataclass
class _Texts:  # the two fields of a collection the grade stage's prompting reads
    queries: dict
    docs: dict


class LLMJudge(Judge):
    name = "llm"

    def __init__(self, annotator: Mapping | None = None, max_new_tokens: int | None = 8,
                 max_grade: int | None = None):
        super().__init__(max_grade)
        from uptrain.annotate.annotator import plain

        self.annotator = plain(annotator) if annotator is not None else None
        if not isinstance(self.annotator, Mapping) or not self.annotator.get("backend"):
            raise ConfigError("judge=llm needs an annotator backend (judge.grader.annotator, by default the run's "
                              "annotator: annotator=transformers, llamacpp or vllm); got "
                              f"{self.annotator!r}")
        if self.annotator.get("simulated") is not None:
            raise ConfigError("judge=llm was given the simulated annotator: use judge=simulated for simulated grades")
        self.max_new_tokens = max_new_tokens
        self._stage = None

    def stage(self):
        if self._stage is None:
            from uptrain.annotate.grade import GradeStage

            self._stage = GradeStage(self.annotator, max_grade=self.max_grade if self.max_grade is not None else 3,
                                     max_new_tokens=self.max_new_tokens)
        return self._stage

    def set_scale(self, max_grade: int) -> None:
        super().set_scale(max_grade)
        if max_grade != 3:
            raise ConfigError(
                f"judge=llm grades on the 0-3 scale of its prompt (grade.txt), but the human grades here run "
                f"0..{max_grade}: map them onto 0-3 with the collection's relevance_map, or write a prompt for the "
                "other scale (annotator.prompt_version)")
        self._stage = None

    def validate(self) -> None:
        self.stage().validate()

    def spec(self) -> dict:
        s = self.stage()
        return {"judge": self.name, **s.annotator_spec(), "prompt": "grade", "max_new_tokens": self.max_new_tokens}

    def grade(self, query, passages, query_id=None, doc_ids=None, human=None) -> JudgeGrades:
        ids = list(doc_ids) if doc_ids is not None else [str(i) for i in range(len(passages))]
        return self.grade_many([(query_id or "q", query, ids, list(passages))])[0]

    def grade_many(self, items: Sequence[tuple[str, str, list[str], list[str]]], human=None) -> list[JudgeGrades]:
        texts = _Texts({q: text for q, text, _, _ in items},
                       {d: p for _, _, ds, ps in items for d, p in zip(ds, ps)})
        records = self.stage()._llm_records([q for q, _, _, _ in items], {q: list(ds) for q, _, ds, _ in items}, texts)
        out = []
        for (q, _, ds, _), r in zip(items, records):
            grades = [r["grades"].get(d) for d in ds]
            out.append(JudgeGrades(
                grades=grades, probs=[one_hot(g, self.max_grade) for g in grades],
                cost={"prompts": r["prompts"], "prompt_tokens": r["prompt_tokens"], "output_tokens": r["output_tokens"],
                      "unparseable": r["unparseable"], "outputs": r["outputs"], "truncation": r.get("truncation") or {}}))
        return out

    def describe(self) -> str:
        return f"prompted LLM judge ({self.annotator['backend'].get('model')}, UMBRELA-style 0-3 prompt)"
