"""In-process annotator on transformers: batched, left-padded generation on a CPU or a GPU."""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Mapping, Sequence

from uptrain.annotate.backends.base import Backend, BackendStats, Generation, GenerationParams, Messages
from uptrain.annotate.backends.models import DEFAULT_LLM, load_llm, model_sha
from uptrain.errors import ConfigError

log = logging.getLogger("uptrain")

_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16"}


def _pick_device(device: str) -> str:
    import torch

    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def _pick_dtype(dtype: str, device: str):
    import torch

    if dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in _DTYPES:
        raise ConfigError(f"annotator.backend.dtype: "f"dtype must be one of auto, {', '.join(sorted(set(_DTYPES.values())))}; got {dtype!r}")
    return getattr(torch, _DTYPES[dtype])


def _device_type(device: str) -> str:
    """'cuda:1' -> 'cuda': the kind of device changes numerics, which one of a kind does not."""
    return str(device).split(":", 1)[0]


class TransformersBackend(Backend):
    name = "transformers"

    @classmethod
    def check_config(cls, config: Mapping) -> None:
        batch = config.get("batch_size", 8)
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ConfigError(f"annotator.backend.batch_size must be an integer of at least 1, got {batch!r}")
        _pick_dtype(str(config.get("dtype", "float32")), _pick_device(str(config.get("device", "auto"))))

    @classmethod
    def config_spec(cls, config: Mapping) -> dict:
        """The config's output-determining settings, with the model's file hash and the dtype and
        device that ``auto`` resolves to here, as the constructor would pick them."""
        device = _pick_device(str(config.get("device", "auto")))
        dtype = _pick_dtype(str(config.get("dtype", "float32")), device)
        return {
            **super().config_spec(config),
            "model_sha": model_sha(str(config.get("model", DEFAULT_LLM))),
            "dtype": str(dtype).replace("torch.", ""),
            "device": _device_type(device),
        }

    def __init__(
        self,
        model: str = DEFAULT_LLM,
        device: str = "auto",
        dtype: str = "float32",
        batch_size: int = 8,
        max_context: int | None = None,
        cache_dir: str | Path | None = None,
    ):
        import torch

        if batch_size < 1:
            raise ConfigError(f"annotator.backend.batch_size must be at least 1, got {batch_size}")
        self.model_name = model
        self.device = _pick_device(device)
        self.torch_dtype = _pick_dtype(dtype, self.device)
        self.batch_size = batch_size
        self.tokenizer, self.model, self.path = load_llm(model, cache_dir, dtype=self.torch_dtype)
        self.model.to(self.device)
        self.model.eval()
        self.model_sha = model_sha(model)

        tok = self.tokenizer
        # Left padding keeps every prompt's last token at the same position, where generation continues.
        tok.padding_side = "left"
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        self.pad_id = tok.pad_token_id
        eos = self.model.generation_config.eos_token_id
        eos_ids = set(eos if isinstance(eos, list) else ([] if eos is None else [eos]))
        if tok.eos_token_id is not None:
            eos_ids.add(tok.eos_token_id)
        self.eos_ids = sorted(eos_ids)
        self.has_chat_template = bool(getattr(tok, "chat_template", None))

        if max_context is None:
            limits = [getattr(self.model.config, "max_position_embeddings", None)]
            # Tokenizers without a real limit report a huge sentinel value.
            limits.append(tok.model_max_length if tok.model_max_length < 1_000_000 else None)
            max_context = min((x for x in limits if x), default=2048)
        self._max_context = int(max_context)
        self.stats = BackendStats(extra={"truncated_prompts": 0})
        self._torch = torch

    # --- identity and budgets -------------------------------------------------
    def spec(self) -> dict:
        return {
            "backend": self.name,
            "model": self.model_name,
            "model_sha": self.model_sha,
            "dtype": str(self.torch_dtype).replace("torch.", ""),
            "device": _device_type(self.device),
            "max_context": self._max_context,
        }

    def prompt_length(self, messages: Messages) -> int:
        return len(self._prompt_ids(messages))

    # --- prompts --------------------------------------------------------------
    def render(self, messages: Messages) -> str:
        if self.has_chat_template:
            return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return "\n\n".join(m["content"] for m in messages) + "\n\n"

    def _prompt_ids(self, messages: Messages) -> list[int]:
        # A chat template writes its own special tokens; a plain prompt gets the tokenizer's (e.g. BOS).
        return self.tokenizer(self.render(messages), add_special_tokens=not self.has_chat_template)["input_ids"]

    def _count_cut(self, where: str, limit: int) -> None:
        n = self.stats.extra["truncated_prompts"] = self.stats.extra.get("truncated_prompts", 0) + 1
        log.warning("[annotator] %s: a prompt over %d tokens lost its beginning (%d so far); fit passages "
                    "to the budget first (uptrain.annotate.budget.PromptFitter)", where, limit, n)

    def _left_pad(self, rows: list[list[int]]):
        torch = self._torch
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            if row:
                ids[i, width - len(row):] = torch.tensor(row, dtype=torch.long)
                mask[i, width - len(row):] = 1
        return ids.to(self.device), mask.to(self.device)

    def _batches(self, lengths: list[int]) -> list[list[int]]:
        # Similar lengths share a batch so little compute goes to padding; callers restore the order.
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    @contextmanager
    def _seeded(self, seed: int):
        torch = self._torch
        devices = [torch.device(self.device).index or 0] if self.device.startswith("cuda") else []
        # fork_rng restores the global generator afterwards, so seeding here leaves callers' randomness alone.
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            yield

    # --- generation -----------------------------------------------------------
    def generate(self, prompts: Sequence[Messages], params: GenerationParams) -> list[Generation]:
        torch = self._torch
        from transformers import GenerationConfig

        start = time.perf_counter()
        limit = self._max_context - params.max_new_tokens
        if limit < 1:
            raise ValueError(f"max_new_tokens={params.max_new_tokens} leaves no room in a {self._max_context}-token context")
        encoded = []
        for messages in prompts:
            ids = self._prompt_ids(messages)
            if len(ids) > limit:
                # A last resort for callers that did not fit their prompts (the annotation stages fit
                # passages to the budget first, uptrain.annotate.budget): keep the end, count it, say so.
                ids = ids[-limit:]
                self._count_cut("generate", limit)
            encoded.append(ids)

        config = GenerationConfig(
            max_new_tokens=params.max_new_tokens,
            do_sample=not params.greedy,
            temperature=None if params.greedy else params.temperature,
            top_p=None if params.greedy or params.top_p >= 1.0 else params.top_p,
            top_k=None if params.greedy or params.top_k <= 0 else params.top_k,
            pad_token_id=self.pad_id,
            eos_token_id=self.eos_ids or None,
        )
        results: list[Generation | None] = [None] * len(encoded)
        eos = set(self.eos_ids)
        for b, batch in enumerate(self._batches([len(e) for e in encoded]) if encoded else []):
            ids, mask = self._left_pad([encoded[i] for i in batch])
            # Each batch gets its own seed so sampled outputs do not depend on earlier calls.
            rng = nullcontext() if params.greedy else self._seeded(params.seed + b)
            with torch.inference_mode(), rng:
                out = self.model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
            new = out[:, ids.shape[1]:].tolist()
            for row, i in enumerate(batch):
                tokens = new[row]
                # Rows that stopped early are filled with padding; the stop token itself counts.
                n = next((k + 1 for k, t in enumerate(tokens) if t in eos), len(tokens))
                text = self.tokenizer.decode(tokens[:n], skip_special_tokens=True)
                results[i] = Generation(text=text, prompt_tokens=len(encoded[i]), output_tokens=n)

        gens = [g for g in results if g is not None]
        self.stats.prompts += len(gens)
        self.stats.prompt_tokens += sum(g.prompt_tokens for g in gens)
        self.stats.output_tokens += sum(g.output_tokens for g in gens)
        self.stats.seconds += time.perf_counter() - start
        return gens

    # --- scoring --------------------------------------------------------------
    def loglikelihood(self, contexts: Sequence[Messages], continuations: Sequence[str]) -> list[float]:
        torch = self._torch
        if len(contexts) != len(continuations):
            raise ValueError(f"{len(contexts)} contexts but {len(continuations)} continuations")
        start = time.perf_counter()
        pairs = []
        for context, continuation in zip(contexts, continuations):
            ctx = self._prompt_ids(context)
            cont = self.tokenizer(continuation, add_special_tokens=False)["input_ids"]
            if not cont:
                raise ValueError("an empty continuation has no tokens to score")
            full = ctx + cont
            if len(full) > self._max_context:
                full = full[-self._max_context:]  # the continuation must survive; the context start goes
                self._count_cut("loglikelihood", self._max_context)
            pairs.append((full, min(len(cont), len(full) - 1)))

        scores = [0.0] * len(pairs)
        for batch in self._batches([len(p[0]) for p in pairs]):
            ids, mask = self._left_pad([pairs[i][0] for i in batch])
            # Left padding puts every continuation at the end, so only the last logits are needed.
            keep = max(pairs[i][1] for i in batch) + 1
            # Positions count real tokens only, so a padded row scores as it would alone.
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            inputs = {"input_ids": ids, "attention_mask": mask, "position_ids": positions}
            with torch.inference_mode():
                try:
                    logits = self.model(**inputs, logits_to_keep=keep).logits
                except TypeError:
                    logits = self.model(**inputs).logits
                logits = logits[:, -keep:, :].float()
                logprobs = torch.log_softmax(logits[:, :-1, :], dim=-1)
                targets = ids[:, -(keep - 1):]
                picked = logprobs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            for row, i in enumerate(batch):
                n = pairs[i][1]
                scores[i] = float(picked[row, picked.shape[1] - n:].sum())
        self.stats.prompt_tokens += sum(len(p[0]) for p in pairs)
        self.stats.seconds += time.perf_counter() - start
        return scores
