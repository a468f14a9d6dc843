"""The annotation pipeline of Zhang et al. (arXiv 2504.05220, Sec. 3), run for a batch of queries.

relsel   listwise relevance selection over windows of at most m passages, merged per query
answer   a pseudo answer from the relevance-selected passages
utilsel  utility selection among the relevance-selected passages, given the pseudo answer
utilrank utility ranking of the relevance-selected passages; the top k% (at least one) are kept

Each step sends the prompts of every query of the batch to the backend in one call,
so batched generation pays off. A query with no relevance-selected passage gets no
answer, no utility-selected and no ranked passage (it is then skipped in training
and counted).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from uptrain.annotate.backends.base import Backend, GenerationParams
from uptrain.annotate.parse import ParseStats, parse_answer, parse_selection
from uptrain.annotate.prompts import PromptRenderer, window

STEPS = ("relsel", "answer", "utilsel", "utilrank")


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

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, d: dict) -> "QueryAnnotation":
        return cls(**d)

    def positives(self, step: str) -> list[str]:
        """The passages a label source built on ``step`` treats as positives."""
        value = {"relsel": self.relsel, "utilsel": self.utilsel, "utilrank": self.utilrank_top}.get(step)
        if step not in ("relsel", "utilsel", "utilrank"):
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
        unknown = [s for s in self.steps if s not in STEPS]
        if unknown:
            raise ValueError(f"unknown annotation steps {unknown}; known: {', '.join(STEPS)}")
        needed = {"answer": "relsel", "utilsel": "answer", "utilrank": "relsel"}
        for step in self.steps:
            if step in needed and needed[step] not in self.steps:
                raise ValueError(f"annotation step '{step}' needs '{needed[step]}' before it")
        for s in STEPS:
            self.parse_stats.setdefault(s, ParseStats())

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
                prompts.append(self.renderer.render(
                    step, ann.query, [docs.get(d, "") for d in win],
                    answer=ann.answer if answer else None, max_words=self.max_passage_words,
                ))
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
            prompts = [self.renderer.render("answer", a.query, [docs.get(d, "") for d in a.relsel],
                                            max_words=self.max_passage_words) for a in todo]
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
