"""InfoNCE with one positive (van den Oord et al., 2018; the baseline of arXiv 2504.05220)."""

from __future__ import annotations

import torch

from uptrain.losses.base import RankingLoss, masked_logsumexp, register


@register("infonce")
class InfoNCE(RankingLoss):
    """L = -log( exp(s_p) / (exp(s_p) + sum_{n in N} exp(s_n)) ).

    With several positives in a row, each positive is contrasted with the negatives
    only (the other positives are left out of its denominator) and the row's loss is
    the mean over its positives; with one positive this is the textbook InfoNCE, and
    equals cross-entropy over the row.
    """

    def row_loss(self, scores: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        finite = torch.isfinite(scores)
        neg = finite & ~pos
        lse_neg = masked_logsumexp(scores, neg)  # [B], -inf when no negative
        s_pos = scores.masked_fill(~pos, 0.0)
        # log(exp(s_p) + exp(lse_neg)) for every column, used only at positive columns
        denom = torch.logaddexp(s_pos, lse_neg.unsqueeze(1).expand_as(s_pos))
        per_pos = (denom - s_pos) * pos
        return per_pos.sum(1) / pos.sum(1)
