"""Conj-InfoNCE: every positive must win the softmax (arXiv 2504.05220, multi-positive training)."""

from __future__ import annotations

import torch

from uptrain.losses.base import RankingLoss, masked_logsumexp, register


@register("conj_infonce")
class ConjInfoNCE(RankingLoss):
    """L = -sum_{p in P} log softmax(s)_p, the softmax over all columns (positives included).

    A sum, not a mean, over positives: queries with more LLM positives weigh more.
    """

    def row_loss(self, scores: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        lse_all = masked_logsumexp(scores, torch.isfinite(scores))
        s_pos = scores.masked_fill(~pos, 0.0)
        return ((lse_all.unsqueeze(1) - s_pos) * pos).sum(1)
