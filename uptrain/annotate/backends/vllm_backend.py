"""Annotator on vLLM (CUDA GPUs): same prompts and outputs as the transformers backend, with paged batching.

``vllm`` is imported only when a backend is built, so the rest of the package works without it.

Next-token scoring (:meth:`VLLMBackend.next_token_logprobs`): one request per prompt with
``SamplingParams(max_tokens=1, temperature=0, logprobs=TOP_LOGPROBS)`` on the prompt's token ids
(chat template with the generation prompt, then the answer prefix), reading the log-probabilities of
the first generated position. vLLM returns only the top ``TOP_LOGPROBS`` tokens there (20, vLLM's
default ``max_logprobs``); a candidate token outside them is not guessed: it is scored exactly by a
second request that appends the token to the prompt and reads its prompt log-probability
(``prompt_logprobs=1``), and counted (``stats.extra["next_token"]["outside_top_n"]``). A candidate's
log-probability is the logsumexp over its first token without and with a leading space
(:meth:`Backend.candidate_tokens`).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Mapping, Sequence

from uptrain.annotate.backends.base import Backend, BackendStats, Generation, GenerationParams, Messages
from uptrain.annotate.backends.models import DEFAULT_LLM, PACKAGED_LLMS, hub_snapshot, model_sha, resolve_llm
from uptrain.errors import UserError


class VLLMUnavailableError(UserError, ImportError):
    """vLLM is not installed (or cannot be imported here): the user's to fix (an extra, a GPU)."""


def _checkpoint_dtype(model: str) -> str | None:
    """The dtype a local checkpoint was saved in (its config.json), without loading it."""
    if model in PACKAGED_LLMS or model.endswith(".gguf"):
        return "float32"  # a GGUF is converted into a float32 checkpoint (models.convert_gguf)
    path = Path(model).expanduser()
    folder = path if path.is_dir() else hub_snapshot(model)
    config = folder / "config.json" if folder is not None else None
    if config is None or not config.is_file():
        return None
    cfg = json.loads(config.read_text())
    return str(cfg.get("torch_dtype") or cfg.get("dtype") or "float32").replace("torch.", "")


def resolve_auto_dtype(dtype: str, model: str) -> str:
    """What vLLM's ``dtype="auto"`` runs: float16 for a float32 or float16 checkpoint, else the
    checkpoint's own dtype; 'auto' stays only for a hub model with no local copy to read."""
    if dtype != "auto":
        return dtype
    saved = _checkpoint_dtype(model)
    if saved is None:
        return "auto"
    return "float16" if saved in ("float32", "float16") else saved


def _unavailable(reason: str) -> VLLMUnavailableError:
    return VLLMUnavailableError(
        "The vllm annotator backend needs the `vllm` package: install it with `pip install .[vllm]` "
        "(or `pip install uptrain[vllm]`). vLLM runs on CUDA GPUs only; on a machine without one, use "
        f"the transformers backend (annotator=transformers). {reason}"
    )


def vllm_installed() -> bool:
    """Whether ``import vllm`` can work, found without importing it."""
    if "vllm" in sys.modules:
        return sys.modules["vllm"] is not None
    try:
        return importlib.util.find_spec("vllm") is not None
    except (ImportError, ValueError):
        return False


def _import_vllm():
    try:
        import vllm
    except ImportError as exc:
        raise _unavailable(f"Import failed with: {exc}") from exc
    return vllm


class VLLMBackend(Backend):
    name = "vllm"
    #: log-probabilities vLLM returns per generated position in next_token_logprobs (its default max_logprobs)
    TOP_LOGPROBS = 20

    def __init__(
        self,
        model: str = DEFAULT_LLM,
        tensor_parallel_size: int = 1,
        max_model_len: int | None = None,
        dtype: str = "auto",
        quantization: str | None = None,
        enable_prefix_caching: bool = True,
        gpu_memory_utilization: float = 0.9,
        cache_dir: str | Path | None = None,
    ):
        vllm = _import_vllm()
        self._vllm = vllm
        self.model_name = model
        self.path = resolve_llm(model, cache_dir)
        self.model_sha = model_sha(model)
        self.dtype = resolve_auto_dtype(dtype, model)
        self.quantization = quantization
        self.llm = vllm.LLM(
            model=self.path,
            tensor_parallel_size=tensor_parallel_size,
            max_model_len=max_model_len,
            dtype=dtype,
            quantization=quantization,
            enable_prefix_caching=enable_prefix_caching,
            gpu_memory_utilization=gpu_memory_utilization,
        )
        self.tokenizer = self.llm.get_tokenizer()
        self._max_context = self._read_max_context(max_model_len)
        self.stats = BackendStats()

    def _read_max_context(self, requested: int | None) -> int:
        try:
            return int(self.llm.llm_engine.model_config.max_model_len)
        except AttributeError:
            # Engines that hide their config: trust the request, else the tokenizer's limit.
            if requested:
                return int(requested)
            return int(min(getattr(self.tokenizer, "model_max_length", 2048), 1_000_000))

    @classmethod
    def check_config(cls, config: Mapping) -> None:
        if not vllm_installed():
            raise _unavailable("It is not installed here.")

    @classmethod
    def config_spec(cls, config: Mapping) -> dict:
        """The config's output-determining settings, with the model's file hash and the dtype that
        ``auto`` runs; vLLM runs on CUDA only. Nothing is imported from vllm here."""
        model = str(config.get("model", DEFAULT_LLM))
        return {
            **super().config_spec(config),
            "model_sha": model_sha(model),
            "dtype": resolve_auto_dtype(str(config.get("dtype", "auto")), model),
            "device": "cuda",
        }

    def spec(self) -> dict:
        return {
            "backend": self.name,
            "model": self.model_name,
            "model_sha": self.model_sha,
            "dtype": self.dtype,
            "device": "cuda",
            "quantization": self.quantization,
        }

    def prompt_length(self, messages: Messages) -> int:
        return len(self._render(messages))

    def sampling_params(self, params: GenerationParams, **extra):
        return self._vllm.SamplingParams(
            temperature=0.0 if params.greedy else params.temperature,
            top_p=params.top_p,
            # vLLM spells "no top-k limit" as -1.
            top_k=params.top_k if params.top_k > 0 else -1,
            max_tokens=params.max_new_tokens,
            seed=params.seed,
            **extra,
        )

    def generate(self, prompts: Sequence[Messages], params: GenerationParams) -> list[Generation]:
        if not prompts:
            return []
        start = time.perf_counter()
        outputs = self.llm.chat(
            [list(p) for p in prompts], sampling_params=self.sampling_params(params), use_tqdm=False
        )
        gens = [
            Generation(
                text=out.outputs[0].text,
                prompt_tokens=len(out.prompt_token_ids),
                output_tokens=len(out.outputs[0].token_ids),
            )
            for out in outputs
        ]
        if len(gens) != len(prompts):
            raise RuntimeError(f"vLLM returned {len(gens)} outputs for {len(prompts)} prompts")
        self.stats.prompts += len(gens)
        self.stats.prompt_tokens += sum(g.prompt_tokens for g in gens)
        self.stats.output_tokens += sum(g.output_tokens for g in gens)
        self.stats.seconds += time.perf_counter() - start
        return gens

    def _render(self, messages: Messages) -> list[int]:
        text = self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def next_token_logprobs(self, prompts: Sequence[Messages], candidates: Sequence[str],
                            prefix: str = "") -> list[dict[str, float]]:
        """Per prompt, each candidate's next-token log-probability (see the module docstring: the
        top ``TOP_LOGPROBS`` of one generated token, an exact second request for tokens outside them)."""
        import math

        if not prompts:
            return []
        start = time.perf_counter()
        variants = self.candidate_tokens(candidates)
        tail = self.tokenizer(prefix, add_special_tokens=False)["input_ids"] if prefix else []
        requests = [{"prompt_token_ids": (self._render(m) + list(tail))[-(self._max_context - 1):]} for m in prompts]
        sampling = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, logprobs=self.TOP_LOGPROBS)
        outputs = self.llm.generate(requests, sampling_params=sampling, use_tqdm=False)
        if len(outputs) != len(requests):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(requests)} prompts")
        found: list[dict[int, float]] = []
        missing: list[tuple[int, int]] = []  # (prompt, token) pairs outside the returned top-N
        wanted = sorted({t for v in variants for t in v})
        for i, out in enumerate(outputs):
            top = out.outputs[0].logprobs[0]
            found.append({t: float(top[t].logprob) for t in wanted if t in top})
            missing += [(i, t) for t in wanted if t not in top]
        if missing:
            extra = [{"prompt_token_ids": requests[i]["prompt_token_ids"] + [t]} for i, t in missing]
            rescore = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=1)
            for (i, t), out in zip(missing, self.llm.generate(extra, sampling_params=rescore, use_tqdm=False)):
                found[i][t] = float(out.prompt_logprobs[-1][t].logprob)
        results = []
        for scores in found:
            row = {}
            for cand, v in zip(candidates, variants):
                vals = [scores[t] for t in v]
                top = max(vals)
                row[cand] = top + math.log(sum(math.exp(x - top) for x in vals)) if top > -math.inf else -math.inf
            results.append(row)
        info = self.stats.extra.setdefault("next_token", {"prompts": 0, "outside_top_n": 0, "rescoring_requests": 0})
        info["prompts"] += len(requests)
        info["outside_top_n"] += len(missing)
        info["rescoring_requests"] += len(missing)
        self.stats.prompts += len(requests)
        self.stats.prompt_tokens += sum(len(r["prompt_token_ids"]) for r in requests)
        self.stats.seconds += time.perf_counter() - start
        return results

    def loglikelihood(self, contexts: Sequence[Messages], continuations: Sequence[str]) -> list[float]:
        if len(contexts) != len(continuations):
            raise ValueError(f"{len(contexts)} contexts but {len(continuations)} continuations")
        if not contexts:
            return []
        start = time.perf_counter()
        requests, spans = [], []
        for context, continuation in zip(contexts, continuations):
            cont = self.tokenizer(continuation, add_special_tokens=False)["input_ids"]
            if not cont:
                raise ValueError("an empty continuation has no tokens to score")
            ids = (self._render(context) + cont)[-(self._max_context - 1):]
            requests.append({"prompt_token_ids": ids})
            spans.append(min(len(cont), len(ids) - 1))
        # One generated token is the minimum vLLM allows; the scores come from the prompt's log-probs.
        sampling = self.sampling_params(GenerationParams(max_new_tokens=1), prompt_logprobs=1)
        outputs = self.llm.generate(requests, sampling_params=sampling, use_tqdm=False)
        scores = []
        for request, n, out in zip(requests, spans, outputs):
            ids = request["prompt_token_ids"]
            total = 0.0
            for pos in range(len(ids) - n, len(ids)):
                total += out.prompt_logprobs[pos][ids[pos]].logprob
            scores.append(total)
        self.stats.prompt_tokens += sum(len(r["prompt_token_ids"]) for r in requests)
        self.stats.seconds += time.perf_counter() - start
        return scores
