"""Unbiased learning to rank from logged clicks: naive, IPS (pointwise and listwise) and DLA.

Every loss here reads the ``click`` target [B, N, 3] (see :mod:`uptrain.model.batch`): per
column, whether it was clicked, the rank k it was shown at (0-based; -1: not shown, left
out) and its examination propensity theta_k = P(E = 1 | k) (NaN: unknown). A row is one
logged SERP. The estimators follow the names of ULTRA and the Baidu-ULTR kit:

``naive_pointwise``  BCE of sigma(s) against the click: position bias is learned as relevance.
``ips_pointwise``    BCE against the inverse-propensity-weighted click c / theta_k (Joachims et
                     al. 2017's IPS; unbiased for P(R = 1) under the position-based model):
                     l = (c / theta) softplus(-s) + (1 - c / theta) softplus(s).
``naive_listwise``   -sum_{clicked i} log softmax(s)_i over the row's shown columns.
``ips_listwise``     the same with weights w_i = theta_1 / theta_{k_i} (Ai et al. 2018's IPW,
                     normalised so that rank 1 weighs 1), clipped at ``max_weight``.
``dla``              the dual learning algorithm (Ai, Bi, Luo, Guo, Croft, SIGIR 2018): a
                     propensity model g (one logit per rank, learned jointly) and the ranker
                     correct each other. Ranker: -sum_{clicked i} (t_1 / t_{k_i}) log softmax(s)_i
                     with t = softmax(g) (detached); propensity model:
                     -sum_{clicked i} (r_{(1)} / r_i) log softmax(g_{k})_{k_i} over the row's shown
                     ranks, r = softmax(s) (detached), r_{(1)} the document shown at rank 1.
                     Both weights are clipped at ``max_weight``. :meth:`DLA.examination` gives
                     the learned curve theta_k / theta_1.

Propensities below ``min_propensity`` are raised to it (the clip that bounds IPS's variance).
The listwise losses average over rows with at least one click, the pointwise ones over shown
pairs (weighted by the query weights when given).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from uptrain.losses.base import RankingLoss, masked_logsumexp, register, weighted_mean, zero_loss
from uptrain.losses.pointwise import _pair_mean


def unpack_clicks(scores: torch.Tensor, click: torch.Tensor):
    """(clicked bool [B, N], rank long [B, N], propensity [B, N], shown bool [B, N]) from the click target."""
    if click.dim() != 3 or click.shape[-1] != 3 or click.shape[:2] != scores.shape:
        raise ValueError(
            f"the click target must be [queries, passages, 3] (clicked, rank, propensity) matching scores "
            f"{tuple(scores.shape)}, got {tuple(click.shape)}: train on click sessions (labels click:raw or click:ips)"
        )
    clicked = click[..., 0] > 0.5
    rank = click[..., 1].round().long()
    shown = (rank >= 0) & torch.isfinite(scores)
    return clicked & shown, rank, click[..., 2], shown


class _ClickLoss(RankingLoss):
    target = "click"

    def __init__(self, min_propensity: float = 0.01, max_weight: float = 100.0):
        super().__init__()
        if not 0 < min_propensity <= 1:
            raise ValueError(f"min_propensity must be in (0, 1], got {min_propensity}")
        if max_weight < 1:
            raise ValueError(f"max_weight must be >= 1, got {max_weight}")
        self.min_propensity = float(min_propensity)
        self.max_weight = float(max_weight)

    def _propensity(self, prop: torch.Tensor, shown: torch.Tensor) -> torch.Tensor:
        if torch.isnan(prop[shown]).any():
            raise ValueError(
                f"loss '{self.name}' weights clicks by their examination propensities, and some shown passages "
                "have none: use labels click:ips (propensities from a fitted PBM or given), or loss=dla (learns them)"
            )
        return prop.nan_to_num(1.0).clamp(min=self.min_propensity, max=1.0)


def _listwise(scores, clicked, shown, weights_ij, query_weights):
    """sum_{clicked i} w_ij (-log softmax over shown)_i per row, averaged over rows with a click."""
    rows = clicked.any(dim=1)
    if not rows.any():
        return zero_loss(scores)
    lse = masked_logsumexp(scores, shown)
    nll = (lse.unsqueeze(1) - scores).masked_fill(~clicked, 0.0)
    per_row = (nll * weights_ij.masked_fill(~clicked, 0.0)).sum(dim=1)
    return weighted_mean(per_row[rows], query_weights, rows)


@register("naive_pointwise")
class NaivePointwise(_ClickLoss):
    single_logit = True

    def forward(self, scores, click, weights=None):
        clicked, _, _, shown = unpack_clicks(scores, click)
        if not shown.any():
            return zero_loss(scores)
        s = scores.masked_fill(~shown, 0.0)
        y = clicked.to(s.dtype)
        return _pair_mean(y * F.softplus(-s) + (1 - y) * F.softplus(s), shown, weights)


@register("ips_pointwise")
class IPSPointwise(_ClickLoss):
    single_logit = True

    def forward(self, scores, click, weights=None):
        clicked, _, prop, shown = unpack_clicks(scores, click)
        if not shown.any():
            return zero_loss(scores)
        theta = self._propensity(prop, shown)
        s = scores.masked_fill(~shown, 0.0)
        y = clicked.to(s.dtype) / theta.to(s.dtype)
        return _pair_mean(y * F.softplus(-s) + (1 - y) * F.softplus(s), shown, weights)


@register("naive_listwise")
class NaiveListwise(_ClickLoss):
    def forward(self, scores, click, weights=None):
        clicked, _, _, shown = unpack_clicks(scores, click)
        return _listwise(scores, clicked, shown, torch.ones_like(scores), weights)


def _at_rank_one(values: torch.Tensor, rank: torch.Tensor, shown: torch.Tensor) -> torch.Tensor:
    """Per row, the value at the column shown at rank 1 (rank 0), or the row's best-ranked shown column."""
    big = torch.iinfo(torch.long).max
    first = rank.masked_fill(~shown, big).argmin(dim=1, keepdim=True)
    return values.gather(1, first)


@register("ips_listwise")
class IPSListwise(_ClickLoss):
    def forward(self, scores, click, weights=None):
        clicked, rank, prop, shown = unpack_clicks(scores, click)
        theta = self._propensity(prop, shown).to(scores.dtype)
        w = (_at_rank_one(theta, rank, shown) / theta).clamp(max=self.max_weight)
        return _listwise(scores, clicked, shown, w, weights)


@register("dla")
class DLA(_ClickLoss):
    """The dual learning algorithm; ``ranks``: how many ranks the propensity model covers,
    ``lr``: its learning rate (the propensity logits are fresh, the ranker is pretrained)."""

    def __init__(self, ranks: int = 10, lr: float = 0.05, min_propensity: float = 0.01, max_weight: float = 100.0):
        super().__init__(min_propensity, max_weight)
        if ranks < 2:
            raise ValueError(f"dla.ranks must be >= 2, got {ranks}")
        self.ranks = int(ranks)
        self.lr = float(lr)
        self.propensity_logits = nn.Parameter(torch.zeros(self.ranks))

    def forward(self, scores, click, weights=None):
        clicked, rank, _, shown = unpack_clicks(scores, click)
        if (rank[shown] >= self.ranks).any():
            raise ValueError(f"dla covers ranks 1..{self.ranks}; a SERP shows rank {int(rank[shown].max()) + 1}: "
                             f"set loss.ranks to the log's SERP length")
        g = self.propensity_logits.float()[rank.clamp(min=0, max=self.ranks - 1)]  # [B, N] logit of each column's rank
        g = g.masked_fill(~shown, torch.finfo(g.dtype).min)
        with torch.no_grad():
            # examination relative to rank 1 (index 0), from the propensity model
            theta_rel = torch.exp(self.propensity_logits.float()[0] - g).masked_fill(~shown, 1.0)
            w_rank = theta_rel.clamp(max=self.max_weight).to(scores.dtype)
            r = torch.softmax(scores.float().masked_fill(~shown, torch.finfo(torch.float32).min), dim=1)
            w_prop = (_at_rank_one(r, rank, shown) / r.clamp(min=1e-12)).clamp(max=self.max_weight)
        ranker = _listwise(scores, clicked, shown, w_rank, weights)
        propensity = _listwise(g, clicked, shown, w_prop.to(g.dtype), weights)
        return ranker + propensity.to(ranker.dtype)

    @torch.no_grad()
    def examination(self) -> list[float]:
        """The learned examination curve theta_k / theta_1, k = 1..ranks."""
        g = self.propensity_logits.float()
        return [round(float(x), 6) for x in torch.exp(g - g[0])]

    def learned(self) -> dict:
        return {"examination": self.examination()}
