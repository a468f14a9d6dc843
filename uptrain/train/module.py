"""The one Lightning module that trains every model family.

A step asks the family for ``scores [B, N']`` and targets (``model.batch_scores``), then
applies the loss to the output and target it names (``loss.input``, ``loss.target``):
a bi-encoder scores each query against every passage of the batch, gathered across
devices under DDP (``cross_device``), with known positives of a query in another group
masked; a cross-encoder scores each query's own group. InfoNCE / Conj / Disj / KL see
a row of scores either way; the pointwise losses see pairs.
"""

from __future__ import annotations

import logging

import lightning as L
import torch

from uptrain.errors import ConfigError
from uptrain.model.base import RankingModel
from uptrain.model.batch import Gather, ScoredBatch, TrainItem, doc_hash  # noqa: F401  (doc_hash re-exported)

log = logging.getLogger("uptrain")


def GroupCollator(model: RankingModel):
    """The family's own collator (kept under its old name for scripts that build one)."""
    return model.collator()


def check_loss_fits(model: RankingModel, loss: torch.nn.Module) -> None:
    """Refuse a loss the model's outputs cannot feed, before any training step."""
    name = getattr(loss, "name", type(loss).__name__)
    if getattr(loss, "input", "scores") == "logits" and model.num_labels < 2:
        raise ConfigError(
            f"loss '{name}' classifies each pair into grades and needs a multi-class head; the "
            f"{model.family} gives one score per pair. Use model=cross_encoder with model.num_labels "
            "set to the number of grades, or a ranking loss (infonce, pointwise_bce)."
        )
    if getattr(loss, "single_logit", False) and model.num_labels > 1:
        raise ConfigError(
            f"loss '{name}' needs one logit per pair; this cross-encoder has num_labels={model.num_labels}. "
            "Use model.num_labels=1, or loss=pointwise_ce for graded labels."
        )


class RankerModule(L.LightningModule):
    def __init__(
        self,
        model: RankingModel,
        loss: torch.nn.Module,
        lr: float = 2e-5,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        in_batch_negatives: bool = True,
        cross_device: bool = True,
        head_lr_scale: float = 1.0,
    ):
        super().__init__()
        check_loss_fits(model, loss)
        if head_lr_scale <= 0:
            raise ConfigError(f"train.head_lr_scale must be > 0, got {head_lr_scale}")
        self.head_lr_scale = float(head_lr_scale)
        self.model = model
        self.loss_fn = loss
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.warmup_ratio = float(warmup_ratio)
        self.in_batch_negatives = bool(in_batch_negatives) and model.supports_in_batch_negatives
        self.cross_device = bool(cross_device)
        if in_batch_negatives and not model.supports_in_batch_negatives:
            log.info("[train] a %s has no in-batch negatives: each query trains on its own group of passages "
                     "(train.in_batch_negatives=true does not apply)", model.family)

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

    def gather(self) -> Gather | None:
        """The cross-device gather for in-batch negatives, or None on one process."""
        if not (self.cross_device and self.in_batch_negatives) or self._world_size() < 2:
            return None
        return Gather(self.all_gather, self.global_rank, self._world_size())

    def score_batch(self, batch: dict) -> ScoredBatch:
        return self.model.batch_scores(batch, self.gather(), self.in_batch_negatives)

    def loss_inputs(self, out: ScoredBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(the model output, the target) that the loss reads, with a clear error when absent."""
        name = getattr(self.loss_fn, "name", type(self.loss_fn).__name__)
        kind = getattr(self.loss_fn, "input", "scores")
        target = getattr(self.loss_fn, "target", "positive")
        inputs = out.logits if kind == "logits" else out.scores
        if target not in out.targets:
            raise ConfigError(
                f"loss '{name}' needs '{target}' labels, which this batch does not carry"
                + (": the label source gives no grades (TrainItem.grades); graded labels come from a graded "
                   "label source (e.g. human qrels with grades)" if target == "grade" else "")
            )
        return inputs, out.targets[target]

    def scores_and_labels(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """What the loss is applied to: scores [B, N'] (or logits [B, N', C]) and its labels."""
        return self.loss_inputs(self.score_batch(batch))

    def compute_loss(self, batch: dict) -> tuple[torch.Tensor, ScoredBatch]:
        out = self.score_batch(batch)
        inputs, labels = self.loss_inputs(out)
        w = out.weights
        weights = None if w is None or bool((w == 1).all()) else w.to(inputs.device)
        return self.loss_fn(inputs, labels, weights=weights), out

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, out = self.compute_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=out.scores.shape[0])
        return loss

    def configure_optimizers(self):
        from transformers import get_linear_schedule_with_warmup

        no_decay = ("bias", "LayerNorm.weight", "layer_norm", "norm.weight")
        # a fresh scoring head starts from noise while the backbone is pretrained: it may learn faster
        fresh = tuple(f"model.{p}" for p in self.model.fresh_parameter_prefixes)
        groups: dict[tuple[bool, bool], list] = {}
        loss_params = []  # a loss's own parameters (DLA's propensity model): its lr, no weight decay
        for n, p in self.named_parameters():
            if n.startswith("loss_fn."):
                loss_params.append(p)
                continue
            groups.setdefault((n.startswith(fresh) if fresh else False, any(k in n for k in no_decay)), []).append(p)
        params = [
            {"params": ps, "weight_decay": 0.0 if nd else self.weight_decay,
             "lr": self.lr * (self.head_lr_scale if is_fresh else 1.0)}
            for (is_fresh, nd), ps in sorted(groups.items())
        ]
        if loss_params:
            params.append({"params": loss_params, "weight_decay": 0.0, "lr": float(getattr(self.loss_fn, "lr", self.lr))})
        opt = torch.optim.AdamW(params, lr=self.lr)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = get_linear_schedule_with_warmup(opt, int(self.warmup_ratio * total), total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


BiEncoderModule = RankerModule  # the name before the cross-encoder joined
