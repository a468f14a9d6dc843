"""The annotator backend interface: chat prompts in, text (and token counts) out.

Every backend takes the same rendered prompts (lists of chat messages) and returns
raw text; parsing is shared (:mod:`uptrain.annotate.parse`), so the transformers and
vLLM backends differ only in how they run the model.

Single-token scoring (:meth:`Backend.next_token_logprobs`): the log-probability of each
candidate string as the next token after a chat prompt (rendered with the generation prompt),
from one forward pass and no decoding; the annotators ``relsel: pointwise_logit`` (P("yes"))
and ``utilrank: first`` (FIRST, Reddy et al. 2024: the first label's logits rank a window) use it.
A candidate is scored by its *first token*, taken both without and with a leading space
(``"yes"`` and ``" yes"``; a variant whose first token is whitespace only, as ``" 1"`` -> ``" "``
in a digit-splitting tokenizer, is dropped): its log-probability is the **logsumexp** over its
distinct variant tokens, the probability that the next token starts the candidate in either
spelling (:meth:`Backend.candidate_tokens`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar, Mapping, Sequence

from uptrain.errors import UserError

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


def next_tokens_unsupported(backend: str) -> UserError:
    """The error of a backend that cannot read next-token probabilities, naming the alternatives."""
    return UserError(
        f"The '{backend}' annotator backend cannot score next tokens (it has no next_token_logprobs), "
        "which the single-token schemes annotator.scheme.relsel=pointwise_logit and "
        "annotator.scheme.utilrank=first need. Use annotator=transformers, annotator=llamacpp or "
        "annotator=vllm for them, or the generated-answer schemes (annotator.scheme.relsel=listwise, "
        "utilrank=windows or sliding)."
    )


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

    def next_token_logprobs(self, prompts: Sequence[Messages], candidates: Sequence[str],
                            prefix: str = "") -> list[dict[str, float]]:
        """Per prompt, the log-probability of each candidate's first token as the next token after
        the chat prompt with its generation prompt (and ``prefix``, the start of the answer, when
        given): one forward pass per prompt, nothing decoded. See the module docstring for how a
        candidate maps to tokens. Backends that cannot read next-token probabilities raise a
        :class:`UserError` naming the alternatives."""
        raise next_tokens_unsupported(self.name)

    @classmethod
    def scores_next_tokens(cls) -> bool:
        """Whether this backend class implements :meth:`next_token_logprobs` (checked without loading a model)."""
        return cls.next_token_logprobs is not Backend.next_token_logprobs

    def candidate_tokens(self, candidates: Sequence[str]) -> list[tuple[int, ...]] | None:
        """The token ids each candidate is scored by: the first token of the candidate and of the
        candidate after a space, a whitespace-only token dropped, duplicates removed (None for a
        backend without a Hugging Face tokenizer). A candidate with no usable token is a ValueError."""
        tok = getattr(self, "tokenizer", None)
        if tok is None or not hasattr(tok, "decode"):
            return None
        out = []
        for cand in candidates:
            ids: list[int] = []
            for text in (str(cand), " " + str(cand)):
                first = tok(text, add_special_tokens=False)["input_ids"][:1]
                if first and tok.decode(first).strip() and first[0] not in ids:
                    ids.append(int(first[0]))
            if not ids:
                raise ValueError(f"the candidate {cand!r} has no token to score (empty or whitespace only)")
            out.append(tuple(ids))
        return out

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
