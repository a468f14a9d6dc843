"""KL(U || R): the retriever's distribution R matched to a utility distribution U (REPLUG, Shi et al. 2023)."""

from __future__ import annotations

import torch

from uptrain.losses.base import RankingLoss, check_shapes, masked_logsumexp, register, weighted_mean, zero_loss


@register("kl")
class KLDivergence(RankingLoss):
    """L = sum_j U_j (log U_j - log R_j), U = softmax(u / tau_u), R = softmax(s) over the row.

    ``labels`` here are float utility scores u (e.g. answer log-likelihoods given query
    and passage), tau_u is ``target_temperature``. Columns whose utility is not finite
    (-inf or NaN marks "no utility"), or whose score is -inf (a masked column), get
    U_j = 0 and are left out of both softmaxes; rows with no usable column are ignored
    and the result is the mean over the remaining rows.
    """

    target = "utility"

    def __init__(self, target_temperature: float = 1.0):
        super().__init__()
        if target_temperature <= 0:
            raise ValueError(f"target_temperature must be > 0, got {target_temperature}")
        self.target_temperature = float(target_temperature)

    def extra_repr(self) -> str:
        return f"target_temperature={self.target_temperature}"

    def forward(self, scores: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        check_shapes(scores, labels)
        u = labels.to(scores.dtype)
        valid = torch.isfinite(u) & torch.isfinite(scores)
        rows = valid.any(dim=1)
        if not rows.any():
            return zero_loss(scores)
        s, u, valid = scores[rows], u[rows], valid[rows]
        u = (u / self.target_temperature).masked_fill(~valid, 0.0)
        log_u = u - masked_logsumexp(u, valid).unsqueeze(1)
        log_r = s.masked_fill(~valid, 0.0) - masked_logsumexp(s, valid).unsqueeze(1)
        # exp of -inf, not exp(x) * 0: a masked log_u can exceed float range (utilities are
        # log-likelihoods in the hundreds), and inf * 0 would put NaN into the gradient
        p_u = log_u.masked_fill(~valid, float("-inf")).exp()
        kl = (p_u * (log_u - log_r)).masked_fill(~valid, 0.0).sum(1)
        return weighted_mean(kl, weights, rows)
