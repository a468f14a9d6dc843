"""Disj-InfoNCE: the positives together must win the softmax (arXiv 2504.05220)."""

from __future__ import annotations

import torch

from uptrain.losses.base import RankingLoss, masked_logsumexp, register


@register("disj_infonce")
class DisjInfoNCE(RankingLoss):
    """L = -log sum_{p in P} softmax(s)_p = logsumexp(s) - logsumexp(s_P).

    Any one positive ranked high is enough, so noisy LLM positives cost little.
    """

    def row_loss(self, scores: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        lse_all = masked_logsumexp(scores, torch.isfinite(scores))
        return lse_all - masked_logsumexp(scores, pos)
