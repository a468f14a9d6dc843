"""The one Lightning module that trains every model family.

A step asks the family for ``scores [B, N']`` and targets (``model.batch_scores``), then
applies the loss to the output and target it names (``loss.input``, ``loss.target``):
a bi-encoder scores each query against every passage of the batch, gathered across
devices under DDP (``cross_device``), with known positives of a query in another group
masked; a cross-encoder scores each query's own group. InfoNCE / Conj / Disj / KL see
a row of scores either way; the pointwise losses see pairs.

A FAMOL phase whose objectives have their own losses or whose weights are learned
(:mod:`uptrain.labels.frequency`) trains through :class:`FamolObjective`: its rows carry their
objective and frequency bucket (:class:`~uptrain.labels.frequency.FamolRowId` query ids), and its
plan comes from the training dataset (``GroupDataset.famol``), given as ``famol=`` or found in
:meth:`RankerModule.setup` on the dataloader passed to ``Trainer.fit``.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Sequence

import lightning as L
import torch
from torch import nn

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


def loss_inputs(out: ScoredBatch, loss: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """(the model output, the target) that ``loss`` reads, with a clear error when absent."""
    name = getattr(loss, "name", type(loss).__name__)
    kind = getattr(loss, "input", "scores")
    target = getattr(loss, "target", "positive")
    inputs = out.logits if kind == "logits" else out.scores
    if target not in out.targets:
        raise ConfigError(
            f"loss '{name}' needs '{target}' labels, which this batch does not carry"
            + (": the label source gives no grades (TrainItem.grades); graded labels come from a graded "
               "label source (e.g. human qrels with grades)" if target == "grade" else "")
        )
    return inputs, out.targets[target]


def _query_weights(w: torch.Tensor | None, device) -> torch.Tensor | None:
    """The loss's ``weights`` argument: None when every weight is 1 (as the plain training path does)."""
    return None if w is None or bool((w == 1).all()) else w.to(device)


class FamolObjective(nn.Module):
    """FAMOL's objective over a batch whose rows say their objective o and bucket b.

    Fixed weights (the examples' weights W_i carry w or 1 - w): L = sum_o (S_o / S) L_o(rows of o),
    S_o the sum of W over o's rows, S over all rows, L_o objective o's loss (its own, or the phase's)
    as the weighted mean over its rows. Learned weights (Kendall, Gal & Cipolla, CVPR 2018):
    L = sum_{(b, o) in the batch} exp(-s_{b,o}) L_o(rows of b and o) + s_{b,o}, with ``log_variance``
    [buckets, 2] = s (column 0 the click objective, 1 the LLM one) initialised from the plan's
    w_b^0 as s_{b,click} = -ln w_b^0, s_{b,llm} = -ln(1 - w_b^0). The effective click weight is
    :meth:`click_weights`. The learned loss is a sum over the batch's (bucket, objective) terms, as
    Kendall et al.'s is over tasks, not their mean: the ranker's gradient is up to 2 x buckets terms,
    each weighted by exp(-s). See :mod:`uptrain.labels.frequency` for the definitions.
    """

    def __init__(self, plan):
        super().__init__()
        from uptrain.labels.frequency import OBJECTIVES
        from uptrain.losses import get_loss

        self.plan = plan
        self.objectives = tuple(OBJECTIVES)
        self.own_losses = nn.ModuleDict({
            o: get_loss(s["name"], **{k: v for k, v in s.items() if k != "name"})
            for o, s in (plan.losses or {}).items() if s
        })
        self.buckets = list(plan.buckets) if plan.learned else []
        if plan.learned:
            w = torch.tensor([float(plan.init[b]) for b in self.buckets], dtype=torch.float64)
            if not bool(((w > 0) & (w < 1)).all()):
                raise ConfigError(f"famol: learned weights start in (0, 1), got {dict(plan.init)}")
            self.log_variance = nn.Parameter(torch.stack([-torch.log(w), -torch.log1p(-w)], dim=1).float())
        else:
            self.register_parameter("log_variance", None)

    def loss_of(self, objective: str, phase_loss: torch.nn.Module) -> torch.nn.Module:
        return self.own_losses[objective] if objective in self.own_losses else phase_loss

    @torch.no_grad()
    def click_weights(self) -> dict[str, float]:
        """w_b = exp(-s_{b,click}) / (exp(-s_{b,click}) + exp(-s_{b,llm})) per bucket (learned weights)."""
        if self.log_variance is None:
            return {}
        s = self.log_variance.detach().double()
        w = torch.sigmoid(s[:, 1] - s[:, 0])
        return {b: float(w[k]) for k, b in enumerate(self.buckets)}

    @torch.no_grad()
    def log_variances(self) -> dict[str, list[float]]:
        if self.log_variance is None:
            return {}
        return {b: [float(x) for x in self.log_variance[k]] for k, b in enumerate(self.buckets)}

    def forward(self, out: ScoredBatch, rows: Sequence[Any], phase_loss: torch.nn.Module
                ) -> tuple[torch.Tensor, dict[str, float]]:
        """(the batch's loss, each term's L before weighting: ``"o"`` or ``"o:b"`` -> value)."""
        if len(rows) != out.scores.shape[0]:
            raise ValueError(f"famol: {len(rows)} row tags for a batch of {out.scores.shape[0]} queries")
        unknown = sorted({r.objective for r in rows} - set(self.objectives))
        if unknown:
            raise ValueError(f"famol: rows of unknown objective(s) {unknown}")
        device = out.scores.device
        weights = out.weights.to(device).float() if out.weights is not None else torch.ones(len(rows), device=device)
        parts: dict[str, float] = {}
        if self.log_variance is None:
            total = out.scores.new_zeros(())
            mass = weights.sum()
            for o in self.objectives:
                idx = [i for i, r in enumerate(rows) if r.objective == o]
                if not idx:
                    continue
                loss = self.loss_of(o, phase_loss)
                inputs, target = loss_inputs(out, loss)
                sel = torch.tensor(idx, device=device)
                w = weights[sel]
                term = loss(inputs[sel], target[sel], weights=_query_weights(w, device)).float()
                total = total + (w.sum() / mass) * term
                parts[o] = float(term.detach())
            return total, parts
        s = self.log_variance
        total = s.sum() * 0.0  # every s takes part in the graph (DDP expects a gradient for each parameter)
        index = {b: k for k, b in enumerate(self.buckets)}
        for b in dict.fromkeys(r.bucket for r in rows):
            if b not in index:
                raise ValueError(f"famol: a row of bucket '{b}', which the learned weights do not have "
                                 f"({self.buckets})")
            for j, o in enumerate(self.objectives):
                idx = [i for i, r in enumerate(rows) if r.objective == o and r.bucket == b]
                if not idx:
                    continue
                loss = self.loss_of(o, phase_loss)
                inputs, target = loss_inputs(out, loss)
                sel = torch.tensor(idx, device=device)
                term = loss(inputs[sel], target[sel], weights=_query_weights(weights[sel], device)).float()
                s_bo = s[index[b], j]
                total = total + torch.exp(-s_bo) * term + s_bo
                parts[f"{o}:{b}"] = float(term.detach())
        return total, parts


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
        famol: Any = None,
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
        # FAMOL with per-objective losses or learned weights: the plan given here, or found in setup()
        self.famol: FamolObjective | None = None
        self.famol_trajectory: list[dict] = []
        self._famol_sums: dict[str, list[float]] = {}  # each term's L per batch since the last record
        self._famol_parts: dict[str, float] = {}
        if famol is not None:
            self._build_famol(famol)

    # ---- FAMOL ---------------------------------------------------------------------------------
    def _build_famol(self, plan) -> None:
        objective = FamolObjective(plan)
        for loss in objective.own_losses.values():
            check_loss_fits(self.model, loss)
        self.famol = objective

    def setup(self, stage: str) -> None:
        """Find the FAMOL plan of the training data (``GroupDataset.famol``) before the optimisers are
        made and a checkpoint is restored: the learned weights are parameters of this module."""
        if self.famol is not None or stage != "fit":
            return
        source = getattr(getattr(self.trainer, "fit_loop", None), "_data_source", None)
        dataset = getattr(getattr(source, "instance", None), "dataset", None)
        plan = getattr(dataset, "famol", None)
        if plan is not None:
            self._build_famol(plan)

    def _famol_rows(self, batch: dict) -> list | None:
        from uptrain.labels.frequency import FamolRowId

        ids = batch.get("query_ids") or []
        tagged = [q for q in ids if isinstance(q, FamolRowId)]
        if not tagged:
            if self.famol is not None:
                raise ConfigError("this module trains a FAMOL objective, and the batch's rows carry no objective "
                                  "(FamolRowId query ids): train it on the FAMOL source's own examples")
            return None
        if self.famol is None:
            raise ConfigError(
                "the batch's rows are FAMOL rows with per-objective losses or learned weights, and this module "
                "has no FAMOL plan: give RankerModule(famol=dataset.famol), or fit it on the GroupDataset's "
                "DataLoader (the plan is read from it in setup)")
        if len(tagged) != len(ids):
            raise ValueError(f"famol: {len(ids) - len(tagged)} of {len(ids)} rows of a batch carry no objective")
        return tagged

    def _famol_record_point(self, epoch_end: bool = False) -> None:
        if self.famol is None:
            return
        step = int(self.global_step)
        if self.famol_trajectory and self.famol_trajectory[-1]["step"] == step:
            if epoch_end:  # this step is recorded (every record_every steps): mark it, nothing changed since
                self.famol_trajectory[-1]["epoch_end"] = True
            return
        point: dict[str, Any] = {"step": step, "epoch": int(self.current_epoch)}
        if self.famol.log_variance is not None:
            point["w"] = {b: round(w, 6) for b, w in self.famol.click_weights().items()}
            point["log_variance"] = {b: [round(x, 6) for x in v] for b, v in self.famol.log_variances().items()}
        point["mean_loss"] = {k: round(sum(v) / len(v), 6) for k, v in sorted(self._famol_sums.items()) if v}
        point["batches"] = max((len(v) for v in self._famol_sums.values()), default=0)
        if epoch_end:
            point["epoch_end"] = True
        self.famol_trajectory.append(point)
        self._famol_sums = {}

    def famol_record(self) -> dict | None:
        """What the FAMOL phase learned: per-bucket click weights at the end (``final``) and their
        ``trajectory`` (step 0, every ``record_every`` optimiser steps, each epoch's end); None without FAMOL."""
        if self.famol is None:
            return None
        plan = self.famol.plan
        rec: dict[str, Any] = {
            "weighting": "learned" if plan.learned else "fixed (in the examples' weights)",
            "losses": {o: (dict(s) if s else "the phase's loss") for o, s in plan.losses.items()},
            "record_every": plan.record_every,
        }
        if plan.learned:
            rec.update({
                "scheme": "homoscedastic uncertainty (Kendall, Gal & Cipolla, CVPR 2018): "
                          "L = sum_{b,o} exp(-s_{b,o}) L_{b,o} + s_{b,o}; w_b = sigmoid(s_{b,llm} - s_{b,click})",
                "buckets": list(plan.buckets), "lr": plan.lr,
                "init": {b: round(float(plan.init[b]), 6) for b in plan.buckets},
                "final": {b: round(w, 6) for b, w in self.famol.click_weights().items()},
                "final_log_variance": {b: [round(x, 6) for x in v] for b, v in self.famol.log_variances().items()},
            })
        rec["trajectory"] = list(self.famol_trajectory)
        return rec

    def on_train_start(self) -> None:
        if self.famol is not None and not self.famol_trajectory:
            self._famol_record_point()  # step 0: the initial weights

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        if self.famol is None:
            return
        if int(self.global_step) % self.famol.plan.record_every == 0:
            self._famol_record_point()  # once per optimiser step (accumulated batches share the step)

    def on_train_epoch_end(self) -> None:
        if self.famol is not None:
            self._famol_record_point(epoch_end=True)

    def on_train_end(self) -> None:
        """Rank 0 adds :meth:`famol_record` to the phase's progress record (``progress.json``, which the
        training stage copies into ``train_stats.json``: key ``famol``)."""
        if self.famol is None:
            return
        self._famol_record_point()  # the last step, unless it is recorded already
        if not self.trainer.is_global_zero:
            return
        from uptrain.train.stage import ProgressFile

        record = self.famol_record()
        for cb in self.trainer.callbacks:
            if isinstance(cb, ProgressFile) and cb.path.is_file():
                progress = json.loads(cb.path.read_text())
                progress["famol"] = record
                cb.path.write_text(json.dumps(progress))
        if record.get("final"):
            log.info("[train] famol learned click weights w_b: %s (from %s)", record["final"], record["init"])

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.famol is not None:
            checkpoint["famol"] = {"trajectory": self.famol_trajectory, "sums": self._famol_sums}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        saved = checkpoint.get("famol")
        if saved:
            self.famol_trajectory = list(saved.get("trajectory") or [])
            self._famol_sums = {k: list(v) for k, v in (saved.get("sums") or {}).items()}

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
        return loss_inputs(out, self.loss_fn)

    def scores_and_labels(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """What the loss is applied to: scores [B, N'] (or logits [B, N', C]) and its labels."""
        return self.loss_inputs(self.score_batch(batch))

    def compute_loss(self, batch: dict) -> tuple[torch.Tensor, ScoredBatch]:
        rows = self._famol_rows(batch)
        out = self.score_batch(batch)
        if rows is not None:
            loss, parts = self.famol(out, rows, self.loss_fn)
            self._famol_parts = parts
            return loss, out
        inputs, labels = self.loss_inputs(out)
        return self.loss_fn(inputs, labels, weights=_query_weights(out.weights, inputs.device)), out

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, out = self.compute_loss(batch)
        n = out.scores.shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        if self.famol is not None:
            for key, value in self._famol_parts.items():
                self._famol_sums.setdefault(key, []).append(value)
                self.log(f"famol/loss_{key}", value, batch_size=n)
            for b, w in self.famol.click_weights().items():
                self.log(f"famol/w_{b}", w, batch_size=n)
        return loss

    def configure_optimizers(self):
        from transformers import get_linear_schedule_with_warmup

        no_decay = ("bias", "LayerNorm.weight", "layer_norm", "norm.weight")
        # a fresh scoring head starts from noise while the backbone is pretrained: it may learn faster
        fresh = tuple(f"model.{p}" for p in self.model.fresh_parameter_prefixes)
        groups: dict[tuple[bool, bool], list] = {}
        loss_params = []  # a loss's own parameters (DLA's propensity model): its lr, no weight decay
        famol_params = []  # FAMOL's learned log variances s: their own lr (the plan's), no weight decay
        for n, p in self.named_parameters():
            if n.startswith("loss_fn.") or n.startswith("famol.own_losses."):
                loss_params.append(p)
                continue
            if n == "famol.log_variance":
                famol_params.append(p)
                continue
            groups.setdefault((n.startswith(fresh) if fresh else False, any(k in n for k in no_decay)), []).append(p)
        params = [
            {"params": ps, "weight_decay": 0.0 if nd else self.weight_decay,
             "lr": self.lr * (self.head_lr_scale if is_fresh else 1.0)}
            for (is_fresh, nd), ps in sorted(groups.items())
        ]
        if loss_params:
            params.append({"params": loss_params, "weight_decay": 0.0, "lr": float(getattr(self.loss_fn, "lr", self.lr))})
        if famol_params:
            params.append({"params": famol_params, "weight_decay": 0.0, "lr": float(self.famol.plan.lr)})
        opt = torch.optim.AdamW(params, lr=self.lr)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        sched = get_linear_schedule_with_warmup(opt, int(self.warmup_ratio * total), total)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


BiEncoderModule = RankerModule  # the name before the cross-encoder joined
