"""In-process annotator on transformers: batched, left-padded generation on a CPU or a GPU.

Precision (``dtype``): ``fp32``, ``bf16`` or ``auto`` (:mod:`uptrain.precision`: bf16 where the
device has fast bf16 units, CPU flags ``amx_bf16``/``avx512_bf16`` or a GPU with bf16). bf16 runs
*mixed*: the weights stay fp32 and matrix products run in bf16 under ``torch.autocast``, so
norms and the residual stream keep fp32. Pure bf16 weights were measured about 1.25x faster
still on a 2-core AVX-512-BF16 CPU but changed 2 of 4 greedy answers where autocast changed
none (SmolLM2-135M, the RelSel bench prompts).

Shared-prefix reuse (``prefix_cache``): the prompts of one batch usually start with the same
tokens (the chat template, the system message and the instruction). That common prefix is run
once, its keys and values are kept (a few per distinct prefix) and expanded to the batch, and
only the rest of every prompt is computed. The batch is laid out ``[prefix][padding][rest]``
with the padding masked and positions counted over real tokens, which is the same computation
as left padding; at fp32, greedy outputs equal those without the cache (tested).

Next-token scoring (:meth:`TransformersBackend.next_token_logprobs`): batched forward passes over
left-padded prompts (positions counted over real tokens, as in ``loglikelihood``), the log-softmax
of the logits at the last position; a candidate's log-probability is the logsumexp over its first
token without and with a leading space (:meth:`Backend.candidate_tokens`). The prefix cache is not
used there: one forward pass per prompt has no decoding to amortise it over.
"""

from __future__ import annotations

import inspect
import logging
import time
from collections import OrderedDict
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import ClassVar, Mapping, Sequence

from uptrain import precision
from uptrain.annotate.backends.base import (Backend, BackendStats, ChatTemplatePrompts, Generation, GenerationParams,
                                            Messages)
from uptrain.annotate.backends.models import DEFAULT_LLM, load_llm, model_sha
from uptrain.errors import ConfigError

log = logging.getLogger("uptrain")

DTYPE_SETTING = "annotator.backend.dtype"


def _pick_device(device: str) -> str:
    import torch

    if device != "auto":
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def _pick_dtype(dtype, device: str) -> str:
    """'fp32' or 'bf16': what ``dtype`` (fp32 | bf16 | auto, or float32 / bfloat16) means on ``device``."""
    return precision.resolve_dtype(dtype, device, DTYPE_SETTING)


def _device_type(device: str) -> str:
    """'cuda:1' -> 'cuda': the kind of device changes numerics, which one of a kind does not."""
    return str(device).split(":", 1)[0]


class TransformersBackend(ChatTemplatePrompts, Backend):
    name = "transformers"
    #: the prefix cache changes what is computed, never the outputs (equal at fp32, tested)
    RUNTIME_KEYS: ClassVar[frozenset[str]] = Backend.RUNTIME_KEYS | {"prefix_cache", "min_prefix_tokens"}
    #: distinct prefixes whose keys and values are kept
    PREFIX_SLOTS = 4

    @classmethod
    def check_config(cls, config: Mapping) -> None:
        batch = config.get("batch_size", 8)
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ConfigError(f"annotator.backend.batch_size must be an integer of at least 1, got {batch!r}")
        _pick_dtype(config.get("dtype", "fp32"), _pick_device(str(config.get("device", "auto"))))

    @classmethod
    def config_spec(cls, config: Mapping) -> dict:
        """The config's output-determining settings, with the model's file hash and the dtype and
        device that ``auto`` resolves to here, as the constructor would pick them."""
        device = _pick_device(str(config.get("device", "auto")))
        dtype = _pick_dtype(config.get("dtype", "fp32"), device)
        return {
            **super().config_spec(config),
            "model_sha": model_sha(str(config.get("model", DEFAULT_LLM))),
            "dtype": dtype,
            "device": _device_type(device),
        }

    def __init__(
        self,
        model: str = DEFAULT_LLM,
        device: str = "auto",
        dtype: str = "fp32",
        batch_size: int = 8,
        max_context: int | None = None,
        cache_dir: str | Path | None = None,
        prefix_cache: bool = True,
        min_prefix_tokens: int = 8,
    ):
        import torch

        if batch_size < 1:
            raise ConfigError(f"annotator.backend.batch_size must be at least 1, got {batch_size}")
        self.model_name = model
        self.device = _pick_device(device)
        self.dtype = _pick_dtype(dtype, self.device)
        # bf16 is mixed precision: fp32 weights, bf16 matrix products under autocast (see the module doc)
        self.torch_dtype = torch.float32
        self.batch_size = batch_size
        self.prefix_cache = bool(prefix_cache)
        self.min_prefix_tokens = max(1, int(min_prefix_tokens))
        self._prefixes: OrderedDict[tuple, list] = OrderedDict()
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
        self.stats = BackendStats(extra={
            "truncated_prompts": 0, "dtype": self.dtype,
            # batches run, of them those with a shared prefix reused; distinct prefixes computed and
            # their tokens; prompt tokens served from a kept prefix (prefix length x rows)
            "prefix_cache": {"enabled": self.prefix_cache, "batches": 0, "batches_with_prefix": 0,
                             "prefixes_computed": 0, "prefix_tokens_computed": 0, "prompt_tokens_reused": 0},
        })
        self._torch = torch
        params = inspect.signature(self.model.forward).parameters
        # transformers 5 names the cache argument `cache`, earlier versions `past_key_values`
        self._cache_arg = "cache" if "cache" in params else "past_key_values"

    # --- identity and budgets -------------------------------------------------
    def spec(self) -> dict:
        return {
            "backend": self.name,
            "model": self.model_name,
            "model_sha": self.model_sha,
            "dtype": self.dtype,
            "device": _device_type(self.device),
            "max_context": self._max_context,
        }

    # --- prompts --------------------------------------------------------------
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

    def _pad_after_prefix(self, rows: list[list[int]], shared: int):
        """``[prefix][padding][rest]``: the shared prefix at positions 0.. of every row, the padding
        between it and each row's rest, masked (positions come from the mask, so they stay exact)."""
        torch = self._torch
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        prefix = torch.tensor(rows[0][:shared], dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, :shared] = prefix
            mask[i, :shared] = 1
            rest = row[shared:]
            ids[i, width - len(rest):] = torch.tensor(rest, dtype=torch.long)
            mask[i, width - len(rest):] = 1
        return ids.to(self.device), mask.to(self.device)

    def shared_prefix_length(self, rows: Sequence[Sequence[int]]) -> int:
        """Tokens every row starts with, leaving each row at least one token of its own (0 when
        shorter than ``min_prefix_tokens``, where reuse would not pay)."""
        if not rows:
            return 0
        first, shortest = rows[0], min(len(r) for r in rows)
        n = 0
        while n < shortest - 1 and all(r[n] == first[n] for r in rows):
            n += 1
        return n if n >= self.min_prefix_tokens else 0

    def _reusable_prefix(self, rows: list[list[int]]) -> int:
        """The prefix length to reuse for a batch: its rows' common prefix; for a lone row (nothing
        to share with) only a prefix already kept, so a whole prompt is never kept as a prefix."""
        if len(rows) > 1:
            return self.shared_prefix_length(rows)
        row = rows[0]
        kept = [len(p) for dtype, p in self._prefixes
                if dtype == self.dtype and len(p) < len(row) and tuple(row[:len(p)]) == p]
        return max(kept, default=0)

    def _prefix_states(self, prefix: tuple[int, ...]) -> list[tuple]:
        """Keys and values of ``prefix`` per layer (batch of one), computed once per distinct prefix
        (and precision: the states of an fp32 run are not those of a bf16 one)."""
        key = (self.dtype, prefix)
        cached = self._prefixes.get(key)
        if cached is not None:
            self._prefixes.move_to_end(key)
            return cached
        torch = self._torch
        ids = torch.tensor([prefix], dtype=torch.long, device=self.device)
        with torch.inference_mode(), precision.autocast(self.dtype, self.device):
            out = self.model(input_ids=ids, use_cache=True)
        cache = getattr(out, "cache", None)
        if cache is None:
            cache = out.past_key_values
        if hasattr(cache, "layers"):
            states = [(layer.keys, layer.values) for layer in cache.layers]
        elif hasattr(cache, "key_cache"):  # transformers 4.x DynamicCache
            states = list(zip(cache.key_cache, cache.value_cache))
        else:  # legacy tuples
            states = [(k, v) for k, v, *_ in cache]
        self._prefixes[key] = states
        while len(self._prefixes) > self.PREFIX_SLOTS:
            self._prefixes.popitem(last=False)
        info = self.stats.extra["prefix_cache"]
        info["prefixes_computed"] += 1
        info["prefix_tokens_computed"] += len(prefix)
        return states

    def _prefix_cache(self, states: list[tuple], rows: int):
        """A fresh cache holding ``states`` for ``rows`` rows (generation appends to it, not to ``states``)."""
        from transformers import DynamicCache

        data = [(k.expand(rows, *k.shape[1:]).contiguous(), v.expand(rows, *v.shape[1:]).contiguous())
                for k, v in states]
        try:
            return DynamicCache(ddp_cache_data=data)
        except TypeError:  # transformers 4.x
            return DynamicCache.from_legacy_cache(tuple(data))

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
        info = self.stats.extra["prefix_cache"]
        for b, batch in enumerate(self._batches([len(e) for e in encoded]) if encoded else []):
            rows = [encoded[i] for i in batch]
            shared = self._reusable_prefix(rows) if self.prefix_cache else 0
            extra = {}
            info["batches"] += 1
            if shared:
                states = self._prefix_states(tuple(rows[0][:shared]))
                ids, mask = self._pad_after_prefix(rows, shared)
                extra[self._cache_arg] = self._prefix_cache(states, len(rows))
                info["batches_with_prefix"] += 1
                info["prompt_tokens_reused"] += shared * len(rows)
            else:
                ids, mask = self._left_pad(rows)
            # Each batch gets its own seed so sampled outputs do not depend on earlier calls.
            rng = nullcontext() if params.greedy else self._seeded(params.seed + b)
            with torch.inference_mode(), precision.autocast(self.dtype, self.device), rng:
                out = self.model.generate(input_ids=ids, attention_mask=mask, generation_config=config, **extra)
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
    def next_token_logprobs(self, prompts: Sequence[Messages], candidates: Sequence[str],
                            prefix: str = "") -> list[dict[str, float]]:
        """Per prompt, each candidate's next-token log-probability (logsumexp over its variant tokens,
        :meth:`Backend.candidate_tokens`) after the chat prompt, its generation prompt and the token
        ids of ``prefix`` (tokenized alone, as the model would have generated them); one batched,
        left-padded forward pass per ``batch_size`` prompts, only the last position's logits kept."""
        torch = self._torch
        if not prompts:
            return []
        start = time.perf_counter()
        variants = self.candidate_tokens(candidates)
        tail = self.tokenizer(prefix, add_special_tokens=False)["input_ids"] if prefix else []
        encoded = []
        for messages in prompts:
            ids = self._prompt_ids(messages) + list(tail)
            if len(ids) > self._max_context:
                ids = ids[-self._max_context:]
                self._count_cut("next_token_logprobs", self._max_context)
            encoded.append(ids)
        flat = sorted({t for v in variants for t in v})
        column = {t: i for i, t in enumerate(flat)}
        index = torch.tensor(flat, dtype=torch.long, device=self.device)
        results: list[dict[str, float] | None] = [None] * len(encoded)
        for batch in self._batches([len(e) for e in encoded]):
            ids, mask = self._left_pad([encoded[i] for i in batch])
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            inputs = {"input_ids": ids, "attention_mask": mask, "position_ids": positions}
            with torch.inference_mode(), precision.autocast(self.dtype, self.device):
                try:
                    logits = self.model(**inputs, logits_to_keep=1).logits
                except TypeError:
                    logits = self.model(**inputs).logits
                logprobs = torch.log_softmax(logits[:, -1, :].float(), dim=-1)
                picked = logprobs.index_select(-1, index).cpu()
            for row, i in enumerate(batch):
                results[i] = {
                    cand: float(torch.logsumexp(picked[row, [column[t] for t in v]], dim=0))
                    for cand, v in zip(candidates, variants)
                }
        self.stats.prompts += len(encoded)
        self.stats.prompt_tokens += sum(len(e) for e in encoded)
        # prompts scored (one forward pass each, nothing decoded) and the batches they ran in
        info = self.stats.extra.setdefault("next_token", {"prompts": 0, "batches": 0})
        info["prompts"] += len(encoded)
        info["batches"] += len(self._batches([len(e) for e in encoded]))
        self.stats.seconds += time.perf_counter() - start
        return [r for r in results if r is not None]

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
            with torch.inference_mode(), precision.autocast(self.dtype, self.device):
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
