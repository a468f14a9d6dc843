"""Lightning module for contrastive bi-encoder training.

Each query is scored against every passage of the batch: its own group
(sampled positives + hard negatives) and, as in-batch negatives, the groups of
the other queries, gathered across devices under DDP (``cross_device``). Known
positives of a query that show up in another query's group are masked out
(score -inf) rather than used as negatives.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import lightning as L
import torch

from uptrain.model.biencoder import BiEncoder
from uptrain.train.dataset import TrainItem


def doc_hash(doc_id: str) -> int:
    # a process-independent int64 id, so masks agree across DDP ranks
    return int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "little", signed=True)


@dataclass
class GroupCollator:
    """Tokenises a list of TrainItems into query/passage tensors and the local label matrix."""

    model: BiEncoder

    def __call__(self, items: Sequence[TrainItem]) -> dict:
        queries = [it.query for it in items]
        passages = [p for it in items for p in it.passages]
        n_p = len(passages)
        pos_cols = torch.zeros(len(items), n_p, dtype=torch.bool)
        col = 0
        for i, it in enumerate(items):
            for j, is_pos in enumerate(it.is_positive):
                pos_cols[i, col + j] = is_pos
            col += len(it.passages)
        batch = {
            "q": dict(self.model.tokenize(queries, "query")),
            "p": dict(self.model.tokenize(passages, "passage")),
            "pos_cols": pos_cols,
            "p_hash": torch.tensor([doc_hash(d) for it in items for d in it.doc_ids], dtype=torch.long),
            "q_pos_hashes": [[doc_hash(d) for d in it.all_positives] for it in items],
        }
        if any(it.utilities is not None for it in items):
            # soft labels (REPLUG): a query's utilities over its own group, -inf (no utility) elsewhere
            util = torch.full((len(items), n_p), float("-inf"))
            col = 0
            for i, it in enumerate(items):
                if it.utilities is not None:
                    util[i, col : col + len(it.utilities)] = torch.tensor(it.utilities)
                col += len(it.passages)
            batch["util_cols"] = util
        return batch


class BiEncoderModule(L.LightningModule):
    def __init__(
        self,
        model: BiEncoder,
        loss: torch.nn.Module,
        lr: float = 2e-5,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        in_batch_negatives: bool = True,
        cross_device: bool = True,
    ):
        super().__init__()
        self.model = model
        self.loss_fn = loss
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.warmup_ratio = float(warmup_ratio)
        self.in_batch_negatives = bool(in_batch_negatives)
        self.cross_device = bool(cross_device)

    def on_fit_start(self) -> None:
        # from_pretrained returns the encoder in eval mode; Lightning keeps submodule modes
        self.model.train()

    def on_train_epoch_start(self) -> None:
        loader = self.trainer.train_dataloader
        dataset = getattr(loader, "dataset", None)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(self.current_epoch)

    def _world_size(self) -> int:
        trainer = getattr(self, "_trainer", None)  # None outside trainer.fit (scoring a batch directly)
        return trainer.world_size if trainer is not None else 1

    def scores_and_labels(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores [B, N] over every passage of the batch (all ranks), masked; labels multi-hot,
        or float utilities (-inf: none) when the batch carries soft labels."""
        q = self.model(**batch["q"])
        p = self.model(**batch["p"])
        p_hash = batch["p_hash"]
        offset = 0
        if self.cross_device and self.in_batch_negatives and self._world_size() > 1:
            # sync_grads: gradients flow back to the rank that encoded each passage
            p = self.all_gather(p, sync_grads=True).flatten(0, 1)
            p_hash = self.all_gather(p_hash).flatten(0, 1)
            offset = self.global_rank * batch["p_hash"].shape[0]
        scores = self.model.score(q, p)
        n_local = batch["pos_cols"].shape[1]
        labels = torch.zeros_like(scores, dtype=torch.bool)
        labels[:, offset : offset + n_local] = batch["pos_cols"]
        keep = torch.ones_like(labels)
        if not self.in_batch_negatives:
            keep[:] = False
            group = n_local // q.shape[0]
            for i in range(q.shape[0]):
                keep[i, offset + i * group : offset + (i + 1) * group] = True
        for i, hashes in enumerate(batch["q_pos_hashes"]):
            if hashes:
                known = torch.isin(p_hash, torch.tensor(hashes, device=p_hash.device))
                keep[i] &= ~(known & ~labels[i])
        scores = scores.masked_fill(~keep, float("-inf"))
        if "util_cols" in batch:  # soft labels: utilities in the local columns, no utility elsewhere
            util = torch.full(scores.shape, float("-inf"), dtype=scores.dtype, device=scores.device)
            util[:, offset : offset + n_local] = batch["util_cols"].to(scores.dtype)
            return scores, util
        return scores, labels

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        scores, labels = self.scores_and_labels(batch)
        loss = self.loss_fn(scores, labels)
        self.log("train/loss", loss, prog_bar=True, batch_size=scores.shape[0])
        return loss

    def configure_optimizers(self):
        from transformers import get_linear_schedule_with_warmup

        no_decay = ("bias", "LayerNorm.weight", "layer_norm", "norm.weight")
        params = [
            {"params": [p for n, p in self.named_parameters() if not any(k in n for k in no_decay)],
             "weight_decay": self.weight_decay},
            {"params": [p for n, p in self.named_parameters() if any(k in n for k in no_decay)],
             "weight_decay": 0.0},
        ]
        opt = torch.optim.AdamW(params, lr=self.lr)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = get_linear_schedule_with_warmup(opt, int(self.warmup_ratio * total), total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
