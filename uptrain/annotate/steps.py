"""The annotation pipeline of Zhang et al. (arXiv 2504.05220, Sec. 3), run for a batch of queries.

relsel   listwise relevance selection over windows of at most m passages, merged per query
answer   a pseudo answer from the relevance-selected passages
utilsel  utility selection among the relevance-selected passages, given the pseudo answer
utilrank utility ranking of the relevance-selected passages; the top k% (at least one) are kept

Each step sends the prompts of every query of the batch to the backend in one call,
so batched generation pays off. Prompts over the model's context are fitted by shortening
their passages, never the instruction or the question (:mod:`uptrain.annotate.budget`);
each query's record counts what was cut. A query with no relevance-selected passage gets no
answer, no utility-selected and no ranked passage (it is then skipped in training
and counted).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from uptrain.annotate.backends.base import Backend, GenerationParams, Messages
from uptrain.annotate.budget import PromptFitter, TruncationStats
from uptrain.annotate.parse import ParseStats, parse_answer, parse_selection
from uptrain.annotate.prompts import PromptRenderer, window
from uptrain.errors import ConfigError

STEPS = ("relsel", "answer", "utilsel", "utilrank")
SELECTION_STEPS = ("relsel", "utilsel", "utilrank")  # the steps whose output is a set of positives
_NEEDS = {"answer": "relsel", "utilsel": "answer", "utilrank": "relsel"}


def check_steps(steps: Sequence[str], setting: str = "annotate.steps") -> list[str]:
    """The steps as a list; a ConfigError naming ``setting`` for an unknown step or one whose input is missing."""
    steps = list(steps)
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise ConfigError(f"{setting}: unknown annotation steps {unknown}; known: {', '.join(STEPS)}")
    for step in steps:
        if step in _NEEDS and _NEEDS[step] not in steps:
            raise ConfigError(f"{setting}: annotation step '{step}' needs '{_NEEDS[step]}' before it")
    return steps


@dataclass
class QueryAnnotation:
    query_id: str
    query: str
    candidates: list[str]
    relsel: list[str] | None = None
    answer: str | None = None
    utilsel: list[str] | None = None
    utilrank: list[str] | None = None  # full utility ranking of the relevance-selected passages
    utilrank_top: list[str] | None = None  # its top k%
    outputs: dict[str, list[str]] = field(default_factory=dict)  # raw model text per step
    unparseable: dict[str, int] = field(default_factory=dict)  # answers with no usable passage number
    prompts: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    truncation: dict = field(default_factory=dict)  # what fitting its prompts to the budget cut (TruncationStats.cuts)

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> "QueryAnnotation":
        return cls(**d)

    def positives(self, step: str) -> list[str]:
        """The passages a label source built on ``step`` treats as positives."""
        value = {"relsel": self.relsel, "utilsel": self.utilsel, "utilrank": self.utilrank_top}.get(step)
        if step not in SELECTION_STEPS:
            raise ValueError(f"no positives for step '{step}' (one of relsel, utilsel, utilrank)")
        return list(value or [])


def top_k_percent(ranking: Sequence[str], k: float) -> list[str]:
    """The first ceil(k% of the ranking), at least one (the paper keeps k=10%)."""
    if not ranking:
        return []
    return list(ranking[: max(1, math.ceil(len(ranking) * k / 100.0))])


@dataclass
class AnnotationPipeline:
    backend: Backend
    renderer: PromptRenderer
    params: GenerationParams
    steps: Sequence[str] = STEPS
    window_size: int = 16
    max_passage_words: int | None = 100
    utilrank_k: float = 10.0
    parse_stats: dict[str, ParseStats] = field(default_factory=dict)

    def __post_init__(self):
        self.steps = check_steps(self.steps)
        for s in STEPS:
            self.parse_stats.setdefault(s, ParseStats())
        self.fitter = PromptFitter(self.renderer, self.backend, self.max_passage_words)

    @property
    def truncation(self) -> TruncationStats:
        """What fitting every prompt so far to the token budget cut."""
        return self.fitter.stats

    def _prompt(self, ann: "QueryAnnotation", step: str, passages: list[str], answer: str | None) -> Messages:
        messages, cut = self.fitter.render(step, ann.query, passages, answer=answer, reserve=self.params.max_new_tokens)
        if cut.prompts_truncated:
            ann.truncation = TruncationStats().merge(ann.truncation).merge(cut).cuts()
        return messages

    @staticmethod
    def _count(ann: QueryAnnotation, out) -> None:
        ann.prompts += 1
        ann.prompt_tokens += out.prompt_tokens
        ann.output_tokens += out.output_tokens

    def _select(self, step: str, items: list[QueryAnnotation], docs: dict[str, str],
                pick: str, answer: bool) -> list[list[str]]:
        """Listwise selection over windows; returns the selected doc ids per query, in answer order."""
        jobs: list[tuple[int, list[str]]] = []
        prompts = []
        for qi, ann in enumerate(items):
            pool = getattr(ann, pick)
            for win in window(list(pool or []), self.window_size):
                jobs.append((qi, win))
                prompts.append(self._prompt(ann, step, [docs.get(d, "") for d in win], ann.answer if answer else None))
        selected: list[list[str]] = [[] for _ in items]
        outputs = self.backend.generate(prompts, self.params) if prompts else []
        for (qi, win), out in zip(jobs, outputs):
            nums = parse_selection(out.text, len(win))
            once = ParseStats()
            once.record(out.text, nums)
            self.parse_stats[step].record(out.text, nums)
            items[qi].unparseable[step] = items[qi].unparseable.get(step, 0) + once.unparseable
            items[qi].outputs.setdefault(step, []).append(out.text)
            self._count(items[qi], out)
            for n in nums:
                if win[n - 1] not in selected[qi]:
                    selected[qi].append(win[n - 1])
        return selected

    def run(self, items: list[QueryAnnotation], docs: dict[str, str]) -> list[QueryAnnotation]:
        if "relsel" in self.steps:
            for ann, sel in zip(items, self._select("relsel", items, docs, "candidates", answer=False)):
                ann.relsel = sel
        if "answer" in self.steps:
            todo = [a for a in items if a.relsel]
            prompts = [self._prompt(a, "answer", [docs.get(d, "") for d in a.relsel], None) for a in todo]
            outs = self.backend.generate(prompts, self.params) if prompts else []
            for a, out in zip(todo, outs):
                a.answer = parse_answer(out.text)
                self._count(a, out)
                a.outputs.setdefault("answer", []).append(out.text)
            for a in items:
                if not a.relsel:
                    a.answer = ""
        if "utilsel" in self.steps:
            for ann, sel in zip(items, self._select("utilsel", items, docs, "relsel", answer=True)):
                ann.utilsel = sel
        if "utilrank" in self.steps:
            ranked = self._select("utilrank", items, docs, "relsel", answer="answer" in self.steps)
            for ann, order in zip(items, ranked):
                # passages the model left out of its ranking go after the ranked ones, in pool order
                rest = [d for d in (ann.relsel or []) if d not in order]
                ann.utilrank = order + rest
                # an unparseable ranking yields no positive rather than a guessed one
                ann.utilrank_top = top_k_percent(order, self.utilrank_k)
        return items
