"""Pointwise losses: each (query, passage) pair is classified on its own (cross-encoder fine-tuning).

Binary cross-entropy over positive / negative, and multi-class cross-entropy over graded
labels (the Pinterest relevance judge: a cross-encoder fine-tuned on human grades).
Both average over labelled pairs, not over queries: a pointwise loss has no row-level
softmax, so every pair counts once (weighted by its query's weight when weights are given).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from uptrain.losses.base import RankingLoss, check_shapes, register, zero_loss


def _pair_mean(per_pair: torch.Tensor, valid: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """sum_i w_i sum_{j in V_i} l_ij / sum_i w_i |V_i| (w = 1 without weights)."""
    w = valid.to(per_pair.dtype)
    if weights is not None:
        if weights.shape != per_pair.shape[:1] or (weights < 0).any():
            raise ValueError(f"weights must be non-negative, one per query: got shape {tuple(weights.shape)}")
        w = w * weights.to(per_pair.device, per_pair.dtype).unsqueeze(1)
    return (per_pair.masked_fill(~valid, 0.0) * w).sum() / w.sum().clamp(min=torch.finfo(per_pair.dtype).tiny)


@register("pointwise_bce")
class PointwiseBCE(RankingLoss):
    """L = mean over pairs (i, j) with a finite score of
    -[y_ij log sigma(s_ij) + (1 - y_ij) log(1 - sigma(s_ij))] = softplus(s_ij) - y_ij s_ij,
    with ``pos_weight`` multiplying the positive term (class imbalance: one positive per group).

    ``scores`` [B, N] are logits (a cross-encoder's one-logit head; a bi-encoder's
    similarity / temperature), ``labels`` [B, N] multi-hot. -inf columns are left out.
    """

    single_logit = True  # the scores must be a logit, not a C-class head's expected grade

    def __init__(self, pos_weight: float = 1.0):
        super().__init__()
        if pos_weight <= 0:
            raise ValueError(f"pos_weight must be > 0, got {pos_weight}")
        self.pos_weight = float(pos_weight)

    def forward(self, scores: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        check_shapes(scores, labels)
        valid = torch.isfinite(scores)
        if not valid.any():
            return zero_loss(scores)
        y = labels.to(scores.dtype)
        s = scores.masked_fill(~valid, 0.0)
        # -log sigma(s) = softplus(-s), -log(1 - sigma(s)) = softplus(s): stable for large |s|
        per_pair = self.pos_weight * y * F.softplus(-s) + (1.0 - y) * F.softplus(s)
        return _pair_mean(per_pair, valid, weights)


@register("pointwise_ce")
class PointwiseCE(RankingLoss):
    """L = mean over graded pairs (i, j) of -log softmax(z_ij)_{g_ij}.

    ``logits`` [B, N, C] (a cross-encoder with ``num_labels: C``), ``grades`` [B, N]
    integers in 0..C-1; -1 marks a pair without a grade, left out.
    """

    input = "logits"
    target = "grade"

    def forward(self, logits: torch.Tensor, grades: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        if logits.dim() != 3:
            raise ValueError(
                f"pointwise_ce needs logits [queries, passages, grades], got shape {tuple(logits.shape)}: "
                "use a model with num_labels = the number of grades (model=cross_encoder model.num_labels=C)"
            )
        if grades.shape != logits.shape[:2]:
            raise ValueError(f"grades shape {tuple(grades.shape)} does not match logits {tuple(logits.shape[:2])}")
        if grades.is_floating_point():
            raise ValueError(f"grades must be integers (0..C-1, -1 for none), got {grades.dtype}")
        if not logits.is_floating_point():
            raise ValueError(f"logits must be a float tensor, got {logits.dtype}")
        c = logits.shape[-1]
        if (grades >= c).any() or (grades < -1).any():
            raise ValueError(f"grades must lie in 0..{c - 1} (or -1 for none); got {sorted(set(grades.flatten().tolist()))}")
        valid = grades >= 0
        if not valid.any():
            return zero_loss(logits)
        nll = -logits.log_softmax(-1).gather(-1, grades.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return _pair_mean(nll, valid, weights)
