"""A stand-in annotator backend for tests of the annotation stages: whitespace tokens, no model, an
answer scripted by each subclass, and a kill on the N-th ``generate`` call (``fail_on_call``) to test
resumption. Only the model is replaced: prompts, parsing, shards and the cache are the real ones."""

from __future__ import annotations

from uptrain.annotate.backends.base import Backend, BackendStats, Generation


class ScriptedBackend(Backend):
    name = "scripted"
    generate_calls = 0
    fail_on_call: int | None = None  # simulate a kill in the middle of a run

    def __init__(self, model: str = "scripted", max_context: int = 4096, batch_size: int = 8):
        self.model_name = model
        self._max_context = max_context
        self.stats = BackendStats()

    def spec(self) -> dict:
        return {"backend": self.name, "model": self.model_name}

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def prompt_length(self, messages) -> int:
        return sum(len(m["content"].split()) + 2 for m in messages)

    def answer(self, prompt) -> tuple[str, int]:
        """(the text generated for one prompt, its output tokens)."""
        raise NotImplementedError

    def generate(self, prompts, params):
        cls = type(self)
        cls.generate_calls += 1
        if cls.fail_on_call is not None and cls.generate_calls >= cls.fail_on_call:
            raise KeyboardInterrupt("killed")
        out = []
        for p in prompts:
            text, n = self.answer(p)
            out.append(Generation(text=text, prompt_tokens=self.prompt_length(p), output_tokens=n))
        return out

    def loglikelihood(self, contexts, continuations):  # pragma: no cover - a subclass that needs it says so
        raise NotImplementedError
