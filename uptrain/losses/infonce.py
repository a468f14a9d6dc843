"""InfoNCE with one positive (van den Oord et al., 2018; the baseline of arXiv 2504.05220)."""

from __future__ import annotations

import torch

from uptrain.losses.base import RankingLoss, masked_logsumexp, register


@register("infonce")
class InfoNCE(RankingLoss):
    """l = (1 / |P|) * sum_{p in P} -log( exp(s_p) / (exp(s_p) + sum_{n in Nn} exp(s_n)) ).

    With one positive this is the textbook InfoNCE, and equals cross-entropy over the
    row. With several positives in a row (multi-hot labels), each positive is
    contrasted with the negatives only (the other positives are left out of its
    denominator, so positives never push each other down) and the row's loss is the
    mean over its positives, so a row weighs the same whatever its number of positives.

    With one positive the denominator is the whole row's logsumexp, computed exactly as
    Conj- and Disj-InfoNCE compute it: the three are then one function, to the bit, and so
    are their gradients (the loss sweep's identity holds for trained weights, not only in exact arithmetic).
    """

    def row_loss(self, scores: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        finite = torch.isfinite(scores)
        neg = finite & ~pos
        lse_neg = masked_logsumexp(scores, neg)  # [B], -inf when no negative
        s_pos = scores.masked_fill(~pos, 0.0)
        # log(exp(s_p) + exp(lse_neg)) for every column, used only at positive columns
        denom = torch.logaddexp(s_pos, lse_neg.unsqueeze(1).expand_as(s_pos))
        single = pos.sum(1, keepdim=True) == 1  # then exp(s_p) + sum_neg exp(s_n) is the whole row's sum
        denom = torch.where(single, masked_logsumexp(scores, finite).unsqueeze(1), denom)
        per_pos = (denom - s_pos) * pos
        return per_pos.sum(1) / pos.sum(1)
