"""The loss interface and registry: ``loss(scores, labels)`` over [B, N] score matrices."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

LOSSES: dict[str, type["RankingLoss"]] = {}


def register(name: str) -> Callable[[type], type]:
    def wrap(cls: type) -> type:
        if name in LOSSES:
            raise ValueError(f"loss '{name}' registered twice")
        LOSSES[name] = cls
        cls.name = name
        return cls

    return wrap


def get_loss(name: str, **kwargs) -> "RankingLoss":
    if name not in LOSSES:
        raise ValueError(f"unknown loss '{name}'; known losses: {', '.join(sorted(LOSSES))}")
    return LOSSES[name](**kwargs)


class RankingLoss(nn.Module):
    """Base class: validates shapes, and averages a per-row loss over rows that have a positive.

    ``scores`` [B, N] are similarities already divided by the temperature; a column
    scored -inf is masked (padding, a known positive of the query in another group).
    ``labels`` [B, N] are multi-hot (bool or 0/1).
    """

    name: str = "base"

    def forward(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        check_shapes(scores, labels)
        pos = labels.bool() & torch.isfinite(scores)
        rows = pos.any(dim=1)
        if not rows.any():
            return scores.nan_to_num(0.0, 0.0, 0.0).sum() * 0.0  # zero, still connected to the graph
        per_row = self.row_loss(scores[rows], pos[rows])
        return per_row.mean()

    def row_loss(self, scores: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """Loss per row, for rows with at least one (finite) positive: returns [B']."""
        raise NotImplementedError


def check_shapes(scores: torch.Tensor, labels: torch.Tensor) -> None:
    if scores.dim() != 2:
        raise ValueError(f"scores must be a 2-D tensor [queries, passages], got shape {tuple(scores.shape)}")
    if labels.shape != scores.shape:
        raise ValueError(
            f"labels shape {tuple(labels.shape)} does not match scores shape {tuple(scores.shape)}"
        )
    if not scores.is_floating_point():
        raise ValueError(f"scores must be a float tensor, got {scores.dtype}")


def masked_logsumexp(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log sum_{j: mask} exp(s_j) per row; -inf for an empty row, with finite gradients."""
    neg_inf = torch.finfo(scores.dtype).min
    s = scores.masked_fill(~mask, neg_inf)
    out = torch.logsumexp(s, dim=-1)
    return out.masked_fill(~mask.any(dim=-1), float("-inf"))
