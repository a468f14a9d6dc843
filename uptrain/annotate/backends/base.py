"""The annotator backend interface: chat prompts in, text (and token counts) out.

Every backend takes the same rendered prompts (lists of chat messages) and returns
raw text; parsing is shared (:mod:`uptrain.annotate.parse`), so the transformers and
vLLM backends differ only in how they run the model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Sequence

Messages = list[dict[str, str]]  # [{"role": "system"|"user"|"assistant", "content": "..."}]


@dataclass(frozen=True)
class GenerationParams:
    """Decoding parameters; greedy by default (temperature 0)."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0.0


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    output_tokens: int


@dataclass
class BackendStats:
    prompts: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


class Backend(ABC):
    """Runs one model. ``spec()`` identifies the model and backend for cache keys."""

    name: str = "base"

    @abstractmethod
    def spec(self) -> dict:
        """Model identity and everything else that changes outputs (not batch sizes)."""

    @abstractmethod
    def generate(self, prompts: Sequence[Messages], params: GenerationParams) -> list[Generation]:
        """One generation per prompt, in order."""

    @abstractmethod
    def loglikelihood(self, contexts: Sequence[Messages], continuations: Sequence[str]) -> list[float]:
        """Sum of log-probabilities of each continuation's tokens after its chat context (REPLUG)."""

    @property
    @abstractmethod
    def max_context(self) -> int:
        """Longest prompt + output the model takes, in tokens."""

    @abstractmethod
    def count_tokens(self, text: str) -> int:
        """Tokens of a plain text (to budget passages into the context)."""
