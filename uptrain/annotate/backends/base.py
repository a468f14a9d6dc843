"""The annotator backend interface: chat prompts in, text (and token counts) out.

Every backend takes the same rendered prompts (lists of chat messages) and returns
raw text; parsing is shared (:mod:`uptrain.annotate.parse`), so the transformers and
vLLM backends differ only in how they run the model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar, Mapping, Sequence

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
    """Runs one model. ``spec()`` identifies the model and backend for cache keys.

    ``config_spec(config)`` gives the same identity from the backend's config alone, without
    loading anything, so a stage's cache key is known before the model is: it must hold every
    setting that changes outputs, with values resolved as the constructor would resolve them
    on this machine (a model's file hash, the dtype and device that ``auto`` picks).
    """

    name: str = "base"
    #: constructor arguments that change speed or placement, never outputs (left out of cache keys)
    RUNTIME_KEYS: ClassVar[frozenset[str]] = frozenset(
        {"device", "batch_size", "cache_dir", "gpu_memory_utilization", "tensor_parallel_size"}
    )

    @classmethod
    def check_config(cls, config: Mapping) -> None:
        """Raise a :class:`uptrain.errors.UserError` for a config this backend cannot run here
        (a bad value, a missing extra), cheaply and before the model loads."""

    @classmethod
    def config_spec(cls, config: Mapping) -> dict:
        """The settings of a backend config (``_target_`` and constructor arguments) that determine
        its outputs; subclasses add what they resolve (model hash, dtype, device)."""
        return {k: v for k, v in config.items() if k not in cls.RUNTIME_KEYS}

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
    def max_context(self) -> int:
        """Longest prompt + output the model takes, in tokens (backends set ``_max_context``)."""
        return int(self._max_context)

    def count_tokens(self, text: str) -> int:
        """Tokens of a plain text (to budget passages into the context); backends set ``tokenizer``."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_length(self, messages: Messages) -> int:
        """Tokens of a chat prompt as the model sees it (template included); by default, its contents'."""
        return sum(self.count_tokens(m["content"]) for m in messages)


class ChatTemplatePrompts:
    """Prompts of an in-process backend that holds the model's Hugging Face tokenizer
    (``self.tokenizer``, ``self.has_chat_template``): rendered with its chat template, or the
    messages joined by blank lines where it has none."""

    def render(self, messages: Messages) -> str:
        if self.has_chat_template:
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return "\n\n".join(m["content"] for m in messages) + "\n\n"

    def _prompt_ids(self, messages: Messages) -> list[int]:
        # A chat template writes its own special tokens; a plain prompt gets the tokenizer's (e.g. BOS).
        return self.tokenizer(self.render(messages), add_special_tokens=not self.has_chat_template)["input_ids"]

    def prompt_length(self, messages: Messages) -> int:
        return len(self._prompt_ids(messages))
