"""Fitting annotation prompts into the model's context by shortening passages, never the rest.

A prompt is the template's instruction, the question (and a pseudo answer) and numbered
passages. When it is longer than the token budget (the model's context less the tokens
reserved for the output: ``max_new_tokens`` when generating, the answer when scoring it),
the longest passages are shortened first, word by word from their ends, down to a common
level (water filling), until the prompt fits. The instruction, the question, the answer
and every passage's number are kept verbatim, so the model always sees what it is asked
and the passage numbers stay those of the window. Cutting from the start of the tokenized
prompt instead (what a tokenizer's truncation does) loses the instruction and the question.

Every cut is counted (:class:`TruncationStats`) into the annotation stats. A prompt that
does not fit even with every passage emptied is a :class:`PromptBudgetError`: the budget
is too small for the template and the question, which only a config change can fix.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Sequence

from uptrain.annotate.backends.base import Backend, Messages
from uptrain.annotate.prompts import PromptRenderer
from uptrain.errors import ConfigError

__all__ = ["PromptBudgetError", "PromptFitter", "TruncationStats", "water_level"]

log = logging.getLogger("uptrain")


class PromptBudgetError(ConfigError):
    """The instruction and question alone exceed the token budget."""


@dataclass
class TruncationStats:
    """Counts of prompts fitted to the budget: how many were over it, and what was cut from them."""

    prompts: int = 0  # prompts rendered through the fitter
    prompts_truncated: int = 0  # of those, over the budget (some passage text cut)
    passages_shortened: int = 0
    words_cut: int = 0
    tokens_cut: int = 0  # prompt tokens before fitting less prompt tokens after

    def merge(self, other: "TruncationStats | dict") -> "TruncationStats":
        values = other if isinstance(other, dict) else asdict(other)
        for key, value in values.items():
            if key in self.__dataclass_fields__:
                setattr(self, key, getattr(self, key) + int(value))
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    def cuts(self) -> dict:
        """The counters of what was cut (a query's record keeps these)."""
        return {k: v for k, v in asdict(self).items() if k != "prompts"}

    @classmethod
    def of_records(cls, records: Sequence[dict], prompts: int) -> "TruncationStats":
        """The summed cuts of committed records (each one's ``truncation``) over ``prompts`` prompts."""
        total = cls(prompts=prompts)
        for r in records:
            total.merge(r.get("truncation") or {})
        return total

    def warn(self, stage: str) -> None:
        """A counted warning when any prompt was cut."""
        if self.prompts_truncated:
            log.warning("[%s] %s", stage, self.summary())

    @classmethod
    def sentence(cls, stats: dict | None) -> str:
        """A report sentence on a stage's ``truncation`` stats (" " + sentence, or "" if none was cut)."""
        if not stats or not stats.get("prompts_truncated"):
            return ""
        return f" {cls().merge(stats).summary()}."

    def summary(self) -> str:
        return (
            f"{self.prompts_truncated} of {self.prompts} prompts were over the token budget: "
            f"{self.passages_shortened} passages shortened, {self.words_cut} words ({self.tokens_cut} tokens) cut; "
            "instructions and questions kept whole"
        )


def water_level(lengths: Sequence[int], excess: int) -> int:
    """The largest cap L >= 0 with sum(max(0, n - L)) >= excess: cutting every length down to L
    removes at least ``excess``, taking from the longest first (0 when even that is too little)."""
    if excess <= 0 or not lengths:
        return max(lengths, default=0)
    lo, hi = 0, max(lengths)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if sum(max(0, n - mid) for n in lengths) >= excess:
            lo = mid
        else:
            hi = mid - 1
    return lo


class PromptFitter:
    """Renders prompts that fit ``backend.max_context - reserve`` tokens, shortening passages only.

    ``max_words`` is the configured cap on words per passage (``annotator.max_passage_words``),
    applied first and not counted as truncation.
    """

    def __init__(self, renderer: PromptRenderer, backend: Backend, max_words: int | None = None):
        self.renderer = renderer
        self.backend = backend
        self.max_words = max_words
        self.stats = TruncationStats()

    def _render(self, stage: str, query: str, words: list[list[str]], answer: str | None) -> Messages:
        return self.renderer.render(stage, query, [" ".join(w) for w in words], answer=answer)

    def render(self, stage: str, query: str, passages: Sequence[str], answer: str | None = None,
               reserve: int = 0) -> tuple[Messages, TruncationStats]:
        """The chat messages of one prompt and what fitting cut from it (also added to ``self.stats``)."""
        budget = self.backend.max_context - int(reserve)
        words = [str(p if p is not None else "").split() for p in passages]
        if self.max_words is not None and self.max_words >= 0:
            words = [w[: self.max_words] for w in words]
        before = [len(w) for w in words]
        messages = self._render(stage, query, words, answer)
        n = first = self.backend.prompt_length(messages)
        cut = TruncationStats(prompts=1)
        while n > budget and any(words):
            tokens = [self.backend.count_tokens(" ".join(w)) if w else 0 for w in words]
            level = water_level(tokens, n - budget)
            shortened = False
            for i, t in enumerate(tokens):
                if t > level:
                    keep = len(words[i]) * level // t
                    if keep < len(words[i]):
                        words[i], shortened = words[i][:keep], True
            if not shortened:  # a token estimate that rounds to nothing: one word off the longest
                longest = max(range(len(words)), key=lambda j: len(words[j]))
                words[longest] = words[longest][:-1]
            messages = self._render(stage, query, words, answer)
            n = self.backend.prompt_length(messages)
        if n > budget:
            raise PromptBudgetError(
                f"The '{stage}' prompt takes {n} tokens with every passage emptied (instruction, question"
                f"{' and answer' if answer else ''}), over the budget of {budget} tokens (the model's context "
                f"of {self.backend.max_context} less {int(reserve)} reserved for the output). Raise "
                "annotator.backend.max_context (or max_model_len) or lower annotator.generation.max_new_tokens."
            )
        if first > budget:
            cut.prompts_truncated = 1
            cut.passages_shortened = sum(1 for b, w in zip(before, words) if len(w) < b)
            cut.words_cut = sum(b - len(w) for b, w in zip(before, words))
            cut.tokens_cut = first - n
        self.stats.merge(cut)
        return messages, cut
